"""Reading from the CDS Client's FHIR server when the prefetch did not bring what the service needs.

CDS Hooks 2.0, "FHIR Resource Access": the request's ``fhirServer`` is the base URL and
``fhirAuthorization.access_token`` the bearer token, valid for ``expires_in`` seconds. The service presents
the token with every call (and never to another host: paging links must stay under the same base URL), never
uses it once its lifetime is over, and waits at most ``fhir_timeout_s`` for all the reads of one hook call
together (every round of them: the prefetch left out, then the resources referenced), reading at most
``fhir_max_bytes`` of answers in all: a server that drips its answer or floods the service is cut off at the
call's deadline or at that size, and what it was asked for is "could not be read". The reads run on the event
loop (httpx's async client), so that the deadline cancels them outright rather than leaving threads blocked
on a socket; a large answer is parsed on a thread.

Which servers may be read is the operator's decision (``Settings.fhir_servers``, ``--fhir-server``):

- a server on that list may be read without a token (an "open" FHIR server, as the CDS Hooks sandbox and
  many test EHRs have: the client then sends no ``fhirAuthorization``);
- once the list holds any server, no server outside it is contacted, with or without a token, so a request
  cannot make the service read an arbitrary address (a loopback port, an internal host) through
  ``fhirServer``;
- with no list, a server is read only with the request's token, over https (plain http on loopback only).

Every read is answered on its own: a key that could not be read is reported with the reason, the others are
kept. Once the server has been contacted, every failure reads the same ("could not be read"), whether the
connection was refused, timed out, redirected or answered something that is not FHIR JSON: a caller learns
nothing about what listens at an address. The details go to the log, which names the prefetch key and never
an identifier or a URL (URLs hold patient ids).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from .._errors import InputError, NotJSONError
from .._inputs import parse_json

log = logging.getLogger("ketamine_cds.service.fhir")

MAX_PAGES = 20
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})
NOT_READ = "the FHIR server could not be read"  # the one text for every failure once it was contacted


class FhirUnavailable(Exception):
    """The data cannot be had from the FHIR server (none given, not allowed, token missing or expired)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FhirServerListError(ValueError):
    """A configured FHIR server prefix that is not an absolute http(s) base URL."""


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _segments_prefix(prefix: bytes, path: bytes) -> bool:
    """Whether ``path`` is ``prefix`` or below it, segment by segment (/fhir covers /fhir/x, not /fhirx)."""
    prefix = prefix.rstrip(b"/")
    return path.rstrip(b"/") == prefix or path.startswith(prefix + b"/")


def _same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    # raw_host: the host as sent (IDNA-encoded); ``host`` would decode it, and can fail doing so
    return a.scheme == b.scheme and a.raw_host.lower() == b.raw_host.lower() and a.port == b.port


def _path(url: httpx.URL) -> bytes:
    return url.raw_path.split(b"?", 1)[0]  # httpx's raw_path carries the query too


def under(base: httpx.URL, url: httpx.URL) -> bool:
    """Whether ``url`` is on ``base``'s server at or below its path (as httpx will request it: dot segments
    and default ports normalized, the path compared percent-encoded)."""
    return _same_origin(base, url) and not url.userinfo and _segments_prefix(_path(base), _path(url))


@dataclass(frozen=True)
class ServerPrefix:
    """One FHIR server the operator lists: a base URL; the server's base may be it or below it."""

    text: str
    url: httpx.URL

    def covers(self, base: httpx.URL) -> bool:
        return under(self.url, base)


def server_prefixes(values: Iterable[str]) -> tuple[ServerPrefix, ...]:
    """The operator's FHIR server list, checked; ``FhirServerListError`` names the first bad entry."""
    prefixes = []
    for value in values:
        try:
            url = httpx.URL(value)
        except (httpx.InvalidURL, TypeError, ValueError):
            url = None
        if (
            url is None
            or url.scheme not in ("http", "https")
            or not url.raw_host
            or url.query
            or url.fragment
            or url.userinfo
        ):
            raise FhirServerListError(
                f"{value!r} is not a FHIR server base URL (absolute http(s), no query, fragment or user info)"
            )
        prefixes.append(ServerPrefix(value, url))
    return tuple(prefixes)


def checked_base(fhir_server: str) -> httpx.URL:
    """The request's ``fhirServer`` as a URL: absolute http(s), no query, fragment or user info."""
    try:
        url = httpx.URL(fhir_server)
        url.port  # noqa: B018 - a port that is not a number raises here
        url.host  # noqa: B018 - a host name IDNA cannot decode raises here (UnicodeError)
    except (ValueError, httpx.InvalidURL, UnicodeError):
        raise FhirUnavailable("fhirServer is not a valid URL") from None
    if url.scheme not in ("http", "https") or not url.raw_host:
        raise FhirUnavailable("fhirServer is not an absolute http(s) URL")
    if url.query or url.fragment or url.userinfo:
        raise FhirUnavailable("fhirServer must be a base URL without query, fragment or user info")
    return url


# A year: longer than any access token lives, short enough to add to a clock reading.
_LONGEST_TOKEN_LIFETIME_S = 365 * 24 * 3600


@dataclass
class Reads:
    """What a batch of reads gave: each key's resource or Bundle (None: nothing there), or why not."""

    data: dict[str, Any] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # key -> reason, no identifier in it


class _ReadFailed(Exception):
    """One read failed; ``detail`` is for the log only."""

    def __init__(self, detail: str, reason: str = NOT_READ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.reason = reason


MAX_CONCURRENT_READS = 8
_PARSE_ON_THREAD_BYTES = 256 * 1024  # a larger answer is parsed off the event loop


@dataclass
class _Budget:
    """The bytes a call may still read from the FHIR server, all its reads together."""

    limit: int
    used: int = 0

    def take(self, size: int) -> None:
        self.used += size
        if self.used > self.limit:
            raise _ReadFailed(f"the answers exceed the limit of {self.limit} bytes for one call")

    def could_take(self, size: int) -> bool:
        return self.used + size <= self.limit


@dataclass
class FhirAccess:
    """What the service may use to read from the client's FHIR server during one hook call."""

    base: httpx.URL
    token: str | None  # None: an open server the operator lists, read without a token
    expires_at: float | None  # time.monotonic() value at which the token's lifetime ends
    deadline: float  # time.monotonic() value by which every read of the call must be over
    budget: _Budget

    @property
    def base_url(self) -> str:
        return str(self.base).rstrip("/")

    @classmethod
    def from_request(
        cls,
        fhir_server: str | None,
        authorization: Mapping[str, Any] | None,
        *,
        received_at: float,
        timeout_s: float,
        max_bytes: int,
        listed: tuple[ServerPrefix, ...] = (),
    ) -> FhirAccess:
        """Raise ``FhirUnavailable`` when the request gives no server the service may read. ``received_at``
        (time.monotonic()) plus ``timeout_s`` is the call's deadline for all its reads."""
        if not fhir_server:
            raise FhirUnavailable("the request has no fhirServer to read the missing data from")
        base = checked_base(fhir_server)
        on_list = any(prefix.covers(base) for prefix in listed)
        if listed and not on_list:
            raise FhirUnavailable("fhirServer is not one of the FHIR servers this service is set up to read")
        deadline, budget = received_at + timeout_s, _Budget(max_bytes)
        if authorization is None:
            if not on_list:
                # CDS Hooks 2.0: services present a valid access token with each FHIR API call.
                raise FhirUnavailable(
                    "the request has no fhirAuthorization (access token) for its fhirServer, and that server "
                    "is not one this service may read without a token"
                )
            return cls(base, None, None, deadline, budget)
        if base.scheme == "http" and not _is_loopback(base.raw_host.decode("ascii", "replace")):
            raise FhirUnavailable("fhirServer must use https: the access token is never sent over plain http")
        expires_in = authorization["expires_in"]
        if expires_in <= 0:
            raise FhirUnavailable("the fhirAuthorization access token has expired")
        lifetime = min(expires_in, _LONGEST_TOKEN_LIFETIME_S)  # any int is valid JSON; a float is not
        return cls(base, authorization["access_token"], received_at + lifetime, deadline, budget)

    def _ends(self) -> float:
        return self.deadline if self.expires_at is None else min(self.expires_at, self.deadline)

    def _expired(self) -> bool:
        return self.expires_at is not None and time.monotonic() >= self.expires_at

    def _out_of_time(self) -> _ReadFailed:
        if self._expired():
            return _ReadFailed("token expired", "the fhirAuthorization access token expired while reading")
        return _ReadFailed("no answer in time")

    async def read_all(self, queries: Mapping[str, str]) -> Reads:
        """Run the queries (relative URLs) concurrently. Each key gets the resource or Bundle read (None when
        a read finds nothing), or a reason in ``failed``; whatever is not over by the call's deadline (or the
        token's end) is cancelled and fails."""
        reads = Reads()
        if not queries:
            return reads
        if self._expired():
            reads.failed = dict.fromkeys(queries, "the fhirAuthorization access token has expired")
            return reads
        headers = {"Accept": "application/fhir+json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        limits = httpx.Limits(max_connections=MAX_CONCURRENT_READS, max_keepalive_connections=0)
        async with httpx.AsyncClient(headers=headers, follow_redirects=False, limits=limits) as client:
            tasks = {key: asyncio.ensure_future(self._get(client, query)) for key, query in queries.items()}
            left = max(0.0, self._ends() - time.monotonic())
            _, pending = await asyncio.wait(tasks.values(), timeout=left)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)  # each closes its own stream
        for key, task in tasks.items():
            self._settle(reads, key, task)
        return reads

    def _settle(self, reads: Reads, key: str, task: asyncio.Future[Any]) -> None:
        label = _label(key)
        if task.cancelled():
            error: BaseException | None = self._out_of_time()
        else:
            error = task.exception()
        if isinstance(error, _ReadFailed):
            log.info("FHIR read %s failed: %s", label, error.detail)
            reads.failed[key] = error.reason
        elif error is not None:
            log.warning("FHIR read %s failed unexpectedly: %s", label, type(error).__name__)
            reads.failed[key] = NOT_READ
        else:
            reads.data[key] = task.result()

    async def _get(self, client: httpx.AsyncClient, query: str) -> Any:
        url: httpx.URL | None = self._url(query)
        first: dict[str, Any] | None = None
        pages = 0
        while url is not None:
            page = await self._fetch(client, url)
            if page is None:
                return first
            if page.get("resourceType") != "Bundle":
                return page
            pages += 1
            entries = page.get("entry", [])
            if not isinstance(entries, list):
                raise _ReadFailed("a Bundle whose entry is not a list")
            if first is None:
                first = {**page, "entry": list(entries)}
            else:
                first["entry"].extend(entries)
            url = self._next_link(page) if pages < MAX_PAGES else None
        if first is not None:
            first.pop("link", None)  # the pages were followed
        return first

    def _url(self, query: str) -> httpx.URL:
        url = httpx.URL(f"{self.base_url}/{query.lstrip('/')}")
        if not under(self.base, url):
            raise _ReadFailed("a query outside fhirServer")
        return url

    async def _fetch(self, client: httpx.AsyncClient, url: httpx.URL) -> dict[str, Any] | None:
        left = self._ends() - time.monotonic()
        if left <= 0:
            raise self._out_of_time()
        try:
            async with client.stream("GET", url, timeout=left) as response:
                gone = response.status_code in (404, 410) and not url.query
                if response.status_code != 200 and not gone:
                    raise _ReadFailed(f"HTTP {response.status_code}")
                declared = response.headers.get("Content-Length", "").strip()
                if declared.isdigit() and not self.budget.could_take(int(declared)):
                    raise _ReadFailed(f"an answer of {declared} bytes, over the limit for one call")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    self.budget.take(len(chunk))
                    body += chunk
                status = response.status_code
        except httpx.TimeoutException:
            raise self._out_of_time() from None
        except (httpx.HTTPError, httpx.InvalidURL, UnicodeError, ValueError) as exc:
            # UnicodeError: a host name IDNA cannot encode (e.g. an empty label), raised only when connecting
            raise _ReadFailed(f"no connection ({type(exc).__name__})") from None
        data = await _parse(bytes(body), status)
        if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
            raise _ReadFailed(f"HTTP {status}, not a FHIR resource")
        if gone and data["resourceType"] == "OperationOutcome":
            return None  # a FHIR server's answer to the read of a resource it does not have: no data
        if gone or data["resourceType"] == "OperationOutcome":
            raise _ReadFailed(f"HTTP {status}, {data['resourceType']}")
        return data

    def _next_link(self, bundle: Mapping[str, Any]) -> httpx.URL | None:
        links = bundle.get("link")
        for link in links if isinstance(links, list) else []:
            if (
                isinstance(link, Mapping)
                and link.get("relation") == "next"
                and isinstance(link.get("url"), str)
            ):
                try:
                    target = httpx.URL(link["url"])
                except (httpx.InvalidURL, ValueError, UnicodeError):
                    raise _ReadFailed("a next link that is not a URL") from None
                if not under(self.base, target):
                    # Never present the token to another host or path.
                    raise _ReadFailed("a next page outside fhirServer")
                return target
        return None


async def _parse(body: bytes, status: int) -> Any:
    """The answer as JSON (numbers exact); a large one parsed on a thread, off the event loop."""
    try:
        if len(body) > _PARSE_ON_THREAD_BYTES:
            return await asyncio.to_thread(parse_json, body)
        return parse_json(body)
    except NotJSONError:
        raise _ReadFailed(f"HTTP {status}, not JSON") from None
    except InputError:
        raise _ReadFailed("a number out of range") from None
    except RecursionError:
        raise _ReadFailed("JSON nested too deeply") from None


def _label(key: str) -> str:
    """A read as the log may name it: a prefetch key, or the type of a referenced resource (never its id)."""
    return key if "/" not in key else f"{key.split('/', 1)[0]} (by reference)"


def unavailable_for_all(queries: Iterable[str], reason: str) -> Reads:
    """Every key failed for one reason (no server, not allowed, no token...)."""
    return Reads(failed=dict.fromkeys(queries, reason))


__all__ = [
    "NOT_READ",
    "FhirAccess",
    "FhirServerListError",
    "FhirUnavailable",
    "Reads",
    "ServerPrefix",
    "checked_base",
    "server_prefixes",
    "unavailable_for_all",
    "under",
]
