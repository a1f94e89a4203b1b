"""The FHIR Bulk Data form: a folder of NDJSON files of FHIR R4 resources, one resource per line.

``fhir_source(folder)`` returns one DuckDB SELECT yielding the canonical columns (``canonical.COLUMNS``), one row
per ketamine MedicationAdministration. It reads the files with ``read_json(format = 'newline_delimited')`` and
explicit columns (nested elements as JSON), so it streams and never guesses a schema; it follows the FHIR
adapter's conventions (``adapters/fhir.py``, ``../shared/CONTRACT.md``) and takes every code list from the
knowledge base. What the export does not say stays unknown (no weight, setting ``unknown``, no indication);
the engine then asks for it. No row is dropped: a line that cannot be read, an administration whose medication
is not in the export or that was not given is a row with ``input_problem`` set.

Files. Every ``*.ndjson`` (or ``.ndjson.gz``) file below the folder whose name holds a resource type as a word
(``MedicationAdministration.ndjson``, ``MedicationAdministration.000.ndjson``, ``1.Observation.ndjson``) is read
for that type; a file naming no resource type is read for every type. Rows are kept by ``resourceType``; a line
of a MedicationAdministration file that is not a resource (not JSON, or no resourceType) is a bad row, one in a
file named for no type (the Bulk Data ``log.ndjson``) is not read. A missing type (no ``Location.ndjson``, say)
is an empty table.

Conventions (each documented where it is read below):

- Administration: ``MedicationAdministration`` whose ``medicationCodeableConcept`` or referenced (or contained)
  ``Medication`` has a ketamine RxNorm code or names ketamine (code, ingredients, texts, displays); status
  ``not-done`` or ``entered-in-error`` is a bad row ("not given"). Time: ``effectiveDateTime``, else
  ``effectivePeriod.start``; times with an offset are converted to UTC (the canonical table is UTC).
- Dose: ``dosage.rateQuantity`` or ``dosage.rateRatio`` (per hour) is an infusion, else ``dosage.dose`` a bolus;
  the unit is the Quantity's ``code``, else its ``unit``. Route: ``dosage.route`` (SNOMED 47625008, 26643006,
  46713006, else the words the adapter reads), else the route of the request's ``dosageInstruction``.
- Concentration (only for a dose in mL or mL/h): the ingredient strength of the Medication (mg per mL), else
  "NN mg/mL" in its name.
- Weight: a body-weight Observation (LOINC 29463-7, final/amended/corrected) the administration cites in
  ``supportingInformation`` (FHIR's own example of that element), taken at or before the time; one cited with
  ``dataAbsentReason`` and no value means the weight was not available for this administration (NULL, not an
  older weight). Otherwise the patient's latest body weight at or before the time (ASOF join). Undated weights
  are not used.
- Conditions: the patient's Conditions with a code in the value sets, onset (``onsetDateTime``,
  ``onsetPeriod.start``, else ``recordedDate``) at or before the time or unknown, not refuted or entered in error,
  and not over by then: an abatement at or before the time ends it (a date without a time ends at the end of that
  day); without an abatement date, clinicalStatus resolved/inactive/remission ends it. A latest pregnancy-status
  Observation (LOINC 82810-3) of "pregnant" (SNOMED 77386006) adds ``pregnancy``, as in the adapter.
- Indication: the fulfilled ``MedicationRequest`` (``request``): its ``reasonCode`` codings (or the codes of a
  ``reasonReference`` Condition) whose concept is a knowledge-base use's concept, first reason first; else a
  reason whose text (or display) is a use's id or label ("procedural sedation", "acute-pain"), for the uses no
  clinical code names; else ``perioperative`` when a surgery is found (below), as the adapter does.
- Procedure class: a Procedure (not not-done or entered-in-error) whose code is in a ``procedure:<class>`` value
  set, in the administration's Encounter (or the Encounter it is part of), or without an Encounter and performed
  within 24 hours of the administration; the more painful class first, then the nearest in time.
- Setting and location: the Encounter (``context``, else the request's ``encounter``), unless it is cancelled,
  entered in error or planned (an Encounter that did not take place says nothing), and its locations: those
  whose ``period`` covers the time, else the active ones, else all but planned. A Location typed v3 RoleCode
  ICU/PEDICU/PEDNICU or named intensive care/ICU in its type is intensive care; typed otherwise, not; untyped or
  unresolved, unknown (then an ambulatory, emergency, virtual or home-health Encounter class is not intensive
  care). ``location`` is the chosen Location's ``name`` (else the reference's display).
- Prior IV ketamine (oral and intranasal only): a ketamine MedicationStatement of an IV infusion cited in
  ``supportingInformation``: status active/completed (and begun before) means yes, ``not-taken`` no (the
  record's own answer for this administration; the live service, asked about now, has no cited statement and
  never says no); else yes when the record shows an IV ketamine infusion before, as the adapter
  reads one (``_iv_infusion``: a rate, or an infusion named in words where no dose is coded; an administration
  over time): an administration, an active or completed statement, or an active or completed request (dated by
  ``authoredOn``); unknown otherwise (not found is not
  ruled out, as in ``assess``). A single IV bolus is not a course.
- PCA as sole agent: an IV dose whose ``dosage.method`` (else the fulfilled request's dosage method, where orders
  write it) names patient-controlled analgesia (PCA), and every ingredient of the Medication is ketamine.
- Opioid tolerance: ``opioid_prescriptions`` (MedicationRequests and MedicationStatements read by the adapter's
  ``OpioidReader``) and ``tolerance.py``.

Where this reader and the live adapter read the same record differently on purpose (the adapter asks about now,
the audit reads history), ``tests/audit/fhir_conformance.py`` says so, fixture by fixture.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import duckdb

from .._errors import DuplicateKeyError, InputError
from .._facts import Coded, OpioidUse
from .._inputs import parse_json
from .._kb import SYSTEM_ALIASES, SYSTEMS, KnowledgeBase, load_knowledge
from .._site import Site
from .._units import MASS_UNITS, TIME_UNITS, VOLUME_UNITS
from ..adapters.fhir import (
    BODY_WEIGHT,
    COURSE_REQUEST_STATUSES,
    NOT_PREGNANT,
    PCA_WORDS,
    PREGNANCY_STATUS,
    PREGNANT,
    R4_RESOURCE_TYPES,
    OpioidReader,
)
from ..adapters.fhir_words import (
    FINAL_OBSERVATION,
    IGNORED_CLINICAL_STATUS,
    IGNORED_VERIFICATION_STATUS,
    INFUSION_WORDS,
    INTENSIVE_CARE_ROLE_CODES,
    NON_INTENSIVE_CLASSES,
    NOT_GIVEN_ADMINISTRATION_STATUSES,
    ROLE_CODE_SYSTEMS,
    ROUTE_CODES,
    ROUTE_WORDS,
)
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

__all__ = ["fhir_source", "opioid_prescriptions"]

# An Encounter that never took place says nothing about where a dose was given (the exported history of a
# real stay is "finished", which is how it should be; the live adapter, asked about now, wants one in progress).
_NO_SETTING_ENCOUNTER_STATUSES = ("cancelled", "entered-in-error", "planned")

# ----------------------------------------------------------------------------------------------------
# SQL helpers over FHIR (those both readers use are in reader_sql.py)


def json_list(expr: str) -> str:
    """A JSON[] from json_extract with a wildcard path, NULL counting as empty."""
    return f"coalesce({expr}, CAST([] AS JSON[]))"


def short_system(expr: str) -> str:
    """SQL for ``_kb.short_system``: a code system URL, OID or short name as snomed/icd10cm/rxnorm/loinc."""
    exact = " ".join(f"WHEN {lit(k)} THEN {lit(k)}" for k in SYSTEMS)
    alias = " ".join(f"WHEN {lit(k)} THEN {lit(v)}" for k, v in SYSTEM_ALIASES.items())
    return (
        f"coalesce(CASE trim({expr}) {exact} END, CASE trim({expr}) {alias} END, "
        f"CASE lower(trim({expr})) {alias} END)"
    )


def system_is(expr: str, short: str) -> str:
    """SQL for ``_kb.short_system(expr) == short`` (cheaper than computing the short name)."""
    exact = [k for k in SYSTEMS if k == short] + [k for k, v in SYSTEM_ALIASES.items() if v == short]
    lowered = [k for k, v in SYSTEM_ALIASES.items() if v == short]
    return f"(trim({expr}) IN ({', '.join(lit(k) for k in exact)}) OR lower(trim({expr})) IN ({', '.join(lit(k) for k in lowered)}))"


def timestamp_sql(expr: str, end_of_day: bool = False) -> str:
    """A FHIR date or dateTime as a UTC TIMESTAMP: an offset is applied; a date alone is its midnight (or the next
    midnight with ``end_of_day``, for an end that is only a date); anything else is NULL."""
    day = f"CAST(TRY_CAST({expr} AS DATE) AS TIMESTAMP)" + (" + INTERVAL 1 DAY" if end_of_day else "")
    offset = (
        f"(ends_with({expr}, 'Z') OR (substr({expr}, -6, 1) IN ('+', '-') AND substr({expr}, -3, 1) = ':'))"
    )
    return (
        f"CASE WHEN {expr} IS NULL THEN NULL WHEN length({expr}) = 10 THEN {day} "
        f"WHEN {offset} THEN timezone('UTC', TRY_CAST({expr} AS TIMESTAMPTZ)) "
        f"ELSE TRY_CAST({expr} AS TIMESTAMP) END"
    )


# ----------------------------------------------------------------------------------------------------
# Files


_READ: Mapping[str, Mapping[str, str]] = {
    "MedicationAdministration": {
        "id": "VARCHAR",
        "status": "VARCHAR",
        "contained": "JSON",
        "medicationCodeableConcept": "JSON",
        "medicationReference": "JSON",
        "subject": "JSON",
        "context": "JSON",
        "effectiveDateTime": "VARCHAR",
        "effectivePeriod": "JSON",
        "request": "JSON",
        "dosage": "JSON",
        "supportingInformation": "JSON",
    },
    "Medication": {"id": "VARCHAR", "code": "JSON", "ingredient": "JSON"},
    "MedicationRequest": {
        "id": "VARCHAR",
        "status": "VARCHAR",
        "subject": "JSON",
        "authoredOn": "VARCHAR",
        "medicationCodeableConcept": "JSON",
        "medicationReference": "JSON",
        "encounter": "JSON",
        "reasonCode": "JSON",
        "reasonReference": "JSON",
        "dosageInstruction": "JSON",
        "note": "JSON",
    },
    "MedicationStatement": {
        "id": "VARCHAR",
        "status": "VARCHAR",
        "subject": "JSON",
        "medicationCodeableConcept": "JSON",
        "medicationReference": "JSON",
        "effectiveDateTime": "VARCHAR",
        "effectivePeriod": "JSON",
        "dosage": "JSON",
        "note": "JSON",
    },
    "Observation": {
        "id": "VARCHAR",
        "status": "VARCHAR",
        "subject": "JSON",
        "code": "JSON",
        "effectiveDateTime": "VARCHAR",
        "effectiveInstant": "VARCHAR",
        "effectivePeriod": "JSON",
        "issued": "VARCHAR",
        "valueQuantity": "JSON",
        "valueCodeableConcept": "JSON",
    },
    "Condition": {
        "id": "VARCHAR",
        "subject": "JSON",
        "clinicalStatus": "JSON",
        "verificationStatus": "JSON",
        "code": "JSON",
        "onsetDateTime": "VARCHAR",
        "onsetPeriod": "JSON",
        "recordedDate": "VARCHAR",
        "abatementDateTime": "VARCHAR",
        "abatementPeriod": "JSON",
    },
    "Encounter": {
        "id": "VARCHAR",
        "status": "VARCHAR",
        "class": "JSON",
        "location": "JSON",
        "partOf": "JSON",
    },
    "Location": {"id": "VARCHAR", "name": "VARCHAR", "type": "JSON", "identifier": "JSON", "alias": "JSON"},
    "Procedure": {
        "id": "VARCHAR",
        "status": "VARCHAR",
        "subject": "JSON",
        "encounter": "JSON",
        "code": "JSON",
        "performedDateTime": "VARCHAR",
        "performedPeriod": "JSON",
    },
}
_TOKEN = re.compile(r"[A-Za-z]+")


def is_ndjson(name: str) -> bool:
    """A file the reader reads (``name``: its path below the folder; not a hidden one, ``forms.hidden``)."""
    return name.endswith((".ndjson", ".ndjson.gz")) and not hidden(name)


def ndjson_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_ndjson(p.relative_to(folder).as_posix()))


def types_named(file_name: str) -> set[str]:
    """The resource types a file's name holds as words (``MedicationAdministration.000.ndjson``)."""
    return {t for t in _TOKEN.findall(file_name) if t in R4_RESOURCE_TYPES}


def reads_type(file_name: str, resource_type: str) -> bool:
    """Whether a file may hold this resource type: named for it, or named for no resource type at all."""
    types = types_named(file_name)
    return resource_type in types or not types


def _read_paths(files: Iterable[Path]) -> str:
    """The files as a list for DuckDB's readers, each read literally (``sql.read_path``)."""
    return "[" + ", ".join(read_path(p) for p in files) + "]"


def _files_for(folder: Path, resource_type: str) -> list[Path]:
    """The files that may hold this resource type (``reads_type``)."""
    return [path for path in ndjson_files(folder) if reads_type(path.name, resource_type)]


def _reader(folder: Path, resource_type: str) -> str:
    """The resources of one type (``resourceType`` checked); an empty relation when no file may hold them.

    ``ignore_errors``: a line that is not JSON becomes a row of NULLs (kept for administrations, see below)."""
    columns = {"resourceType": "VARCHAR", **_READ[resource_type]}
    files = _files_for(folder, resource_type)
    if not files:
        nulls = ", ".join(f'CAST(NULL AS {t}) AS "{c}"' for c, t in columns.items())
        return f"SELECT {nulls}, CAST(NULL AS VARCHAR) AS filename LIMIT 0"
    spec = "{" + ", ".join(f"{lit(c)}: {lit(t)}" for c, t in columns.items()) + "}"
    paths = _read_paths(files)
    keep = f'"resourceType" = {lit(resource_type)}'
    named = [p for p in files if resource_type in types_named(p.name)]
    if resource_type == "MedicationAdministration" and named:
        # a line of an administrations file that is not a resource (not JSON, no resourceType) may have been one;
        # in a file named for no type (a Bulk Data log.ndjson, say) it is not counted (DuckDB's filename is
        # the absolute path it read)
        keep += f' OR ("resourceType" IS NULL AND filename IN ({", ".join(lit(os.path.abspath(p)) for p in named)}))'
    return (
        f"SELECT * FROM read_json({paths}, format = 'newline_delimited', columns = {spec}, "
        f"ignore_errors = true, filename = true) WHERE {keep}"
    )


# ----------------------------------------------------------------------------------------------------
# SQL fragments over FHIR JSON


def ref_id(reference: str, resource_type: str) -> str:
    """The id a Reference names: ``Type/id`` (also inside an absolute URL or with ``/_history``) or
    ``urn:uuid:id``."""
    return (
        f"CASE WHEN {reference} LIKE 'urn:uuid:%' THEN substr({reference}, 10) "
        f"ELSE nullif(regexp_extract({reference}, '(?:^|/){resource_type}/([^/]+)', 1), '') END"
    )


CODING = "(c->>'system')"  # the system of a coding ``c`` in a list comprehension


def _codings(concept: str) -> str:
    """The codings of a CodeableConcept (JSON) as a JSON[]."""
    return json_list(f"json_extract({concept}, '$.coding[*]')")


def _names(concept: str) -> str:
    """A CodeableConcept's text and its codings' displays (VARCHAR[])."""
    return concat(f"[{concept}->>'text']", f"json_extract_string({concept}, '$.coding[*].display')")


def _in(codes: Iterable[str]) -> str:
    return ", ".join(lit(c) for c in sorted(codes))


def _has_code(concept: str, short: str, codes: Iterable[str]) -> str:
    """Whether a CodeableConcept has a coding of this system (short name) with one of these codes."""
    return (
        f"(len([c for c in {_codings(concept)} if {system_is(CODING, short)} "
        f"AND (c->>'code') IN ({_in(codes)})]) > 0)"
    )


def _any_code(concept: str, codes: Iterable[str]) -> str:
    """Whether a CodeableConcept (a status) has one of these codes, whatever the system."""
    return f"(len([c for c in {_codings(concept)} if (c->>'code') IN ({_in(codes)})]) > 0)"


def _routes(concept: str) -> str:
    """The routes a route CodeableConcept names (VARCHAR[]): its SNOMED codes when it has any, else words
    (as ``adapters.fhir._routes``)."""
    snomed = f"[c for c in {_codings(concept)} if {system_is(CODING, 'snomed')}]"
    by_code = " ".join(f"WHEN {lit(code)} THEN {lit(route.value)}" for code, route in ROUTE_CODES.items())
    names = _names(concept)
    by_words = ", ".join(
        f"CASE WHEN {words_match(names, re2(pattern))} THEN {lit(route.value)} END"
        for pattern, route in ROUTE_WORDS
    )
    return (
        f"CASE WHEN len({snomed}) > 0 "
        f"THEN list_distinct([r for r in [CASE c->>'code' {by_code} END for c in {snomed}] if r IS NOT NULL]) "
        f"ELSE list_distinct([r for r in [{by_words}] if r IS NOT NULL]) END"
    )


def _iv_infusion(dosages: str, notes: str) -> str:
    """Dosages (a JSON array, of a request or a statement) for an IV infusion, as ``adapters.fhir._iv_infusion``
    reads them: every dosage by the IV route, and a rate, or where no dose is coded, an infusion named in a
    dosage's text or a note."""
    entries = json_list(f"json_extract({dosages}, '$[*].doseAndRate[*]')")
    rate = f"len([e for e in {entries} if (e->'rateQuantity') IS NOT NULL OR (e->'rateRatio') IS NOT NULL OR (e->'rateRange') IS NOT NULL]) > 0"
    dose = (
        f"len([e for e in {entries} if (e->'doseQuantity') IS NOT NULL OR (e->'doseRange') IS NOT NULL]) > 0"
    )
    texts = concat(
        f"json_extract_string({dosages}, '$[*].text')", f"json_extract_string({notes}, '$[*].text')"
    )
    listed = json_list(f"json_extract({dosages}, '$[*]')")
    all_iv = f"len({listed}) > 0 AND len([d for d in {listed} if {_routes('(d->' + lit('route') + ')')} <> ['intravenous']]) = 0"
    words = words_match(texts, re2(INFUSION_WORDS))
    return f"(coalesce({all_iv}, false) AND ({rate} OR (NOT ({dose}) AND {words})))"


def unit_key_sql(text: str) -> str:
    """SQL for the unit the engine's parser reads in a text (``_units.parse_unit``) as a key two spellings of
    one unit share ("mcg/kg/min" and "ug/kg/min"; "mg/(kg.h)" and "mg/kg/h"), or NULL where the parser reads
    no unit. Built from the parser's own tables; ``tests/audit/test_fhir_quantities.py`` checks both agree."""
    heads = {
        **{k: f"mass:{v}" for k, v in MASS_UNITS.items()},
        **{k: f"volume:{v}" for k, v in VOLUME_UNITS.items()},
    }
    head_case = " ".join(f"WHEN {lit(k)} THEN {lit(v)}" for k, v in heads.items())
    time_case = " ".join(f"WHEN {lit(k)} THEN {lit(str(v))}" for k, v in TIME_UNITS.items())

    def norm(token: str) -> str:  # _units._norm: lower case, but for [lb_av]
        return f"CASE WHEN trim({token}) = '[lb_av]' THEN '[lb_av]' ELSE lower(trim({token})) END"

    cleaned = f"replace(trim({text}), ' ', '')"
    dotted = lit(r"^([^/]+)/\(?([^/().]+)\.([^/().]+)\)?$")
    parts = f"string_split(regexp_replace({cleaned}, {dotted}, {lit(chr(92) + '1/' + chr(92) + '2/' + chr(92) + '3')}), '/')"
    rest = f"[{norm('p')} for p in list_slice({parts}, 2, -1)]"
    kgs = f"len([p for p in {rest} if p = 'kg'])"
    times = f"[CASE p {time_case} END for p in {rest} if p <> 'kg']"
    head = f"CASE {norm(parts + '[1]')} {head_case} END"
    return (
        f"CASE WHEN {text} IS NULL OR len([t for t in {times} if t IS NULL]) > 0 OR {kgs} > 1 "
        f"OR len({times}) > 1 THEN NULL ELSE {head} || ';' || {kgs} || ';' || coalesce({times}[1], '-') END"
    )


def unit_clash_sql(quantity: str) -> str:
    """Whether a Quantity's UCUM ``code`` and its ``unit`` are both units the engine reads, and different
    ones (``adapters.fhir._read_unit``): which one was meant cannot be told."""
    code, unit = f"nullif(trim({quantity}->>'code'), '')", f"nullif(trim({quantity}->>'unit'), '')"
    return f"coalesce({unit_key_sql(code)} <> {unit_key_sql(unit)}, false)"


def unit_clash_text(quantity: str) -> str:
    """The adapter's words for a unit and a code that name different units."""
    code, unit = f"trim({quantity}->>'code')", f"trim({quantity}->>'unit')"
    return (
        f"'the unit ''' || {unit} || ''' and the UCUM code ''' || {code} || ''' name different units: "
        "which one was meant cannot be told'"
    )


def written_number(value: str) -> str:
    """A JSON number as ``_units.format_exact`` writes it (no needless zeros: 30.0 -> 30), for messages."""
    text = f"CAST({value} AS VARCHAR)"
    return (
        f"CASE WHEN contains({text}, '.') AND NOT contains(lower({text}), 'e') "
        f"THEN rtrim(rtrim({text}, '0'), '.') ELSE {text} END"
    )


def bound_text(quantity: str) -> str:
    """The adapter's words for a Quantity given only as a bound (``_bound_text``): "< 30 kg"."""
    value = written_number(f"{quantity}->'value'")
    return f"({quantity}->>'comparator') || ' ' || {value} || coalesce(' ' || {_quantity_unit(quantity)}, '')"


def has_comparator(quantity: str) -> str:
    """Whether a Quantity is given only as a bound (a ``comparator``: "< 30 kg")."""
    return f"coalesce(json_type({quantity}->'comparator') <> 'NULL', false)"


def _kg_factor(unit: str) -> str:
    """kg per unit of a plain mass unit as the engine's parser reads it (``_units``), else NULL."""
    norm = f"CASE WHEN trim({unit}) = '[lb_av]' THEN '[lb_av]' ELSE lower(trim({unit})) END"
    cases = " ".join(f"WHEN {lit(k)} THEN {float(v / 1_000_000)!r}" for k, v in MASS_UNITS.items())
    return f"CASE {norm} {cases} END"


def _written_margin(value: str) -> str:
    """Half a unit of the last decimal a number is written with (as ``format_exact`` writes it: 70 -> 0.5,
    154.3 -> 0.05): what a weight written so may have been rounded from. 0 for an exponent."""
    text = written_number(value)
    return (
        f"CASE WHEN contains(lower({text}), 'e') THEN 0.0 "
        f"WHEN contains({text}, '.') THEN 0.5 * pow(10, -length(split_part({text}, '.', 2))) ELSE 0.5 END"
    )


def _weight_in_effect(ws: str, when: str) -> str:
    """``adapters.fhir._weight``'s rule over the weights taken at the latest time (``ws``, by id): ``weight``
    (a struct of ``weights``) and ``weight_problem``. A weight given only as a bound is not used (nor an older
    one in its place); weights that disagree beyond the precision they are written with are not used, and are
    named; weights that agree are one weighing, the lowest used. One that cannot be read is the row's reason."""
    bounded = f"[w for w in {ws} if w.bounded]"
    unreadable = f"[w for w in {ws} if NOT w.is_number OR w.unit IS NULL OR w.clash OR w.kg IS NULL]"
    agree = f"(list_max([w.kg - w.margin for w in {ws}]) <= list_min([w.kg + w.margin for w in {ws}]))"
    ordered = f"list_sort([struct_pack(kg := w.kg, id := w.id, written := w.written) for w in {ws}])"
    count = f"CASE len({ws}) WHEN 2 THEN 'two' WHEN 3 THEN 'three' ELSE CAST(len({ws}) AS VARCHAR) END"
    return f"""
      CASE WHEN {ws} IS NULL OR len({bounded}) > 0 THEN NULL
           WHEN len({ws}) = 1 THEN {ws}[1]
           WHEN len({unreadable}) > 0 THEN {unreadable}[1]
           WHEN {agree} THEN [w for w in {ws} if w.id = {ordered}[1].id][1]
      END AS weight,
      CASE WHEN {ws} IS NULL THEN NULL
           WHEN len({bounded}) > 0 THEN 'the latest body weight (Observation/' || {bounded}[1].id
             || ') is recorded only as a bound (' || {bounded}[1].bound
             || '), not as a weight a dose can be worked out from'
           WHEN len({ws}) > 1 AND len({unreadable}) = 0 AND NOT {agree} THEN {count}
             || ' body weights taken at the same time disagree: '
             || array_to_string([x.written for x in {ordered}], ' and ') || ' ('
             || array_to_string(['Observation/' || x.id for x in {ordered}], ', ') || '; '
             || coalesce('taken ' || {when}, 'no date recorded') || ')'
      END AS weight_problem"""


def _quantity_unit(quantity: str) -> str:
    """A Quantity's unit as written: its ``code`` (UCUM), else its ``unit`` (the adapter reads them in this order)."""
    return f"coalesce(nullif(trim({quantity}->>'code'), ''), nullif(trim({quantity}->>'unit'), ''))"


def _plain_decimal(value: str) -> str:
    """A JSON number written with at most 9 decimals and no exponent, exactly as a DECIMAL; else NULL."""
    text = f"CAST({value} AS VARCHAR)"
    return (
        f"CASE WHEN regexp_full_match({text}, '-?[0-9]{{1,20}}(\\.[0-9]{{0,9}})?') "
        f"THEN TRY_CAST({text} AS DECIMAL(38, 9)) END"
    )


def _ratio_double(den_unit: str) -> str:
    """A Ratio per hour in binary arithmetic (for numbers that are not plain decimals)."""
    num, den = "TRY_CAST(value_json AS DOUBLE)", "den_value"
    return (
        f"CASE WHEN {den_unit} IN ('h', 'hr', 'hour') THEN {num} / {den} WHEN {den_unit} = 'min' THEN {num} * 60 / {den} "
        f"WHEN {den_unit} IN ('s', 'sec') THEN {num} * 3600 / {den} "
        f"WHEN {den_unit} IN ('d', 'day') THEN {num} / ({den} * 24) END"
    )


def _is_number(value: str) -> str:
    """Whether a JSON value is a number (FHIR decimals are JSON numbers, never strings)."""
    return f"coalesce(json_type({value}) IN ('BIGINT', 'UBIGINT', 'DOUBLE', 'HUGEINT'), false)"


def _location_icu(types: str, identifiers: str, names_col: str, aliases: str, site: Site | None) -> str:
    """A Location: TRUE intensive care, FALSE typed otherwise, NULL untyped, as
    ``adapters.fhir._is_intensive_care`` reads it: a site's intensive-monitoring location first, then a coded
    v3 RoleCode type decides (words beside it do not), then words that name intensive care and do not deny it."""
    codings = json_list(f"json_extract({types}, '$[*].coding[*]')")
    names = concat(
        f"json_extract_string({types}, '$[*].text')",
        f"json_extract_string({types}, '$[*].coding[*].display')",
    )
    role_codes = f"[c for c in {codings} if (c->>'system') IN ({_in(ROLE_CODE_SYSTEMS)})]"
    identifier_list = json_list(f"json_extract({identifiers}, '$[*]')")
    site_codes = f"list_concat({codings}, {identifier_list})"
    site_names = (
        f"list_concat([{names_col}], coalesce(json_extract_string({aliases}, '$[*]'), []::VARCHAR[]))"
    )
    return (
        f"CASE WHEN {site_location_sql(site, site_codes, site_names)} THEN true "
        f"WHEN len({role_codes}) > 0 "
        f"THEN len([c for c in {role_codes} if (c->>'code') IN ({_in(INTENSIVE_CARE_ROLE_CODES)})]) > 0 "
        f"WHEN {icu_named(names)} THEN true "
        f"WHEN len([c for c in {codings} if (c->>'code') IS NOT NULL]) > 0 "
        f"OR len([n for n in {names} if n IS NOT NULL]) > 0 THEN false END"
    )


VOLUME_UNIT = (
    r"(?i)^\s*(ml|l)\s*(/|$)"  # the head of the unit is a volume (as ``_units.parse_unit`` reads it)
)


def _strength(ingredient: str) -> str:
    """An ingredient's strength (a Ratio mass / volume) in mg per mL; NULL when it is not one."""
    num, den = f"{ingredient}->'strength'->'numerator'", f"{ingredient}->'strength'->'denominator'"
    return (
        f"(TRY_CAST({num}->'value' AS DOUBLE) * ({MASS_MG.format(u=_quantity_unit(num))}) / "
        f"nullif(TRY_CAST({den}->'value' AS DOUBLE) * ({VOLUME_ML.format(u=_quantity_unit(den))}), 0))"
    )


# ----------------------------------------------------------------------------------------------------
# The source: named CTE groups, each over the relations the ones before it made


def _dedup(reader: str, columns: Sequence[str]) -> str:
    """One row per id (an export may repeat a resource): any one of them."""
    picked = ", ".join(f'any_value("{c}") AS "{c}"' for c in columns)
    return f"SELECT id, {picked} FROM ({reader}) WHERE id IS NOT NULL GROUP BY id"


def _one_per_id(reader: str) -> str:
    """Administrations once each, as ``_dedup`` keeps other resources (an export may repeat a resource in two
    files); a line without an id, or one that is not a resource, is kept as it is, a bad row of its own."""
    return (
        f"SELECT * FROM ({reader}) "
        "QUALIFY id IS NULL OR row_number() OVER (PARTITION BY id ORDER BY filename) = 1"
    )


def fhir_source(folder: Path, kb: KnowledgeBase | None = None, site: Site | None = None) -> str:
    """A SELECT yielding canonical rows from a folder of FHIR Bulk Data NDJSON files: the named CTE groups
    below, each over the relations the ones before it made."""
    kb = kb or load_knowledge()
    r = readers(Path(folder))
    groups = [
        knowledge_ctes(kb),
        referenced_resources_ctes(r, site),
        drug_ctes(r, kb),
        dose_ctes(kb),
        weight_ctes(r),
        condition_ctes(r, kb),
        procedure_ctes(r),
        indication_ctes(r),
        setting_ctes(),
        prior_course_ctes(r, kb),
        answer_cte(),
    ]
    return "\n    WITH " + ",\n    ".join(groups) + "\n    " + fhir_canonical_select() + "\n    "


def readers(folder: Path) -> dict[str, str]:
    """The resources of each type the reader reads (``_reader``), by type: the relations the parts read."""
    return {t: _reader(folder, t) for t in _READ}


def _is_ketamine(kb: KnowledgeBase, codings: str, names: str) -> str:
    """Whether codings (JSON[]) hold a ketamine RxNorm code or names (VARCHAR[]) name ketamine."""
    coded = f"len([c for c in {codings} if {system_is(CODING, 'rxnorm')} AND (c->>'code') IN ({_in(kb.ketamine_rxnorm)})]) > 0"
    return f"({coded} OR {words_match(names, ketamine_words(kb), drug_names=True)})"


def _prescribed_ketamine(kb: KnowledgeBase, resource: str) -> str:
    """Whether a request or statement (alias ``resource``, its Medication joined as ``med``) is for ketamine."""
    concept = f'{resource}."medicationCodeableConcept"'
    return _is_ketamine(
        kb,
        f"list_concat({_codings(concept)}, {_codings('med.code')})",
        concat(_names(concept), _names("med.code")),
    )


def _patient(reference_column: str) -> str:
    return ref_id(f"({reference_column}->>'reference')", "Patient")


def referenced_resources_ctes(r: Mapping[str, str], site: Site | None) -> str:
    """The resources administrations refer to, once per id: ``med`` (Medication), ``mr`` (MedicationRequest),
    ``enc`` (Encounter: its class, locations, parent, and whether it ``says_nothing`` about the setting) and
    ``loc`` (Location: its name, and ``icu``, ``_location_icu``)."""
    part_of = ref_id("(\"partOf\"->>'reference')", "Encounter")
    return f"""med AS ({_dedup(r["Medication"], ["code", "ingredient"])}),
    mr AS ({_dedup(r["MedicationRequest"], ["encounter", "reasonCode", "reasonReference", "dosageInstruction"])}),
    enc AS (
      SELECT id, "class" AS cls, location, {part_of} AS parent,
        coalesce(status, '') IN ({_in(_NO_SETTING_ENCOUNTER_STATUSES)}) AS says_nothing
      FROM ({_dedup(r["Encounter"], ["status", "class", "location", "partOf"])})
    ),
    loc AS (SELECT id, name, {_location_icu("type", "identifier", "name", "alias", site)} AS icu
            FROM ({_dedup(r["Location"], ["name", "type", "identifier", "alias"])}))"""


def drug_ctes(r: Mapping[str, str], kb: KnowledgeBase) -> str:
    """The administrations and their drug: ``admin_read`` (each MedicationAdministration's elements, read once
    per id), ``admin_drug`` (the referenced or contained Medication) and ``ketamine_admins`` (those of ketamine,
    those whose drug cannot be told, and lines that are not resources: the rows of the output)."""
    medication_key = ref_id("(m.\"medicationReference\"->>'reference')", "Medication")
    administered = timestamp_sql('coalesce(m."effectiveDateTime", m."effectivePeriod"->>\'start\')')
    period_end = timestamp_sql("(m.\"effectivePeriod\"->>'end')")
    drug_codings = (
        f"list_concat(list_concat({_codings('mcc')}, {_codings('drug_code')}), "
        f"{json_list(_INGREDIENT_CODINGS)})"
    )
    return f"""admin_read AS (
      SELECT m.id AS admin_id, m.status, m.filename, m."resourceType" IS NULL AS unreadable,
        {_patient("m.subject")} AS patient_id,
        coalesce(m."effectiveDateTime", m."effectivePeriod"->>'start') AS t_text,
        {administered} AS administered_at,
        {period_end} AS period_end,
        {ref_id("(m.context->>'reference')", "Encounter")} AS ctx_encounter,
        {ref_id("(m.request->>'reference')", "MedicationRequest")} AS request_id,
        m.dosage,
        json_extract_string(m."supportingInformation", '$[*].reference') AS support_refs,
        m."medicationCodeableConcept" AS mcc,
        CASE WHEN m."medicationCodeableConcept" IS NULL AND NOT starts_with(m."medicationReference"->>'reference', '#')
          THEN {medication_key} END AS med_key,
        m."medicationReference"->>'reference' AS med_ref,
        m."medicationReference"->>'display' AS med_display,
        CASE WHEN starts_with(m."medicationReference"->>'reference', '#') THEN
          [x for x in {json_list("json_extract(m.contained, '$[*]')")}
           if (x->>'id') = substr(m."medicationReference"->>'reference', 2)][1] END AS contained_med
      FROM ({_one_per_id(r["MedicationAdministration"])}) m
    ),
    admin_drug AS (
      SELECT a.*, coalesce(a.contained_med->'code', med.code) AS drug_code,
        coalesce(a.contained_med->'ingredient', med.ingredient) AS drug_ing,
        (a.contained_med IS NOT NULL OR med.id IS NOT NULL) AS drug_found
      FROM admin_read a LEFT JOIN med ON med.id = a.med_key
    ),
    ketamine_admins AS (
      SELECT *, {_DRUG_NAMES} AS drug_names,
        (mcc IS NULL AND NOT drug_found AND med_display IS NULL) AS unidentified
      FROM admin_drug
      WHERE unreadable OR (mcc IS NULL AND NOT drug_found AND med_display IS NULL)
         OR {_is_ketamine(kb, drug_codings, _DRUG_NAMES)}
    )"""


# the drug an administration names: its CodeableConcept, or the referenced or contained Medication
_DRUG_NAMES = concat(
    _names("mcc"),
    _names("drug_code"),
    "json_extract_string(drug_ing, '$[*].itemCodeableConcept.text')",
    "json_extract_string(drug_ing, '$[*].itemCodeableConcept.coding[*].display')",
    "[med_display]",
)
_INGREDIENT_CODINGS = "json_extract(drug_ing, '$[*].itemCodeableConcept.coding[*]')"
_INGREDIENTS = json_list("json_extract(drug_ing, '$[*]')")
_ROUTE_CONCEPT = "coalesce(dosage->'route', json_extract(di, '$[0].route'))"
_RATIO_DENOMINATOR = "(dosage->'rateRatio'->'denominator')"
_DENOMINATOR_UNIT = "lower(" + _quantity_unit("dosage->'rateRatio'->'denominator'") + ")"


def _ingredient_is_ketamine(kb: KnowledgeBase) -> str:
    """Whether an ingredient ``i`` of the Medication is ketamine."""
    return _is_ketamine(
        kb,
        json_list("json_extract(i, '$.itemCodeableConcept.coding[*]')"),
        concat(
            "[i->'itemCodeableConcept'->>'text']",
            "json_extract_string(i, '$.itemCodeableConcept.coding[*].display')",
        ),
    )


def concentration_sql(kb: KnowledgeBase) -> str:
    """mg per mL of the drug: the one ingredient strength (else the one of ketamine), else "NN mg/mL" in a
    name."""
    strengths = f"[{_strength('i')} for i in {_INGREDIENTS} if (i->'strength') IS NOT NULL]"
    ketamine_strengths = f"[{_strength('i')} for i in {_INGREDIENTS} if (i->'strength') IS NOT NULL AND {_ingredient_is_ketamine(kb)}]"
    named_strength = (
        f"[TRY_CAST(regexp_extract(n, {lit(MG_PER_ML)}, 1) AS DOUBLE) for n in drug_names "
        f"if n IS NOT NULL AND regexp_matches(n, {lit(MG_PER_ML)})][1]"
    )
    return (
        f"coalesce(CASE WHEN len({strengths}) = 1 THEN {strengths}[1] "
        f"WHEN len({ketamine_strengths}) = 1 THEN {ketamine_strengths}[1] END, {named_strength})"
    )


def ratio_per_hour_sql() -> str:
    """A rate as a Ratio (20 mg / 1 h, 100 mg / 60 min) per hour: numerator and denominator scaled to one hour
    exactly (DECIMAL), then divided; a quotient that is a decimal of up to 9 places is taken exactly (8.3 mg /
    6 min is 83 mg/h, not the 83.00000000000001 of binary arithmetic), any other is the nearest double."""
    den_unit = _DENOMINATOR_UNIT
    per_hour_num = (
        f"CASE WHEN {den_unit} = 'min' THEN num_dec * 60 WHEN {den_unit} IN ('s', 'sec') THEN num_dec * 3600 "
        f"WHEN {den_unit} IN ('h', 'hr', 'hour', 'd', 'day') THEN num_dec END"
    )
    per_hour_den = f"CASE WHEN {den_unit} IN ('d', 'day') THEN den_dec * 24 ELSE den_dec END"
    approx = f"(CAST({per_hour_num} AS DOUBLE) / CAST({per_hour_den} AS DOUBLE))"
    snapped = f"TRY_CAST(round({approx}, 9) AS DECIMAL(38, 9))"
    return (
        f"CASE WHEN coalesce(TRY({snapped} * {per_hour_den} = {per_hour_num}), false) "
        f"THEN CAST(CAST({snapped} AS VARCHAR) AS DOUBLE) "
        f"ELSE {_ratio_double(den_unit)} END"
    )


def _dose_unit_sql() -> str:
    rate_unit = _quantity_unit("dosage->'rateQuantity'")
    ratio_unit = _quantity_unit("dosage->'rateRatio'->'numerator'")
    bolus_unit = _quantity_unit("dosage->'dose'")
    return (
        f"CASE dose_form WHEN 'rateQuantity' THEN {rate_unit} WHEN 'rateRatio' THEN {ratio_unit} || '/h' "
        f"WHEN 'dose' THEN {bolus_unit} END"
    )


def pca_sole_agent_sql(kb: KnowledgeBase) -> str:
    """An IV dose whose method (the administration's, else the fulfilled request's, where orders write it)
    names PCA, and every ingredient of the Medication is ketamine."""
    methods = concat(
        _names("dosage->'method'"),
        "json_extract_string(di, '$[*].method.text')",
        "json_extract_string(di, '$[*].method.coding[*].display')",
    )
    pca = words_match(methods, PCA_WORDS, drug_names=True)
    return f"(route = 'intravenous' AND {pca} AND len([i for i in {_INGREDIENTS} if NOT {_ingredient_is_ketamine(kb)}]) = 0)"


def dose_ctes(kb: KnowledgeBase) -> str:
    """The dose of each administration (over ``ketamine_admins`` and ``mr``): ``admin_route`` (the request's
    dosage, the Encounter, the routes named, the dose's form), ``admin_dose_read`` (the route, the dose's value
    and unit as written), ``admins`` (the dose as a number, its kind, concentration, PCA) and ``timed`` (the
    administrations with a time, for the as-of joins below)."""
    route_text = (
        f"coalesce({_ROUTE_CONCEPT}->>'text', json_extract_string({_ROUTE_CONCEPT}, '$.coding[0].display'), "
        f"json_extract_string({_ROUTE_CONCEPT}, '$.coding[0].code'))"
    )
    return f"""admin_route AS (
      SELECT k.*, mr."dosageInstruction" AS di,
        coalesce(k.ctx_encounter, {ref_id("(mr.encounter->>'reference')", "Encounter")}) AS encounter_id,
        {_routes(_ROUTE_CONCEPT)} AS routes, {route_text} AS route_text,
        CASE WHEN (dosage->'rateQuantity') IS NOT NULL THEN 'rateQuantity'
             WHEN (dosage->'rateRatio') IS NOT NULL THEN 'rateRatio'
             WHEN (dosage->'dose') IS NOT NULL THEN 'dose' END AS dose_form
      FROM ketamine_admins k LEFT JOIN mr ON mr.id = k.request_id
    ),
    admin_dose_read AS (
      SELECT *,
        CASE len(routes) WHEN 1 THEN routes[1] WHEN 0 THEN route_text END AS route,
        CASE dose_form WHEN 'rateQuantity' THEN dosage->'rateQuantity'->'value'
          WHEN 'rateRatio' THEN dosage->'rateRatio'->'numerator'->'value'
          WHEN 'dose' THEN dosage->'dose'->'value' END AS value_json,
        CASE dose_form WHEN 'rateQuantity' THEN dosage->'rateQuantity'
          WHEN 'rateRatio' THEN dosage->'rateRatio'->'numerator' WHEN 'dose' THEN dosage->'dose' END AS dose_json,
        CASE dose_form WHEN 'rateQuantity' THEN 'dosage.rateQuantity'
          WHEN 'rateRatio' THEN 'dosage.rateRatio.numerator' WHEN 'dose' THEN 'dosage.dose' END AS dose_path,
        {_dose_unit_sql()} AS dose_unit,
        CASE WHEN dose_form = 'rateRatio' THEN {_DENOMINATOR_UNIT} IN ('h', 'hr', 'hour', 'min', 's', 'sec', 'd', 'day') END
          AS per_hour,
        CASE WHEN dose_form = 'rateRatio' THEN TRY_CAST(dosage->'rateRatio'->'denominator'->'value' AS DOUBLE) END
          AS den_value,
        {_plain_decimal("dosage->'rateRatio'->'numerator'->'value'")} AS num_dec,
        {_plain_decimal("dosage->'rateRatio'->'denominator'->'value'")} AS den_dec
      FROM admin_route
    ),
    admins AS (
      SELECT *,
        CASE WHEN route = 'intravenous' THEN CASE dose_form WHEN 'dose' THEN 'bolus'
          WHEN 'rateQuantity' THEN 'infusion' WHEN 'rateRatio' THEN 'infusion' END END AS kind,
        CASE WHEN NOT {_is_number("value_json")} THEN NULL
          WHEN dose_form = 'rateRatio' THEN {ratio_per_hour_sql()}
          ELSE TRY_CAST(value_json AS DOUBLE) END AS dose_value,
        CASE WHEN regexp_matches(dose_unit, {lit(VOLUME_UNIT)}) THEN {concentration_sql(kb)} END AS concentration_mg_per_ml,
        {pca_sole_agent_sql(kb)}
          AS pca_sole_agent
      FROM admin_dose_read
    ),
    timed AS (SELECT DISTINCT admin_id, patient_id, administered_at FROM admins WHERE administered_at IS NOT NULL)"""


_OBSERVED_TEXT = (
    'coalesce("effectiveDateTime", "effectiveInstant", "effectivePeriod"->>\'start\', '
    "\"effectivePeriod\"->>'end', issued)"
)


def observation_ctes(r: Mapping[str, str]) -> str:
    """``observations``: the final body weights and pregnancy statuses (over the Observations), each with its
    patient, time, value and, for a pregnancy status, its answer (pregnant, not-pregnant, other)."""
    value_concept = '"valueCodeableConcept"'
    pregnancy_answer = (
        f"CASE WHEN {_has_code(value_concept, 'snomed', [PREGNANT])} THEN 'pregnant' "
        f"WHEN {_has_code(value_concept, 'snomed', [NOT_PREGNANT])} THEN 'not-pregnant' ELSE 'other' END"
    )
    is_weight = _has_code("code", "loinc", [BODY_WEIGHT])
    is_pregnancy = _has_code("code", "loinc", [PREGNANCY_STATUS])
    return f"""observations AS (
      SELECT id, {_patient("subject")} AS patient, {timestamp_sql(_OBSERVED_TEXT)} AS t, {_OBSERVED_TEXT} AS t_text,
        {is_weight} AS is_weight, {is_pregnancy} AS is_pregnancy, "valueQuantity" AS vq,
        "valueQuantity"->'value' AS value_json, {_quantity_unit('"valueQuantity"')} AS unit,
        {value_concept} IS NOT NULL AS answered, {pregnancy_answer} AS pregnancy
      FROM ({r["Observation"]})
      WHERE (CAST(code AS VARCHAR) LIKE '%{BODY_WEIGHT}%' OR CAST(code AS VARCHAR) LIKE '%{PREGNANCY_STATUS}%')
        AND status IN ({_in(FINAL_OBSERVATION)}) AND ({is_weight} OR {is_pregnancy})
    ),
    pregnancy_status AS (
      SELECT c.admin_id, o.pregnancy FROM timed c
      ASOF JOIN (SELECT * FROM observations WHERE is_pregnancy AND answered AND t IS NOT NULL) o
        ON c.patient_id = o.patient AND c.administered_at >= o.t
    )"""


def weight_ctes(r: Mapping[str, str]) -> str:
    """The body weight in effect (over ``admins``, ``timed`` and the Observations): ``observations`` and
    ``pregnancy_status`` (``observation_ctes``), ``weights`` (each as a struct ``w``), ``weight_sets`` (a
    patient's weights taken at one time), ``supports`` (what an administration cites), ``cited_weight``,
    ``latest_weight``, ``weighed`` (the weights in effect: the cited one, else none when the cited one is
    absent, else the latest) and ``judged`` (``weight`` and ``weight_problem``, ``_weight_in_effect``)."""
    return f"""{observation_ctes(r)},
    weights AS (
      SELECT id, patient, t, t_text, coalesce(json_type(value_json) <> 'NULL', false) AS valued,
        struct_pack(id := id, value := TRY_CAST(value_json AS DOUBLE), is_number := {_is_number("value_json")},
                    unit := unit, bounded := {has_comparator("vq")}, bound := {bound_text("vq")},
                    clash := {unit_clash_sql("vq")}, clash_text := {unit_clash_text("vq")},
                    written := {written_number("value_json")} || ' ' || unit,
                    kg := TRY_CAST(value_json AS DOUBLE) * ({_kg_factor("unit")}),
                    margin := {_written_margin("value_json")} * ({_kg_factor("unit")})) AS w
      FROM observations WHERE is_weight
    ),
    -- the weights of one patient taken at one time: more than one is a conflict unless they agree as written
    weight_sets AS (
      SELECT patient, t, list(w ORDER BY w.id) AS ws, min(t_text) AS t_text
      FROM weights WHERE valued AND t IS NOT NULL GROUP BY patient, t
    ),
    supports AS (
      SELECT admin_id, administered_at, unnest(support_refs) AS ref FROM admins WHERE support_refs IS NOT NULL
    ),
    cited_weight AS (
      SELECT s.admin_id, arg_max(w.w, coalesce(w.t, TIMESTAMP '1900-01-01')) FILTER (WHERE w.valued) AS w,
        bool_or(NOT w.valued) AS absent
      FROM supports s JOIN weights w
        ON w.id = {ref_id("s.ref", "Observation")} AND (w.t IS NULL OR w.t <= s.administered_at)
      GROUP BY s.admin_id
    ),
    latest_weight AS (
      SELECT c.admin_id, any_value(w.ws) AS ws, any_value(w.t_text) AS t_text FROM timed c
      ASOF JOIN weight_sets w ON c.patient_id = w.patient AND c.administered_at >= w.t
      GROUP BY c.admin_id
    ),
    weighed AS (
      SELECT c.*,
        CASE WHEN cw.w IS NOT NULL THEN [cw.w] WHEN cw.absent THEN NULL ELSE lw.ws END AS ws,
        CASE WHEN cw.w IS NULL AND NOT coalesce(cw.absent, false) THEN lw.t_text END AS ws_time
      FROM admins c
      LEFT JOIN cited_weight cw ON cw.admin_id = c.admin_id
      LEFT JOIN latest_weight lw ON lw.admin_id = c.admin_id
    ),
    judged AS (
      SELECT *, {_weight_in_effect("ws", "ws_time")}
      FROM weighed
    )"""


_CODING_SHORT = short_system("coding->>'system'")
_CODING_NORM = norm_code(_CODING_SHORT, "coding->>'code'")


def condition_ctes(r: Mapping[str, str], kb: KnowledgeBase) -> str:
    """The conditions in effect at each administration (over ``timed``, ``pregnancy_status`` and the
    Conditions): ``conditions_read`` (each coding of a Condition not refuted, with onset, abatement and whether
    its status ends it), ``condition_codes``, ``condition_concepts`` (the knowledge base's), ``admin_concepts``
    (those in effect, and pregnancy) and ``admin_conditions``."""
    onset = timestamp_sql('coalesce("onsetDateTime", "onsetPeriod"->>\'start\', "recordedDate")')
    abated = timestamp_sql('coalesce("abatementDateTime", "abatementPeriod"->>\'end\')', end_of_day=True)
    in_effect = condition_in_effect("cc.onset", "cc.abated", "cc.inactive", "c.administered_at")
    return f"""conditions_read AS (
      SELECT {_patient("subject")} AS patient, {onset} AS onset, {abated} AS abated,
        {_any_code('"clinicalStatus"', IGNORED_CLINICAL_STATUS)} AS inactive,
        unnest({_codings("code")}) AS coding
      FROM ({r["Condition"]})
      WHERE NOT {_any_code('"verificationStatus"', IGNORED_VERIFICATION_STATUS)}
    ),
    condition_codes AS (
      SELECT patient, onset, abated, inactive, {_CODING_SHORT} AS short, {_CODING_NORM} AS norm
      FROM conditions_read WHERE (coding->>'code') IS NOT NULL
    ),
    condition_concepts AS (
      SELECT * FROM ({coded_concepts("condition_codes", ["patient", "onset", "abated", "inactive"])})
      WHERE concept IN ({_in(kb.concepts)})
    ),
    admin_concepts AS (
      SELECT c.admin_id, cc.concept FROM timed c JOIN condition_concepts cc
        ON cc.patient = c.patient_id AND {in_effect}
      UNION ALL
      SELECT admin_id, 'pregnancy' FROM pregnancy_status WHERE pregnancy = 'pregnant'
    ),
    {admin_conditions_cte()}"""


def procedure_ctes(r: Mapping[str, str]) -> str:
    """The surgery (over ``admins``, ``enc`` and the Procedures): ``procedure_codes`` (each coding of a
    Procedure done), ``procs`` (those in a procedure class) and ``admin_procedure``: a classified Procedure in
    the administration's Encounter (or the one it is part of), or without an Encounter and near in time."""
    performed = timestamp_sql('coalesce("performedDateTime", "performedPeriod"->>\'start\')')
    same_encounter = "(p.encounter_id = c.encounter_id OR p.encounter_id = e.parent)"
    return f"""procedure_codes AS (
      SELECT patient, encounter_id, t, {_CODING_SHORT} AS short, {_CODING_NORM} AS norm
      FROM (SELECT {_patient("subject")} AS patient,
              {ref_id("(encounter->>'reference')", "Encounter")} AS encounter_id, {performed} AS t,
              unnest({_codings("code")}) AS coding
            FROM ({r["Procedure"]}) WHERE coalesce(status, '') NOT IN ('not-done', 'entered-in-error'))
      WHERE (coding->>'code') IS NOT NULL
    ),
    procs AS (
      {classified_procedures("procedure_codes", ["patient", "encounter_id", "t"])}
    ),
    {admin_procedure_cte("admins c LEFT JOIN enc e ON e.id = c.encounter_id", "patient", "encounter_id", same_encounter)}"""


def indication_ctes(r: Mapping[str, str]) -> str:
    """The indication from the fulfilled request's reasons (over ``mr``, the Conditions and the uses):
    ``reasons`` (its reasonCodes, then the codes of its reasonReference Conditions, in order), ``reason_codes``,
    ``reason_concepts``, then by request: ``together_use``, ``coded_use`` (the first reason's use) and
    ``worded_use`` (a use named in words)."""
    reason_conditions = _dedup(r["Condition"], ["code", "verificationStatus"])
    return f"""reasons AS (
      SELECT id AS mr_id, unnest(json_extract(reason_code, '$[*]')) AS reason,
        generate_subscripts(json_extract(reason_code, '$[*]'), 1) AS pos
      FROM (SELECT id, "reasonCode" AS reason_code FROM mr WHERE "reasonCode" IS NOT NULL)
      UNION ALL
      SELECT m.mr_id, c.code, 1000 + m.pos FROM (
        SELECT id AS mr_id, unnest(json_extract_string("reasonReference", '$[*].reference')) AS ref,
          generate_subscripts(json_extract_string("reasonReference", '$[*].reference'), 1) AS pos
        FROM mr WHERE "reasonReference" IS NOT NULL) m
      JOIN ({reason_conditions}) c
        ON c.id = {ref_id("m.ref", "Condition")}
        AND NOT {_any_code('c."verificationStatus"', IGNORED_VERIFICATION_STATUS)}
    ),
    reason_codes AS (
      SELECT mr_id, pos, {_CODING_SHORT} AS short, {_CODING_NORM} AS norm
      FROM (SELECT mr_id, pos, unnest({_codings("reason")}) AS coding FROM reasons)
      WHERE (coding->>'code') IS NOT NULL
    ),
    reason_concepts AS ({coded_concepts("reason_codes", ["mr_id", "pos"])}),
    {together_use_cte("together_use", "mr_id", "reason_concepts")},
    coded_use AS (
      SELECT rc.mr_id, arg_min(u.use_id, rc.pos * 1e9 + rc.rank) AS use_id
      FROM reason_concepts rc JOIN use_concepts u ON u.concept = rc.concept
      GROUP BY rc.mr_id
    ),
    worded_use AS (
      SELECT r.mr_id, arg_min(u.use_id, r.pos) AS use_id
      FROM (SELECT mr_id, pos, unnest({_names("reason")}) AS name FROM reasons) r
      JOIN use_words u ON u.words = {normal_words_sql("r.name")}
      GROUP BY r.mr_id
    )"""


def setting_ctes() -> str:
    """The setting and location (over ``admins``, ``enc`` and ``loc``): ``admin_locations`` (the Encounter's
    locations, ranked: covering the time, else active, else the others but planned) and ``admin_setting``
    (intensive care when a best-ranked location is; not when all of them are typed otherwise)."""
    period_start = timestamp_sql("(e.entry->'period'->>'start')")
    period_end = timestamp_sql("(e.entry->'period'->>'end')", end_of_day=True)
    return f"""admin_locations AS (
      SELECT e.admin_id, coalesce(l.name, e.entry->'location'->>'display') AS name,
        l.icu,
        CASE WHEN {period_start} <= e.administered_at AND coalesce({period_end} > e.administered_at, true) THEN 1
             WHEN (e.entry->>'status') = 'active' THEN 2 ELSE 3 END AS loc_rank
      FROM (SELECT c.admin_id, c.administered_at, unnest(json_extract(enc.location, '$[*]')) AS entry
            FROM admins c JOIN enc ON enc.id = c.encounter_id AND NOT enc.says_nothing) e
      LEFT JOIN loc l ON l.id = {ref_id("(e.entry->'location'->>'reference')", "Location")}
      -- a planned or reserved bed is not where the dose was given; a completed stay only over its period
      WHERE coalesce(e.entry->>'status', '') NOT IN ('planned', 'reserved')
        AND (coalesce(e.entry->>'status', '') <> 'completed'
             OR ({period_start} <= e.administered_at AND coalesce({period_end} > e.administered_at, true)))
    ),
    admin_setting AS (
      SELECT admin_id,
        CASE WHEN bool_or(coalesce(icu, false)) THEN 'intensive-care'
             WHEN bool_and(icu IS NOT NULL) THEN 'non-intensive-care' END AS setting,
        coalesce(min(name) FILTER (WHERE icu), min(name)) AS location
      FROM (SELECT *, min(loc_rank) OVER (PARTITION BY admin_id) AS best FROM admin_locations)
      WHERE loc_rank = best GROUP BY admin_id
    )"""


def prior_course_ctes(r: Mapping[str, str], kb: KnowledgeBase) -> str:
    """A prior course of IV ketamine (over ``admins``, ``supports``, ``med`` and the statements and requests):
    ``statements`` (of ketamine), ``cited_course`` (the record's own answer: a statement the administration
    cites), ``iv_courses`` (an IV infusion of ketamine, as the adapter reads one: an administration, a statement
    being or having been taken, a request that may have been given) and ``first_course``."""
    stated = timestamp_sql('coalesce(s."effectiveDateTime", s."effectivePeriod"->>\'start\')')
    statement_drug = ref_id("(s.\"medicationReference\"->>'reference')", "Medication")
    request_drug = ref_id("(rq.\"medicationReference\"->>'reference')", "Medication")
    return f"""statements AS (
      SELECT s.id, s.status, {_patient("s.subject")} AS patient, {stated} AS t,
        list_contains({_routes("json_extract(s.dosage, '$[0].route')")}, 'intravenous') AS iv,
        {_iv_infusion("s.dosage", "s.note")} AS infusion
      FROM ({r["MedicationStatement"]}) s
      LEFT JOIN med ON med.id = {statement_drug}
      WHERE {_prescribed_ketamine(kb, "s")}
    ),
    cited_course AS (
      SELECT s.admin_id,
        bool_or(m.infusion AND m.status IN ('active', 'completed') AND (m.t IS NULL OR m.t < s.administered_at)) AS yes,
        bool_or(m.status = 'not-taken') AS no
      FROM supports s JOIN statements m ON m.iv AND m.id = {ref_id("s.ref", "MedicationStatement")}
      GROUP BY s.admin_id
    ),
    iv_courses AS (
      SELECT patient_id AS patient, administered_at AS t FROM admins
      WHERE route = 'intravenous' AND (kind = 'infusion' OR period_end > administered_at)
        AND administered_at IS NOT NULL AND coalesce(status, '') NOT IN ({_in(NOT_GIVEN_ADMINISTRATION_STATUSES)})
        AND NOT unreadable
      UNION ALL
      SELECT patient, t FROM statements WHERE infusion AND status IN ('active', 'completed') AND t IS NOT NULL
      UNION ALL
      SELECT {_patient("rq.subject")}, {timestamp_sql('rq."authoredOn"')}
      FROM ({r["MedicationRequest"]}) rq LEFT JOIN med ON med.id = {request_drug}
      WHERE rq.status IN ({_in(COURSE_REQUEST_STATUSES)}) AND {_prescribed_ketamine(kb, "rq")}
        AND {_iv_infusion('rq."dosageInstruction"', "rq.note")}
    ),
    {FIRST_COURSE_CTE}"""


def answer_cte() -> str:
    """``answer``: each administration (``judged``) with what the parts above found for it."""
    return f"""answer AS (
      SELECT c.*,
        s.setting AS located_setting, s.location, e.cls, coalesce(e.says_nothing, false) AS says_nothing, ap.pclass,
        coalesce(tu.use_id, cu.use_id, wu.use_id) AS reason_use, ac.conditions,
        {prior_course_sql("cc")}
      FROM judged c
      LEFT JOIN admin_setting s ON s.admin_id = c.admin_id
      LEFT JOIN enc e ON e.id = c.encounter_id
      LEFT JOIN admin_procedure ap ON ap.admin_id = c.admin_id
      LEFT JOIN together_use tu ON tu.mr_id = c.request_id
      LEFT JOIN coded_use cu ON cu.mr_id = c.request_id
      LEFT JOIN worded_use wu ON wu.mr_id = c.request_id
      LEFT JOIN admin_conditions ac ON ac.admin_id = c.admin_id
      LEFT JOIN cited_course cc ON cc.admin_id = c.admin_id
      LEFT JOIN first_course fc ON fc.patient = c.patient_id
    )"""


def fhir_canonical_select() -> str:
    """The canonical columns from ``answer``: the setting of the located Encounter (else an Encounter class
    that is never intensive care), and ``input_problem``."""
    setting = (
        f"coalesce(located_setting, CASE WHEN (cls->>'code') IN ({_in(NON_INTENSIVE_CLASSES)}) AND NOT says_nothing\n"
        "                                     THEN 'non-intensive-care' END,\n"
        "               'unknown')"
    )
    return canonical_select("weight_problem", setting, input_problem_sql())


_ADMIN = "'MedicationAdministration/' || admin_id || ': '"  # a problem's words begin with the administration


def _dose_problem_sql() -> str:
    """The WHEN branches of ``input_problem`` about the dose: a bound, units that clash, a rate not per time."""
    a, den = _ADMIN, _RATIO_DENOMINATOR
    per_code = "'mg/' || nullif(trim(" + den + "->>'code'), '')"
    per_unit = "'mg/' || nullif(trim(" + den + "->>'unit'), '')"
    time_clash = f"coalesce({unit_key_sql(per_code)} <> {unit_key_sql(per_unit)}, false)"
    return f"""WHEN {has_comparator("dose_json")} THEN {a} || dose_path || '.comparator: the quantity is only a bound ('
          || {bound_text("dose_json")} || '), not an amount: it cannot be checked'
        WHEN {unit_clash_sql("dose_json")} THEN {a} || dose_path || '.unit: ' || {unit_clash_text("dose_json")}
        WHEN dose_form = 'rateRatio' AND {has_comparator(den)} THEN {a}
          || 'dosage.rateRatio.denominator.comparator: the quantity is only a bound (' || {bound_text(den)}
          || '), not an amount: it cannot be checked'
        WHEN dose_form = 'rateRatio' AND {time_clash} THEN {a} || 'dosage.rateRatio.denominator.unit: the unit '''
          || trim({den}->>'unit') || ''' and the UCUM code ''' || trim({den}->>'code')
          || ''' name different times: which one was meant cannot be told'
        WHEN value_json IS NOT NULL AND NOT {_is_number("value_json")} THEN {a} || 'the dose is not a number: '
          || CAST(value_json AS VARCHAR)
        WHEN dose_form = 'rateRatio' AND NOT per_hour THEN {a}
          || 'dosage.rateRatio.denominator needs a time unit (h, min), not ' || coalesce({_DENOMINATOR_UNIT}, 'none')
        WHEN dose_form = 'rateRatio' AND NOT coalesce(den_value > 0, false) THEN {a}
          || 'dosage.rateRatio.denominator must be a positive time'"""


def input_problem_sql() -> str:
    """Why a row cannot be checked as it stands (NULL when it can): the first problem found, in this order."""
    a = _ADMIN
    return f"""CASE
        WHEN unreadable THEN 'a line of ' || regexp_extract(filename, '[^/]+$') || ' is not a FHIR resource (not valid JSON, or no resourceType)'
        WHEN admin_id IS NULL THEN 'a MedicationAdministration in ' || regexp_extract(filename, '[^/]+$')
          || ' has no id'
        WHEN unidentified THEN {a} || 'its medication ' || coalesce(med_ref, '(none)')
          || ' is not in the export, so whether it is ketamine cannot be told'
        WHEN status IN ({_in(NOT_GIVEN_ADMINISTRATION_STATUSES)}) THEN {a} || 'status ' || status || ', not given'
        WHEN patient_id IS NULL THEN {a} || 'no subject (patient)'
        WHEN t_text IS NULL THEN {a} || 'no effectiveDateTime or effectivePeriod.start'
        WHEN administered_at IS NULL THEN {a} || 'the time is not a FHIR dateTime: ' || t_text
        {_dose_problem_sql()}
        WHEN len(routes) > 1 THEN {a} || 'the route ' || coalesce(route_text, '') || ' names more than one route'
        WHEN weight IS NOT NULL AND NOT weight.is_number THEN 'Observation/' || weight.id
          || ': the body weight is not a number'
        WHEN weight IS NOT NULL AND weight.unit IS NULL THEN 'Observation/' || weight.id
          || ': the body weight has no unit (kg, g, [lb_av])'
        WHEN weight IS NOT NULL AND weight.clash THEN 'Observation/' || weight.id || '.valueQuantity.unit: '
          || weight.clash_text
      END"""


# ----------------------------------------------------------------------------------------------------
# Buckets: each patient's whole record together (the Spark engine, ``bucket.py``)


def bucket_key_sql(lines: str) -> str:
    """Which bucket each line of an export belongs to, so that one bucket holds a patient's whole record and
    the reader, run on a bucket, reads each administration as it reads it in the whole export.

    ``lines``: columns ``file`` (its name), ``admin_file`` (the file is named for MedicationAdministration,
    ``types_named``) and ``line`` (BLOB). Adds ``key``: the patient a resource is about (its ``subject``, a
    Patient's own id), as ``fhir_source`` reads the patient; NULL for a resource about no patient (Location,
    Medication, an Encounter without a subject, ...), which every bucket gets. An administration, and a line of
    an administrations file that is not a resource (a bad row of its own), goes to exactly one bucket: its
    patient's, else one by its id, else by its text. (A resource that names another patient than the
    administrations citing it is a broken record; it is in its own patient's bucket.)"""
    patient = ref_id("(j->'subject'->>'reference')", "Patient")
    return f"""
    SELECT file, line,
      CASE WHEN kind = 'MedicationAdministration' OR (kind IS NULL AND admin_file)
           THEN coalesce(patient, 'id:' || id, 'line:' || CAST(hash(line) AS VARCHAR))
           ELSE patient END AS key
    FROM (
      SELECT file, line, admin_file, j->>'resourceType' AS kind, j->>'id' AS id,
        CASE WHEN (j->>'resourceType') = 'Patient' THEN j->>'id' ELSE {patient} END AS patient
      FROM (
        SELECT file, line, admin_file, CASE WHEN json_valid(text) THEN CAST(text AS JSON) END AS j
        FROM (SELECT *, ltrim(try(decode(line)), chr(65279)) AS text FROM {lines})
      )
    )
    """


def prescription_lines_sql(lines: str) -> str:
    """The lines (``line``, BLOB) of files that ``may_hold_drugs`` which are prescriptions of some drug: whether
    the whole export can tell opioid use (``opioid_prescriptions``' ``holds_prescriptions``)."""
    return f"""
    SELECT count(*) AS prescriptions FROM (SELECT try(decode(line)) AS text FROM {lines})
    WHERE json_valid(text) AND {is_prescription_sql("CAST(text AS JSON)")}
    """


# ----------------------------------------------------------------------------------------------------
# Opioid prescriptions (for tolerance: ``tolerance.py``)

# MedicationRequest statuses of a prescription that was in force at some time (so taken between its start and
# its end); the live adapter, asking about now, counts "active" alone. MedicationStatement likewise.
HISTORY_REQUEST_STATUSES = frozenset({"active", "completed", "stopped", "on-hold"})
HISTORY_STATEMENT_STATUSES = frozenset({"active", "completed", "stopped", "on-hold"})
NO_PRESCRIPTION_FILES = "the export holds no MedicationRequest or MedicationStatement"
_SUPPLY_DAYS: Mapping[str, Fraction] = {"d": Fraction(1), "wk": Fraction(7), "h": Fraction(1, 24)}


def _opioid_pattern(kb: KnowledgeBase) -> str:
    """RE2 over a resource's lower-cased JSON text: a superset of what the adapter reads as an opioid (an
    ingredient's name anywhere, or its RxNorm code as a JSON string)."""
    names = [re.escape(i.lower()) for i in kb.opioids]
    codes = [re.escape(f'"{o.rxnorm}"') for o in kb.opioids.values()]
    return "|".join(names + codes)


PRESCRIPTION_TYPES = ("MedicationRequest", "MedicationStatement")
_DRUG_TYPES = (*PRESCRIPTION_TYPES, "Medication")


def may_hold_drugs(file_name: str) -> bool:
    """A file the opioid step reads: one that may hold MedicationRequests, MedicationStatements or Medications."""
    return any(reads_type(file_name, kind) for kind in _DRUG_TYPES)


def _prescription_files(folder: Path) -> list[Path]:
    return [path for path in ndjson_files(folder) if may_hold_drugs(path.name)]


def is_prescription_sql(json: str) -> str:
    """A resource (JSON) is a prescription of some drug: whether the export can tell opioid use at all."""
    return f"coalesce(({json}->>'resourceType') IN ({_in(PRESCRIPTION_TYPES)}), false)"


def opioid_prescriptions(
    con: duckdb.DuckDBPyConnection,
    folder: Path,
    administrations: str,
    kb: KnowledgeBase,
    holds_prescriptions: bool | None = None,
) -> tuple[dict[str, list[Prescription]] | None, str]:
    """The opioid prescriptions of the patients in ``administrations`` (a table with ``patient_id``): every
    MedicationRequest and MedicationStatement for an opioid, read by the FHIR adapter's ``OpioidReader``, by
    patient id. (None, why) when the export holds no resource of either type (of any drug): it cannot tell.
    ``holds_prescriptions`` says so for the whole export when ``folder`` is one bucket of it (``bucket.py``).

    SQL picks the resources that may be for an opioid (a superset: the drug's name or RxNorm ingredient code
    in the resource or its Medication) and of the patients given ketamine; Python reads each one as the live
    service reads it. History: see ``tolerance.py`` (which statuses count, a past prescription without an
    end)."""
    folder = Path(folder)
    paths = _prescription_files(folder)
    if holds_prescriptions is False or (holds_prescriptions is None and not paths):
        return None, NO_PRESCRIPTION_FILES
    if not paths:  # this bucket's patients have none
        return {}, ""
    files = _read_paths(paths)
    pattern = lit(_opioid_pattern(kb))
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE fhir_drug_resources AS
        SELECT json->>'resourceType' AS kind, json->>'id' AS id, json,
          regexp_matches(lower(CAST(json AS VARCHAR)), {pattern}) AS opioid_words,
          {is_prescription_sql("json")} AS prescription
        FROM read_json_objects({files}, format = 'newline_delimited', ignore_errors = true)
        WHERE (json->>'resourceType') IN ({_in(_DRUG_TYPES)})
    """)
    held = con.execute("SELECT count(*) FROM fhir_drug_resources WHERE prescription").fetchone()
    if holds_prescriptions is None and (not held or not held[0]):
        # no prescription of any drug: the export cannot tell opioid use
        con.execute("DROP TABLE fhir_drug_resources")
        return None, NO_PRESCRIPTION_FILES
    medications = con.execute(
        "SELECT id, CAST(json AS VARCHAR) FROM fhir_drug_resources WHERE kind = 'Medication' AND opioid_words"
    ).fetchall()
    patient = ref_id("(json->'subject'->>'reference')", "Patient")
    medication = ref_id("(json->'medicationReference'->>'reference')", "Medication")
    rows = con.execute(f"""
        SELECT {patient} AS patient_id, CAST(json AS VARCHAR)
        FROM fhir_drug_resources
        WHERE kind IN ('MedicationRequest', 'MedicationStatement')
          AND (opioid_words OR {medication} IN (SELECT id FROM fhir_drug_resources WHERE kind = 'Medication' AND opioid_words))
          AND {patient} IN (SELECT patient_id FROM {administrations})
    """).fetchall()
    con.execute("DROP TABLE fhir_drug_resources")
    reader = OpioidReader(_medications(medications), kb)
    found: dict[str, list[Prescription]] = {}
    for patient_id, text in rows:
        ambiguous = None
        try:
            resource = parse_json(text)
        except DuplicateKeyError as exc:  # its drug can be told, its dose and dates cannot: unknown
            resource, ambiguous = parse_json(text, unique_keys=False), exc.message
        except InputError:
            continue  # not text (an unpaired surrogate): nothing to read a drug from
        prescription = _history_prescription(resource, reader, ambiguous)
        if prescription is not None:
            found.setdefault(patient_id, []).append(prescription)
    return found, ""


def _medications(rows: Iterable[tuple[Any, str]]) -> Iterator[tuple[None, Any]]:
    """The Medications prescriptions may reference, parsed as read (a key written twice: the last, as DuckDB
    reads the rest of the export); one that is not text is left out."""
    for _, text in rows:
        try:
            yield None, parse_json(text, unique_keys=False)
        except InputError:
            continue


def _history_prescription(
    resource: Mapping[str, Any], reader: OpioidReader, unreadable: str | None = None
) -> Prescription | None:
    """One request or statement as a prescription in the patient's history (``tolerance.Prescription``), or
    None: not for an opioid, or never in force (cancelled, draft, entered in error, intended, not taken).
    ``unreadable``: why its dose and dates cannot be read (a key written twice), leaving them unknown."""
    statuses = (
        HISTORY_STATEMENT_STATUSES
        if resource.get("resourceType") == "MedicationStatement"
        else HISTORY_REQUEST_STATUSES
    )
    if resource.get("status") not in statuses:
        return None
    try:
        if unreadable is not None:
            raise InputError("", unreadable)
        use = reader.use(resource)
    except InputError as exc:  # a date the adapter cannot read: the prescription's dose and dates are unknown
        ingredient = reader.ingredient(resource)
        if ingredient is None:
            return None
        return Prescription(OpioidUse(ingredient, None, None, None, Coded(f"{ingredient} ({exc.message})")))
    if use is None:
        return None
    if use.end is not None:
        return Prescription(use)
    supply_end = _supply_end(resource, use.start)
    if supply_end is not None:
        return Prescription(dataclasses.replace(use, end=supply_end))
    # in force now (active): open-ended, as the live service reads it; a past one without an end: not known
    return Prescription(use, end_known=resource.get("status") == "active")


def _supply_end(resource: Mapping[str, Any], start: dt.date | None) -> dt.date | None:
    """The last day a request's supply lasts: ``dispenseRequest.expectedSupplyDuration`` (days, weeks or hours)
    for the first fill and each repeat allowed, from its start; None when it does not say."""
    dispense = resource.get("dispenseRequest")
    if start is None or not isinstance(dispense, dict):
        return None
    supply = dispense.get("expectedSupplyDuration")
    if not isinstance(supply, dict):
        return None
    value, unit = supply.get("value"), supply.get("code") or supply.get("unit") or ""
    repeats = dispense.get("numberOfRepeatsAllowed", 0)
    if (
        not isinstance(value, int | Decimal)
        or isinstance(value, bool)
        or not isinstance(unit, str)
        or unit not in _SUPPLY_DAYS
        or not isinstance(repeats, int)
        or isinstance(repeats, bool)
        or value <= 0
        or repeats < 0
    ):
        return None
    days = Fraction(value) * _SUPPLY_DAYS[unit] * (1 + repeats)
    return start + dt.timedelta(days=max(1, math.ceil(days)) - 1)
