"""The OMOP CDM v5.4 form: a folder of OMOP tables as Parquet or CSV files.

``omop_source(folder)`` returns one DuckDB SELECT yielding the canonical columns, one row per ketamine
``drug_exposure``. Tables are found by name (``drug_exposure.parquet``, ``DRUG_EXPOSURE.csv``, a folder
``drug_exposure/`` of parts); columns a file lacks are NULL. Required: ``drug_exposure``; read when present:
``measurement``, ``condition_occurrence``, ``procedure_occurrence``, ``visit_occurrence``, ``visit_detail``,
``care_site``, ``observation`` and ``concept``. CSV is read as text and every value is converted with TRY_CAST, so a
value that is not a number or a time gives the row an ``input_problem``; no row is dropped.

There is no vocabulary download here, so the reader works from source values, and uses the ``concept`` table
when the folder has one (``vocabulary_id``, ``concept_code``, ``concept_name`` of the ids the rows carry).

Conventions:

- Ketamine: ``drug_concept_id`` or ``drug_source_concept_id`` whose concept is an RxNorm code of the knowledge
  base (or whose name says ketamine), or a ``drug_source_value`` naming ketamine (``kb.ketamine_words``). A row
  naming no drug at all (no source value, a concept id the concept table does not hold) cannot be told to be
  ketamine and is not read; every ketamine row is (all exposure types: an ETL that records both the prescription
  and the administration should hand over the administrations).
- Time: ``drug_exposure_start_datetime``, else ``drug_exposure_start_date`` (its midnight). OMOP times are local
  and are kept as they are.
- Dose: ``quantity`` in ``dose_unit_source_value``; the unit decides bolus or infusion (a rate unit is an infusion),
  read by the engine's own unit parser (``decide.unit_rows``) over the units the table holds. Route:
  ``route_source_value`` (a SNOMED route code, or the words the FHIR adapter reads: IV, intravenous, PO, oral,
  nasal, intranasal), or the name of ``route_concept_id``. Concentration (for mL and mL/h): "NN mg/mL" in the drug's
  source value or concept name (OMOP keeps strengths in the vocabulary's drug_strength table, not read here).
- Weight: a body-weight ``measurement``: ``measurement_source_value`` LOINC 29463-7, or ``measurement_concept_id``
  3025315. Checked with the search tool (2026-11): 3025315 is the standard OMOP concept for LOINC 29463-7 (a
  concept-table row quoted in a public OMOP SQL script reads "3025315 Body weight Measurement LOINC Clinical
  Observation S 29463-7", and public analyses select body weight with ``measurement_concept_id = 3025315``). Unit:
  ``unit_source_value``, else the concept table's UCUM code of ``unit_concept_id``, else 9529 kg or 8504 g (the
  OMOP UCUM concepts "kilogram" and "gram": answerdigital/oxford-omop-data-mapper maps person weight to 9529
  "kilogram" and birth weight to 8504 "gram"; other ids are not guessed). The weight in effect is the latest body
  weight at or before the exposure in the same visit; a body-weight measurement there without a value means it was
  not obtained in that visit (no weight, not an older one); a visit without any body weight takes the person's
  latest at or before the exposure (ASOF join).
- Conditions: ``condition_occurrence`` rows of the person whose start is at or before the exposure (or unknown)
  and whose end is after it (or not given; an end that is only a date ends with that day). The code is the concept
  table's code of ``condition_source_concept_id`` / ``condition_concept_id`` when present, else
  ``condition_source_value`` read as a code: "ICD10CM:F20.9" or "SNOMED:69322001" name their system; otherwise
  digits are SNOMED CT and a letter, two characters and an optional dotted tail are ICD-10-CM. Codes map to concepts
  with the knowledge base's value sets in DuckDB (``fhir_ndjson.value_sets_sql``: built from
  ``kb.value_sets.codes``, exact and hierarchy-prefix matches, ICD-10-CM compared without dots, upper case, as
  ``_kb.ValueSets`` does).
- Indication: an ``observation`` linked to the exposure (``observation_event_id`` = ``drug_exposure_id``) with
  ``observation_source_value`` "indication" whose ``value_as_string`` names a use (its id or label); else a
  condition in the same visit whose code maps to a use's concept (being a condition, its concept is also among
  the conditions); else perioperative when a surgery is found.
- Procedure class: a ``procedure_occurrence`` whose code (as for conditions) is in a ``procedure:<class>`` value
  set, in the same visit, or without a visit and within 24 hours of the exposure; the more painful class first.
- Setting (``visit_detail`` of the exposure, else its ``visit_occurrence``): concept 32037 "Intensive Care" (the
  OMOP Visit concept for an ICU stay: named so as a constant in public OMOP tools found with the search tool) or a
  care site or concept named intensive care or ICU is intensive care; a visit detail with any other concept (the
  unit the drug was given in) is not; a visit of concept 9202 outpatient, 9203 emergency room, 722455 telehealth or
  581476 home visit is not (the HL7 FHIR-to-OMOP IG's ConceptMap EncounterClass maps AMB, EMER, VR and HH, the
  Encounter classes the FHIR adapter reads as not intensive care, to these); anything else, 9201 inpatient
  included, is unknown. A visit detail for an ICU stay under another concept id (and no ICU in its names) is read
  as not intensive care: the infusion limit then stays in force, the cautious side (as the FHIR adapter does for
  CCU). ``location``: the care site name.
- Prior IV ketamine (oral and intranasal): an ``observation`` linked to the exposure with source value
  "prior-iv-ketamine" and value yes/no (``value_as_string`` or ``value_as_number`` 1/0); else yes when the person
  has an earlier ketamine exposure by the IV route in a rate unit (an infusion), and unknown when not (not found
  is not ruled out, as in ``assess``).
- PCA as sole agent: ``sig`` names patient-controlled analgesia (PCA) and the drug's names name no second
  ingredient (RxNorm names combinations "A / B").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import duckdb

from .._errors import InputError
from .._kb import KnowledgeBase, load_knowledge
from ..adapters.fhir import _INTENSIVE_CARE_WORDS, _ROUTE_CODES, _ROUTE_WORDS, BODY_WEIGHT, PCA_WORDS
from .decide import unit_rows
from .fhir_ndjson import (
    MG_PER_ML,
    PROCEDURE_WINDOW_SECONDS,
    coded_concepts,
    concat,
    ketamine_words,
    lit,
    norm_code,
    normal_words_sql,
    procedure_classes_sql,
    re2,
    uses_sql,
    value_sets_sql,
    words_match,
)

__all__ = ["omop_source"]

BODY_WEIGHT_CONCEPT = (
    "3025315"  # OMOP standard concept for LOINC 29463-7 Body weight (see the module docstring)
)
WEIGHT_UNIT_CONCEPTS = {"9529": "kg", "8504": "g"}  # OMOP UCUM concepts kilogram and gram
INTENSIVE_CARE_VISIT = "32037"  # OMOP Visit concept "Intensive Care"
NON_INTENSIVE_VISITS = (
    "9202",
    "9203",
    "722455",
    "581476",
)  # outpatient, emergency room, telehealth, home visit
VOCABULARIES = {
    "rxnorm": "rxnorm",
    "snomed": "snomed",
    "icd10cm": "icd10cm",
    "icd10": "icd10cm",
    "loinc": "loinc",
}

_TABLES: Mapping[str, Mapping[str, str]] = {
    "drug_exposure": {
        "drug_exposure_id": "VARCHAR",
        "person_id": "VARCHAR",
        "drug_concept_id": "VARCHAR",
        "drug_source_value": "VARCHAR",
        "drug_source_concept_id": "VARCHAR",
        "drug_exposure_start_datetime": "VARCHAR",
        "drug_exposure_start_date": "VARCHAR",
        "quantity": "VARCHAR",
        "dose_unit_source_value": "VARCHAR",
        "route_source_value": "VARCHAR",
        "route_concept_id": "VARCHAR",
        "visit_occurrence_id": "VARCHAR",
        "visit_detail_id": "VARCHAR",
        "sig": "VARCHAR",
    },
    "measurement": {
        "measurement_id": "VARCHAR",
        "person_id": "VARCHAR",
        "measurement_concept_id": "VARCHAR",
        "measurement_source_value": "VARCHAR",
        "measurement_datetime": "VARCHAR",
        "measurement_date": "VARCHAR",
        "value_as_number": "VARCHAR",
        "unit_source_value": "VARCHAR",
        "unit_concept_id": "VARCHAR",
        "visit_occurrence_id": "VARCHAR",
    },
    "condition_occurrence": {
        "person_id": "VARCHAR",
        "condition_concept_id": "VARCHAR",
        "condition_source_value": "VARCHAR",
        "condition_source_concept_id": "VARCHAR",
        "condition_start_datetime": "VARCHAR",
        "condition_start_date": "VARCHAR",
        "condition_end_datetime": "VARCHAR",
        "condition_end_date": "VARCHAR",
        "visit_occurrence_id": "VARCHAR",
    },
    "procedure_occurrence": {
        "person_id": "VARCHAR",
        "procedure_concept_id": "VARCHAR",
        "procedure_source_value": "VARCHAR",
        "procedure_source_concept_id": "VARCHAR",
        "procedure_datetime": "VARCHAR",
        "procedure_date": "VARCHAR",
        "visit_occurrence_id": "VARCHAR",
    },
    "visit_occurrence": {
        "visit_occurrence_id": "VARCHAR",
        "visit_concept_id": "VARCHAR",
        "care_site_id": "VARCHAR",
    },
    "visit_detail": {
        "visit_detail_id": "VARCHAR",
        "visit_detail_concept_id": "VARCHAR",
        "care_site_id": "VARCHAR",
    },
    "care_site": {"care_site_id": "VARCHAR", "care_site_name": "VARCHAR"},
    "observation": {
        "observation_event_id": "VARCHAR",
        "observation_source_value": "VARCHAR",
        "value_as_string": "VARCHAR",
        "value_as_number": "VARCHAR",
    },
    "concept": {
        "concept_id": "VARCHAR",
        "concept_name": "VARCHAR",
        "vocabulary_id": "VARCHAR",
        "concept_code": "VARCHAR",
    },
}


def _quote(path: Path) -> str:
    return lit(str(path))


def table_files(folder: Path, table: str) -> list[Path]:
    """The files of one OMOP table: ``table.parquet`` / ``TABLE.csv`` (also ``.csv.gz``, ``.tsv``) or a folder
    ``table/`` of them; Parquet when both are there."""
    candidates: list[Path] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.split(".")[0].lower() != table:
            continue
        candidates.extend(sorted(p for p in entry.iterdir() if p.is_file()) if entry.is_dir() else [entry])
    parquet = [p for p in candidates if p.name.lower().endswith(".parquet")]
    text = [p for p in candidates if p.name.lower().endswith((".csv", ".csv.gz", ".tsv", ".txt"))]
    return parquet or text


def _reader(folder: Path, table: str) -> str:
    """A table's columns as text (NULL for a column the file lacks, or every column when there is no file)."""
    columns = _TABLES[table]
    files = table_files(folder, table)
    if not files:
        nulls = ", ".join(f"CAST(NULL AS VARCHAR) AS {c}" for c in columns)
        return f"SELECT {nulls} LIMIT 0"
    paths = "[" + ", ".join(_quote(p) for p in files) + "]"
    if files[0].name.lower().endswith(".parquet"):
        source = f"read_parquet({paths}, union_by_name = true)"
    else:
        source = f"read_csv({paths}, header = true, all_varchar = true, union_by_name = true)"
    con = duckdb.connect()
    try:
        present = {r[0].lower(): r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    finally:
        con.close()
    picked = [
        f"nullif(trim(CAST(\"{present[c]}\" AS VARCHAR)), '') AS {c}"
        if c in present
        else f"CAST(NULL AS VARCHAR) AS {c}"
        for c in columns
    ]
    return f"SELECT {', '.join(picked)} FROM {source}"


def _time(expr: str, end_of_day: bool = False) -> str:
    """A datetime or date written as text as a TIMESTAMP (a date alone: its midnight, or the next one)."""
    date = f"CAST(TRY_CAST({expr} AS DATE) AS TIMESTAMP)" + (" + INTERVAL 1 DAY" if end_of_day else "")
    return f"CASE WHEN length({expr}) <= 10 THEN {date} ELSE TRY_CAST({expr} AS TIMESTAMP) END"


def _vocabulary(expr: str) -> str:
    cases = " ".join(f"WHEN {lit(k)} THEN {lit(v)}" for k, v in VOCABULARIES.items())
    return f"CASE lower(trim({expr})) {cases} END"


_SOURCE_SYSTEM = r"(?i)^\s*(icd-?10-?cm|icd-?10|snomed(?:\s*ct)?|sct)\s*[:|]\s*(\S+)\s*$"
_ICD10 = r"(?i)^[A-Z][0-9][0-9A-Z](\.?[0-9A-Z]{1,4})?$"


def _source_codings(value: str) -> str:
    """A source value read as a code: (short system, code) or NULLs (see the module docstring)."""
    prefix = f"lower(regexp_extract({value}, {lit(_SOURCE_SYSTEM)}, 1))"
    code = f"CASE WHEN regexp_matches({value}, {lit(_SOURCE_SYSTEM)}) THEN regexp_extract({value}, {lit(_SOURCE_SYSTEM)}, 2) ELSE trim({value}) END"
    system = (
        f"CASE WHEN regexp_matches({value}, {lit(_SOURCE_SYSTEM)}) THEN "
        f"CASE WHEN starts_with({prefix}, 'icd') THEN 'icd10cm' ELSE 'snomed' END "
        f"WHEN regexp_matches(trim({value}), '^[0-9]+$') THEN 'snomed' "
        f"WHEN regexp_matches(trim({value}), {lit(_ICD10)}) THEN 'icd10cm' END"
    )
    return f"{system} AS short, {norm_code(system, code)} AS norm"


def _coded(table: str, keys: Sequence[str], source_value: str, concept_ids: Sequence[str]) -> str:
    """(keys..., short, norm) for each code a row carries: its source value and its concepts (if a concept
    table is given)."""
    cols = ", ".join(keys)
    parts = [f"SELECT {cols}, {_source_codings(source_value)} FROM {table}"]
    for concept_id in concept_ids:
        vocabulary = _vocabulary("c.vocabulary_id")
        parts.append(
            f"SELECT {', '.join('t.' + k for k in keys)}, {vocabulary} AS short, "
            f"{norm_code(vocabulary, 'c.concept_code')} AS norm "
            f"FROM {table} t JOIN concept c ON c.concept_id = t.{concept_id}"
        )
    union = " UNION ALL ".join(parts)
    return f"SELECT * FROM ({union}) WHERE short IS NOT NULL AND norm IS NOT NULL"


def omop_source(folder: Path, kb: KnowledgeBase | None = None) -> str:
    """A SELECT yielding canonical rows from a folder of OMOP CDM v5.4 tables."""
    kb = kb or load_knowledge()
    folder = Path(folder)
    if not table_files(folder, "drug_exposure"):
        raise InputError("INPUT", f"no drug_exposure table (Parquet or CSV) in {folder}")
    r = {t: _reader(folder, t) for t in _TABLES}
    units = _unit_table(r["drug_exposure"])
    ket_codes = ", ".join(lit(c) for c in sorted(kb.ketamine_rxnorm))
    ket_words = ketamine_words(kb)
    names = concat("[drug_source_value, dc.concept_name, sc.concept_name]")
    ketamine = (
        f"(({_vocabulary('dc.vocabulary_id')} = 'rxnorm' AND dc.concept_code IN ({ket_codes})) "
        f"OR ({_vocabulary('sc.vocabulary_id')} = 'rxnorm' AND sc.concept_code IN ({ket_codes})) "
        f"OR {words_match(names, ket_words)})"
    )
    route_names = concat("[route_source_value, rc.concept_name]")
    by_code = " ".join(f"WHEN {lit(code)} THEN {lit(route.value)}" for code, route in _ROUTE_CODES.items())
    by_words = ", ".join(
        f"CASE WHEN {words_match(route_names, re2(pattern))} THEN {lit(route.value)} END"
        for pattern, route in _ROUTE_WORDS
    )
    routes = (
        f"CASE WHEN trim(route_source_value) IN ({', '.join(lit(c) for c in _ROUTE_CODES)}) "
        f"THEN [CASE trim(route_source_value) {by_code} END] "
        f"ELSE list_distinct([x for x in [{by_words}] if x IS NOT NULL]) END"
    )
    icu = re2(_INTENSIVE_CARE_WORDS)
    weight_unit_concepts = " ".join(f"WHEN {lit(k)} THEN {lit(v)}" for k, v in WEIGHT_UNIT_CONCEPTS.items())
    weight_code = f"(trim(m.measurement_source_value) = {lit(BODY_WEIGHT)} OR m.measurement_source_value LIKE '%:{BODY_WEIGHT}')"
    yes_no = (
        "CASE WHEN lower(trim(o.value_as_string)) IN ('yes', 'y', 'true', '1') OR TRY_CAST(o.value_as_number AS DOUBLE) = 1 "
        "THEN true WHEN lower(trim(o.value_as_string)) IN ('no', 'n', 'false', '0') "
        "OR TRY_CAST(o.value_as_number AS DOUBLE) = 0 THEN false END"
    )
    non_icu_visits = ", ".join(lit(v) for v in NON_INTENSIVE_VISITS)
    d = "'drug_exposure/' || admin_id || ': '"
    return f"""
    WITH vs AS ({value_sets_sql(kb)}),
    pclasses AS ({procedure_classes_sql(kb)}),
    {uses_sql(kb)},
    units AS ({units}),
    concept AS (
      SELECT concept_id, any_value(concept_name) AS concept_name, any_value(vocabulary_id) AS vocabulary_id,
        any_value(concept_code) AS concept_code
      FROM ({r["concept"]}) WHERE concept_id IS NOT NULL GROUP BY concept_id
    ),
    exposures AS (
      SELECT e.*, {names} AS drug_names, {routes} AS routes, rc.concept_name AS route_concept_name
      FROM ({r["drug_exposure"]}) e
      LEFT JOIN concept dc ON dc.concept_id = e.drug_concept_id
      LEFT JOIN concept sc ON sc.concept_id = e.drug_source_concept_id
      LEFT JOIN concept rc ON rc.concept_id = e.route_concept_id
      WHERE {ketamine}
    ),
    core0 AS (
      SELECT drug_exposure_id AS admin_id, person_id AS patient_id, visit_occurrence_id AS visit_id, visit_detail_id,
        coalesce(drug_exposure_start_datetime, drug_exposure_start_date) AS t_text,
        coalesce({_time("drug_exposure_start_datetime")}, {_time("drug_exposure_start_date")}) AS administered_at,
        CASE len(routes) WHEN 1 THEN routes[1] WHEN 0 THEN coalesce(route_source_value, route_concept_name) END AS route,
        routes, quantity, TRY_CAST(quantity AS DOUBLE) AS dose_value, trim(dose_unit_source_value) AS dose_unit,
        drug_names, sig
      FROM exposures
    ),
    core AS (
      SELECT c.*,
        CASE WHEN c.route = 'intravenous' AND u.ok THEN CASE WHEN u.is_rate THEN 'infusion' ELSE 'bolus' END END AS kind,
        coalesce(u.is_rate, false) AS is_rate,
        CASE WHEN u.is_volume THEN [TRY_CAST(regexp_extract(n, {lit(MG_PER_ML)}, 1) AS DOUBLE) for n in c.drug_names
          if n IS NOT NULL AND regexp_matches(n, {lit(MG_PER_ML)})][1] END AS concentration_mg_per_ml,
        coalesce(regexp_matches(c.sig, {lit(PCA_WORDS)}), false)
          AND len([n for n in c.drug_names if n IS NOT NULL AND n LIKE '% / %']) = 0 AS pca_sole_agent
      FROM core0 c LEFT JOIN units u ON u.text = c.dose_unit
    ),
    timed AS (SELECT DISTINCT admin_id, patient_id, visit_id, administered_at FROM core WHERE administered_at IS NOT NULL),
    -- body weight
    weights AS (
      SELECT m.measurement_id AS id, m.person_id AS patient, m.visit_occurrence_id AS visit_id,
        coalesce({_time("m.measurement_datetime")}, {_time("m.measurement_date")}) AS t,
        m.value_as_number IS NOT NULL AS valued,
        struct_pack(id := m.measurement_id, value := TRY_CAST(m.value_as_number AS DOUBLE),
          is_number := TRY_CAST(m.value_as_number AS DOUBLE) IS NOT NULL,
          unit := coalesce(trim(m.unit_source_value), CASE WHEN lower(uc.vocabulary_id) = 'ucum' THEN uc.concept_code END,
                           CASE m.unit_concept_id {weight_unit_concepts} END)) AS w
      FROM ({r["measurement"]}) m
      LEFT JOIN concept mc ON mc.concept_id = m.measurement_concept_id
      LEFT JOIN concept uc ON uc.concept_id = m.unit_concept_id
      WHERE m.measurement_concept_id = {lit(BODY_WEIGHT_CONCEPT)} OR {weight_code}
        OR ({_vocabulary("mc.vocabulary_id")} = 'loinc' AND mc.concept_code = {lit(BODY_WEIGHT)})
    ),
    visit_weight AS (
      SELECT c.admin_id, any_value(w.w) AS w FROM (SELECT * FROM timed WHERE visit_id IS NOT NULL) c
      ASOF JOIN (SELECT * FROM weights WHERE valued AND t IS NOT NULL AND visit_id IS NOT NULL) w
        ON c.patient_id = w.patient AND c.visit_id = w.visit_id AND c.administered_at >= w.t
      GROUP BY c.admin_id
    ),
    visit_unweighed AS (
      SELECT visit_id, min(t) AS first_t FROM weights WHERE NOT valued AND visit_id IS NOT NULL GROUP BY visit_id
    ),
    latest_weight AS (
      SELECT c.admin_id, any_value(w.w) AS w FROM timed c
      ASOF JOIN (SELECT * FROM weights WHERE valued AND t IS NOT NULL) w
        ON c.patient_id = w.patient AND c.administered_at >= w.t
      GROUP BY c.admin_id
    ),
    -- conditions
    conditions_t AS (
      SELECT *, coalesce({_time("condition_start_datetime")}, {_time("condition_start_date")}) AS start_t,
        coalesce({_time("condition_end_datetime")}, {_time("condition_end_date", end_of_day=True)}) AS end_t
      FROM ({r["condition_occurrence"]})
    ),
    cond_codes AS ({_coded("conditions_t", ["person_id", "visit_occurrence_id", "start_t", "end_t"], "condition_source_value", ["condition_source_concept_id", "condition_concept_id"])}),
    cond_concepts AS ({coded_concepts("cond_codes", ["person_id", "visit_occurrence_id", "start_t", "end_t"])}),
    admin_conditions AS (
      SELECT c.admin_id, string_agg(DISTINCT cc.concept, ';' ORDER BY cc.concept) AS conditions
      FROM timed c JOIN cond_concepts cc ON cc.person_id = c.patient_id
        AND (cc.start_t IS NULL OR cc.start_t <= c.administered_at) AND (cc.end_t IS NULL OR cc.end_t > c.administered_at)
      WHERE cc.concept IN ({", ".join(lit(x) for x in sorted(kb.concepts))})
      GROUP BY c.admin_id
    ),
    -- indication
    observed_use AS (
      SELECT o.observation_event_id AS admin_id, min(u.use_id) AS use_id
      FROM ({r["observation"]}) o JOIN use_words u ON u.words = {normal_words_sql("o.value_as_string")}
      WHERE {normal_words_sql("o.observation_source_value")} = 'indication'
      GROUP BY o.observation_event_id
    ),
    visit_use AS (
      SELECT cc.visit_occurrence_id AS visit_id, arg_min(u.use_id, cc.rank) AS use_id
      FROM cond_concepts cc JOIN use_concepts u ON u.concept = cc.concept
      WHERE cc.visit_occurrence_id IS NOT NULL GROUP BY cc.visit_occurrence_id
    ),
    -- surgery
    procedures_t AS (
      SELECT *, coalesce({_time("procedure_datetime")}, {_time("procedure_date")}) AS t
      FROM ({r["procedure_occurrence"]})
    ),
    proc_codes AS ({_coded("procedures_t", ["person_id", "visit_occurrence_id", "t"], "procedure_source_value", ["procedure_source_concept_id", "procedure_concept_id"])}),
    procs AS (
      SELECT p.person_id, p.visit_occurrence_id, p.t, c.pclass, c.severity
      FROM ({coded_concepts("proc_codes", ["person_id", "visit_occurrence_id", "t"])}) p JOIN pclasses c ON c.concept = p.concept
    ),
    admin_procedure AS (
      SELECT c.admin_id,
        arg_min(p.pclass, p.severity * 1e12 + coalesce(abs(epoch(p.t) - epoch(c.administered_at)), 0)) AS pclass
      FROM core c JOIN procs p ON p.person_id = c.patient_id AND (
        (p.visit_occurrence_id IS NOT NULL AND p.visit_occurrence_id = c.visit_id)
        OR (p.visit_occurrence_id IS NULL AND abs(epoch(p.t) - epoch(c.administered_at)) <= {PROCEDURE_WINDOW_SECONDS}))
      GROUP BY c.admin_id
    ),
    -- setting
    visits AS (
      SELECT v.visit_occurrence_id, any_value(v.visit_concept_id) AS concept_id, any_value(cs.care_site_name) AS site,
        any_value(vc.concept_name) AS concept_name
      FROM ({r["visit_occurrence"]}) v LEFT JOIN ({r["care_site"]}) cs ON cs.care_site_id = v.care_site_id
      LEFT JOIN concept vc ON vc.concept_id = v.visit_concept_id
      WHERE v.visit_occurrence_id IS NOT NULL GROUP BY v.visit_occurrence_id
    ),
    details AS (
      SELECT v.visit_detail_id, any_value(v.visit_detail_concept_id) AS concept_id, any_value(cs.care_site_name) AS site,
        any_value(vc.concept_name) AS concept_name
      FROM ({r["visit_detail"]}) v LEFT JOIN ({r["care_site"]}) cs ON cs.care_site_id = v.care_site_id
      LEFT JOIN concept vc ON vc.concept_id = v.visit_detail_concept_id
      WHERE v.visit_detail_id IS NOT NULL GROUP BY v.visit_detail_id
    ),
    -- prior IV ketamine course
    observed_course AS (
      SELECT o.observation_event_id AS admin_id, bool_or({yes_no}) AS yes, bool_or(NOT {yes_no}) AS no
      FROM ({r["observation"]}) o
      WHERE {normal_words_sql("o.observation_source_value")} = 'prior iv ketamine'
      GROUP BY o.observation_event_id
    ),
    iv_courses AS (
      SELECT patient_id AS patient, administered_at AS t FROM core
      WHERE route = 'intravenous' AND is_rate AND administered_at IS NOT NULL
    ),
    first_course AS (SELECT patient, min(t) AS t FROM iv_courses GROUP BY patient),
    answer AS (
      SELECT c.*,
        CASE WHEN vw.w IS NOT NULL THEN vw.w WHEN coalesce(vu.first_t <= c.administered_at, false) THEN NULL
             ELSE lw.w END AS weight,
        vd.visit_detail_id IS NOT NULL AS has_detail, vd.concept_id AS detail_concept,
        [vd.site, vd.concept_name] AS detail_names, v.concept_id AS visit_concept, [v.site, v.concept_name] AS visit_names,
        coalesce(vd.site, v.site) AS location,
        coalesce(ou.use_id, vu2.use_id) AS reason_use, ap.pclass, ac.conditions,
        CASE WHEN oc.yes THEN true WHEN oc.no THEN false WHEN fc.t < c.administered_at THEN true END AS prior
      FROM core c
      LEFT JOIN visit_weight vw ON vw.admin_id = c.admin_id
      LEFT JOIN visit_unweighed vu ON vu.visit_id = c.visit_id
      LEFT JOIN latest_weight lw ON lw.admin_id = c.admin_id
      LEFT JOIN details vd ON vd.visit_detail_id = c.visit_detail_id
      LEFT JOIN visits v ON v.visit_occurrence_id = c.visit_id
      LEFT JOIN observed_use ou ON ou.admin_id = c.admin_id
      LEFT JOIN visit_use vu2 ON vu2.visit_id = c.visit_id
      LEFT JOIN admin_procedure ap ON ap.admin_id = c.admin_id
      LEFT JOIN admin_conditions ac ON ac.admin_id = c.admin_id
      LEFT JOIN observed_course oc ON oc.admin_id = c.admin_id
      LEFT JOIN first_course fc ON fc.patient = c.patient_id
    )
    SELECT
      admin_id, patient_id, administered_at, route, kind, dose_value, dose_unit, concentration_mg_per_ml,
      weight.value AS weight_value, weight.unit AS weight_unit,
      CASE WHEN detail_concept = {lit(INTENSIVE_CARE_VISIT)} OR {words_match("detail_names", icu)} THEN 'intensive-care'
           WHEN has_detail AND coalesce(detail_concept, '0') <> '0' THEN 'non-intensive-care'
           WHEN visit_concept = {lit(INTENSIVE_CARE_VISIT)} OR {words_match("visit_names", icu)} THEN 'intensive-care'
           WHEN visit_concept IN ({non_icu_visits}) THEN 'non-intensive-care'
           ELSE 'unknown' END AS setting,
      location,
      coalesce(reason_use, CASE WHEN pclass IS NOT NULL THEN 'perioperative' END) AS indication,
      pclass AS procedure_class,
      conditions,
      CASE WHEN route IN ('oral', 'intranasal') THEN prior END AS prior_iv_ketamine,
      coalesce(pca_sole_agent, false) AS pca_sole_agent,
      CASE
        WHEN admin_id IS NULL THEN 'a drug_exposure row has no drug_exposure_id'
        WHEN patient_id IS NULL THEN {d} || 'no person_id'
        WHEN t_text IS NULL THEN {d} || 'no drug_exposure_start_datetime or drug_exposure_start_date'
        WHEN administered_at IS NULL THEN {d} || 'the start is not a date or time: ' || t_text
        WHEN quantity IS NOT NULL AND dose_value IS NULL THEN {d} || 'quantity is not a number: ' || quantity
        WHEN len(routes) > 1 THEN {d} || 'the route ' || coalesce(route, '') || ' names more than one route'
        WHEN weight IS NOT NULL AND NOT weight.is_number THEN 'measurement/' || weight.id
          || ': the body weight is not a number'
        WHEN weight IS NOT NULL AND weight.unit IS NULL THEN 'measurement/' || weight.id
          || ': the body weight has no unit (kg, g, [lb_av])'
      END AS input_problem
    FROM answer
    """


def _unit_table(drug_exposure: str) -> str:
    """The dose units the table holds, read by the engine's unit parser: (text, ok, is_rate, is_volume)."""
    con = duckdb.connect()
    try:
        found = [
            r[0]
            for r in con.execute(
                f"SELECT DISTINCT trim(dose_unit_source_value) FROM ({drug_exposure}) WHERE dose_unit_source_value IS NOT NULL"
            ).fetchall()
        ]
    finally:
        con.close()
    rows = [f"({lit(u.text)}, {u.ok}, {u.is_rate}, {u.is_volume})" for u in unit_rows(found)]
    if not rows:
        return (
            "SELECT CAST(NULL AS VARCHAR) AS text, false AS ok, false AS is_rate, false AS is_volume LIMIT 0"
        )
    return f"SELECT * FROM (VALUES {', '.join(rows)}) v(text, ok, is_rate, is_volume)"
