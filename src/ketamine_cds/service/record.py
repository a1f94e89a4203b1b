"""The record a hook call is answered from: the prefetch, what the client's FHIR server gives for the rest,
and, named, what could not be had.

1. Each applicable prefetch template is satisfied from the prefetch (``prefetch.collect``); a key the client
   left out, or sent as an OperationOutcome or as a first page, is read from the FHIR server when the service
   may (``fhir_client.FhirAccess``: with the request's token, or without one from a server the operator
   lists).
2. What the recommended prefetch subset cannot express is read next, by instance reads: the Medication an
   order, prescription, statement or administration references, the current Location of the Encounter, the
   Encounter the draft order names. Two rounds at most (an Encounter read in the first names its Location).
3. Whatever could not be had is reported by its data name (``prefetch.DATUM_OF_KEY``, plus ``location``,
   ``encounter`` and ``ketamine-product`` for references), never silently dropped: the hook decides whether
   the question can still be answered (it can, unless the patient or the order itself is missing), the
   answer names what was not read, and the audit trail records it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from . import prefetch as pf
from .fhir_client import FhirAccess, FhirUnavailable, Reads, ServerPrefix, unavailable_for_all, under

Json = dict[str, Any]
Pairs = list[tuple[str | None, Json]]

_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_MEDICATION_USERS = frozenset({"MedicationRequest", "MedicationStatement", "MedicationAdministration"})
_READABLE_TYPES = frozenset({"Medication", "Location", "Encounter"})
_CURRENT_LOCATION_STATUSES = (None, "active")  # not planned, reserved or completed
MAX_REFERENCE_READS = 40  # per call: more is not a record, it is a crawl
REFERENCE_ROUNDS = 2


@dataclass
class Gathered:
    """Per key (a prefetch key, or ``Type/id`` of a referenced resource): the data; and what is missing."""

    data: dict[str, Any] = field(default_factory=dict)
    unread: dict[str, list[str]] = field(default_factory=dict)  # data name -> keys or references not read
    reasons: dict[str, str] = field(default_factory=dict)  # key -> why it could not be read

    def fail(self, datum: str, key: str, reason: str) -> None:
        keys = self.unread.setdefault(datum, [])
        if key not in keys:
            keys.append(key)
        self.reasons.setdefault(key, reason)

    @property
    def unread_data(self) -> list[str]:
        return sorted(self.unread)

    def missing_keys(self, datum: str) -> list[str]:
        return list(self.unread.get(datum, ()))


class Reader:
    """Reads from the client's FHIR server for one call, or says once why it cannot."""

    def __init__(
        self,
        fhir_server: str | None,
        authorization: Mapping[str, Any] | None,
        *,
        received_at: float,
        timeout_s: float,
        max_bytes: int,
        listed: tuple[ServerPrefix, ...],
    ) -> None:
        self._request = (fhir_server, authorization, received_at, timeout_s, max_bytes, listed)
        self._decided = False
        self._access: FhirAccess | None = None
        self._refusal = ""

    def _decide(self) -> None:
        """Decided at first use: a call whose prefetch is complete never looks at fhirServer."""
        if not self._decided:
            fhir_server, authorization, received_at, timeout_s, max_bytes, listed = self._request
            try:
                self._access = FhirAccess.from_request(
                    fhir_server,
                    authorization,
                    received_at=received_at,
                    timeout_s=timeout_s,
                    max_bytes=max_bytes,
                    listed=listed,
                )
            except FhirUnavailable as exc:
                self._refusal = exc.reason
            self._decided = True

    @property
    def base(self) -> httpx.URL | None:
        self._decide()
        return self._access.base if self._access is not None else None

    @property
    def refusal(self) -> str:
        self._decide()
        return self._refusal

    async def read(self, queries: Mapping[str, str]) -> Reads:
        if not queries:
            return Reads()
        self._decide()
        if self._access is None:
            return unavailable_for_all(queries, self._refusal)
        return await self._access.read_all(queries)


async def gather(
    prefetch: Mapping[str, Any] | None,
    templates: Mapping[str, str],
    context: Mapping[str, Any],
    reader: Reader,
    into: Gathered | None = None,
) -> Gathered:
    """The data of every applicable template: as prefetched, else read from the FHIR server, else named in
    ``unread``. Raises ``prefetch.PrefetchError`` for a prefetch value that is not a resource or null."""
    gathered = into or Gathered()
    applicable = {key: t for key, t in templates.items() if pf.applies(t, context)}
    collected = pf.collect(prefetch, list(applicable))
    gathered.data.update(collected.data)
    queries: dict[str, str] = {}
    for key in collected.missing:  # rendered only now: with a complete prefetch, no query is needed
        query = pf.render(applicable[key], context)
        assert query is not None  # the template applies
        queries[key] = query
    reads = await reader.read(queries)
    for key, value in reads.data.items():
        if value is not None and pf.failed(value):
            gathered.fail(pf.DATUM_OF_KEY.get(key, key), key, "the FHIR server reported an error")
        else:
            gathered.data[key] = value
    for key, reason in reads.failed.items():
        gathered.fail(pf.DATUM_OF_KEY.get(key, key), key, reason)
    return gathered


ORDER_FIELDS = ("medicationReference", "encounter")


async def resolve_references(
    gathered: Gathered,
    orders: Pairs,
    reader: Reader,
    *,
    fields: tuple[str, ...] = ORDER_FIELDS,
    rounds: int = REFERENCE_ROUNDS,
    failed_before: Mapping[str, str] | None = None,
    held: Pairs | None = None,
) -> None:
    """Read the resources the record references but does not hold (see the module's point 2), in at most
    ``rounds`` rounds: the ``fields`` of ``orders``, and the Medications and Locations of the gathered data.
    A reference that cannot be read is named in ``gathered.unread``; one in ``failed_before`` (read earlier
    in this call) is not read again; one to a resource in ``held`` (the request's draft orders) is there."""
    failed_before = failed_before or {}
    attempted: set[str] = set()
    for _ in range(rounds):
        wanted = {
            ref: datum
            for ref, datum in _unresolved(gathered, [*(held or []), *orders], orders, reader, fields).items()
            if ref not in attempted
        }
        for ref in [r for r in wanted if r in failed_before]:
            gathered.fail(wanted.pop(ref), ref, failed_before[ref])
            attempted.add(ref)
        if not wanted:
            return
        room = max(0, MAX_REFERENCE_READS - len(attempted))
        allowed = dict(list(wanted.items())[:room])
        for ref, datum in wanted.items():
            if ref not in allowed:
                gathered.fail(datum, ref, "too many referenced resources to read")
        attempted |= set(wanted)
        reads = await reader.read({ref: ref for ref in allowed})
        for ref, value in reads.data.items():
            if not isinstance(value, Mapping) or value.get("resourceType") != ref.split("/")[0]:
                gathered.fail(allowed[ref], ref, "the FHIR server has no such resource")
            else:
                gathered.data[ref] = value
        for ref, reason in reads.failed.items():
            gathered.fail(allowed[ref], ref, reason)


def _unresolved(
    gathered: Gathered, held: Pairs, orders: Pairs, reader: Reader, fields: tuple[str, ...]
) -> dict[str, str]:
    """``Type/id`` of each referenced resource to read, with its data name. A reference that can never be
    read (a urn, another server, no id, no server to read from) is named unread at once."""
    data = gathered.data
    known = _identities(data, held)
    wanted: dict[str, str] = {}

    def want(reference: Any, datum: str) -> None:
        target = reference.get("reference") if isinstance(reference, Mapping) else None
        if not isinstance(target, str) or not target.strip() or target.startswith("#"):
            return  # no reference, or a contained resource (the reader looks inside the resource itself)
        target = target.strip()
        if target in known or _type_and_id(target) in known:
            return
        readable = _readable(target, reader.base)
        if readable is None:
            reason = reader.refusal if reader.base is None else "a reference to another server or not a read"
            gathered.fail(datum, f"reference:{_type_and_id(target)[:80]}", reason or "cannot be read")
        else:
            wanted.setdefault(readable, datum)

    for _, order in orders:
        if "medicationReference" in fields:
            want(order.get("medicationReference"), "ketamine-product")
        if "encounter" in fields:
            want(order.get("encounter"), "encounter")
    for key, value in data.items():
        datum_of_key = pf.DATUM_OF_KEY.get(key)
        for _, resource in pf.resources_of(value) if isinstance(value, Mapping) else []:
            kind = resource.get("resourceType")
            if kind in _MEDICATION_USERS and datum_of_key is not None:
                want(resource.get("medicationReference"), datum_of_key)
            elif kind == "Encounter":
                for entry in _list(resource.get("location")):
                    if isinstance(entry, Mapping) and entry.get("status") in _CURRENT_LOCATION_STATUSES:
                        want(entry.get("location"), "location")
    return wanted


def read_medications(gathered: Gathered) -> Pairs:
    """The Medications read from the FHIR server (by reference) so far."""
    return [
        (None, value)
        for key, value in gathered.data.items()
        if key.startswith("Medication/") and isinstance(value, dict)
    ]


def _identities(data: Mapping[str, Any], orders: Pairs) -> set[str]:
    known: set[str] = set()
    sources: list[Iterable[tuple[str | None, Json]]] = [orders]
    sources += [pf.resources_of(v) for v in data.values() if isinstance(v, Mapping)]
    for source in sources:
        for full_url, resource in source:
            rid, kind = resource.get("id"), resource.get("resourceType")
            if isinstance(rid, str) and isinstance(kind, str):
                known.add(f"{kind}/{rid}")
            if full_url:
                known.add(full_url)
    return known


def _type_and_id(reference: str) -> str:
    parts = [p for p in reference.split("/") if p]
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    return "/".join(parts[-2:])


def _readable(reference: str, base: httpx.URL | None) -> str | None:
    """``Type/id`` to read for a reference to the client's FHIR server; None for one that is not (a urn,
    another server, a malformed id) or when there is no server to read from."""
    if base is None or reference.startswith("urn:"):
        return None
    if "://" in reference:
        try:
            url = httpx.URL(reference)
        except (httpx.InvalidURL, ValueError, UnicodeError):
            return None
        if not under(base, url) or url.query:
            return None
    elif "?" in reference:
        return None
    kind, _, rid = _type_and_id(reference).partition("/")
    if kind not in _READABLE_TYPES or not _FHIR_ID.fullmatch(rid) or not rid.strip("."):
        return None  # not a FHIR id (and "." or "..", which a URL would read as a path step)
    return f"{kind}/{rid}"


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
