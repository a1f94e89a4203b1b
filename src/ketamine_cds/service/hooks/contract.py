"""The request contract of the CDS Hooks routes: the body read as a JSON object, the checks every field
passes, and the stable error ``code`` of a 400."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from ..._errors import DuplicateKeyError, InputError, NotJSONError
from ..._inputs import parse_json

Json = dict[str, Any]


@dataclass(frozen=True)
class Body:
    data: Json | None = None
    error: str | None = None
    code: str | None = None  # the input error's stable code (``InputError.code``), where there is one


async def json_body(request: Request) -> Body:
    """The body as a JSON object (numbers exact), or why it is not one; read here so that a sync handler can
    check the service id first and answer 404 before complaining about the body."""
    raw = await request.body()
    if not raw.strip():
        return Body(error="the request body is empty; a JSON object is required")
    try:
        data = parse_json(raw)
    except DuplicateKeyError as exc:  # JSON, but ambiguous: a key written twice in one object
        return Body(error=f"the request body cannot be read: {exc.message}", code=exc.code)
    except NotJSONError as exc:
        return Body(error=f"the request body is not JSON: {exc.message}", code=exc.code)
    except InputError as exc:  # JSON, but a number no input can hold (out of range)
        return Body(error=f"the request body cannot be read: {exc}", code=exc.code)
    except RecursionError:
        return Body(error="the request body is nested too deeply")
    if not isinstance(data, dict):
        return Body(error="the request body must be a JSON object")
    return Body(data)


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


def string_field(
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
    storable(value, f"{where}{key}", limit)
    if not text and not value.isprintable():
        raise BadRequest(
            f"{where}{key} must not contain control characters (line breaks, tabs, separators)",
            "control-character",
        )
    return value


def storable(value: str, field: str, limit: int) -> None:
    """Strings the service stores must be storable everywhere (PostgreSQL text cannot hold NUL) and
    bounded."""
    if len(value) > limit:
        raise BadRequest(f"{field} is longer than {limit} characters", "field-too-long")
    if "\x00" in value:
        raise BadRequest(f"{field} must not contain a NUL character", "control-character")


def object_field(
    data: Mapping[str, Any], key: str, where: str, *, required: bool = True
) -> Mapping[str, Any] | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, Mapping):
        raise BadRequest(f"{where}{key} must be a JSON object")
    return value


HOOK_REQUEST_SCHEMA: Json = {
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
FEEDBACK_SCHEMA: Json = {
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
