"""The patient-view service: what a clinician opening the chart of a patient on ketamine should see.

CDS Hooks patient-view is called whenever a chart is opened, so it says nothing unless there is something to
say, and it never interrupts (``info`` and ``warning`` cards only, no override reasons):

1. The ketamine orders come first (prefetch keys ``ketamineRequests`` and ``ketamineAdministrations``, else
   the FHIR server). Without the orders nothing can be said: 412. With no active order and no recent IV
   infusion course, the answer is ``{"cards": []}`` at once, and the rest of the record is never read.
2. Each **active** ketamine order is assessed by the engine as the order-sign check would assess it, against
   the weight and setting recorded now: each dose's finding becomes a card (within the limit ``info``, over
   it, or not checkable, ``warning``).
3. **Contraindications recorded since it was ordered**: the engine assesses the order twice, on the whole
   record and on the record as it stood when the order was written (Conditions and Observations recorded
   strictly before the order's ``authoredOn``); a contraindication in the first and not in the second is
   new, and gets a warning card. A resource whose recording time is not known, or not known to precede the
   order, counts as possibly new: a contraindication is never hidden because a date is missing.
4. **Follow-up after an IV course**: with no active order, an IV ketamine infusion order completed within
   ``RECENT_COURSE_DAYS`` for a chronic pain use (the follow-up statements are the chronic guideline's) gets
   the engine's follow-up findings for oral and intranasal ketamine as cards.

Data that could not be read is passed to the engine as unknown and named in one more card, as in the order
hooks; every assessment made is a row in the audit trail.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from fastapi.responses import JSONResponse

from .._assessment import Assessment, Finding
from .._engine import assess
from .._errors import InputError
from .._facts import DoseKind, Facts, Route, Setting, ketamine_order
from .._kb import KnowledgeBase
from .._site import Site
from ..adapters.fhir import facts_from_resources, is_ketamine_order
from . import prefetch as pf
from .cards import (
    BuiltCard,
    advisory_card,
    data_not_read_card,
    dose_not_checked_cards,
    most_urgent_first,
    not_checked_card,
)
from .hooks import Call, PreconditionFailed, context_of, log_unexpected, precondition, with_unknowns
from .record import gather, read_medications, resolve_references
from .store import AssessmentRecord, CardRecord

Json = dict[str, Any]
Pairs = list[tuple[str | None, Json]]

# A product default, not a guideline figure: the guideline gives no time after an IV course within which
# follow-up is discussed. An order written in the last 90 days is "recent" here.
RECENT_COURSE_DAYS = 90
_ORDER_KEYS = ("ketamineRequests", "ketamineAdministrations")
_NEW_FINDINGS = ("present", "verify")  # a contraindication shown, or one to verify
_SLACK = dt.timedelta(hours=14)  # the widest UTC offset: a time without one may be this far either way


async def answer_patient_view(call: Call) -> JSONResponse:
    req, kb = call.req, call.kb
    as_of = dt.date.today()
    context = context_of(req)
    first = {key: call.service.prefetch[key] for key in _ORDER_KEYS}
    gathered = await gather(req.prefetch, first, context, call.reader)
    if "ketamineRequests" in gathered.reasons:
        raise PreconditionFailed(
            f"the ketamine orders could not be read: {gathered.reasons['ketamineRequests']}",
            [k for k in _ORDER_KEYS if k in gathered.reasons],
            gathered.unread_data,
        )
    await resolve_references(gathered, [], call.reader, rounds=1)  # Medications the orders name
    medications = read_medications(gathered)
    requests = [
        r
        for _, r in pf.resources_of(gathered.data.get("ketamineRequests"))
        if r.get("resourceType") == "MedicationRequest"
    ]
    active = [r for r in requests if r.get("status") == "active" and _is_ketamine(r, medications, kb)]
    courses = [] if active else _recent_courses(requests, medications, kb, as_of)
    if not active and not courses:
        return JSONResponse({"cards": []})

    rest = {key: t for key, t in call.service.prefetch.items() if key not in first}
    await gather(req.prefetch, rest, context, call.reader, into=gathered)
    ordered: Pairs = [(None, r) for r in active]
    await resolve_references(gathered, ordered, call.reader, failed_before=dict(gathered.reasons))
    precondition(gathered, ("patient",), call.service.prefetch)
    record = pf.record_resources(gathered.data, [])
    unread = gathered.unread_data

    rows: list[AssessmentRecord] = []
    cards: list[BuiltCard] = []
    last: Assessment | None = None
    for order in active:
        built, assessment = _active_order(order, record, kb, as_of, call.settings.base_url, unread, call.site)
        rows.append(_row(call, assessment, built, unread))
        cards += built
        last = assessment or last
    if courses:
        for built, assessment in _follow_up(courses[0], record, kb, as_of, call.settings.base_url, unread):
            rows.append(_row(call, assessment, built, unread))
            cards += built
            last = assessment or last
    if unread and rows:
        not_read = data_not_read_card(unread, hook="patient-view", assessment=last)
        if not_read is not None:
            cards.append(not_read)
            rows[0] = replace(rows[0], cards=(*rows[0].cards, _card_record(not_read)))
    what = f"{len(active)} active ketamine order(s)" if active else "a recent IV ketamine course"
    return await call.answer(rows, most_urgent_first(cards), what)


def _row(
    call: Call, assessment: Assessment | None, cards: list[BuiltCard], unread: list[str]
) -> AssessmentRecord:
    if assessment is None:  # the order could not be read: recorded as the order hooks record it
        verdict = "internal-error" if cards and cards[0].statement == "internal-error" else "input-error"
        return call.row(verdict, (), cards, unread)
    return call.row(
        assessment.verdict.value, assessment.statement_ids, cards, unread, assessment.knowledge_base_version
    )


def _card_record(card: BuiltCard) -> CardRecord:
    return CardRecord(card.card["uuid"], card.statement, card.indicator)


# --- which orders --------------------------------------------------------------------------------------


def _is_ketamine(request: Json, medications: Pairs, kb: KnowledgeBase, *, as_active: bool = False) -> bool:
    """The FHIR reader decides what ketamine is; it reads draft and active orders, so a completed one is put
    to it as active (only the product is asked about)."""
    candidate = {**request, "status": "active"} if as_active else request
    for known in (medications, []):  # without the Medications if one of them is unreadable
        try:
            return is_ketamine_order(candidate, known, kb=kb)
        except Exception:
            continue
    return False


def _recent_courses(
    requests: list[Json], medications: Pairs, kb: KnowledgeBase, as_of: dt.date
) -> list[Json]:
    """Completed ketamine orders written in the last ``RECENT_COURSE_DAYS`` days, newest first."""
    since = dt.datetime.combine(as_of - dt.timedelta(days=RECENT_COURSE_DAYS), dt.time(), dt.UTC)
    found = []
    for request in requests:
        written = _interval(request.get("authoredOn"))
        if (
            request.get("status") == "completed"
            and isinstance(request.get("id"), str)
            and written is not None
            and written[0] >= since
            and _is_ketamine(request, medications, kb, as_active=True)
        ):
            found.append((written[0], request))
    return [r for _, r in sorted(found, key=lambda pair: pair[0], reverse=True)]


# --- an active order -------------------------------------------------------------------------------------


def _active_order(
    order: Json,
    record: Pairs,
    kb: KnowledgeBase,
    as_of: dt.date,
    base_url: str,
    unread: list[str],
    site: Site | None = None,
) -> tuple[list[BuiltCard], Assessment | None]:
    order_id = order.get("id")
    try:
        if not isinstance(order_id, str):
            raise InputError("MedicationRequest", "an active ketamine order without an id cannot be checked")
        read = facts_from_resources(record, as_of=as_of, kb=kb, order_id=order_id, site=site)
        assessment = assess(with_unknowns(read, unread, kb), kb, site)
        before = assess(
            with_unknowns(
                facts_from_resources(_as_when_ordered(record, order), as_of=as_of, kb=kb, order_id=order_id),
                unread,
                kb,
            ),
            kb,
        )
    except InputError as exc:
        return [not_checked_card(exc)], None
    except Exception as exc:  # no input may turn into a 500
        log_unexpected(exc, "assessing an active ketamine order")
        return [not_checked_card(None)], None
    written = _text(order.get("authoredOn")) or "date not recorded"
    cards: list[BuiltCard] = []
    if assessment.dose_checks:
        lead = (
            f"**Active ketamine order** (written {written}), checked against the record as it is now: "
            f"{_weight_words(assessment)}; {_setting_words(assessment.setting)}."
        )
        cards += [advisory_card(f, assessment, base_url, lead) for f in _dose_findings(assessment)]
    cards += dose_not_checked_cards(assessment, base_url)
    known = {(f.statement.id, f.message_key) for f in before.findings}
    lead = (
        f"**New since the active ketamine order was written** ({written}): the record did not show this "
        "when the order was written, or does not say when it was recorded. Reconsider the running order."
    )
    cards += [
        advisory_card(f, assessment, base_url, lead)
        for f in assessment.findings
        if f.statement.role == "contraindication"
        and f.message_key in _NEW_FINDINGS
        and (f.statement.id, f.message_key) not in known
    ]
    return cards, assessment


def _dose_findings(assessment: Assessment) -> list[Finding]:
    return [f for f in assessment.findings if f.statement.role == "dose-limit"]


def _weight_words(assessment: Assessment) -> str:
    weight = assessment.dose_limits.weight_kg
    if weight is None and assessment.dose_limits.weight_problem:
        return f"no usable body weight ({assessment.dose_limits.weight_problem})"
    if weight is None:
        return "no body weight in the record"
    return f"body weight {float(weight):.4g} kg (the latest recorded)"


def _setting_words(setting: Setting) -> str:
    if setting is Setting.INTENSIVE_CARE:
        return "in intensive care"
    if setting is Setting.NON_INTENSIVE_CARE:
        return "outside intensive care"
    return "setting not known (the limits outside intensive care apply unless in intensive care)"


def _as_when_ordered(record: Pairs, order: Json) -> Pairs:
    """The record without the Conditions and Observations not known to have been recorded before the
    order was written."""
    written = _interval(order.get("authoredOn"))
    if written is None:
        return [(u, r) for u, r in record if r.get("resourceType") not in ("Condition", "Observation")]
    kept = []
    for full_url, resource in record:
        kind = resource.get("resourceType")
        if kind in ("Condition", "Observation"):
            recorded = _interval(_recorded(resource))
            if recorded is None or recorded[1] >= written[0]:
                continue
        kept.append((full_url, resource))
    return kept


def _recorded(resource: Mapping[str, Any]) -> Any:
    if resource.get("resourceType") == "Condition":
        return resource.get("recordedDate")
    for key in ("issued", "effectiveDateTime", "effectiveInstant"):
        if key in resource:
            return resource[key]
    period = resource.get("effectivePeriod")
    return period.get("start") if isinstance(period, Mapping) else None


# --- follow-up after an IV course -----------------------------------------------------------------------


def _follow_up(
    course: Json, record: Pairs, kb: KnowledgeBase, as_of: dt.date, base_url: str, unread: list[str]
) -> list[tuple[list[BuiltCard], Assessment | None]]:
    """The engine's follow-up findings for oral and intranasal ketamine after ``course``, when it was an IV
    infusion for a chronic pain use; nothing otherwise."""
    facts = _course_facts(course, record, kb, as_of)
    if facts is None:
        return []
    use = kb.uses[facts.use].label if facts.use else "chronic pain"
    written = _text(course.get("authoredOn"))
    lead = (
        f"**After the IV ketamine infusion course** for {use} (order written {written}, completed): "
        "in patients who responded to the infusions, the guideline supports trying the "
        "following in lieu of serial infusions."
    )
    results: list[tuple[list[BuiltCard], Assessment | None]] = []
    for route in (Route.INTRANASAL, Route.ORAL):
        question = replace(facts, order=ketamine_order(route=route, dose=None), prior_iv_ketamine=True)
        try:
            assessment = assess(with_unknowns(question, unread, kb), kb)
        except Exception as exc:  # pragma: no cover - an eligibility question without a dose
            log_unexpected(exc, "assessing follow-up after an IV ketamine course")
            continue
        follow_up = [f for f in assessment.findings if f.statement.id.startswith("followup-")]
        if follow_up:
            built = [advisory_card(f, assessment, base_url, lead, of_an_order=False) for f in follow_up]
            results.append((built, assessment))
    return results


def _course_facts(course: Json, record: Pairs, kb: KnowledgeBase, as_of: dt.date) -> Facts | None:
    """The course read as the FHIR reader reads an order (its route, doses and indication), when it is an IV
    infusion for a chronic use."""
    course_id = course.get("id")
    as_order = {**course, "status": "active"}
    others = [
        (u, r)
        for u, r in record
        if not (r.get("resourceType") == "MedicationRequest" and r.get("id") == course_id)
    ]
    try:
        facts = facts_from_resources([*others, (None, as_order)], as_of=as_of, kb=kb, order_id=str(course_id))
    except Exception:  # an unreadable past order gives no follow-up advice; the active ones are checked
        return None
    order = facts.order
    chronic = facts.use is not None and kb.uses[facts.use].kind == "chronic"
    infusion = order is not None and any(d.kind is DoseKind.INFUSION for d in order.doses)
    if not chronic or order is None or order.route is not Route.INTRAVENOUS or not infusion:
        return None
    return facts


# --- FHIR dates ---------------------------------------------------------------------------------------------

_DATE_TIME = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?",
    re.ASCII,
)


def _interval(value: Any) -> tuple[dt.datetime, dt.datetime] | None:
    """The earliest and latest UTC moments a FHIR date or dateTime may mean (a year is a whole year, a time
    without an offset any offset); None when it is not one."""
    match = _DATE_TIME.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        return None
    year, month, day, hour, minute, second, offset = match.groups()
    try:
        if hour is not None:
            moment = dt.datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0))
            if offset is not None:
                zone = dt.UTC if offset == "Z" else dt.datetime.strptime(offset, "%z").tzinfo
                exact = moment.replace(tzinfo=zone).astimezone(dt.UTC)
                return exact, exact
            local = moment.replace(tzinfo=dt.UTC)
            return local - _SLACK, local + _SLACK
        first = dt.date(int(year), int(month or 1), int(day or 1))
        if day is not None:
            last = first
        elif month is not None:
            last = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1)
        else:
            last = first.replace(month=12, day=31)
    except ValueError:
        return None
    start = dt.datetime.combine(first, dt.time(), dt.UTC) - _SLACK
    end = dt.datetime.combine(last, dt.time.max, dt.UTC) + _SLACK
    return start, end


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


__all__ = ["RECENT_COURSE_DAYS", "answer_patient_view"]
