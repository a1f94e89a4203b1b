"""Answering order-select and order-sign: which drafts are ketamine orders, which of them are checked (draft
or active), the record gathered once for all of them, each assessed with the engine and turned into cards."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..._assessment import Assessment
from ..._engine import assess
from ..._errors import InputError
from ..._facts import Facts
from ..._kb import KnowledgeBase
from ..._site import Site
from ...adapters.fhir import facts_for_orders, facts_from_resources, is_ketamine_request
from .. import prefetch as pf
from ..cards import BuiltCard, cards_for, data_not_read_card, most_urgent_first, not_checked_card
from ..record import gather, read_medications, resolve_references
from .call import Call, log_unexpected
from .gather import context_of, draft_medications, precondition, with_unknowns
from .request import DraftOrder, HookRequest

Json = dict[str, Any]
Record = list[tuple[str | None, Json]]  # (fullUrl, resource): the drafts and what was prefetched

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


async def answer_orders(call: Call) -> JSONResponse:
    req, kb, settings = call.req, call.kb, call.settings
    as_of = dt.date.today()
    from_drafts = await draft_medications(req, call.reader)
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
