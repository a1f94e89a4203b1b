"""Feedback on cards (CDS Hooks 2.0): the body read by the contract (``contract.FeedbackBody``), each item a
row of the feedback table (accepted, or overridden with its coded reason and comment)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

from ..store import FeedbackRecord
from .contract import FeedbackBody, FeedbackItem, checked
from .discovery import CdsService


def feedback_records(
    data: Mapping[str, Any], service: CdsService, issuer: str | None
) -> list[FeedbackRecord]:
    """The rows of the feedback, or ``BadRequest`` when the body does not follow the contract."""
    body = checked(FeedbackBody, data, service)
    received = dt.datetime.now(dt.UTC)
    return [_record(item, service.id, issuer, received) for item in body.feedback]


def _record(item: FeedbackItem, service: str, issuer: str | None, received: dt.datetime) -> FeedbackRecord:
    override = item.overrideReason
    reason = override.reason if override is not None else None
    return FeedbackRecord(
        id=str(uuid.uuid4()),
        received_at=received,
        service=service,
        card=item.card,
        outcome=item.outcome,
        outcome_timestamp=item.outcomeTimestamp,
        override_code=reason.code if reason is not None else None,
        override_system=reason.system if reason is not None else None,
        override_display=reason.display if reason is not None else None,
        user_comment=override.userComment if override is not None else None,
        accepted_suggestions=[s.id for s in item.acceptedSuggestions],
        client=issuer,
    )
