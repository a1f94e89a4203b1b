"""A hook call's request, checked against the contract and read: the hook, the patient, the FHIR server and
its authorization, and the draft orders (ids filled in) with the MedicationRequests among them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .contract import (
    MAX_ACCESS_TOKEN_CHARS,
    MAX_DRAFT_ORDERS,
    MAX_TEXT_CHARS,
    BadRequest,
    object_field,
    string_field,
)
from .discovery import ORDER_HOOKS, CdsService

Json = dict[str, Any]


@dataclass
class DraftOrder:
    """A MedicationRequest of ``context.draftOrders``: as sent, and as put in the record (with an id)."""

    original: Json
    in_record: Json
    full_url: str | None
    order_id: str


@dataclass
class HookRequest:
    hook: str
    hook_instance: str
    fhir_server: str | None
    fhir_authorization: Mapping[str, Any] | None
    context: Json
    prefetch: Mapping[str, Any] | None
    patient_id: str
    drafts: list[tuple[str | None, Json]]  # every draftOrders entry resource, ids filled in
    orders: list[DraftOrder]  # the MedicationRequests among them
    selections: frozenset[str] | None = field(default=None)


def _reference_key(reference: str) -> str:
    """``MedicationRequest/1``, also from an absolute URL or with a version (``.../_history/2``)."""
    parts = [p for p in reference.split("/") if p]
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    return "/".join(parts[-2:])


def _patient_id(value: str) -> str:
    # CDS Hooks sends the bare id; some clients (e.g. the CDC opioid IG's examples) send "Patient/<id>".
    return value.split("/", 1)[1] if value.startswith("Patient/") and value.count("/") == 1 else value


def _authorization(data: Mapping[str, Any]) -> Mapping[str, Any] | None:
    auth = object_field(data, "fhirAuthorization", "", required=False)
    if auth is None:
        return None
    string_field(auth, "access_token", "fhirAuthorization.", limit=MAX_ACCESS_TOKEN_CHARS)
    token_type = string_field(auth, "token_type", "fhirAuthorization.")
    if token_type is None or token_type.lower() != "bearer":
        raise BadRequest("fhirAuthorization.token_type must be Bearer")
    expires_in = auth.get("expires_in")
    if isinstance(expires_in, bool) or not isinstance(expires_in, int):
        raise BadRequest("fhirAuthorization.expires_in must be an integer (the token's lifetime in seconds)")
    for key in ("scope", "subject", "patient"):
        if key in auth and not isinstance(auth[key], str):
            raise BadRequest(f"fhirAuthorization.{key} must be a string")
    if not isinstance(data.get("fhirServer"), str):
        raise BadRequest("fhirServer is required when fhirAuthorization is given")
    return auth


def parse_hook_request(data: Mapping[str, Any], service: CdsService) -> HookRequest:
    hook = string_field(data, "hook", "")
    if hook != service.hook:
        raise BadRequest(f"the service {service.id} answers the {service.hook} hook, not {hook}")
    hook_instance = string_field(data, "hookInstance", "")
    fhir_server = string_field(data, "fhirServer", "", required=False, limit=MAX_TEXT_CHARS)
    authorization = _authorization(data)
    context = object_field(data, "context", "")
    assert context is not None and hook is not None and hook_instance is not None
    patient = string_field(context, "patientId", "context.")
    assert patient is not None
    string_field(context, "userId", "context.", required=False)
    string_field(context, "encounterId", "context.", required=False)
    selections: frozenset[str] | None = None
    if service.hook == "order-select":
        raw = context.get("selections")
        if not isinstance(raw, list) or not all(isinstance(s, str) and s for s in raw):
            raise BadRequest("context.selections must be an array of references (e.g. MedicationRequest/1)")
        selections = frozenset(_reference_key(s) for s in raw)
    drafts, orders = _draft_orders(context) if service.hook in ORDER_HOOKS else ([], [])
    prefetch = data.get("prefetch")
    if prefetch is not None and not isinstance(prefetch, Mapping):
        raise BadRequest("prefetch must be a JSON object")
    return HookRequest(
        hook,
        hook_instance,
        fhir_server,
        authorization,
        dict(context),
        prefetch,
        _patient_id(patient),
        drafts,
        orders,
        selections,
    )


def _draft_orders(context: Mapping[str, Any]) -> tuple[list[tuple[str | None, Json]], list[DraftOrder]]:
    """Every ``context.draftOrders`` resource as put in the record (ids filled in), and the
    MedicationRequests among them."""
    draft_bundle = object_field(context, "draftOrders", "context.")
    assert draft_bundle is not None
    if draft_bundle.get("resourceType") == "Bundle":
        entries = draft_bundle.get("entry", [])
    elif isinstance(draft_bundle.get("resourceType"), str):
        # CDS Hooks 2.0 sends a Bundle; a single order resource (as some 1.0-era clients and the CDC opioid
        # IG's examples send) is unambiguous, so it is read as a Bundle of one rather than refused.
        entries = [{"resource": draft_bundle}]
    else:
        raise BadRequest("context.draftOrders must be a FHIR Bundle of the draft orders")
    if not isinstance(entries, list):
        raise BadRequest("context.draftOrders.entry must be an array")
    if len(entries) > MAX_DRAFT_ORDERS:
        raise BadRequest(
            f"context.draftOrders holds {len(entries)} entries; this service reads at most "
            f"{MAX_DRAFT_ORDERS} draft orders in one call",
            "too-many-draft-orders",
        )
    drafts: list[tuple[str | None, Json]] = []
    orders: list[DraftOrder] = []
    seen_ids: set[tuple[str, str]] = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise BadRequest(f"context.draftOrders.entry[{i}] must be a JSON object")
        resource = entry.get("resource")
        if not isinstance(resource, Mapping) or not isinstance(resource.get("resourceType"), str):
            raise BadRequest(f"context.draftOrders.entry[{i}].resource must be a FHIR resource")
        full_url = entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None
        in_record = dict(resource)
        rid = resource.get("id")
        if not isinstance(rid, str) or not rid:
            rid = f"ketamine-cds-draft-{i}"  # internal only: suggestions carry the order as sent
            in_record["id"] = rid
        elif (resource["resourceType"], rid) in seen_ids:
            # The record keeps one resource per id, so the other order would go unchecked.
            raise BadRequest(
                f"context.draftOrders.entry[{i}].resource: two draft {resource['resourceType']}s have the "
                f"id {rid!r}; each draft order needs its own id"
            )
        seen_ids.add((resource["resourceType"], rid))
        if resource["resourceType"] == "MedicationRequest" and "status" not in resource:
            in_record["status"] = "draft"  # a draft order by definition (status is required in FHIR anyway)
        drafts.append((full_url, in_record))
        if resource["resourceType"] == "MedicationRequest":
            orders.append(DraftOrder(dict(resource), in_record, full_url, rid))
    return drafts, orders
