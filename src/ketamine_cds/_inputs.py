"""Reads one input document (FHIR R4 Bundle or case document) into ``Facts``."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from ._errors import DuplicateKeyError, InputError, NotFHIRError, NotJSONError
from ._facts import Facts
from ._kb import KnowledgeBase, load_knowledge
from ._site import Site
from ._units import bounded


def parse_json(text: str | bytes, *, unique_keys: bool = True) -> Any:
    """JSON with every number read exactly (``Decimal``), never through a binary float, and every string
    valid Unicode text. A key written twice in one object is refused (``DuplicateKeyError``): ``json.loads``
    would keep the last, so ``{"value": 2000, "value": 20}`` would be checked as 20. ``unique_keys=False``
    keeps the last, as other JSON readers do (the batch audit reads exports with DuckDB, which does too)."""
    try:
        data = json.loads(
            text,
            parse_float=_decimal,
            parse_constant=Decimal,
            object_pairs_hook=_unique_keys if unique_keys else None,
        )
    except InputError:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise NotJSONError("", f"not JSON ({exc})") from None
    except RecursionError:
        raise NotJSONError("", "the JSON is nested too deeply to read") from None
    escape = _SURROGATE_ESCAPE_BYTES if isinstance(text, bytes) else _SURROGATE_ESCAPE
    if escape.search(text) and _has_lone_surrogate(data):  # type: ignore[arg-type]
        raise NotJSONError(
            "", r"a string holds an unpaired UTF-16 surrogate escape (\ud800-\udfff), which is not text"
        )
    return data


# JSON may escape half of a UTF-16 pair alone ("\ud800"); json.loads then returns a str that cannot be
# encoded, stored or answered. Paired escapes (an emoji) decode to one character and pass. The regex is a
# cheap pre-check on the raw text; only when it matches is the parsed value walked.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_lone_surrogate(data: Any) -> bool:
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return True
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(
                    "",
                    f"the key {key[:40]!r} appears twice in one JSON object: "
                    "which value was meant cannot be told",
                )
            seen.add(key)
    return data


def _decimal(text: str) -> Decimal:
    return bounded(Decimal(text), f"number {text[:24]}")


def facts_from_document(
    data: Any,
    *,
    today: dt.date,
    kb: KnowledgeBase | None = None,
    validate: bool = False,
    site: Site | None = None,
) -> Facts:
    """A parsed document as facts: a FHIR R4 Bundle (``resourceType``) or else a case document. A site's
    protocol adds the locations it counts as intensive monitoring to a Bundle's reading."""
    kb = kb or load_knowledge()
    if not isinstance(data, Mapping):
        raise NotFHIRError("", "expected a JSON object: a FHIR R4 Bundle or a case document")
    if "resourceType" in data:
        if data["resourceType"] != "Bundle":
            raise NotFHIRError("resourceType", f"expected a FHIR R4 Bundle, got {data['resourceType']!r}")
        from .adapters.fhir import facts_from_bundle, validate_r4

        if validate:
            validate_r4(data)
        bundle_facts: Facts = facts_from_bundle(data, as_of=today, kb=kb, site=site)
        return bundle_facts
    from .adapters.case import facts_from_case

    return facts_from_case(data, today=today, kb=kb)
