"""The SQL the FHIR and OMOP readers share (``fhir_ndjson.fhir_source``, ``omop.omop_source``).

Expressions (names, words, value sets) and CTE groups whose logic is the same in both readers: the knowledge
base as relations (``knowledge_ctes``), the conditions an administration has (``admin_conditions_ctes``),
its procedure class (``classified_procedures``, ``admin_procedure_cte``), a use some conditions name only
together (``together_use_cte``), a prior IV course (``prior_course_sql``) and the canonical columns at the end
(``canonical_select``). Each reader reads its own tables into the relations these parts read; each part has a
unit test in ``tests/audit/test_reader_parts.py``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .._kb import KnowledgeBase
from .._site import Site
from ..adapters.fhir_words import HEDGED_INTENSIVE_CARE, INTENSIVE_CARE_WORDS
from .sql import lit, str_list

# a Procedure without an Encounter counts when performed within this of the administration
PROCEDURE_WINDOW_SECONDS = 24 * 3600


def concat(*lists: str) -> str:
    """list_concat of several VARCHAR[] (two at a time, as older DuckDB takes two), NULL counting as empty."""
    parts = [f"coalesce({x}, CAST([] AS VARCHAR[]))" for x in lists]
    result = parts[0]
    for part in parts[1:]:
        result = f"list_concat({result}, {part})"
    return result


def re2(pattern: re.Pattern[str]) -> str:
    """A Python regex of the adapter as an RE2 pattern for DuckDB (only IGNORECASE is carried over)."""
    return ("(?i)" if pattern.flags & re.IGNORECASE else "") + pattern.pattern


def norm_code(short: str, code: str) -> str:
    """SQL for ``_kb._norm_code``: ICD-10-CM without dots, upper case; other systems trimmed."""
    return f"CASE WHEN {short} = 'icd10cm' THEN upper(replace(trim({code}), '.', '')) ELSE trim({code}) END"


def value_sets_sql(kb: KnowledgeBase) -> str:
    """The knowledge base's value sets as a relation (concept, system, code, is_prefix, rank).

    Built from ``kb.value_sets.codes``: ``system`` is the short name, ``code`` is normalised as ``_kb.ValueSets``
    does (ICD-10-CM without dots, upper case), ``is_prefix`` marks a hierarchy entry (a code and all codes below
    it). ``rank`` orders the matches of one coding as ``ValueSets.concepts`` does: exact matches in file order,
    then prefixes from the shortest."""
    rows = []
    for i, c in enumerate(kb.value_sets.codes):
        code = c.code.strip().replace(".", "").upper() if c.system == "icd10cm" else c.code.strip()
        prefix = c.match == "prefix"
        rank = 100_000 + 1_000 * len(code) + i if prefix else i
        rows.append(f"({lit(c.concept)}, {lit(c.system)}, {lit(code)}, {prefix}, {rank})")
    return f"SELECT * FROM (VALUES {', '.join(rows)}) v(concept, system, code, is_prefix, rank)"


def coded_concepts(codings: str, keys: Sequence[str], vs: str = "vs") -> str:
    """Concepts of a relation of codings (``keys``..., ``short``, ``norm``): exact and hierarchy (prefix) matches.

    Adds ``concept`` and ``rank``. A prefix entry matches a code that starts with it (ICD-10-CM F11 covers F11.20),
    as ``_kb.ValueSets.concepts`` does."""
    cols = ", ".join(f"c.{k}" for k in keys)
    return f"""
      SELECT {cols}, v.concept, v.rank FROM {codings} c JOIN {vs} v
        ON v.system = c.short AND NOT v.is_prefix AND v.code = c.norm
      UNION ALL
      SELECT {cols}, v.concept, v.rank FROM {codings} c JOIN {vs} v
        ON v.system = c.short AND v.is_prefix AND starts_with(c.norm, v.code)"""


def uses_sql(kb: KnowledgeBase) -> str:
    """(concept, use) for the uses a clinical concept names, (use, concepts) for those some concepts name only
    together, and (text, use) for naming a use in words."""
    coded = [f"({lit(u.concept)}, {lit(u.id)})" for u in kb.uses.values() if u.concept]
    together = [
        f"({lit(u.id)}, {str_list(u.concepts_together)})" for u in kb.uses.values() if u.concepts_together
    ] or ["(CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR[]))"]
    texts: dict[str, str] = {}
    for u in kb.uses.values():
        for name in (u.id, u.label):
            texts.setdefault(normal_words(name), u.id)
    worded = [f"({lit(t)}, {lit(u)})" for t, u in texts.items()]
    return (
        f"use_concepts AS (SELECT * FROM (VALUES {', '.join(coded)}) v(concept, use_id)), "
        f"use_together AS (SELECT * FROM (VALUES {', '.join(together)}) v(use_id, concepts) "
        "WHERE use_id IS NOT NULL), "
        f"use_words AS (SELECT * FROM (VALUES {', '.join(worded)}) v(words, use_id))"
    )


def normal_words(text: str) -> str:
    """Lower case, '-' and '_' as spaces, single spaces: how a use named in words is compared."""
    return " ".join(text.lower().replace("-", " ").replace("_", " ").split())


def normal_words_sql(expr: str) -> str:
    return f"trim(regexp_replace(lower(replace(replace({expr}, '-', ' '), '_', ' ')), '\\s+', ' ', 'g'))"


def procedure_classes_sql(kb: KnowledgeBase) -> str:
    """(concept, class, severity): the ``procedure:<class>`` value sets, severe pain first (as the adapter)."""
    rows = [
        f"({lit('procedure:' + p.id)}, {lit(p.id)}, {0 if p.pain == 'severe' else 1})"
        for p in kb.procedure_classes.values()
    ]
    return f"SELECT * FROM (VALUES {', '.join(rows)}) v(concept, pclass, severity)"


def ketamine_words(kb: KnowledgeBase) -> str:
    """RE2 for a ketamine word (whole word, not glued to a prefix such as es- or S-: esketamine is not it)."""
    words = "|".join(re.escape(w) for w in sorted(kb.ketamine_words, key=len, reverse=True))
    return rf"(?i)(?:^|[^\w-])(?:{words})\b"


def words_match(names: str, pattern: str, *, drug_names: bool = False) -> str:
    """Whether any of a VARCHAR[] of names matches an RE2 pattern (``drug_names``: each read as
    ``matchable_sql`` reads it first)."""
    name = matchable_sql("n") if drug_names else "n"
    return f"(len([n for n in {names} if n IS NOT NULL AND regexp_matches({name}, {lit(pattern)})]) > 0)"


_FULL_WIDTH = "".join(chr(c) for c in range(0xFF01, 0xFF5F))  # full-width forms of ASCII ! to ~


_ASCII = "".join(chr(c) for c in range(0x21, 0x7F))


def matchable_sql(name: str) -> str:
    """SQL for ``adapters.fhir.matchable`` (a drug's name as words are looked for in it) as far as SQL reaches:
    without format characters (category Cf: a soft hyphen, zero-width spaces), and full-width letters read as
    ASCII. NFKC's rarer compatibility forms (ligatures, circled letters) are read by the live service only."""
    return f"translate(regexp_replace({name}, '\\p{{Cf}}', '', 'g'), {lit(_FULL_WIDTH)}, {lit(_ASCII)})"


def icu_named(names: str) -> str:
    """Whether any of a VARCHAR[] of names names intensive care without denying or qualifying it ("non-ICU",
    "post-ICU", "step-down" are not intensive care: ``adapters.fhir_words.HEDGED_INTENSIVE_CARE``)."""
    icu, hedged = lit(re2(INTENSIVE_CARE_WORDS)), lit(re2(HEDGED_INTENSIVE_CARE))
    return (
        f"(len([n for n in {names} if n IS NOT NULL AND regexp_matches(n, {icu}) "
        f"AND NOT regexp_matches(n, {hedged})]) > 0)"
    )


def site_location_sql(site: Site | None, codings: str, names: str) -> str:
    """Whether a location is one a site's protocol counts as intensive monitoring: a (system, code) among its
    codings (identifier or type), or a name (case and spacing ignored), as ``Site.is_monitoring_location``."""
    if site is None or not (site.monitoring_codes or site.monitoring_names):
        return "false"
    pairs = ", ".join(
        f"{lit(system)} || '|' || {lit(code)}" for system, code in sorted(site.monitoring_codes)
    )
    pairs = pairs or "NULL"
    wanted = str_list(sorted(site.monitoring_names)) if site.monitoring_names else "[]::VARCHAR[]"
    return (
        f"(len([c for c in {codings} if coalesce(c->>'system', '') || '|' || coalesce(c->>'code', c->>'value', '') "
        f"IN ({pairs})]) > 0 OR len([n for n in {names} if n IS NOT NULL AND "
        f"list_contains({wanted}, lower(trim(regexp_replace(n, '\\s+', ' ', 'g'))))]) > 0)"
    )


MASS_MG = "CASE lower(trim({u})) WHEN 'mg' THEN 1.0 WHEN 'g' THEN 1000.0 WHEN 'kg' THEN 1000000.0 WHEN 'ug' THEN 0.001 WHEN 'mcg' THEN 0.001 WHEN 'µg' THEN 0.001 WHEN 'μg' THEN 0.001 END"


VOLUME_ML = "CASE lower(trim({u})) WHEN 'ml' THEN 1.0 WHEN 'l' THEN 1000.0 END"


MG_PER_ML = r"(?i)(\d+(?:\.\d+)?)\s*mg\s*/\s*ml\b"


# ----------------------------------------------------------------------------------------------------
# CTE groups both readers use


def knowledge_ctes(kb: KnowledgeBase) -> str:
    """The knowledge base as relations: ``vs`` (the value sets), ``pclasses`` (the procedure classes) and the
    uses (``use_concepts``, ``use_together``, ``use_words``)."""
    return f"""vs AS ({value_sets_sql(kb)}),
    pclasses AS ({procedure_classes_sql(kb)}),
    {uses_sql(kb)}"""


def condition_in_effect(start: str, end: str, over_without_end: str, at: str) -> str:
    """Whether a condition is in effect at a time: begun then or not known when (``start`` NULL), and not over:
    an ``end`` at or before the time ends it; without an end, ``over_without_end`` (a status) says."""
    return (
        f"({start} IS NULL OR {start} <= {at}) "
        f"AND CASE WHEN {end} IS NOT NULL THEN {end} > {at} ELSE NOT {over_without_end} END"
    )


def admin_conditions_cte(admin_concepts: str = "admin_concepts") -> str:
    """``admin_conditions`` (admin_id, conditions): each administration's concepts (``admin_concepts``: admin_id,
    concept), once each, in order, joined by ';' (the canonical ``conditions``)."""
    return f"""admin_conditions AS (
      SELECT admin_id, string_agg(DISTINCT concept, ';' ORDER BY concept) AS conditions
      FROM {admin_concepts} GROUP BY admin_id
    )"""


def classified_procedures(codes: str, keys: Sequence[str]) -> str:
    """The procedures (a relation of codings: ``keys``..., short, norm) whose code is in a procedure class's
    value set: ``keys``..., ``pclass``, ``severity`` (0 for severe pain)."""
    cols = ", ".join(f"p.{k}" for k in keys)
    return (
        f"SELECT {cols}, c.pclass, c.severity\n"
        f"      FROM ({coded_concepts(codes, keys)}) p JOIN pclasses c ON c.concept = p.concept"
    )


def admin_procedure_cte(admins: str, person: str, stay: str, same_stay: str) -> str:
    """``admin_procedure`` (admin_id, pclass): the procedure class of an administration (``admins`` as ``c``,
    with patient_id and administered_at) from ``procs`` (as ``p``: ``person``, ``stay``, t, pclass, severity):
    a procedure of its stay (``same_stay``), or one without a stay performed within a day of it; the more
    painful class first, then the nearest in time."""
    return f"""admin_procedure AS (
      SELECT c.admin_id,
        arg_min(p.pclass, p.severity * 1e12 + coalesce(abs(epoch(p.t) - epoch(c.administered_at)), 0)) AS pclass
      FROM {admins} JOIN procs p ON p.{person} = c.patient_id AND (
        (p.{stay} IS NOT NULL AND {same_stay})
        OR (p.{stay} IS NULL AND abs(epoch(p.t) - epoch(c.administered_at)) <= {PROCEDURE_WINDOW_SECONDS}))
      GROUP BY c.admin_id
    )"""


def together_use_cte(name: str, key: str, concepts: str) -> str:
    """A use some conditions name only together (as the adapter's ``_indication``): ``name`` (``key``, use_id)
    from ``concepts`` (``key``, concept), the first such use by id."""
    return f"""{name} AS (
      SELECT r.{key}, min(t.use_id) AS use_id
      FROM (SELECT {key}, list(DISTINCT concept) AS cs FROM {concepts} GROUP BY {key}) r
      JOIN use_together t ON list_has_all(r.cs, t.concepts)
      GROUP BY r.{key}
    )"""


FIRST_COURSE_CTE = "first_course AS (SELECT patient, min(t) AS t FROM iv_courses GROUP BY patient)"


def prior_course_sql(answered: str) -> str:
    """Whether an administration (``c``) follows a course of IV ketamine: the record's own answer for it
    (``answered``: an alias with ``yes`` and ``no``), else a course (``first_course`` as ``fc``) before it; the
    record's "no" is kept (the cautious side: follow-up support is not claimed on a course it says was not
    taken)."""
    return (
        f"CASE WHEN {answered}.yes THEN true WHEN {answered}.no THEN false "
        "WHEN fc.t < c.administered_at THEN true END AS prior"
    )


def canonical_select(weight_problem: str, setting: str, input_problem: str) -> str:
    """The canonical columns (``canonical.COLUMNS``) from ``answer``; no reader tells opioid tolerance here
    (``tolerance.py`` adds it)."""
    return f"""SELECT
      admin_id, patient_id, administered_at, route, kind, dose_value, dose_unit, concentration_mg_per_ml,
      weight.value AS weight_value, weight.unit AS weight_unit, {weight_problem} AS weight_problem,
      {setting} AS setting,
      location,
      coalesce(reason_use, CASE WHEN pclass IS NOT NULL THEN 'perioperative' END) AS indication,
      pclass AS procedure_class,
      conditions,
      CASE WHEN route IN ('oral', 'intranasal') THEN prior END AS prior_iv_ketamine,
      coalesce(pca_sole_agent, false) AS pca_sole_agent,
      CAST(NULL AS VARCHAR) AS opioid_tolerance, CAST(NULL AS VARCHAR) AS opioid_unknown_reason,
      CAST(NULL AS VARCHAR) AS opioid_basis,
      {input_problem} AS input_problem
    FROM answer"""
