"""Reading from the CDS Client's FHIR server when the prefetch did not bring what the service needs.

CDS Hooks 2.0, "FHIR Resource Access": the request's ``fhirServer`` is the base URL and
``fhirAuthorization.access_token`` the bearer token, valid for ``expires_in`` seconds. The service presents
the token with every call (and never to another host: paging links must stay under the same base URL), never
uses it once its lifetime is over, and waits at most ``fhir_timeout_s`` for all reads together. Errors name
the prefetch key, never an identifier, so they can be logged and returned without patient data.
"""

from __future__ import annotations

import ipaddress
import time
import urllib.parse
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import httpx

from .._errors import InputError, NotJSONError
from .._inputs import parse_json

MAX_PAGES = 20
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


class FhirUnavailable(Exception):
    """The data cannot be had from the FHIR server (none given, token missing or expired, server failing)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def checked_base_url(fhir_server: str) -> str:
    """The FHIR base URL without a trailing slash. HTTPS is required (CDS Hooks 2.0: "The scheme MUST be
    https when production data is exchanged"), except on loopback, where nothing leaves the machine."""
    try:
        parsed = urllib.parse.urlsplit(fhir_server)
        parsed.port  # noqa: B018 - raises ValueError for a port that is not a number
        httpx.URL(fhir_server)
    except (ValueError, httpx.InvalidURL):
        raise FhirUnavailable("fhirServer is not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise FhirUnavailable("fhirServer is not an absolute http(s) URL")
    if parsed.scheme == "http" and not _is_loopback(parsed.hostname):
        raise FhirUnavailable("fhirServer must use https: the access token is never sent over plain http")
    if parsed.query or parsed.fragment:
        raise FhirUnavailable("fhirServer must be a base URL without query or fragment")
    return fhir_server.rstrip("/")


# A year: longer than any access token lives, short enough to add to a clock reading.
_LONGEST_TOKEN_LIFETIME_S = 365 * 24 * 3600


@dataclass(frozen=True)
class FhirAccess:
    """What the service may use to read from the client's FHIR server during one hook call."""

    base_url: str
    token: str
    expires_at: float  # time.monotonic() value at which the token's lifetime ends
    timeout_s: float

    @classmethod
    def from_request(
        cls,
        fhir_server: str | None,
        authorization: Mapping[str, Any] | None,
        *,
        received_at: float,
        timeout_s: float,
    ) -> FhirAccess:
        """Raise ``FhirUnavailable`` when the request gives no usable server or token."""
        if not fhir_server:
            raise FhirUnavailable("the request has no fhirServer to read the missing data from")
        if authorization is None:
            # CDS Hooks 2.0: services present a valid access token with each FHIR API call.
            raise FhirUnavailable("the request has no fhirAuthorization (access token) for its fhirServer")
        base = checked_base_url(fhir_server)
        expires_in = authorization["expires_in"]
        if expires_in <= 0:
            raise FhirUnavailable("the fhirAuthorization access token has expired")
        lifetime = min(expires_in, _LONGEST_TOKEN_LIFETIME_S)  # any int is valid JSON; a float is not
        return cls(base, authorization["access_token"], received_at + lifetime, timeout_s)

    def remaining(self, deadline: float) -> float:
        """Seconds left before the token expires or the overall deadline passes."""
        return min(self.expires_at, deadline) - time.monotonic()

    def read_all(self, queries: Mapping[str, str]) -> dict[str, Any]:
        """Run the queries (relative URLs) concurrently; each key maps to the resource or Bundle read, or None
        when a read found nothing. Raise ``FhirUnavailable`` if any fails or time runs out."""
        if time.monotonic() >= self.expires_at:
            raise FhirUnavailable("the fhirAuthorization access token has expired")
        deadline = time.monotonic() + self.timeout_s
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/fhir+json"}
        with (
            httpx.Client(headers=headers, follow_redirects=False) as client,
            ThreadPoolExecutor(max_workers=max(1, min(8, len(queries)))) as pool,
        ):
            futures = {
                key: pool.submit(self._get, client, key, query, deadline) for key, query in queries.items()
            }
            results: dict[str, Any] = {}
            try:
                for key, future in futures.items():
                    results[key] = future.result(timeout=max(0.0, self.remaining(deadline)) + 0.5)
            except FutureTimeout:
                raise FhirUnavailable("the FHIR server did not answer in time") from None
            finally:
                for future in futures.values():
                    future.cancel()
        return results

    def _get(self, client: httpx.Client, key: str, query: str, deadline: float) -> Any:
        url: str | None = f"{self.base_url}/{query.lstrip('/')}"
        first: dict[str, Any] | None = None
        pages = 0
        while url is not None:
            page = self._fetch(client, key, url, deadline)
            if page is None:
                return first
            if page.get("resourceType") != "Bundle":
                return page
            pages += 1
            entries = page.get("entry", [])
            if not isinstance(entries, list):
                raise FhirUnavailable(f"the FHIR server answered with a malformed Bundle ({key})")
            if first is None:
                first = {**page, "entry": list(entries)}
            else:
                first["entry"].extend(entries)
            url = self._next_link(page, key) if pages < MAX_PAGES else None
        if first is not None:
            first.pop("link", None)  # the pages were followed
        return first

    def _fetch(self, client: httpx.Client, key: str, url: str, deadline: float) -> dict[str, Any] | None:
        left = self.remaining(deadline)
        if left <= 0:
            expired = time.monotonic() >= self.expires_at
            raise FhirUnavailable(
                "the fhirAuthorization access token expired while reading from the FHIR server"
                if expired
                else "the FHIR server did not answer in time"
            )
        try:
            response = client.get(url, timeout=left)
        except httpx.TimeoutException:
            if time.monotonic() >= self.expires_at:
                raise FhirUnavailable(
                    f"the access token expired while reading from the FHIR server ({key})"
                ) from None
            raise FhirUnavailable(f"the FHIR server did not answer in time ({key})") from None
        except (httpx.HTTPError, httpx.InvalidURL, UnicodeError, ValueError) as exc:
            # UnicodeError: a host name IDNA cannot encode (e.g. an empty label), raised only when connecting
            raise FhirUnavailable(
                f"the FHIR server could not be reached ({key}: {type(exc).__name__})"
            ) from None
        if response.status_code in (404, 410) and "?" not in url:
            return None  # a read of a resource that does not exist: no data
        if response.status_code != 200:
            raise FhirUnavailable(f"the FHIR server answered {response.status_code} ({key})")
        try:
            data = parse_json(response.content)
        except NotJSONError:
            raise FhirUnavailable(f"the FHIR server did not answer with JSON ({key})") from None
        except InputError:
            raise FhirUnavailable(f"the FHIR server's answer holds a number out of range ({key})") from None
        if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
            raise FhirUnavailable(f"the FHIR server did not answer with a FHIR resource ({key})")
        if data["resourceType"] == "OperationOutcome":
            raise FhirUnavailable(f"the FHIR server answered with an OperationOutcome ({key})")
        return data

    def _next_link(self, bundle: Mapping[str, Any], key: str) -> str | None:
        links = bundle.get("link")
        for link in links if isinstance(links, list) else []:
            if (
                isinstance(link, Mapping)
                and link.get("relation") == "next"
                and isinstance(link.get("url"), str)
            ):
                target: str = link["url"]
                if not target.startswith(self.base_url + "/") and not target.startswith(self.base_url + "?"):
                    # Never present the token to another host or path.
                    raise FhirUnavailable(f"the FHIR server's next page is outside fhirServer ({key})")
                return target
        return None
