"""The OMOP CDM v5.4 form: a folder of OMOP tables as Parquet or CSV files.

``omop_source(folder)`` returns one DuckDB SELECT yielding the canonical columns, one row per ketamine
``drug_exposure``. Tables are found by name (``drug_exposure.parquet``, ``DRUG_EXPOSURE.csv``, a folder
``drug_exposure/`` of parts); columns a file lacks are NULL. Required: ``drug_exposure``; read when present:
``measurement``, ``condition_occurrence``, ``procedure_occurrence``, ``visit_occurrence``, ``visit_detail``,
``care_site``, ``observation`` and the vocabulary tables ``concept``, ``concept_ancestor``,
``concept_relationship`` and ``drug_strength``. CSV is read as text and every value is converted with TRY_CAST, so
a value that is not a number or a time gives the row an ``input_problem``; no row is dropped.

Two ways to read, chosen by what the folder holds (``has_vocabulary``):

- **With the vocabulary** (``concept`` and ``concept_ancestor``, as sites run the CDM): every concept is found by
  its ``vocabulary_id`` and ``concept_code``, never by a concept id written here (``vocabulary_ctes``). Ketamine
  and each opioid are the drug concepts below their RxNorm ingredient (or a ketamine product code of the
  knowledge base) in ``concept_ancestor``; their strengths are ``drug_strength`` rows for that ingredient (a
  ketamine solution's mg per mL; an opioid tablet's mg); a condition's or procedure's codes are those of its
  concepts and of the standard concepts they "Maps to" in ``concept_relationship`` (so a local or ICD-10-CM
  source concept reaches the SNOMED CT code the value sets hold); the body weight is the LOINC 29463-7 concept
  and its unit the UCUM code of ``unit_concept_id``. Source values are still read beside them, for rows an ETL
  left unmapped (concept 0).
- **Without it**, from source values as before, and the ``concept`` table when the folder has one
  (``vocabulary_id``, ``concept_code``, ``concept_name`` of the ids the rows carry), with the few OMOP concept
  ids below (body weight, kg and g, visit kinds), each checked and documented where it is used.

Opioid prescriptions (for tolerance) are read by ``opioid_prescriptions`` (see there).

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
  nasal, intranasal), or the name of ``route_concept_id``. Concentration (for mL and mL/h): the drug's
  ``drug_strength`` for the ketamine ingredient (with the vocabulary), else "NN mg/mL" in its source value or
  concept name.
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

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import Any

import duckdb

from .._errors import InputError
from .._facts import Coded, OpioidUse
from .._kb import KnowledgeBase, load_knowledge
from .._site import Site
from .._units import plain_decimal
from ..adapters.fhir import BODY_WEIGHT, PCA_WORDS, strength_in_names
from ..adapters.fhir_words import ROUTE_CODES, ROUTE_WORDS, word_pattern
from .decide import unit_rows
from .flat import number_sql
from .forms import hidden
from .reader_sql import (
    FIRST_COURSE_CTE,
    MASS_MG,
    MG_PER_ML,
    VOLUME_ML,
    admin_conditions_cte,
    admin_procedure_cte,
    canonical_select,
    classified_procedures,
    coded_concepts,
    concat,
    condition_in_effect,
    icu_named,
    ketamine_words,
    knowledge_ctes,
    norm_code,
    normal_words_sql,
    prior_course_sql,
    re2,
    site_location_sql,
    together_use_cte,
    words_match,
)
from .sql import lit, read_path
from .tolerance import Prescription

__all__ = ["omop_source", "opioid_prescriptions"]

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
        "drug_exposure_end_datetime": "VARCHAR",
        "drug_exposure_end_date": "VARCHAR",
        "days_supply": "VARCHAR",
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
    "concept_ancestor": {"ancestor_concept_id": "VARCHAR", "descendant_concept_id": "VARCHAR"},
    "concept_relationship": {
        "concept_id_1": "VARCHAR",
        "concept_id_2": "VARCHAR",
        "relationship_id": "VARCHAR",
        "invalid_reason": "VARCHAR",
    },
    "drug_strength": {
        "drug_concept_id": "VARCHAR",
        "ingredient_concept_id": "VARCHAR",
        "amount_value": "VARCHAR",
        "amount_unit_concept_id": "VARCHAR",
        "numerator_value": "VARCHAR",
        "numerator_unit_concept_id": "VARCHAR",
        "denominator_value": "VARCHAR",
        "denominator_unit_concept_id": "VARCHAR",
        "invalid_reason": "VARCHAR",
    },
}
# the vocabulary tables that switch the reader from source values to the vocabulary: concept and
# concept_ancestor (concept_relationship and drug_strength are read when present)
VOCABULARY_TABLES = ("concept", "concept_ancestor")


def table_of(name: str) -> str | None:
    """The table a file belongs to, by its name relative to the folder: ``drug_exposure.parquet``,
    ``DRUG_EXPOSURE.csv``, or a file in a folder ``drug_exposure/`` of parts (None deeper down)."""
    parts = PurePosixPath(name).parts
    return parts[0].split(".")[0].lower() if 1 <= len(parts) <= 2 else None


def table_files_in(names: Iterable[str], table: str) -> list[str]:
    """The files of one table among a folder's files (names relative to it): Parquet when both are there."""
    candidates = sorted(n for n in names if table_of(n) == table and not hidden(n))
    parquet = [n for n in candidates if n.lower().endswith(".parquet")]
    text = [n for n in candidates if n.lower().endswith((".csv", ".csv.gz", ".tsv", ".txt"))]
    return parquet or text


def table_files(folder: Path, table: str) -> list[Path]:
    """The files of one OMOP table (``table_files_in``): ``table.parquet`` / ``TABLE.csv`` (also ``.csv.gz``,
    ``.tsv``) or a folder ``table/`` of them."""
    names: list[str] = []
    for entry in folder.iterdir():
        if entry.is_dir():
            names.extend(f"{entry.name}/{p.name}" for p in entry.iterdir() if p.is_file())
        else:
            names.append(entry.name)
    return [folder / name for name in table_files_in(names, table)]


def _columns(files: Sequence[Path]) -> tuple[str, dict[str, str]]:
    """The files' reader (all as text for CSV) and their columns by lower-case name."""
    paths = "[" + ", ".join(read_path(p) for p in files) + "]"  # literally: person[1].csv is no pattern
    if files[0].name.lower().endswith(".parquet"):
        source = f"read_parquet({paths}, union_by_name = true)"
    else:
        source = f"read_csv({paths}, header = true, all_varchar = true, union_by_name = true)"
    con = duckdb.connect()
    try:
        present = {r[0].lower(): r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    finally:
        con.close()
    return source, present


def _text(present: Mapping[str, str], column: str) -> str:
    """A column as the reader takes it: text, trimmed, empty as NULL (NULL when the file lacks it)."""
    if column in present:
        return f"nullif(trim(CAST(\"{present[column]}\" AS VARCHAR)), '')"
    return "CAST(NULL AS VARCHAR)"


def _reader(folder: Path, table: str) -> str:
    """A table's columns as text (NULL for a column the file lacks, or every column when there is no file)."""
    columns = _TABLES[table]
    files = table_files(folder, table)
    if not files:
        nulls = ", ".join(f"CAST(NULL AS VARCHAR) AS {c}" for c in columns)
        return f"SELECT {nulls} LIMIT 0"
    source, present = _columns(files)
    return f"SELECT {', '.join(f'{_text(present, c)} AS {c}' for c in columns)} FROM {source}"


# ----------------------------------------------------------------------------------------------------
# Buckets: each person's rows together (the Spark engine, ``bucket.py``)

TABLES: Sequence[str] = tuple(_TABLES)
# tables about no one person: every bucket gets them whole
SHARED_TABLES = frozenset(
    {"care_site", "concept", "concept_ancestor", "concept_relationship", "drug_strength"}
)


def table_columns(table: str) -> Sequence[str]:
    """The columns the reader takes from a table."""
    return tuple(_TABLES[table])


def bucket_rows_sql(file: Path, table: str) -> str:
    """One file of a table as the reader takes its rows (``_reader``), with ``key``: the row's ``person_id``
    (the CDM's, present in every table about a person, also where the reader does not use it), so that a bucket
    holds a person's rows of every table; NULL for a row of a table about no one person, which every bucket
    gets."""
    source, present = _columns([file])
    key = "CAST(NULL AS VARCHAR)" if table in SHARED_TABLES else _text(present, "person_id")
    columns = ", ".join(f"{_text(present, c)} AS {c}" for c in _TABLES[table])
    return f"SELECT {key} AS key, {columns} FROM {source}"


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
    """(keys..., short, norm) for each code a row carries: its source value read as a code, the codes of its
    concepts (when a concept table is given), and with the vocabulary, the standard concepts each of those
    "Maps to" (``maps_to``: empty without it)."""
    cols = ", ".join(keys)
    keyed = ", ".join("t." + k for k in keys)
    source = f"SELECT {cols}, {_source_codings(source_value)} FROM {table}"
    parts = [source]
    for concept_id in concept_ids:
        parts.append(
            f"SELECT {keyed}, c.short, c.norm FROM {table} t JOIN concept c ON c.concept_id = t.{concept_id}"
        )
        parts.append(
            f"SELECT {keyed}, s.short, s.norm FROM {table} t JOIN maps_to m ON m.concept_id_1 = t.{concept_id} "
            "JOIN concept s ON s.concept_id = m.concept_id_2"
        )
    parts.append(  # a source value that is a code of the vocabulary, and what it maps to
        f"SELECT {keyed}, s.short, s.norm FROM ({source}) t JOIN concept c ON c.short = t.short AND c.norm = t.norm "
        "JOIN maps_to m ON m.concept_id_1 = c.concept_id JOIN concept s ON s.concept_id = m.concept_id_2"
    )
    union = " UNION ALL ".join(parts)
    return f"SELECT * FROM ({union}) WHERE short IS NOT NULL AND norm IS NOT NULL"


def has_vocabulary(folder: Path) -> bool:
    """Whether the folder holds the vocabulary tables the reader needs to work from standard concepts."""
    return all(table_files(Path(folder), t) for t in VOCABULARY_TABLES)


def _ingredient_codes(kb: KnowledgeBase) -> list[tuple[str, str]]:
    """(RxNorm code, ingredient) of the knowledge base's ketamine codes and opioid ingredients."""
    codes = [(code, "ketamine") for code in sorted(kb.ketamine_rxnorm)]
    return codes + [(o.rxnorm, o.ingredient) for o in kb.opioids.values()]


def vocabulary_ctes(r: Mapping[str, str], kb: KnowledgeBase, vocabulary: bool) -> str:
    """CTEs over the vocabulary, each found by ``vocabulary_id`` and ``concept_code``, never by a concept id
    (materialized once: a site's vocabulary holds millions of concepts, and the readers join them often):

    - ``concept``: one row per concept id, with its short system name and normalised code (``short``, ``norm``);
    - ``drug_ingredients`` (concept_id, ingredient, ingredient_concept_id): the knowledge base's RxNorm codes
      (ketamine; each opioid's ingredient) and every concept below them in ``concept_ancestor``;
    - ``maps_to`` (concept_id_1, concept_id_2): a concept and the standard concept it "Maps to";
    - ``strengths``: ``drug_strength`` rows with their units' codes (UCUM: mg, ug, mL, h).

    Without the vocabulary tables (``vocabulary`` False) the last three are empty: the reader works from
    source values and names, as before."""
    concept = f"""
    concept AS MATERIALIZED (
      SELECT *, {_vocabulary("vocabulary_id")} AS short, {norm_code(_vocabulary("vocabulary_id"), "concept_code")} AS norm
      FROM (
        SELECT concept_id, any_value(concept_name) AS concept_name, any_value(vocabulary_id) AS vocabulary_id,
          any_value(concept_code) AS concept_code
        FROM ({r["concept"]}) WHERE concept_id IS NOT NULL GROUP BY concept_id)
    )"""
    if not vocabulary:
        return f"""{concept},
    drug_ingredients AS (SELECT CAST(NULL AS VARCHAR) AS concept_id, CAST(NULL AS VARCHAR) AS ingredient,
      CAST(NULL AS VARCHAR) AS ingredient_concept_id LIMIT 0),
    maps_to AS (SELECT CAST(NULL AS VARCHAR) AS concept_id_1, CAST(NULL AS VARCHAR) AS concept_id_2 LIMIT 0),
    strengths AS (SELECT {", ".join(f"CAST(NULL AS VARCHAR) AS {c}" for c in _STRENGTH_COLUMNS)} LIMIT 0)"""
    codes = ", ".join(f"({lit(code)}, {lit(name)})" for code, name in _ingredient_codes(kb))
    unit = "(SELECT u.concept_code FROM concept u WHERE u.concept_id = ds.{0})"
    return f"""{concept},
    ingredients AS MATERIALIZED (
      SELECT c.concept_id, i.ingredient FROM concept c JOIN (VALUES {codes}) i(code, ingredient)
        ON c.short = 'rxnorm' AND c.norm = i.code
    ),
    drug_ingredients AS MATERIALIZED (
      SELECT DISTINCT a.descendant_concept_id AS concept_id, i.ingredient, i.concept_id AS ingredient_concept_id
      FROM ({r["concept_ancestor"]}) a JOIN ingredients i ON a.ancestor_concept_id = i.concept_id
      UNION SELECT concept_id, ingredient, concept_id FROM ingredients
    ),
    maps_to AS MATERIALIZED (
      SELECT DISTINCT concept_id_1, concept_id_2 FROM ({r["concept_relationship"]})
      WHERE relationship_id = 'Maps to' AND coalesce(invalid_reason, '') = ''
    ),
    strengths AS MATERIALIZED (
      SELECT ds.drug_concept_id, ds.ingredient_concept_id, ds.amount_value, {unit.format("amount_unit_concept_id")} AS amount_unit,
        ds.numerator_value, {unit.format("numerator_unit_concept_id")} AS numerator_unit, ds.denominator_value,
        {unit.format("denominator_unit_concept_id")} AS denominator_unit
      FROM ({r["drug_strength"]}) ds WHERE coalesce(ds.invalid_reason, '') = ''
    )"""


_STRENGTH_COLUMNS = (
    "drug_concept_id",
    "ingredient_concept_id",
    "amount_value",
    "amount_unit",
    "numerator_value",
    "numerator_unit",
    "denominator_value",
    "denominator_unit",
)


# ----------------------------------------------------------------------------------------------------
# The source: named CTE groups, each over the relations the ones before it made


def _strength_mg_per_ml(ds: str) -> str:
    """A drug_strength row's mg per mL (numerator mass over denominator volume; NULL when not that)."""
    mass = MASS_MG.format(u=f"{ds}.numerator_unit")
    volume = VOLUME_ML.format(u=f"{ds}.denominator_unit")
    return (
        f"(TRY_CAST({ds}.numerator_value AS DOUBLE) * ({mass}) / "
        f"nullif(coalesce(TRY_CAST({ds}.denominator_value AS DOUBLE), 1.0) * ({volume}), 0))"
    )


def omop_source(folder: Path, kb: KnowledgeBase | None = None, site: Site | None = None) -> str:
    """A SELECT yielding canonical rows from a folder of OMOP CDM v5.4 tables: the named CTE groups below,
    each over the relations the ones before it made."""
    kb = kb or load_knowledge()
    folder = Path(folder)
    if not table_files(folder, "drug_exposure"):
        raise InputError("INPUT", f"no drug_exposure table (Parquet or CSV) in {folder}")
    r = readers(folder)
    vocabulary = has_vocabulary(folder)
    groups = [
        knowledge_ctes(kb),
        f"units AS ({_unit_table(r['drug_exposure'])})",
        vocabulary_ctes(r, kb, vocabulary),
        exposure_ctes(r, kb),
        weight_ctes(r, vocabulary),
        condition_ctes(r, kb),
        indication_ctes(r),
        procedure_ctes(r),
        visit_ctes(r),
        prior_course_ctes(r),
        answer_cte(),
    ]
    return "\n    WITH " + ",\n    ".join(groups) + "\n    " + omop_canonical_select(site) + "\n    "


def readers(folder: Path) -> dict[str, str]:
    """Each table the reader reads (``_reader``), by name: the relations the parts read."""
    return {t: _reader(folder, t) for t in _TABLES}


def _is_ketamine(kb: KnowledgeBase, names: str) -> str:
    """Whether an exposure ``e`` (its concepts joined as ``dc`` and ``sc``) is of ketamine: an RxNorm code of
    ketamine, a drug below ketamine in the vocabulary, or a name naming it."""
    ket_codes = ", ".join(lit(c) for c in sorted(kb.ketamine_rxnorm))
    ketamine_drugs = "(SELECT concept_id FROM drug_ingredients WHERE ingredient = 'ketamine')"
    return (
        f"((dc.short = 'rxnorm' AND dc.norm IN ({ket_codes})) "
        f"OR (sc.short = 'rxnorm' AND sc.norm IN ({ket_codes})) "
        f"OR e.drug_concept_id IN {ketamine_drugs} OR e.drug_source_concept_id IN {ketamine_drugs} "
        f"OR {words_match(names, ketamine_words(kb), drug_names=True)})"
    )


def routes_sql() -> str:
    """The routes an exposure names (VARCHAR[]): a SNOMED route code as its ``route_source_value``, else the
    words the adapter reads in it or in its route concept's name (``rc``)."""
    route_names = concat("[route_source_value, rc.concept_name]")
    by_code = " ".join(f"WHEN {lit(code)} THEN {lit(route.value)}" for code, route in ROUTE_CODES.items())
    by_words = ", ".join(
        f"CASE WHEN {words_match(route_names, re2(pattern))} THEN {lit(route.value)} END"
        for pattern, route in ROUTE_WORDS
    )
    return (
        f"CASE WHEN trim(route_source_value) IN ({', '.join(lit(c) for c in ROUTE_CODES)}) "
        f"THEN [CASE trim(route_source_value) {by_code} END] "
        f"ELSE list_distinct([x for x in [{by_words}] if x IS NOT NULL]) END"
    )


_KETAMINE_STRENGTH = f"""(SELECT ds.drug_concept_id, any_value({_strength_mg_per_ml("ds")}) AS mg_per_ml
      FROM strengths ds WHERE ds.ingredient_concept_id IN (SELECT ingredient_concept_id FROM drug_ingredients
        WHERE ingredient = 'ketamine') GROUP BY ds.drug_concept_id)"""


def exposure_ctes(r: Mapping[str, str], kb: KnowledgeBase) -> str:
    """The ketamine exposures and their doses (over ``drug_exposure``, the vocabulary and ``units``):
    ``ketamine_exposures`` (with the drug's names, the routes, the vocabulary's strength), ``admin_read`` (the
    canonical names of what a row says), ``admins`` (the dose's kind, concentration, PCA) and ``timed``."""
    names = concat("[drug_source_value, dc.concept_name, sc.concept_name]")
    start = f"coalesce({_time('drug_exposure_start_datetime')}, {_time('drug_exposure_start_date')})"
    return f"""ketamine_exposures AS (
      SELECT e.*, {names} AS drug_names, {routes_sql()} AS routes, rc.concept_name AS route_concept_name,
        ks.mg_per_ml AS vocabulary_mg_per_ml
      FROM ({r["drug_exposure"]}) e
      LEFT JOIN concept dc ON dc.concept_id = e.drug_concept_id
      LEFT JOIN concept sc ON sc.concept_id = e.drug_source_concept_id
      LEFT JOIN concept rc ON rc.concept_id = e.route_concept_id
      LEFT JOIN {_KETAMINE_STRENGTH} ks ON ks.drug_concept_id = e.drug_concept_id
      WHERE {_is_ketamine(kb, names)}
    ),
    admin_read AS (
      SELECT drug_exposure_id AS admin_id, person_id AS patient_id, visit_occurrence_id AS visit_id, visit_detail_id,
        coalesce(drug_exposure_start_datetime, drug_exposure_start_date) AS t_text,
        {start} AS administered_at,
        CASE len(routes) WHEN 1 THEN routes[1] WHEN 0 THEN coalesce(route_source_value, route_concept_name) END AS route,
        routes, quantity, {number_sql("CAST(quantity AS VARCHAR)")} AS dose_value, trim(dose_unit_source_value) AS dose_unit,
        drug_names, sig, vocabulary_mg_per_ml
      FROM ketamine_exposures
    ),
    admins AS (
      SELECT c.*,
        CASE WHEN c.route = 'intravenous' AND u.ok THEN CASE WHEN u.is_rate THEN 'infusion' ELSE 'bolus' END END AS kind,
        coalesce(u.is_rate, false) AS is_rate,
        CASE WHEN u.is_volume THEN coalesce(c.vocabulary_mg_per_ml,
          [TRY_CAST(regexp_extract(n, {lit(MG_PER_ML)}, 1) AS DOUBLE) for n in c.drug_names
           if n IS NOT NULL AND regexp_matches(n, {lit(MG_PER_ML)})][1]) END AS concentration_mg_per_ml,
        coalesce(regexp_matches(c.sig, {lit(PCA_WORDS)}), false)
          AND len([n for n in c.drug_names if n IS NOT NULL AND n LIKE '% / %']) = 0 AS pca_sole_agent
      FROM admin_read c LEFT JOIN units u ON u.text = c.dose_unit
    ),
    timed AS (SELECT DISTINCT admin_id, patient_id, visit_id, administered_at FROM admins WHERE administered_at IS NOT NULL)"""


def weight_ctes(r: Mapping[str, str], vocabulary: bool) -> str:
    """The body weight (over ``timed``, ``measurement`` and the vocabulary): ``weights`` (body-weight
    measurements, each as a struct ``w``), ``visit_weight`` (the latest in the exposure's visit),
    ``visit_unweighed`` (a visit's first body weight without a value) and ``latest_weight`` (the person's)."""
    weight_unit_concepts = " ".join(f"WHEN {lit(k)} THEN {lit(v)}" for k, v in WEIGHT_UNIT_CONCEPTS.items())
    # the OMOP concept ids of body weight and of kg and g, only without the vocabulary (which names them by code)
    weight_unit_ids = "NULL" if vocabulary else f"CASE m.unit_concept_id {weight_unit_concepts} END"
    weight_id = "false" if vocabulary else f"m.measurement_concept_id = {lit(BODY_WEIGHT_CONCEPT)}"
    weight_code = f"(trim(m.measurement_source_value) = {lit(BODY_WEIGHT)} OR m.measurement_source_value LIKE '%:{BODY_WEIGHT}')"
    value = number_sql("CAST(m.value_as_number AS VARCHAR)")
    return f"""weights AS (
      SELECT m.measurement_id AS id, m.person_id AS patient, m.visit_occurrence_id AS visit_id,
        coalesce({_time("m.measurement_datetime")}, {_time("m.measurement_date")}) AS t,
        m.value_as_number IS NOT NULL AS valued,
        struct_pack(id := m.measurement_id, value := {value},
          is_number := {value} IS NOT NULL,
          unit := coalesce(trim(m.unit_source_value), CASE WHEN lower(uc.vocabulary_id) = 'ucum' THEN uc.concept_code END,
                           {weight_unit_ids})) AS w
      FROM ({r["measurement"]}) m
      LEFT JOIN concept mc ON mc.concept_id = m.measurement_concept_id
      LEFT JOIN concept uc ON uc.concept_id = m.unit_concept_id
      WHERE {weight_id} OR {weight_code} OR (mc.short = 'loinc' AND mc.norm = {lit(BODY_WEIGHT)})
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
    )"""


_CONDITION_KEYS = ["person_id", "visit_occurrence_id", "start_t", "end_t"]


def condition_ctes(r: Mapping[str, str], kb: KnowledgeBase) -> str:
    """The conditions in effect at each exposure (over ``timed``, ``condition_occurrence`` and the vocabulary):
    ``conditions_read`` (with start and end), ``condition_codes`` (``_coded``), ``condition_concepts``,
    ``admin_concepts`` (those of the knowledge base in effect) and ``admin_conditions``."""
    codes = _coded(
        "conditions_read",
        _CONDITION_KEYS,
        "condition_source_value",
        ["condition_source_concept_id", "condition_concept_id"],
    )
    in_effect = condition_in_effect("cc.start_t", "cc.end_t", "false", "c.administered_at")
    return f"""conditions_read AS (
      SELECT *, coalesce({_time("condition_start_datetime")}, {_time("condition_start_date")}) AS start_t,
        coalesce({_time("condition_end_datetime")}, {_time("condition_end_date", end_of_day=True)}) AS end_t
      FROM ({r["condition_occurrence"]})
    ),
    condition_codes AS ({codes}),
    condition_concepts AS ({coded_concepts("condition_codes", _CONDITION_KEYS)}),
    admin_concepts AS (
      SELECT c.admin_id, cc.concept
      FROM timed c JOIN condition_concepts cc ON cc.person_id = c.patient_id AND {in_effect}
      WHERE cc.concept IN ({", ".join(lit(x) for x in sorted(kb.concepts))})
    ),
    {admin_conditions_cte()}"""


def indication_ctes(r: Mapping[str, str]) -> str:
    """The indication (over ``observation``, ``condition_concepts`` and the uses): ``observed_use`` (an
    observation "indication" of the exposure naming a use), and by visit: ``visit_together`` and ``visit_use``
    (the use of a condition's concept in the visit)."""
    visit_concepts = (
        "(SELECT visit_occurrence_id AS visit_id, concept FROM condition_concepts "
        "WHERE visit_occurrence_id IS NOT NULL)"
    )
    return f"""observed_use AS (
      SELECT o.observation_event_id AS admin_id, min(u.use_id) AS use_id
      FROM ({r["observation"]}) o JOIN use_words u ON u.words = {normal_words_sql("o.value_as_string")}
      WHERE {normal_words_sql("o.observation_source_value")} = 'indication'
      GROUP BY o.observation_event_id
    ),
    {together_use_cte("visit_together", "visit_id", visit_concepts)},
    visit_use AS (
      SELECT cc.visit_occurrence_id AS visit_id, arg_min(u.use_id, cc.rank) AS use_id
      FROM condition_concepts cc JOIN use_concepts u ON u.concept = cc.concept
      WHERE cc.visit_occurrence_id IS NOT NULL GROUP BY cc.visit_occurrence_id
    )"""


def procedure_ctes(r: Mapping[str, str]) -> str:
    """The surgery (over ``admins``, ``procedure_occurrence`` and the vocabulary): ``procedures_read``,
    ``procedure_codes`` (``_coded``), ``procs`` (those in a procedure class) and ``admin_procedure``: one in the
    exposure's visit, or without a visit and near in time."""
    keys = ["person_id", "visit_occurrence_id", "t"]
    codes = _coded(
        "procedures_read",
        keys,
        "procedure_source_value",
        ["procedure_source_concept_id", "procedure_concept_id"],
    )
    same_visit = "p.visit_occurrence_id = c.visit_id"
    return f"""procedures_read AS (
      SELECT *, coalesce({_time("procedure_datetime")}, {_time("procedure_date")}) AS t
      FROM ({r["procedure_occurrence"]})
    ),
    procedure_codes AS ({codes}),
    procs AS (
      {classified_procedures("procedure_codes", keys)}
    ),
    {admin_procedure_cte("admins c", "person_id", "visit_occurrence_id", same_visit)}"""


def visit_ctes(r: Mapping[str, str]) -> str:
    """The setting's evidence (over ``visit_occurrence``, ``visit_detail``, ``care_site`` and the vocabulary):
    ``visits`` and ``details``, each with its concept, care site and concept name."""
    return f"""visits AS (
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
    )"""


_YES_NO = (
    "CASE WHEN lower(trim(o.value_as_string)) IN ('yes', 'y', 'true', '1') OR TRY_CAST(o.value_as_number AS DOUBLE) = 1 "
    "THEN true WHEN lower(trim(o.value_as_string)) IN ('no', 'n', 'false', '0') "
    "OR TRY_CAST(o.value_as_number AS DOUBLE) = 0 THEN false END"
)


def prior_course_ctes(r: Mapping[str, str]) -> str:
    """A prior IV ketamine course (over ``admins`` and ``observation``): ``observed_course`` (an observation
    "prior IV ketamine" of the exposure, yes or no), ``iv_courses`` (IV ketamine at a rate) and
    ``first_course``."""
    return f"""observed_course AS (
      SELECT o.observation_event_id AS admin_id, bool_or({_YES_NO}) AS yes, bool_or(NOT {_YES_NO}) AS no
      FROM ({r["observation"]}) o
      WHERE {normal_words_sql("o.observation_source_value")} = 'prior iv ketamine'
      GROUP BY o.observation_event_id
    ),
    iv_courses AS (
      SELECT patient_id AS patient, administered_at AS t FROM admins
      WHERE route = 'intravenous' AND is_rate AND administered_at IS NOT NULL
    ),
    {FIRST_COURSE_CTE}"""


def answer_cte() -> str:
    """``answer``: each exposure (``admins``) with what the parts above found for it."""
    return f"""answer AS (
      SELECT c.*,
        CASE WHEN vw.w IS NOT NULL THEN vw.w WHEN coalesce(vu.first_t <= c.administered_at, false) THEN NULL
             ELSE lw.w END AS weight,
        vd.visit_detail_id IS NOT NULL AS has_detail, vd.concept_id AS detail_concept,
        [vd.site, vd.concept_name] AS detail_names, v.concept_id AS visit_concept, [v.site, v.concept_name] AS visit_names,
        coalesce(vd.site, v.site) AS location,
        coalesce(ou.use_id, vt.use_id, vu2.use_id) AS reason_use, ap.pclass, ac.conditions,
        {prior_course_sql("oc")}
      FROM admins c
      LEFT JOIN visit_weight vw ON vw.admin_id = c.admin_id
      LEFT JOIN visit_unweighed vu ON vu.visit_id = c.visit_id
      LEFT JOIN latest_weight lw ON lw.admin_id = c.admin_id
      LEFT JOIN details vd ON vd.visit_detail_id = c.visit_detail_id
      LEFT JOIN visits v ON v.visit_occurrence_id = c.visit_id
      LEFT JOIN observed_use ou ON ou.admin_id = c.admin_id
      LEFT JOIN visit_together vt ON vt.visit_id = c.visit_id
      LEFT JOIN visit_use vu2 ON vu2.visit_id = c.visit_id
      LEFT JOIN admin_procedure ap ON ap.admin_id = c.admin_id
      LEFT JOIN admin_conditions ac ON ac.admin_id = c.admin_id
      LEFT JOIN observed_course oc ON oc.admin_id = c.admin_id
      LEFT JOIN first_course fc ON fc.patient = c.patient_id
    )"""


def setting_sql(site: Site | None) -> str:
    """The setting: a site's intensive-monitoring location, else the visit detail's concept or names, else the
    visit's."""
    non_icu_visits = ", ".join(lit(v) for v in NON_INTENSIVE_VISITS)
    return f"""CASE WHEN {site_location_sql(site, "[]::JSON[]", "detail_names")} OR {site_location_sql(site, "[]::JSON[]", "visit_names")}
             THEN 'intensive-care'
           WHEN detail_concept = {lit(INTENSIVE_CARE_VISIT)} OR {icu_named("detail_names")} THEN 'intensive-care'
           WHEN has_detail AND coalesce(detail_concept, '0') <> '0' THEN 'non-intensive-care'
           WHEN visit_concept = {lit(INTENSIVE_CARE_VISIT)} OR {icu_named("visit_names")} THEN 'intensive-care'
           WHEN visit_concept IN ({non_icu_visits}) THEN 'non-intensive-care'
           ELSE 'unknown' END"""


def omop_canonical_select(site: Site | None) -> str:
    """The canonical columns from ``answer``, with the setting (``setting_sql``) and ``input_problem``."""
    d = "'drug_exposure/' || admin_id || ': '"
    input_problem = f"""CASE
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
      END"""
    return canonical_select("CAST(NULL AS VARCHAR)", setting_sql(site), input_problem)


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


# ----------------------------------------------------------------------------------------------------
# Opioid prescriptions (for tolerance: ``tolerance.py``)

AS_NEEDED_SIG = re.compile(r"\b(?:prn|as needed|as required)\b", re.IGNORECASE)
_MASS_FACTORS: Mapping[str, Fraction] = {
    "mg": Fraction(1),
    "g": Fraction(1000),
    "ug": Fraction(1, 1000),
    "mcg": Fraction(1, 1000),
}
_VOLUME_FACTORS: Mapping[str, Fraction] = {"ml": Fraction(1), "l": Fraction(1000)}


def opioid_prescriptions(
    con: duckdb.DuckDBPyConnection, folder: Path, administrations: str, kb: KnowledgeBase
) -> tuple[dict[str, list[Prescription]], str]:
    """The opioid ``drug_exposure`` rows of the persons in ``administrations``, by person id.

    With the vocabulary tables, an opioid is a drug concept below an opioid's RxNorm ingredient
    (``concept_ancestor``) and its strength is the ``drug_strength`` row for that ingredient; without them (and
    for rows whose concept the vocabulary does not hold) the drug's names say which opioid it is (as the FHIR
    adapter reads names) and the strength is the first after the opioid's name ("oxycodone hydrochloride 5 MG
    Oral Tablet"). The daily amount is ``quantity`` times the strength over ``days_supply`` (what was supplied
    per day of supply); a ``sig`` saying as needed (PRN) makes it unknown, as an as-needed FHIR order does.
    An exposure of one day without a days supply is a dose given (an administration), not a prescription: the
    FHIR reader reads requests and statements, not administrations, and so does this one.
    OMOP records no patches worn at once, so transdermal fentanyl's mcg/h is unknown. Every exposure type
    counts (written, dispensed, administered), from its start to ``drug_exposure_end_date`` (else the last day of
    its supply; else its end is not known)."""
    folder = Path(folder)
    tables = ("drug_exposure", "concept", "concept_ancestor", "concept_relationship", "drug_strength")
    r = {t: _reader(folder, t) for t in tables}
    vocabulary = has_vocabulary(folder)
    names = concat("[e.drug_source_value, dc.concept_name, sc.concept_name]")
    words = "|".join(re.escape(i.lower()) for i in kb.opioids)
    rows = con.execute(f"""
        WITH {vocabulary_ctes(r, kb, vocabulary)},
        opioid_drugs AS (
          SELECT concept_id, arg_min(ingredient, ingredient) AS ingredient,
            arg_min(ingredient_concept_id, ingredient) AS ingredient_concept_id
          FROM drug_ingredients WHERE ingredient <> 'ketamine' GROUP BY concept_id
        ),
        candidates AS (
          SELECT e.*, {names} AS names, coalesce(od.ingredient, os.ingredient) AS ingredient,
            coalesce(od.ingredient_concept_id, os.ingredient_concept_id) AS ingredient_concept_id,
            coalesce(od.concept_id, os.concept_id) IS NOT NULL AS by_vocabulary
          FROM ({r["drug_exposure"]}) e
          LEFT JOIN concept dc ON dc.concept_id = e.drug_concept_id
          LEFT JOIN concept sc ON sc.concept_id = e.drug_source_concept_id
          LEFT JOIN opioid_drugs od ON od.concept_id = e.drug_concept_id
          LEFT JOIN opioid_drugs os ON os.concept_id = e.drug_source_concept_id
          WHERE e.person_id IN (SELECT patient_id FROM {administrations})
        )
        SELECT c.person_id, c.ingredient, c.names,
          coalesce(c.drug_exposure_start_date, substr(c.drug_exposure_start_datetime, 1, 10)) AS start_day,
          coalesce(c.drug_exposure_end_date, substr(c.drug_exposure_end_datetime, 1, 10)) AS end_day,
          c.days_supply, c.quantity, c.sig,
          ds.amount_value, ds.amount_unit, ds.numerator_value, ds.numerator_unit, ds.denominator_value,
          ds.denominator_unit
        FROM candidates c
        LEFT JOIN strengths ds ON ds.drug_concept_id = coalesce(c.drug_concept_id, '')
          AND ds.ingredient_concept_id = c.ingredient_concept_id
        WHERE (c.by_vocabulary OR regexp_matches(lower(array_to_string(c.names, ' ')), {lit(words)}))
          AND NOT (c.days_supply IS NULL AND coalesce(end_day = start_day, true))
    """).fetchall()
    found: dict[str, list[Prescription]] = {}
    for row in rows:
        prescription = _exposure_prescription(row, kb)
        if prescription is not None:
            found.setdefault(str(row[0]), []).append(prescription)
    return found, ""


def _exposure_prescription(row: Sequence[Any], kb: KnowledgeBase) -> Prescription | None:
    (_, ingredient, names, start_day, end_day, supply, quantity, sig, *strength) = row
    names = tuple(n for n in (names or ()) if n)
    ingredient = ingredient or _named_opioid(names, kb)
    if ingredient is None:
        return None
    as_needed = bool(sig and AS_NEEDED_SIG.search(sig))
    start, end = _day(start_day), _day(end_day)
    days = _positive(supply)
    amount = None
    if not as_needed and kb.opioids[ingredient].unit == "mg/d":
        amount = _mg_per_day(ingredient, names, _positive(quantity), days, strength)
    end_known = True
    if end is None and start is not None and days is not None:
        end = start + dt.timedelta(days=int(days) - 1) if days.denominator == 1 else None
    if end is None:
        end_known = False
    source = Coded(names[0] if names else ingredient)
    return Prescription(OpioidUse(ingredient, amount, start, end, source, as_needed), end_known)


def _named_opioid(names: Sequence[str], kb: KnowledgeBase) -> str | None:
    """The opioid a drug's names name first (whole words), as the FHIR adapter reads a product's names."""
    pattern = word_pattern(tuple(kb.opioids))
    for name in dict.fromkeys(names):
        found = pattern.search(name)
        if found:
            return found.group(0).lower()
    return None


def _mg_per_day(
    ingredient: str,
    names: tuple[str, ...],
    quantity: Fraction | None,
    days: Fraction | None,
    strength: Sequence[Any],
) -> Fraction | None:
    """quantity x strength / days supply, in mg per day; None when any of them is not known."""
    if quantity is None or days is None:
        return None
    per_unit = _vocabulary_strength(strength)
    if per_unit is None:
        per_unit = strength_in_names(names, ingredient, None) or strength_in_names(names, ingredient, "ml")
    return quantity * per_unit / days if per_unit is not None else None


def _vocabulary_strength(strength: Sequence[Any]) -> Fraction | None:
    """mg per unit (a tablet: ``amount_value``) or per mL (``numerator_value`` over ``denominator_value``)."""
    amount, amount_unit, numerator, numerator_unit, denominator, denominator_unit = strength
    value, factor = _positive(amount), _MASS_FACTORS.get(str(amount_unit or "").lower())
    if value is not None and factor is not None:
        return value * factor
    value, factor = _positive(numerator), _MASS_FACTORS.get(str(numerator_unit or "").lower())
    volume = _VOLUME_FACTORS.get(str(denominator_unit or "").lower())
    if value is None or factor is None or volume is None:
        return None
    per = _positive(denominator) if denominator is not None else Fraction(1)
    return value * factor / (per * volume) if per is not None else None


def _positive(text: Any) -> Fraction | None:
    number = plain_decimal(str(text), exponent=True) if text is not None else None  # "2_0" is not 20
    return Fraction(number) if number is not None and number > 0 else None


def _day(text: Any) -> dt.date | None:
    try:
        return dt.date.fromisoformat(str(text).strip()[:10]) if text else None
    except ValueError:
        return None
