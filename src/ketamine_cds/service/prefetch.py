"""Prefetch templates, and the one record the engine reads: prefetched (or fetched) data and draft orders.

CDS Hooks 2.0, "Prefetch Template": the service registers templates in discovery; the client sends, for each
key, the resource (a search gives a searchset Bundle), ``null`` when it has no data for the key, an
OperationOutcome when prefetching failed, or nothing at all when it chose not to satisfy the key. It is the
service's task to check what was satisfied and to fetch the rest itself (``record.py``); what it cannot have
is named, and only the patient (or, at patient-view, the ketamine orders) is worth a 412.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .._kb import SYSTEMS, KnowledgeBase

Json = dict[str, Any]

_OBJECT = (dict, Mapping)  # dict first: an exact-type check, far cheaper than the Mapping ABC
_TOKEN = re.compile(r"\{\{\s*context\.([A-Za-z0-9_]+)\s*\}\}")
_PATIENT = "{{context.patientId}}"
_LATEST = "status=final,amended,corrected&_sort=-date&_count=5"

# What each prefetch key brings, by the name the audit trail and the cards use for it ("data names").
DATUM_OF_KEY: dict[str, str] = {
    "patient": "patient",
    "weights": "weight",
    "pregnancyStatus": "pregnancy-status",
    "conditions": "conditions",
    "medicationRequests": "opioids",
    "medicationStatements": "opioids",
    "ketamineRequests": "ketamine-history",
    "ketamineAdministrations": "ketamine-history",
    "procedures": "planned-procedure",
    "serviceRequests": "planned-procedure",
    "encounter": "encounter",
}


def templates(kb: KnowledgeBase) -> dict[str, str]:
    """The prefetch templates of the order hooks: everything the FHIR reader uses (CONTRACT.md, FHIR R4
    input conventions), each in the subset CDS Hooks 2.0 recommends ("Prefetch query restrictions"):
    instance reads, type searches by the patient reference and token parameters with equality (a comma is
    "or"), ``_sort`` and ``_count``; no ``_include``, no chained or modified parameters. What that subset
    cannot express (the encounter's Location, a Medication an order references) is read from the FHIR
    server afterwards, when the service may (``record.py``)."""
    ketamine_codes = _ketamine_codes(kb)
    return {
        "patient": f"Patient/{_PATIENT}",
        "weights": _observations("29463-7"),
        "pregnancyStatus": _observations(kb.pregnancy_status.observation),
        "conditions": f"Condition?patient={_PATIENT}",
        "medicationRequests": f"MedicationRequest?patient={_PATIENT}&status=active",
        "medicationStatements": f"MedicationStatement?patient={_PATIENT}&status=active",
        "ketamineRequests": f"MedicationRequest?patient={_PATIENT}&code={ketamine_codes}",
        "ketamineAdministrations": f"MedicationAdministration?patient={_PATIENT}&code={ketamine_codes}",
        "procedures": f"Procedure?patient={_PATIENT}&status=preparation,in-progress",
        "serviceRequests": f"ServiceRequest?patient={_PATIENT}&status=draft,active,on-hold",
        "encounter": "Encounter/{{context.encounterId}}",
    }


# patient-view: the ketamine orders first (without them there is nothing to say), then what checking a running
# infusion needs. Opioid prescriptions are left out: they bear on the supportive statements, not on a check of
# the running dose or on a contraindication, and patient-view is called on every chart opened.
PATIENT_VIEW_KEYS = (
    "ketamineRequests",
    "ketamineAdministrations",
    "patient",
    "weights",
    "pregnancyStatus",
    "conditions",
    "procedures",
    "serviceRequests",
    "encounter",
)


def patient_view_templates(kb: KnowledgeBase) -> dict[str, str]:
    every = templates(kb)
    return {key: every[key] for key in PATIENT_VIEW_KEYS}


def _ketamine_codes(kb: KnowledgeBase) -> str:
    rxnorm = SYSTEMS["rxnorm"]
    return ",".join(f"{rxnorm}|{code}" for code in sorted(kb.ketamine_rxnorm))


def _observations(loinc_code: str) -> str:
    return f"Observation?patient={_PATIENT}&code={SYSTEMS['loinc']}|{loinc_code}&{_LATEST}"


def render(template: str, context: Mapping[str, Any]) -> str | None:
    """The template with its context tokens replaced (URL-encoded); None when the context lacks a field, so
    the template does not apply to this call (e.g. no encounterId)."""
    if not applies(template, context):
        return None
    literals, fields = _split(template)
    pieces = [literals[0]]
    for field, literal in zip(fields, literals[1:], strict=True):
        pieces += (_quoted(context[field]), literal)
    return "".join(pieces)


def applies(template: str, context: Mapping[str, Any]) -> bool:
    """Whether the context has every field the template names (``render`` gives a query)."""
    return all(isinstance(value := context.get(f), str) and value for f in _split(template)[1])


@lru_cache(maxsize=64)
def _split(template: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the text around the tokens, the context fields the tokens name): one more text than fields."""
    parts = _TOKEN.split(template)
    return tuple(parts[0::2]), tuple(parts[1::2])


@lru_cache(maxsize=256)
def _quoted(value: str) -> str:
    return urllib.parse.quote(value, safe="")


class PrefetchError(ValueError):
    """A prefetch value that is not a FHIR resource or null: a malformed request (400)."""


@dataclass
class Collected:
    """Per applicable template key: the data, or why it is missing."""

    data: dict[str, Any]  # key -> resource, Bundle, or None (the client has no data for it)
    missing: list[str]  # keys not sent, or sent as an OperationOutcome (the client could not prefetch them)


def collect(prefetch: Mapping[str, Any] | None, wanted: Iterable[str]) -> Collected:
    """Sort the prefetch values of the wanted keys (those whose template applies) into usable data and
    missing keys.

    ``null`` means the client has no data for the key (CDS Hooks 2.0: "If the CDS Client has no data to
    populate a template prefetch key, the prefetch template key MUST have a value of null"), so it counts as
    an empty result and is not fetched again. An OperationOutcome, or a Bundle carrying an error
    OperationOutcome, means the client failed to prefetch: the key is missing ("CDS Services SHOULD check any
    prefetched data for the existence of OperationOutcomes"). So is a Bundle with a next page ("CDS Client MAY
    paginate prefetch results"): read alone it would hide what is on the later pages, so the search is run
    again on the FHIR server, which follows every page.
    """
    given = prefetch or {}
    data: dict[str, Any] = {}
    missing: list[str] = []
    for key in wanted:
        if key not in given:
            missing.append(key)
            continue
        value = given[key]
        if value is None:
            data[key] = None
        elif not isinstance(value, _OBJECT) or not isinstance(value.get("resourceType"), str):
            raise PrefetchError(f"prefetch.{key} must be a FHIR resource or null")
        elif failed(value) or has_next_page(value):
            missing.append(key)
        else:
            data[key] = value
    return Collected(data, missing)


def has_next_page(value: Mapping[str, Any]) -> bool:
    links = value.get("link") if value.get("resourceType") == "Bundle" else None
    return isinstance(links, list) and any(
        isinstance(k, _OBJECT) and k.get("relation") == "next" for k in links
    )


def failed(value: Mapping[str, Any]) -> bool:
    """An OperationOutcome, or a Bundle with an OperationOutcome entry of severity error or fatal."""
    if value.get("resourceType") == "OperationOutcome":
        return True
    if value.get("resourceType") != "Bundle":
        return False
    return any(_is_error_outcome(resource) for _, resource in _bundle_resources(value))


def _is_error_outcome(resource: Mapping[str, Any]) -> bool:
    if resource.get("resourceType") != "OperationOutcome":
        return False
    issues = resource.get("issue")
    return any(
        isinstance(issue, _OBJECT) and issue.get("severity") in ("error", "fatal")
        for issue in (issues if isinstance(issues, list) else [])
    )


def _bundle_resources(bundle: Mapping[str, Any]) -> Iterable[tuple[str | None, Json]]:
    entries = bundle.get("entry")
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, _OBJECT) and isinstance(entry.get("resource"), _OBJECT):
            full_url = entry.get("fullUrl")
            resource = entry["resource"]
            yield (
                (full_url if isinstance(full_url, str) else None),
                (resource if type(resource) is dict else dict(resource)),
            )


def resources_of(value: Mapping[str, Any] | None) -> list[tuple[str | None, Json]]:
    """The resources a prefetch value holds, with their fullUrls; informational OperationOutcomes left out."""
    if value is None:
        return []
    if value.get("resourceType") == "Bundle":
        return [(u, r) for u, r in _bundle_resources(value) if r.get("resourceType") != "OperationOutcome"]
    return [(None, dict(value))]


def _identity(full_url: str | None, resource: Mapping[str, Any]) -> str | None:
    rid, rtype = resource.get("id"), resource.get("resourceType")
    if isinstance(rid, str) and rid and isinstance(rtype, str):
        return f"{rtype}/{rid}"
    return full_url


def record_resources(
    data: Mapping[str, Any], draft_orders: list[tuple[str | None, Json]]
) -> list[tuple[str | None, Json]]:
    """The record, as (fullUrl, resource) pairs: the draft orders first, then every prefetched resource not
    already in it (the same resource often comes from two searches; the draft order, as the clinician is
    writing it, wins)."""
    seen: set[str] = set()
    record: list[tuple[str | None, Json]] = []
    sources: list[list[tuple[str | None, Json]]] = [draft_orders]
    sources += [resources_of(value) for value in data.values()]
    for source in sources:
        for full_url, resource in source:
            identity = _identity(full_url, resource)
            if identity is not None:
                if identity in seen:
                    continue
                seen.add(identity)
            record.append((full_url, resource))
    return record


def medications(data: Mapping[str, Any]) -> list[tuple[str | None, Json]]:
    """Medication resources among prefetch values (any shape tolerated), to tell which drafts are ketamine."""
    found: list[tuple[str | None, Json]] = []
    for value in data.values():
        if isinstance(value, Mapping) and isinstance(value.get("resourceType"), str):
            found += [(u, r) for u, r in resources_of(value) if r.get("resourceType") == "Medication"]
    return found
