"""Feedback on cards (CDS Hooks 2.0): each item checked against the contract and read as a row of the
feedback table (accepted, or overridden with its coded reason and comment)."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping
from typing import Any

from ..store import FeedbackRecord
from .contract import MAX_COMMENT_CHARS, MAX_TEXT_CHARS, BadRequest, object_field, storable, string_field

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
        card = string_field(item, "card", where)
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
            suggestion_ids.append(string_field(suggestion, "id", f"{where}acceptedSuggestions[{j}]."))
        if accepted and outcome != "accepted":
            raise BadRequest(f"{where}acceptedSuggestions belong to an accepted outcome")
        code = system = display = comment = None
        override = object_field(item, "overrideReason", where, required=False)
        if override is not None:
            if outcome != "overridden":
                raise BadRequest(f"{where}overrideReason belongs to an overridden outcome")
            reason = object_field(override, "reason", f"{where}overrideReason.", required=False)
            if reason is not None:
                code = string_field(reason, "code", f"{where}overrideReason.reason.")
                system = string_field(
                    reason, "system", f"{where}overrideReason.reason.", limit=MAX_TEXT_CHARS
                )
                display = string_field(
                    reason, "display", f"{where}overrideReason.reason.", required=False, limit=MAX_TEXT_CHARS
                )
            if "userComment" in override:
                if not isinstance(override["userComment"], str):
                    raise BadRequest(f"{where}overrideReason.userComment must be a string")
                comment = override["userComment"]
                storable(comment, f"{where}overrideReason.userComment", MAX_COMMENT_CHARS)
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
