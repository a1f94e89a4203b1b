"""Reads one input document (FHIR R4 Bundle or case document) into ``Facts``."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from ._errors import InputError, NotFHIRError, NotJSONError
from ._facts import Facts
from ._kb import KnowledgeBase, load_knowledge
from ._units import bounded


def parse_json(text: str | bytes) -> Any:
    """JSON with every number read exactly (``Decimal``), never through a binary float."""
    try:
        return json.loads(text, parse_float=_decimal, parse_constant=Decimal)
    except InputError:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise NotJSONError("", f"not JSON ({exc})") from None


def _decimal(text: str) -> Decimal:
    return bounded(Decimal(text), f"number {text[:24]}")


def facts_from_document(
    data: Any, *, today: dt.date, kb: KnowledgeBase | None = None, validate: bool = False
) -> Facts:
    """A parsed document as facts: a FHIR R4 Bundle (``resourceType``) or else a case document."""
    kb = kb or load_knowledge()
    if not isinstance(data, Mapping):
        raise NotFHIRError("", "expected a JSON object: a FHIR R4 Bundle or a case document")
    if "resourceType" in data:
        if data["resourceType"] != "Bundle":
            raise NotFHIRError("resourceType", f"expected a FHIR R4 Bundle, got {data['resourceType']!r}")
        from .adapters.fhir import facts_from_bundle, validate_r4

        if validate:
            validate_r4(data)
        bundle_facts: Facts = facts_from_bundle(data, as_of=today, kb=kb)
        return bundle_facts
    from .adapters.case import facts_from_case

    return facts_from_case(data, today=today, kb=kb)
