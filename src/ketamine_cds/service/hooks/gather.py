"""Gathering the record of a hook call: the reader of the client's FHIR server, the Medications the drafts
reference, the facts with what could not be read passed on as unknown, and the 412 when the patient cannot
be read at all."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from fastapi import Request

from ..._facts import Facts
from ..._kb import KnowledgeBase
from ..._opioids import Presence, opioid_status
from .. import prefetch as pf
from ..record import Gathered, Reader, resolve_references
from ..settings import Settings
from .request import HookRequest

Json = dict[str, Any]


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


async def draft_medications(req: HookRequest, reader: Reader) -> Gathered:
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
