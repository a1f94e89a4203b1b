"""Words and codes the FHIR readers share: the live adapter (``adapters/fhir.py``) and the audit's
batch reader of FHIR Bulk Data (``audit/fhir_ndjson.py``), which turns the same rules into SQL. One place, so
that both read a record alike: which statuses count, which codes and words name a route, intensive care or
an infusion.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache

from .._facts import Route

FINAL_OBSERVATION = frozenset({"final", "amended", "corrected"})
IGNORED_CLINICAL_STATUS = frozenset({"resolved", "inactive", "remission"})
IGNORED_VERIFICATION_STATUS = frozenset({"refuted", "entered-in-error"})

NOT_GIVEN_ADMINISTRATION_STATUSES = frozenset({"entered-in-error", "not-done"})

ROUTE_CODES: Mapping[str, Route] = {
    "47625008": Route.INTRAVENOUS,
    "26643006": Route.ORAL,
    "46713006": Route.INTRANASAL,
}
ROUTE_WORDS: tuple[tuple[re.Pattern[str], Route], ...] = (
    (re.compile(r"\b(?:intravenous(?:ly)?|iv)\b", re.IGNORECASE), Route.INTRAVENOUS),
    (re.compile(r"\b(?:oral(?:ly)?|by mouth|po)\b", re.IGNORECASE), Route.ORAL),
    (re.compile(r"\b(?:intra-?nasal(?:ly)?|nasal(?:ly)?)\b", re.IGNORECASE), Route.INTRANASAL),
)

# Intensive care: v3 RoleCode ICU and the codes it subsumes. Checked 2026-11 with the search tool: the HL7
# Terminology (THO) value set v3-ICUPracticeSetting ("is-a ICU",
# build.fhir.org/ig/HL7/UTG/ValueSet-v3-ICUPracticeSetting.json.html) expands to ICU, PEDICU (pediatric
# intensive care unit) and PEDNICU (pediatric neonatal intensive care unit); v3-PedsICUPracticeSetting
# ("is-a PEDICU") holds PEDICU and PEDNICU (also in generated code lists of both value sets). CCU (coronary
# care unit) and NCCS (neurology critical care and stroke unit) are siblings of ICU, not below it, so they
# are not read as intensive care: the infusion limit then stays in force, the cautious side.
ROLE_CODE_SYSTEMS = frozenset(
    {
        "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
        "http://hl7.org/fhir/v3/RoleCode",
        "urn:oid:2.16.840.1.113883.5.111",
    }
)
INTENSIVE_CARE_ROLE_CODES = frozenset({"ICU", "PEDICU", "PEDNICU"})
INTENSIVE_CARE_WORDS = re.compile(r"\b(?:icu|intensive[ -]care)\b", re.IGNORECASE)
# Words that name intensive care only to deny or qualify it ("non-ICU", "post-ICU", "step-down from ICU"):
# a type written so is not intensive care. Reading it as intensive care would switch the infusion limit off.
HEDGED_INTENSIVE_CARE = re.compile(
    r"\b(?:non|not|no|post|pre|ex)\b[\s()-]*(?:icu|intensive)\b|\bstep[ -]?down\b|\bintermediate\b",
    re.IGNORECASE,
)
# v3 ActCode encounter classes that are never intensive care: ambulatory, emergency, virtual, home health.
NON_INTENSIVE_CLASSES = frozenset({"AMB", "EMER", "VR", "HH"})

INFUSION_WORDS = re.compile(r"\binfus(?:ion|ions|ed)\b", re.IGNORECASE)


@lru_cache(maxsize=64)
def word_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    """Whole words, case-insensitive; a word glued to a prefix (esketamine, S-ketamine) does not match."""
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<![\w-])(?:{alternatives})\b", re.IGNORECASE)
