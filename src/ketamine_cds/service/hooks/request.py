"""A hook call's request, checked against the contract and read: the hook, the patient, the FHIR server and
its authorization, and the draft orders (ids filled in) with the MedicationRequests among them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .contract import DraftOrders, HookRequestBody, checked, draft_id
from .discovery import CdsService

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


def parse_hook_request(data: Mapping[str, Any], service: CdsService) -> HookRequest:
    """The request read by the contract (``BadRequest`` when it does not follow it); the context, the
    authorization and the prefetch kept as sent."""
    body = checked(HookRequestBody, data, service)
    selections: frozenset[str] | None = None
    if service.hook == "order-select":
        selections = frozenset(_reference_key(s) for s in body.context.selections or ())
    drafts, orders = _draft_orders(body.context.draftOrders)
    return HookRequest(
        body.hook,
        body.hookInstance,
        body.fhirServer,
        data.get("fhirAuthorization"),
        dict(data["context"]),
        data.get("prefetch"),
        _patient_id(body.context.patientId),
        drafts,
        orders,
        selections,
    )


def _draft_orders(bundle: DraftOrders | None) -> tuple[list[tuple[str | None, Json]], list[DraftOrder]]:
    """Every ``context.draftOrders`` resource as put in the record (ids filled in), and the
    MedicationRequests among them (none at patient-view)."""
    drafts: list[tuple[str | None, Json]] = []
    orders: list[DraftOrder] = []
    for i, entry in enumerate(bundle.entry if bundle is not None else ()):
        resource = entry.resource
        in_record = dict(resource)
        in_record["id"] = rid = draft_id(resource, i)
        if resource["resourceType"] == "MedicationRequest" and "status" not in resource:
            in_record["status"] = "draft"  # a draft order by definition (status is required in FHIR anyway)
        drafts.append((entry.fullUrl, in_record))
        if resource["resourceType"] == "MedicationRequest":
            orders.append(DraftOrder(dict(resource), in_record, entry.fullUrl, rid))
    return drafts, orders
