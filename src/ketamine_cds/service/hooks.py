"""CDS Hooks 2.0: discovery, the ketamine order-select, order-sign and patient-view services, and their
feedback endpoints.

An order hook call: parse and check the request (400 when malformed, 404 for an unknown service); find the
ketamine MedicationRequests among ``context.draftOrders`` (at order-select only the selected ones); without
one, answer ``{"cards": []}`` at once. Otherwise gather the record (``record.py``: the prefetch, else the
client's FHIR server, else named as not read), assess each ketamine order with the engine, turn the
assessment into cards (``cards.py``) and record it in the audit trail before answering. Data that could not
be had is passed to the engine as unknown, and a card names it; the call is answered 412 only when the patient
cannot be read at all (the order is in the request). patient-view is ``patient_view.py``'s.

The hook handler runs on the event loop: with a complete prefetch (the usual case) the work is a fraction of
a millisecond of computing, and a hop to a pool thread and back would cost a third as much again. What can
block goes elsewhere: reads from the client's FHIR server and the assessment of an unusually large record
run in the thread pool; the audit write goes through ``store.AuditWriter``, which commits SQLite rows from
the loop only when nothing holds the database, and otherwise (and always on PostgreSQL) on its own thread.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
import traceback
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._assessment import Assessment
from .._engine import assess
from .._errors import DuplicateKeyError, InputError, NotJSONError
from .._facts import Facts
from .._inputs import parse_json
from .._kb import KnowledgeBase
from .._opioids import Presence, opioid_status
from .._site import Site
from ..adapters.fhir import facts_for_orders, facts_from_resources, is_ketamine_request
from . import prefetch as pf
from .auth import authenticate
from .cards import BuiltCard, cards_for, data_not_read_card, most_urgent_first, not_checked_card
from .logsafe import loggable
from .record import Gathered, Reader, gather, read_medications, resolve_references
from .settings import Settings
from .store import (
    RETRY_AFTER_S,
    AssessmentRecord,
    AuditWriter,
    CardRecord,
    FeedbackRecord,
    Store,
    pseudonym,
)

log = logging.getLogger("ketamine_cds.service.hooks")
Json = dict[str, Any]
Record = list[tuple[str | None, Json]]  # (fullUrl, resource): the drafts and what was prefetched

# CORS (CDS Hooks 2.0: browser-based clients such as the CDS Hooks sandbox need it). A browser shows a script
# only the response headers it is told it may read: the authentication challenge, when to try again, and the
# development warning are exposed. A preflight allows the request headers the service reads.
DEV_WARNING_HEADER = "X-Ketamine-CDS-Warning"
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": f"WWW-Authenticate, Retry-After, {DEV_WARNING_HEADER}",
}
READ_HEADERS = ("Authorization", "Content-Type", "Accept", "Accept-Language", "Content-Language")
PREFLIGHT_HEADERS = {
    **CORS_HEADERS,
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": ", ".join(READ_HEADERS),
    "Access-Control-Max-Age": "600",
}


class _CORSRoute(APIRoute):
    """CORS on every CDS Hooks response, errors included (CDS Hooks 2.0: browser-based clients need it)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_cors(request: Request) -> Response:
            try:
                response = await handler(request)
            except StarletteHTTPException as exc:
                exc.headers = {**(exc.headers or {}), **CORS_HEADERS}
                raise
            response.headers.update(CORS_HEADERS)
            return response

        return with_cors


router = APIRouter(route_class=_CORSRoute, tags=["CDS Hooks"])


SELECT_ID, SIGN_ID, VIEW_ID = "ketamine-order-select", "ketamine-order-sign", "ketamine-patient-view"
SERVICE_IDS = [SELECT_ID, SIGN_ID, VIEW_ID]
ORDER_HOOKS = ("order-select", "order-sign")


@dataclass(frozen=True)
class CdsService:
    id: str
    hook: str
    title: str
    description: str
    prefetch: Mapping[str, str]


_BUILT: dict[int, tuple[KnowledgeBase, dict[str, CdsService]]] = {}


def _services(kb: KnowledgeBase) -> dict[str, CdsService]:
    """The services of this knowledge base, built once (every hook call looks its service up here)."""
    built = _BUILT.get(id(kb))
    if built is None or built[0] is not kb:
        if len(_BUILT) >= 8:  # an app holds one knowledge base; tests make many apps
            _BUILT.clear()
        built = _BUILT[id(kb)] = (kb, _build_services(kb))
    return built[1]


def _build_services(kb: KnowledgeBase) -> dict[str, CdsService]:
    bolus = kb.threshold("dose-bolus-limit", "limit_mg_per_kg")
    infusion = kb.threshold("dose-infusion-limit", "limit_mg_per_kg_per_h")
    limits = (
        f"IV bolus {float(bolus):g} mg/kg; IV infusion {float(infusion):g} mg/kg/h outside intensive care"
    )
    order_prefetch = pf.templates(kb)
    services = (
        CdsService(
            SELECT_ID,
            "order-select",
            "Ketamine for pain: guideline check while ordering",
            f"When a ketamine order is selected, shows what the {kb.guideline} say for this patient: the "
            "supporting statements with their grade and certainty, cautions, contraindications found in the "
            f"record, missing information, and the dose limits for the patient's weight ({limits}).",
            order_prefetch,
        ),
        CdsService(
            SIGN_ID,
            "order-sign",
            "Ketamine for pain: contraindication and dose-limit check at signing",
            "When a ketamine order is signed, interrupts only for a contraindication the record shows or an "
            f"IV dose over the limit of the {kb.guideline} ({limits}), with a suggestion that changes the "
            "dose to the limit and coded override reasons.",
            order_prefetch,
        ),
        CdsService(
            VIEW_ID,
            "patient-view",
            "Ketamine for pain: running infusion and new contraindications when a chart is opened",
            "When the chart of a patient with an active ketamine order is opened, shows whether the running "
            f"dose is within the limits of the {kb.guideline} for the current weight and setting ({limits}), "
            "contraindications recorded since it was ordered, and, after a recent IV infusion course for "
            "chronic pain, the follow-up the guideline supports. Information and warnings only; nothing when "
            "the record holds no active or recent ketamine order.",
            pf.patient_view_templates(kb),
        ),
    )
    return {s.id: s for s in services}


USAGE_REQUIREMENTS = (
    "Call ketamine-order-sign on order-sign: it is the safety check (contraindications and dose limits); "
    "ketamine-order-select adds the supporting evidence and cautions while ordering; ketamine-patient-view "
    "checks a running ketamine infusion when a chart is opened (information and warnings only). Draft orders "
    "must be FHIR R4 MedicationRequests (ketamine by RxNorm code or name, route and doses in "
    "dosageInstruction). Every prefetch template is in the subset CDS Hooks recommends; a key whose search "
    "finds nothing may be null or an empty Bundle. What is not prefetched, and the Medication and Location "
    "that orders and the encounter reference, is read from fhirServer: with fhirAuthorization over https, "
    "or without a token from a FHIR server the service's operator lists. Data that cannot be had is named "
    "in a card and the check is made without it; the service answers 412 only when the patient (at "
    "patient-view, the ketamine orders) cannot be read at all. Calls need a signed JWT (Authorization: "
    "Bearer) from a CDS Client on the service's trust list. Decision support for clinicians, not a "
    "substitute for their judgement."
)


def _discovery(kb: KnowledgeBase) -> Json:
    return {
        "services": [
            {
                "hook": s.hook,
                "title": s.title,
                "description": s.description,
                "id": s.id,
                "prefetch": dict(s.prefetch),
                "usageRequirements": USAGE_REQUIREMENTS,
            }
            for s in _services(kb).values()
        ]
    }


# --- request bodies ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Body:
    data: Json | None = None
    error: str | None = None
    code: str | None = None  # the input error's stable code (``InputError.code``), where there is one


async def _json_body(request: Request) -> _Body:
    """The body as a JSON object (numbers exact), or why it is not one; read here so that a sync handler can
    check the service id first and answer 404 before complaining about the body."""
    raw = await request.body()
    if not raw.strip():
        return _Body(error="the request body is empty; a JSON object is required")
    try:
        data = parse_json(raw)
    except DuplicateKeyError as exc:  # JSON, but ambiguous: a key written twice in one object
        return _Body(error=f"the request body cannot be read: {exc.message}", code=exc.code)
    except NotJSONError as exc:
        return _Body(error=f"the request body is not JSON: {exc.message}", code=exc.code)
    except InputError as exc:  # JSON, but a number no input can hold (out of range)
        return _Body(error=f"the request body cannot be read: {exc}", code=exc.code)
    except RecursionError:
        return _Body(error="the request body is nested too deeply")
    if not isinstance(data, dict):
        return _Body(error="the request body must be a JSON object")
    return _Body(data)


Body = Annotated[_Body, Depends(_json_body)]
# The OpenAPI document lists the service ids; any other id is answered 404 by the handler (not 422).
_SERVICE_ID = "a service id from discovery"
ServiceId = Annotated[str, Path(description=_SERVICE_ID, json_schema_extra={"enum": SERVICE_IDS})]
Issuer = Annotated[str | None, Depends(authenticate)]
_SERVICE_ID_PARAMETER: Json = {
    "name": "service_id",
    "in": "path",
    "required": True,
    "description": _SERVICE_ID,
    "schema": {"type": "string", "title": "Service Id", "enum": SERVICE_IDS},
}


class BadRequest(ValueError):
    """A hook request that does not follow CDS Hooks 2.0: answered with 400, this message and a stable
    ``code`` (``invalid-request``; ``field-too-long`` and ``control-character`` for strings the service would
    store or log)."""

    def __init__(self, message: str, code: str = "invalid-request") -> None:
        super().__init__(message)
        self.code = code


# Every string the service stores or logs is bounded (CDS Hooks gives no limits; these are generous):
MAX_ID_CHARS = 256  # hookInstance, patient, user and encounter ids, card and suggestion ids, codes
MAX_TEXT_CHARS = 2048  # URLs (fhirServer, a code system) and a reason's display
MAX_COMMENT_CHARS = 8192  # a clinician's userComment
MAX_ACCESS_TOKEN_CHARS = 16384
MAX_DRAFT_ORDERS = 200  # entries of context.draftOrders read in one call (an order set rarely holds 100)


def _error(status: int, message: str, *, retry: bool = False, **extra: Any) -> JSONResponse:
    headers = {"Retry-After": RETRY_AFTER_S} if retry else None
    given = {k: v for k, v in extra.items() if v is not None}  # e.g. code: only where there is one
    return JSONResponse({"error": message, **given}, status_code=status, headers=headers)


def _string(
    data: Mapping[str, Any],
    key: str,
    where: str,
    *,
    required: bool = True,
    limit: int = MAX_ID_CHARS,
    text: bool = False,
) -> str | None:
    """A non-empty string of at most ``limit`` characters; an identifier (``text`` False) has no control
    character either (a line break in it could forge a log line), while text may have line breaks."""
    value = data.get(key)
    if value is None and not required:
        return None  # absent (a null optional field is read as absent)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{where}{key} must be a non-empty string")
    _storable(value, f"{where}{key}", limit)
    if not text and not value.isprintable():
        raise BadRequest(
            f"{where}{key} must not contain control characters (line breaks, tabs, separators)",
            "control-character",
        )
    return value


def _storable(value: str, field: str, limit: int) -> None:
    """Strings the service stores must be storable everywhere (PostgreSQL text cannot hold NUL) and
    bounded."""
    if len(value) > limit:
        raise BadRequest(f"{field} is longer than {limit} characters", "field-too-long")
    if "\x00" in value:
        raise BadRequest(f"{field} must not contain a NUL character", "control-character")


def _object(
    data: Mapping[str, Any], key: str, where: str, *, required: bool = True
) -> Mapping[str, Any] | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, Mapping):
        raise BadRequest(f"{where}{key} must be a JSON object")
    return value


# --- the hook request -------------------------------------------------------------------------------


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
    auth = _object(data, "fhirAuthorization", "", required=False)
    if auth is None:
        return None
    _string(auth, "access_token", "fhirAuthorization.", limit=MAX_ACCESS_TOKEN_CHARS)
    token_type = _string(auth, "token_type", "fhirAuthorization.")
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
    hook = _string(data, "hook", "")
    if hook != service.hook:
        raise BadRequest(f"the service {service.id} answers the {service.hook} hook, not {hook}")
    hook_instance = _string(data, "hookInstance", "")
    fhir_server = _string(data, "fhirServer", "", required=False, limit=MAX_TEXT_CHARS)
    authorization = _authorization(data)
    context = _object(data, "context", "")
    assert context is not None and hook is not None and hook_instance is not None
    patient = _string(context, "patientId", "context.")
    assert patient is not None
    _string(context, "userId", "context.", required=False)
    _string(context, "encounterId", "context.", required=False)
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
    draft_bundle = _object(context, "draftOrders", "context.")
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


# --- which drafts are ketamine orders ----------------------------------------------------------------


def _is_ketamine_order(
    order: DraftOrder, medications: list[tuple[str | None, Json]], kb: KnowledgeBase
) -> bool:
    """The FHIR reader alone decides what ketamine is (RxNorm code or name, its Medication), whatever the
    draft's status: one that is not draft or active is answered "not checked" (``_status_outcome``)."""
    for known in (medications, []):  # without the Medications if one of them is unreadable
        try:
            return is_ketamine_request(order.in_record, known, kb=kb)
        except Exception:
            continue
    return True  # cannot tell: assess it, so that a broken ketamine order is reported, not passed over


def _ketamine_orders(
    req: HookRequest, kb: KnowledgeBase, read: list[tuple[str | None, Json]]
) -> list[DraftOrder]:
    """The selected drafts that are ketamine orders; ``read``: Medications read from the FHIR server."""
    orders = [
        order
        for order in req.orders
        if req.selections is None or f"MedicationRequest/{order.order_id}" in req.selections
    ]
    medications: list[tuple[str | None, Json]] = []
    if any("medicationReference" in order.in_record for order in orders):  # else no Medication is read
        medications = [(u, r) for u, r in req.drafts if r.get("resourceType") == "Medication"]
        medications += pf.medications(req.prefetch or {}) + read
    index = _medication_index(medications)
    return [
        order for order in orders if _is_ketamine_order(order, _referenced(order, medications, index), kb)
    ]


def _medication_index(medications: list[tuple[str | None, Json]]) -> dict[str, list[int]]:
    """Where each Medication is in the list, by the names a reference may use for it: its fullUrl, its id."""
    index: dict[str, list[int]] = {}
    for i, (full_url, medication) in enumerate(medications):
        names = {full_url.strip()} if isinstance(full_url, str) and full_url.strip() else set()
        if isinstance(medication.get("id"), str) and medication["id"]:
            names.add(medication["id"])
        for name in names:
            index.setdefault(name, []).append(i)
    return index


def _referenced(
    order: DraftOrder, medications: list[tuple[str | None, Json]], index: dict[str, list[int]]
) -> list[tuple[str | None, Json]]:
    """The Medications the order's reference may name (its fullUrl, or an id that is one of its path
    segments: more than the reader will match, never fewer), in their order: each order is read with a few
    Medications, not with all of them, so that telling many drafts apart takes work in proportion to them."""
    reference = order.in_record.get("medicationReference")
    target = reference.get("reference") if isinstance(reference, Mapping) else None
    if not isinstance(target, str):
        return []
    found = set(index.get(target.strip(), ()))
    for part in target.strip().split("/"):
        found.update(index.get(part, ()))
    return [medications[i] for i in sorted(found)]


async def _draft_medications(req: HookRequest, reader: Reader) -> Gathered:
    """The Medications the draft orders reference and the request does not hold, read from the FHIR server
    when the service may: without them a draft named only by its Medication could not be told apart."""
    found = Gathered()
    referencing = [(o.full_url, o.in_record) for o in req.orders if "medicationReference" in o.in_record]
    if referencing:
        known = [*req.drafts, *pf.medications(req.prefetch or {})]
        await resolve_references(
            found, referencing, reader, fields=("medicationReference",), rounds=1, held=known
        )
    return found


# --- the record --------------------------------------------------------------------------------------


def reader_for(req: HookRequest, request: Request, received_at: float) -> Reader:
    settings: Settings = request.app.state.settings
    return Reader(
        req.fhir_server,
        req.fhir_authorization,
        received_at=received_at,
        timeout_s=settings.fhir_timeout_s,
        max_bytes=settings.fhir_max_bytes,
        listed=request.app.state.fhir_servers,
    )


def context_of(req: HookRequest) -> Json:
    return {**req.context, "patientId": req.patient_id}


def with_unknowns(facts: Facts, unread: list[str], kb: KnowledgeBase) -> Facts:
    """The facts with what could not be read passed on as unknown, never as absent: the conditions (what was
    found elsewhere, e.g. a pregnancy status, stays present), and the opioids unless those read already show
    tolerance. The rest already reads as unknown when missing (no weight, setting unknown, no concentration,
    no IV course found)."""
    if "conditions" in unread and facts.conditions is not None:
        facts = replace(facts, conditions=None, stated=facts.stated + facts.conditions)
    if (
        "opioids" in unread
        and facts.opioids is not None
        and opioid_status(facts, kb).tolerant is not Presence.PRESENT
    ):
        facts = replace(facts, opioids=None)
    return facts


class PreconditionFailed(Exception):
    """The question cannot be answered at all: answered 412, and recorded as such."""

    def __init__(self, reason: str, missing: list[str], unread: list[str]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.missing = missing  # prefetch keys
        self.unread = unread  # data names


def precondition(gathered: Gathered, needed: tuple[str, ...], templates: Mapping[str, str]) -> None:
    """Raise ``PreconditionFailed`` when a datum without which nothing can be said was not read."""
    for datum in needed:
        if datum in gathered.unread:
            keys = gathered.missing_keys(datum)
            reason = "; ".join(dict.fromkeys(gathered.reasons[k] for k in keys))
            missing = [k for k in dict.fromkeys(k for d in gathered.unread_data for k in gathered.unread[d])]
            raise PreconditionFailed(
                f"{'the patient' if datum == 'patient' else datum} could not be read: {reason}",
                [k for k in missing if k in templates],
                gathered.unread_data,
            )


# --- assessing the orders ----------------------------------------------------------------------------


@dataclass
class _Outcome:
    cards: list[BuiltCard]
    verdict: str
    statements: tuple[str, ...]
    kb_version: str


def _assess_order(
    order: DraftOrder,
    record: Record,
    req: HookRequest,
    kb: KnowledgeBase,
    as_of: dt.date,
    base_url: str,
    unread: list[str],
    site: Site | None = None,
    read: Facts | Exception | None = None,
) -> _Outcome:
    """``read``: the order's facts (or the error reading them raised) when they were read with the other
    orders of the call (``facts_for_orders``); else they are read here.

    Input the engine rejects (bad units, an impossible weight, no route...) gets 200 and one warning
    card saying the order was not checked, and why. CDS Hooks 2.0 lets a service answer errors with 4xx, but
    a client shows no error to the clinician: the order would look checked when it was not. A card is what
    the clinician sees; the specification prescribes nothing else for a request that is well formed but
    clinically unreadable."""
    assessment: Assessment
    try:
        if read is None:
            read = facts_from_resources(record, as_of=as_of, kb=kb, order_id=order.order_id, site=site)
        elif isinstance(read, Exception):
            raise read
        assessment = assess(with_unknowns(read, unread, kb), kb, site)
        built = cards_for(assessment, hook=req.hook, order=order.original, base_url=base_url, site=site)
    except InputError as exc:
        return _Outcome([not_checked_card(exc)], "input-error", (), kb.version)
    except Exception as exc:  # no input may turn into a 500: the clinician gets a card, the team the frames
        log_unexpected(exc, "assessing a ketamine order")
        return _Outcome([not_checked_card(None)], "internal-error", (), kb.version)
    not_read = data_not_read_card(unread, hook=req.hook, assessment=assessment) if unread else None
    return _Outcome(
        most_urgent_first(built + ([not_read] if not_read is not None else [])),
        assessment.verdict.value,
        assessment.statement_ids,
        assessment.knowledge_base_version,
    )


CHECKED_STATUSES = ("draft", "active")  # the statuses of a ketamine order the service checks
NOT_CHECKED = "not-checked"  # the verdict recorded for a ketamine order of another status


def _status_outcome(order: DraftOrder, kb: KnowledgeBase) -> _Outcome:
    """A ketamine draft that is on hold, completed, cancelled, of unknown status...: not assessed (the
    guideline's checks are for an order about to be given), and said so on a warning card, never passed over
    with no card as if it had been checked."""
    status = order.in_record.get("status")
    shown = status.strip()[:40] if isinstance(status, str) and status.strip() else repr(status)[:40]
    error = InputError(
        f"MedicationRequest/{order.order_id}.status",
        f"status {shown} (only a draft or active ketamine order is checked)",
    )
    return _Outcome([not_checked_card(error)], NOT_CHECKED, (), kb.version)


def log_unexpected(exc: Exception, doing: str) -> None:
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("unexpected %s while %s (values withheld):\n%s", type(exc).__name__, doing, frames)


def _app_state(request: Request) -> tuple[Settings, KnowledgeBase, Store]:
    state = request.app.state
    return state.settings, state.kb, state.store


# --- endpoints ---------------------------------------------------------------------------------------

_HOOK_REQUEST_SCHEMA: Json = {
    "type": "object",
    "required": ["hook", "hookInstance", "context"],
    "properties": {
        "hook": {"type": "string", "enum": ["order-select", "order-sign", "patient-view"]},
        "hookInstance": {"type": "string"},
        "fhirServer": {"type": "string"},
        "fhirAuthorization": {
            "type": "object",
            "required": ["access_token", "token_type", "expires_in", "scope", "subject"],
            "properties": {
                "access_token": {"type": "string"},
                "token_type": {"type": "string", "enum": ["Bearer"]},
                "expires_in": {"type": "integer"},
                "scope": {"type": "string"},
                "subject": {"type": "string"},
                "patient": {"type": "string"},
            },
        },
        "context": {
            "type": "object",
            "required": ["patientId"],
            "description": (
                "draftOrders is required at order-select and order-sign; selections too at order-select"
            ),
            "properties": {
                "userId": {"type": "string"},
                "patientId": {"type": "string"},
                "encounterId": {"type": "string"},
                "selections": {"type": "array", "items": {"type": "string"}},
                "draftOrders": {"type": "object"},
            },
        },
        "prefetch": {"type": "object"},
    },
}
_FEEDBACK_SCHEMA: Json = {
    "type": "object",
    "required": ["feedback"],
    "properties": {
        "feedback": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["card", "outcome"],
                "properties": {
                    "card": {"type": "string"},
                    "outcome": {"type": "string", "enum": ["accepted", "overridden"]},
                    "acceptedSuggestions": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["id"],
                            "properties": {"id": {"type": "string"}},
                        },
                    },
                    "overrideReason": {
                        "type": "object",
                        "properties": {
                            "reason": {
                                "type": "object",
                                "required": ["code", "system"],
                                "properties": {
                                    "code": {"type": "string"},
                                    "system": {"type": "string"},
                                    "display": {"type": "string"},
                                },
                            },
                            "userComment": {"type": "string"},
                        },
                    },
                    "outcomeTimestamp": {"type": "string"},
                },
            },
        }
    },
}


def _body_spec(schema: Json) -> Json:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "Malformed request",
        401: "No valid JWT",
        404: "Unknown service",
        412: "The patient (patient-view: the ketamine orders) not prefetched, nor readable from fhirServer",
        503: "The database (audit trail, feedback, token ids) is unavailable; try again after Retry-After",
    }
    return {code: {"description": text[code]} for code in codes}


@router.get("/cds-services", summary="CDS Hooks discovery")
def discovery(request: Request) -> JSONResponse:
    return JSONResponse(_discovery(request.app.state.kb))


@router.options("/cds-services", include_in_schema=False)
@router.options("/cds-services/{service_id}", include_in_schema=False)
@router.options("/cds-services/{service_id}/feedback", include_in_schema=False)
def preflight(request: Request) -> Response:
    """A CORS preflight: every header the service reads is allowed, whichever the browser asks about."""
    return Response(status_code=204, headers=PREFLIGHT_HEADERS)


@router.post(
    "/cds-services/{service_id}",
    summary="Call a CDS service (order-select, order-sign or patient-view)",
    openapi_extra={**_body_spec(_HOOK_REQUEST_SCHEMA), "parameters": [_SERVICE_ID_PARAMETER]},
    responses=_errors(400, 401, 404, 412, 503),
)
async def call_service(request: Request) -> JSONResponse:
    # The hot path: the caller, the path and the body are read here, not declared as dependencies (the
    # feedback route's style), which spares every call FastAPI's dependency solving (tens of us). Same
    # order of answers: 401, then 404, then 400.
    started, received_at = time.perf_counter(), time.monotonic()
    issuer = await authenticate(request)
    kb: KnowledgeBase = request.app.state.kb
    service_id = request.path_params["service_id"]
    service = _services(kb).get(service_id)
    if service is None:
        return _error(404, f"no CDS service {service_id!r}; see GET /cds-services")
    body = await _json_body(request)
    if body.data is None:
        return _error(400, body.error or "a JSON object is required", code=body.code or "invalid-request")
    try:
        req = parse_hook_request(body.data, service)
    except BadRequest as exc:
        return _error(400, str(exc), code=exc.code)
    call = Call(request, req, service, issuer, started, reader_for(req, request, received_at))
    try:
        if service.hook == "patient-view":
            from .patient_view import answer_patient_view

            return await answer_patient_view(call)
        return await _answer_orders(call)
    except pf.PrefetchError as exc:
        return _error(400, str(exc), code="invalid-request")
    except PreconditionFailed as exc:
        return await _precondition_failed(call, exc)


@dataclass
class Call:
    """One hook call being answered."""

    request: Request
    req: HookRequest
    service: CdsService
    issuer: str | None
    started: float  # time.perf_counter() at arrival
    reader: Reader

    @property
    def settings(self) -> Settings:
        settings: Settings = self.request.app.state.settings
        return settings

    @property
    def kb(self) -> KnowledgeBase:
        kb: KnowledgeBase = self.request.app.state.kb
        return kb

    @property
    def site(self) -> Site | None:
        site: Site | None = getattr(self.request.app.state, "site", None)
        return site

    def latency_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def row(
        self,
        verdict: str | None,
        statements: tuple[str, ...],
        cards: list[BuiltCard],
        unread: list[str],
        kb_version: str | None = None,
    ) -> AssessmentRecord:
        """One audit row of this call: an assessment made (with the data it lacked), or a 412 (no verdict)."""
        completeness = "precondition-failed" if verdict is None else ("partial" if unread else "full")
        return AssessmentRecord(
            id=str(uuid.uuid4()),
            created_at=dt.datetime.now(dt.UTC),
            service=self.service.id,
            hook=self.req.hook,
            hook_instance=self.req.hook_instance,
            client=self.issuer,
            kb_version=kb_version or self.kb.version,
            verdict=verdict,
            statements=statements,
            patient=pseudonym(self.settings.pseudonym_secret, self.req.patient_id),
            latency_ms=self.latency_ms(),
            cards=tuple(CardRecord(c.card["uuid"], c.statement, c.indicator) for c in cards),
            completeness=completeness,
            unread=tuple(unread),
            site=self.site.label if self.site is not None else None,
        )

    async def answer(self, rows: list[AssessmentRecord], cards: list[BuiltCard], what: str) -> JSONResponse:
        """The cards, once the rows are in the audit trail (503 and no cards if they cannot be written)."""
        try:
            await _audit(self.request).write(rows)
        except Exception as exc:
            log.error("audit trail not written (%s): the cards are withheld", type(exc).__name__)
            return _error(503, "the audit trail could not be written; try again", retry=True)
        log.info(
            "%s %s: %s, %d card(s), verdicts %s%s, %.0f ms",
            self.service.id,
            loggable(self.req.hook_instance),
            what,
            len(cards),
            ",".join(str(r.verdict) for r in rows),
            f", not read: {','.join(rows[0].unread)}" if rows and rows[0].unread else "",
            self.latency_ms(),
        )
        return JSONResponse({"cards": [c.card for c in cards]})


async def _answer_orders(call: Call) -> JSONResponse:
    req, kb, settings = call.req, call.kb, call.settings
    as_of = dt.date.today()
    from_drafts = await _draft_medications(req, call.reader)
    orders = _ketamine_orders(req, kb, read_medications(from_drafts))
    if not orders:
        return JSONResponse({"cards": []})
    checked = [o.in_record.get("status") in CHECKED_STATUSES for o in orders]
    not_checked = [_status_outcome(o, kb) for o, ok in zip(orders, checked, strict=True) if not ok]
    orders = [o for o, ok in zip(orders, checked, strict=True) if ok]
    if not orders:
        rows = [call.row(o.verdict, o.statements, o.cards, [], o.kb_version) for o in not_checked]
        cards = [c for outcome in not_checked for c in outcome.cards]
        return await call.answer(rows, cards, f"{len(not_checked)} ketamine order(s) not checked (status)")
    gathered = await gather(req.prefetch, call.service.prefetch, context_of(req), call.reader)
    gathered.data.update(from_drafts.data)
    ordered = [(o.full_url, o.in_record) for o in orders]
    await resolve_references(
        gathered, ordered, call.reader, failed_before=from_drafts.reasons, held=req.drafts
    )
    precondition(gathered, ("patient",), call.service.prefetch)
    record = pf.record_resources(gathered.data, req.drafts)
    unread = gathered.unread_data
    args = (orders, record, req, kb, as_of, settings.base_url, unread, call.site)
    if len(record) > LOOP_ENTRIES or len(orders) > LOOP_ORDERS:  # would hold up the loop: a pool thread
        outcomes = await run_in_threadpool(_assess_orders, *args)
    else:
        outcomes = _assess_orders(*args)
    outcomes += not_checked
    rows = [call.row(o.verdict, o.statements, o.cards, unread, o.kb_version) for o in outcomes]
    cards = [c for outcome in outcomes for c in outcome.cards]
    return await call.answer(rows, cards, f"{len(outcomes)} ketamine order(s)")


async def _precondition_failed(call: Call, exc: PreconditionFailed) -> JSONResponse:
    """412, recorded in the audit trail like every other answer (no verdict, no cards)."""
    log.info("%s %s: 412, %s", call.service.id, loggable(call.req.hook_instance), exc.reason)
    try:
        await _audit(call.request).write([call.row(None, (), [], exc.unread)])
    except Exception as error:
        log.error("audit trail not written (%s): the 412 is withheld", type(error).__name__)
        return _error(503, "the audit trail could not be written; try again", retry=True)
    what = "the ketamine orders" if call.service.hook == "patient-view" else "the ketamine order"
    return _error(
        412,
        f"the data needed to check {what} is not available: {exc.reason}",
        missingPrefetch=exc.missing,
    )


LOOP_ENTRIES = 400  # a record with more entries is assessed in the thread pool (a few ms of reading)
LOOP_ORDERS = 16  # and so are more ketamine orders than this (each is assessed and given its cards)


def _assess_orders(
    orders: list[DraftOrder],
    record: Record,
    req: HookRequest,
    kb: KnowledgeBase,
    as_of: dt.date,
    base_url: str,
    unread: list[str],
    site: Site | None = None,
) -> list[_Outcome]:
    """Every order assessed, the record read once for all of them: the work grows with the drafts, not with
    their square."""
    read = facts_for_orders(record, [o.order_id for o in orders], as_of=as_of, kb=kb, site=site)
    return [
        _assess_order(o, record, req, kb, as_of, base_url, unread, site, facts)
        for o, facts in zip(orders, read, strict=True)
    ]


def _audit(request: Request) -> AuditWriter:
    writer: AuditWriter = request.app.state.audit
    return writer


_UTC_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]00:00)", re.ASCII)


def _timestamp(value: Any, where: str) -> str:
    """CDS Hooks 2.0: "ISO8601 representation of the date and time in Coordinated Universal Time (UTC) ...,
    as profiled in section 5.6 of RFC3339": a full date and time with seconds and the offset of UTC (``Z``,
    or ``+00:00`` / ``-00:00``). A local time, even with its offset (``+01:00``), is refused, as are a bare
    date and a date and time without an offset: they are not UTC as the specification asks."""
    message = (
        f"{where}outcomeTimestamp must be a date and time in UTC (RFC 3339, offset Z), "
        "e.g. 2026-11-24T10:15:00Z"
    )
    if isinstance(value, str) and len(value) > 64:
        raise BadRequest(f"{where}outcomeTimestamp is longer than 64 characters", "field-too-long")
    if not isinstance(value, str) or not _UTC_TIMESTAMP.fullmatch(value):
        raise BadRequest(message)
    try:
        dt.datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:  # e.g. month 13, 25 o'clock
        raise BadRequest(message) from None
    return value


def feedback_records(data: Mapping[str, Any], service: str, issuer: str | None) -> list[FeedbackRecord]:
    items = data.get("feedback")
    if not isinstance(items, list):
        raise BadRequest("feedback must be an array of feedback objects")
    received = dt.datetime.now(dt.UTC)
    records = []
    for i, item in enumerate(items):
        where = f"feedback[{i}]."
        if not isinstance(item, Mapping):
            raise BadRequest(f"feedback[{i}] must be a JSON object")
        card = _string(item, "card", where)
        outcome = item.get("outcome")
        if outcome not in ("accepted", "overridden"):
            raise BadRequest(f"{where}outcome must be accepted or overridden")
        accepted = item.get("acceptedSuggestions", [])
        if not isinstance(accepted, list):
            raise BadRequest(f"{where}acceptedSuggestions must be an array")
        suggestion_ids = []
        for j, suggestion in enumerate(accepted):
            if not isinstance(suggestion, Mapping):
                raise BadRequest(f"{where}acceptedSuggestions[{j}] must be a JSON object")
            suggestion_ids.append(_string(suggestion, "id", f"{where}acceptedSuggestions[{j}]."))
        if accepted and outcome != "accepted":
            raise BadRequest(f"{where}acceptedSuggestions belong to an accepted outcome")
        code = system = display = comment = None
        override = _object(item, "overrideReason", where, required=False)
        if override is not None:
            if outcome != "overridden":
                raise BadRequest(f"{where}overrideReason belongs to an overridden outcome")
            reason = _object(override, "reason", f"{where}overrideReason.", required=False)
            if reason is not None:
                code = _string(reason, "code", f"{where}overrideReason.reason.")
                system = _string(reason, "system", f"{where}overrideReason.reason.", limit=MAX_TEXT_CHARS)
                display = _string(
                    reason, "display", f"{where}overrideReason.reason.", required=False, limit=MAX_TEXT_CHARS
                )
            if "userComment" in override:
                if not isinstance(override["userComment"], str):
                    raise BadRequest(f"{where}overrideReason.userComment must be a string")
                comment = override["userComment"]
                _storable(comment, f"{where}overrideReason.userComment", MAX_COMMENT_CHARS)
        timestamp = _timestamp(item["outcomeTimestamp"], where) if "outcomeTimestamp" in item else None
        assert card is not None
        records.append(
            FeedbackRecord(
                id=str(uuid.uuid4()),
                received_at=received,
                service=service,
                card=card,
                outcome=outcome,
                outcome_timestamp=timestamp,
                override_code=code,
                override_system=system,
                override_display=display,
                user_comment=comment,
                accepted_suggestions=[s for s in suggestion_ids if s is not None],
                client=issuer,
            )
        )
    return records


@router.post(
    "/cds-services/{service_id}/feedback",
    summary="Feedback on cards (accepted or overridden)",
    openapi_extra=_body_spec(_FEEDBACK_SCHEMA),
    responses=_errors(400, 401, 404, 503),
)
def feedback(service_id: ServiceId, request: Request, issuer: Issuer, body: Body) -> JSONResponse:
    _, kb, store = _app_state(request)
    if service_id not in _services(kb):
        return _error(404, f"no CDS service {service_id!r}; see GET /cds-services")
    if body.data is None:
        return _error(400, body.error or "a JSON object is required", code=body.code or "invalid-request")
    try:
        records = feedback_records(body.data, service_id, issuer)
    except BadRequest as exc:
        return _error(400, str(exc), code=exc.code)
    try:
        store.record_feedback(records)  # committed before it returns
    except Exception as exc:
        log.error("feedback not stored (%s)", type(exc).__name__)
        return _error(503, "the feedback could not be stored; send it again", retry=True)
    return JSONResponse({"received": len(records)})
