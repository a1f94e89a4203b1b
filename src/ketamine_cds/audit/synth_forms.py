"""The synthetic administrations of ``synth.canonical_sql`` written as FHIR Bulk Data NDJSON and as OMOP CDM tables.

Both forms hold the same administrations as the flat form (same ids, patients, times, doses, units, weights,
conditions, settings, indications, prior courses and PCA), expressed the way each form records them, so that
auditing any form gives the same findings (``tests/audit/test_input_forms.py``). Each fact is tied to its own
administration, because the synthetic rows of one patient are independent of one another:

- the weight is an Observation (a measurement) at the administration time; a missing weight is an Observation
  with ``dataAbsentReason`` cited by the administration (OMOP: a valueless measurement in the visit);
- each condition is a Condition from the value sets (a code that maps to that concept alone), with onset at the
  administration time and abated one second later (so it is active at that administration and no other);
- the setting is the administration's Encounter and its Location (OMOP: visit, visit detail and care site);
- a coded indication is the request's ``reasonCode`` (OMOP: a condition in the visit); a use no clinical code
  names is the reason's text (OMOP: an ``observation`` linked to the drug exposure); perioperative use with a
  surgery class is a Procedure in the Encounter (OMOP: a procedure_occurrence in the visit);
- a prior IV ketamine course (oral and intranasal rows) is a MedicationStatement of an IV infusion (a rate) the
  administration cites: ``completed`` for yes, ``not-taken`` for no (OMOP: an ``observation`` linked to the drug
  exposure);
- opioid prescriptions (``synth.prescriptions_sql``) are MedicationRequests with their tablets, doses a day and
  period (OMOP: ``drug_exposure`` rows with quantity and days supply, half of them coded in a small vocabulary
  of site-local concept ids: ``concept``, ``concept_ancestor``, ``drug_strength``).

Randomness is a hash of (seed, row, purpose), as in ``synth.py``. Files are written with DuckDB COPY: NDJSON with
``FORMAT json`` (FHIR forbids ``null``, so each file holds resources with the same elements present: a type may be
split over several ``Type.NNN.ndjson`` files, as Bulk Data exports are), Parquet for OMOP.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import duckdb

from .._kb import SYSTEMS, KnowledgeBase, load_knowledge
from .sql import lit, str_list
from .synth_sql import OPIOID_PRODUCTS, canonical_sql, prescriptions_sql

UCUM = "http://unitsofmeasure.org"
ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
# units written as a UCUM code as well; the others only as text (as EHRs do with "mcg", "mgs", "units")
UCUM_UNITS = ("mg", "mg/kg", "mL", "mg/h", "mg/kg/h", "mL/h")
ROUTES = {  # SNOMED CT route, its display, and a word an EHR may write instead
    "intravenous": ("47625008", "Intravenous route", "IV"),
    "oral": ("26643006", "Oral route", "PO"),
    "intranasal": ("46713006", "Nasal route", "intranasal"),
}
# the synthetic locations: name -> (v3 RoleCode or None, type text or None, v3 ActCode encounter class)
LOCATIONS: Mapping[str, tuple[str | None, str | None, str]] = {
    "ICU 1": ("ICU", None, "IMP"),
    "SICU": ("ICU", "Surgical intensive care unit", "IMP"),
    "Cardiac ICU": (None, "Intensive care unit", "IMP"),
    "Ward 4B": ("HU", None, "IMP"),
    "Ward 6A": ("HU", None, "IMP"),
    "PACU": ("HU", "Post-anaesthesia care unit", "IMP"),
    "Emergency": ("ER", None, "EMER"),
    "Pain clinic": (None, "Pain clinic", "AMB"),
}
ROLE_DISPLAY = {"ICU": "Intensive care unit", "HU": "Hospital unit", "ER": "Emergency room"}


# ----------------------------------------------------------------------------------------------------
# JSON building in SQL: objects and arrays without nulls (FHIR forbids null and empty arrays)


def _obj(**fields: str | None) -> str:
    """A JSON object of the fields whose value is not NULL; NULL when none is."""
    parts = [f"{lit(k)}, {v}" for k, v in fields.items() if v is not None]
    return f"CAST(nullif(CAST(json_merge_patch('{{}}', json_object({', '.join(parts)})) AS VARCHAR), '{{}}') AS JSON)"


def _arr(*items: str) -> str:
    """A JSON array of the items that are not NULL; NULL when none is."""
    values = ", ".join(f"CAST({i} AS JSON)" for i in items)
    return f"CAST(nullif(CAST(to_json([x for x in [{values}] if x IS NOT NULL]) AS VARCHAR), '[]') AS JSON)"


def _coding(system: str, code: str, display: str | None = None) -> str:
    return _obj(system=system, code=code, display=display)


def _concept(*codings: str, text: str | None = None) -> str:
    return _obj(coding=_arr(*codings) if codings else None, text=text)


def _ref(expr: str) -> str:
    return _obj(reference=expr)


def _time(expr: str) -> str:
    return f"strftime({expr}, '%Y-%m-%dT%H:%M:%SZ')"


def _quantity(value: str, unit: str) -> str:
    """A Quantity with the unit as written, and the UCUM code when the text is one."""
    ucum = ", ".join(lit(u) for u in UCUM_UNITS)
    return _obj(
        value=value,
        unit=unit,
        system=f"CASE WHEN {unit} IN ({ucum}) THEN {lit(UCUM)} END",
        code=f"CASE WHEN {unit} IN ({ucum}) THEN {unit} END",
    )


def _h(seed: int, purpose: str, n: int) -> str:
    """A deterministic choice among n for each row ``i``."""
    return f"CAST(hash(i, {seed}, {lit(purpose)}) % {n} AS BIGINT)"


# ----------------------------------------------------------------------------------------------------
# Codes for concepts, from the value sets


def concept_codes(kb: KnowledgeBase) -> dict[str, list[tuple[str, str, str]]]:
    """For each concept, the value-set codes (system, code, display) that map to that concept alone, so that a
    coded condition or reason names exactly the concept it stands for. Hierarchy entries shorter than an ICD-10-CM
    category (the chapter letter O) are not codes and are left out."""
    found: dict[str, list[tuple[str, str, str]]] = {}
    for c in kb.value_sets.codes:
        if c.match == "prefix" and len(c.code.replace(".", "")) < 3:
            continue
        if kb.value_sets.concepts(c.system, c.code) == (c.concept,):
            found.setdefault(c.concept, []).append((c.system, c.code, c.display))
    return found


def _code_table(kb: KnowledgeBase) -> str:
    rows = []
    for concept, codes in concept_codes(kb).items():
        for k, (system, code, display) in enumerate(codes):
            rows.append(f"({lit(concept)}, {lit(system)}, {lit(code)}, {lit(display)}, {k}, {len(codes)})")
    return f"SELECT * FROM (VALUES {', '.join(rows)}) v(concept, system, code, display, k, n)"


def _system_url(short: str) -> str:
    cases = " ".join(f"WHEN {lit(s)} THEN {lit(url)}" for s, url in SYSTEMS.items())
    return f"CASE {short} {cases} END"


# ----------------------------------------------------------------------------------------------------
# Writing


def _prepare(con: duckdb.DuckDBPyConnection, rows: int, seed: int, kb: KnowledgeBase) -> None:
    """Temp tables: ``b`` (one row per administration, with its variant choices), ``conds`` (its conditions,
    with a code each), ``reason`` (its indication's code, for coded uses), ``surgery`` (a procedure code) and
    ``rx`` (the opioid prescriptions, ``synth.prescriptions_sql``)."""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE b AS
        SELECT c.*, CAST(substr(c.admin_id, 2) AS BIGINT) AS i, CAST(substr(c.patient_id, 2) AS BIGINT) AS p,
          trim(c.dose_unit) AS unit_trimmed
        FROM ({canonical_sql(rows, seed)}) c
    """)
    con.execute(f"CREATE OR REPLACE TEMP TABLE rx AS {prescriptions_sql(rows, seed)}")
    con.execute(f"CREATE OR REPLACE TEMP TABLE codes AS {_code_table(kb)}")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE conds AS
        SELECT x.i, x.k, x.concept, c.system, c.code, c.display FROM (
          SELECT i, generate_subscripts(string_split(conditions, ';'), 1) AS k,
                 unnest(string_split(conditions, ';')) AS concept
          FROM b WHERE conditions <> '') x
        JOIN codes c ON c.concept = x.concept AND c.k = hash(x.i, {seed}, x.concept) % c.n
        WHERE x.concept <> ''
    """)
    use_concepts = ", ".join(f"({lit(u.id)}, {lit(u.concept)})" for u in kb.uses.values() if u.concept)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE reason AS
        SELECT b.i AS ri, c.system AS rsystem, c.code AS rcode, c.display AS rdisplay
        FROM b JOIN (VALUES {use_concepts}) u(use_id, concept) ON u.use_id = b.indication
        JOIN codes c ON c.concept = u.concept AND c.k = hash(b.i, {seed}, 'reason') % c.n
    """)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE surgery AS
        SELECT b.i, c.system, c.code, c.display
        FROM b JOIN codes c ON c.concept = 'procedure:' || b.procedure_class AND c.k = hash(b.i, {seed}, 'surgery') % c.n
    """)


def _write_ndjson(con: duckdb.DuckDBPyConnection, select: str, target: Path, resource_type: str) -> int:
    """Write resources (one per row; NULL columns are absent elements) as NDJSON, one file per set of elements
    present. Returns the number of resources. ``resource_type`` is the files' name (``MedicationRequest``, or
    ``MedicationRequest.opioid`` for a second set of the type)."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE out_rows AS {select}")
    columns = [r[0] for r in con.execute("DESCRIBE out_rows").fetchall()]
    present = ", ".join(f'"{c}" IS NOT NULL' for c in columns)
    patterns = con.execute(f"SELECT DISTINCT [{present}] FROM out_rows ORDER BY 1").fetchall()
    for n, (pattern,) in enumerate(patterns):
        kept = [c for c, p in zip(columns, pattern, strict=True) if p]
        where = " AND ".join(
            f'"{c}" IS {"NOT " if p else ""}NULL' for c, p in zip(columns, pattern, strict=True)
        )
        name = f"{resource_type}.ndjson" if len(patterns) == 1 else f"{resource_type}.{n:03d}.ndjson"
        cols = ", ".join(f'"{c}"' for c in kept)
        con.execute(f"COPY (SELECT {cols} FROM out_rows WHERE {where}) TO '{target / name}' (FORMAT json)")
    count = con.execute("SELECT count(*) FROM out_rows").fetchone()
    return int(count[0]) if count else 0


def write_fhir(rows: int, out_dir: Path, seed: int = 20261124) -> Path:
    """The FHIR form: ``fhir/*.ndjson``, FHIR R4 resources as a Bulk Data export writes them."""
    kb = load_knowledge()
    target = out_dir / "fhir"
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("*.ndjson"):
        old.unlink()
    con = duckdb.connect()
    try:
        _prepare(con, rows, seed, kb)
        for resource_type, select in _fhir_resources(seed, kb).items():
            _write_ndjson(con, select, target, resource_type)
    finally:
        con.close()
    return target


@dataclass(frozen=True)
class _FhirParts:
    """SQL expressions several synthetic FHIR resources share (over the rows ``b``)."""

    ket_code: str  # ketamine's CodeableConcept
    ingredient: str  # the Medication's ingredient (ketamine 10 mg/mL)
    route: str  # the route's CodeableConcept (coded, or now and then in words)
    subject: str  # the Patient reference
    encounter: str  # the Encounter reference, when the row has one
    no_context: str  # whether the row has no Encounter
    t: str  # the administration's time


def _fhir_parts(seed: int) -> _FhirParts:
    snomed = SYSTEMS["snomed"]
    ketamine_coding = _coding(lit(SYSTEMS["rxnorm"]), "'6130'", "'ketamine'")
    route_coding = " ".join(
        f"WHEN {lit(r)} THEN {_coding(lit(snomed), lit(code), lit(display))}"
        for r, (code, display, _) in ROUTES.items()
    )
    route_word = " ".join(f"WHEN {lit(r)} THEN {lit(w)}" for r, (_, _, w) in ROUTES.items())
    route = (
        f"CASE WHEN {_h(seed, 'route-text', 10)} = 0 THEN {_concept(text=f'CASE route {route_word} END')} "
        f"ELSE {_concept(f'CASE route {route_coding} END')} END"
    )
    strength = _obj(
        numerator=_obj(value="10", unit="'mg'", system=lit(UCUM), code="'mg'"),
        denominator=_obj(value="1", unit="'mL'", system=lit(UCUM), code="'mL'"),
    )
    no_context = f"setting = 'unknown' AND procedure_class IS NULL AND {_h(seed, 'no-context', 2)} = 0"
    encounter_ref = _ref("'Encounter/E' || i")
    return _FhirParts(
        ket_code=_concept(ketamine_coding, text="'ketamine'"),
        ingredient=_arr(_obj(itemCodeableConcept=_concept(ketamine_coding), strength=strength)),
        route=route,
        subject=_ref("'Patient/' || patient_id"),
        encounter=f"CASE WHEN NOT ({no_context}) THEN {encounter_ref} END",
        no_context=no_context,
        t=_time("administered_at"),
    )


def _fhir_resources(seed: int, kb: KnowledgeBase) -> dict[str, str]:
    """The SELECT of each synthetic resource type, over the rows ``b`` (``_prepare``)."""
    parts = _fhir_parts(seed)
    locations = _location_types()
    return {
        "Patient": """
      SELECT DISTINCT 'Patient' AS "resourceType", patient_id AS id, true AS active FROM b
    """,
        "Medication": f"""
      SELECT 'Medication' AS "resourceType", 'ketamine-10-mg-per-ml' AS id, {parts.ket_code} AS code,
        {parts.ingredient} AS ingredient
    """,
        "MedicationAdministration": _fhir_administrations(seed, kb, parts),
        "MedicationRequest": _fhir_requests(kb, parts),
        "MedicationStatement": _fhir_statements(parts),
        "Observation": _fhir_weights(parts),
        "Condition": _fhir_conditions(),
        "Encounter": _fhir_encounters(parts, locations),
        "Location": f"""
      SELECT 'Location' AS "resourceType", 'L-' || lower(replace(name, ' ', '-')) AS id, 'active' AS status,
        name, type FROM ({locations})
    """,
        "Procedure": _fhir_procedures(),
        "MedicationRequest.opioid": _opioid_requests(),
    }


def _fhir_dosage(seed: int, route: str) -> str:
    """An IV administration's dosage: a bolus dose, a rate, or now and then a rate as a Ratio per hour; the
    method PCA for a PCA."""
    ratio = f"dose_unit IN ('mg/h', 'mL/h') AND {_h(seed, 'ratio', 3)} = 0"
    ratio_dose = _obj(
        numerator=_quantity("dose_value", "CASE dose_unit WHEN 'mg/h' THEN 'mg' ELSE 'mL' END"),
        denominator=_obj(value="1", unit="'h'", system=lit(UCUM), code="'h'"),
    )
    infusion = "coalesce(kind = 'infusion', false)"
    return _obj(
        route=route,
        method=f"CASE WHEN pca_sole_agent THEN {_concept(text=lit('patient-controlled analgesia (PCA)'))} END",
        dose=f"CASE WHEN kind = 'bolus' THEN {_quantity('dose_value', 'dose_unit')} END",
        rateQuantity=f"CASE WHEN {infusion} AND NOT ({ratio}) THEN {_quantity('dose_value', 'dose_unit')} END",
        rateRatio=f"CASE WHEN {infusion} AND {ratio} THEN {ratio_dose} END",
    )


def _fhir_administrations(seed: int, kb: KnowledgeBase, p: _FhirParts) -> str:
    """Each row's MedicationAdministration (its drug coded, by a product code, in words, by reference or
    contained), and a morphine one now and then (not ketamine: not read)."""
    rxnorm, snomed = SYSTEMS["rxnorm"], SYSTEMS["snomed"]
    products = sorted(kb.ketamine_rxnorm - {"6130"})
    product = f"{str_list(products)}[1 + {_h(seed, 'product', len(products))}]"
    # a name in free text the words path must recognise (the brand name, when the knowledge base has one)
    word = next((w for w in sorted(kb.ketamine_words) if w != "ketamine"), "ketamine")
    morphine = kb.opioids["morphine"].rxnorm
    t, subject = p.t, p.subject
    volume = "unit_trimmed IN ('mL', 'mL/h', 'ml/hr')"
    medication_variant = (
        f"CASE WHEN {volume} THEN 3 + {_h(seed, 'contained', 2)} ELSE {_h(seed, 'medication', 4)} END"
    )
    infusion = "coalesce(kind = 'infusion', false)"
    iv = "route = 'intravenous'"
    cite_weight = f"weight_value IS NULL OR {_h(seed, 'cite-weight', 3)} = 0"
    weight_ref, statement_ref = _ref("'Observation/W' || i"), _ref("'MedicationStatement/S' || i")
    supporting = _arr(
        f"CASE WHEN {cite_weight} THEN {weight_ref} END",
        f"CASE WHEN route <> 'intravenous' THEN {statement_ref} END",
    )
    contained = _arr(_obj(resourceType="'Medication'", id="'med'", code=p.ket_code, ingredient=p.ingredient))
    period_infusion = _obj(start=t, end=_time("administered_at + INTERVAL 1 HOUR"))
    morphine_dosage = _obj(
        route=_concept(_coding(lit(snomed), "'47625008'", "'Intravenous route'")),
        dose=_quantity("4.0", "'mg'"),
    )
    return f"""
      SELECT 'MedicationAdministration' AS "resourceType", admin_id AS id, 'completed' AS status,
        CASE {medication_variant}
          WHEN 0 THEN {p.ket_code}
          WHEN 1 THEN {_concept(_coding(lit(rxnorm), product))}
          WHEN 2 THEN {_concept(text=lit(word.capitalize()))} END AS "medicationCodeableConcept",
        CASE {medication_variant} WHEN 3 THEN {_ref("'Medication/ketamine-10-mg-per-ml'")}
          WHEN 4 THEN {_ref("'#med'")} END AS "medicationReference",
        CASE WHEN {medication_variant} = 4 THEN {contained} END AS contained,
        {subject} AS subject,
        {p.encounter} AS context,
        CASE WHEN NOT ({infusion}) THEN {t} END AS "effectiveDateTime",
        CASE WHEN {infusion} THEN {period_infusion} END AS "effectivePeriod",
        {_ref("'MedicationRequest/R' || i")} AS request,
        {supporting} AS "supportingInformation",
        CASE WHEN {iv} THEN {_fhir_dosage(seed, p.route)} END AS dosage
      FROM b
      UNION ALL
      SELECT 'MedicationAdministration', 'X' || i, 'completed',
        {_concept(_coding(lit(rxnorm), lit(morphine), "'morphine'"), text="'morphine'")}, NULL, NULL, {subject},
        NULL, {t}, NULL, NULL, NULL,
        {morphine_dosage}
      FROM b WHERE i % 25 = 3
    """


def _fhir_requests(kb: KnowledgeBase, p: _FhirParts) -> str:
    """Each row's MedicationRequest: its reason coded (``reason``), else the use in words; the route for oral
    and intranasal use."""
    coded_reason = _arr(_concept(_coding(_system_url("rsystem"), "rcode", "rdisplay")))
    reason = f"""CASE WHEN rcode IS NOT NULL THEN {coded_reason}
        WHEN indication IS NOT NULL AND procedure_class IS NULL THEN {_arr(_concept(text="label"))} END"""
    use_labels = ", ".join(f"({lit(u.id)}, {lit(u.label)})" for u in kb.uses.values())
    return f"""
      SELECT 'MedicationRequest' AS "resourceType", 'R' || b.i AS id, 'completed' AS status, 'order' AS intent,
        {p.ket_code} AS "medicationCodeableConcept", {p.subject} AS subject, {p.encounter} AS encounter,
        {_time("administered_at - INTERVAL 10 MINUTE")} AS "authoredOn",
        {reason} AS "reasonCode",
        CASE WHEN b.route <> 'intravenous' THEN {_arr(_obj(route=p.route))} END AS "dosageInstruction"
      FROM b LEFT JOIN reason r ON r.ri = b.i LEFT JOIN (VALUES {use_labels}) u(use_id, label) ON u.use_id = b.indication
    """


def _fhir_weights(p: _FhirParts) -> str:
    """Each row's body weight Observation (its value, or the reason it is absent)."""
    loinc = SYSTEMS["loinc"]
    weight_unit = "CASE weight_unit WHEN '[lb_av]' THEN 'lb' ELSE weight_unit END"
    return f"""
      SELECT 'Observation' AS "resourceType", 'W' || i AS id, 'final' AS status,
        {_arr(_concept(_coding(lit(OBSERVATION_CATEGORY), "'vital-signs'", "'Vital Signs'")))} AS category,
        {_concept(_coding(lit(loinc), "'29463-7'", "'Body weight'"), text="'Body weight'")} AS code,
        {p.subject} AS subject, {p.t} AS "effectiveDateTime",
        CASE WHEN weight_value IS NOT NULL THEN {_obj(value="weight_value", unit=weight_unit, system=lit(UCUM), code="weight_unit")}
          END AS "valueQuantity",
        CASE WHEN weight_value IS NULL THEN {_concept(_coding(lit(DATA_ABSENT), "'unknown'", "'Unknown'"))}
          END AS "dataAbsentReason"
      FROM b
    """


def _fhir_conditions() -> str:
    """Each row's conditions (``conds``), resolved a second after the administration, and a refuted psychosis
    for one patient in ten (not read)."""
    snomed = SYSTEMS["snomed"]
    return f"""
      SELECT 'Condition' AS "resourceType", 'C' || c.i || '-' || c.k AS id,
        {_concept(_coding(lit(CONDITION_CLINICAL), "'resolved'"))} AS "clinicalStatus",
        {_concept(_coding(lit(CONDITION_VERIFICATION), "'confirmed'"))} AS "verificationStatus",
        {_concept(_coding(_system_url("c.system"), "c.code", "c.display"))} AS code,
        {_ref("'Patient/' || b.patient_id")} AS subject,
        {_time("b.administered_at")} AS "onsetDateTime",
        {_time("b.administered_at + INTERVAL 1 SECOND")} AS "abatementDateTime"
      FROM conds c JOIN b ON b.i = c.i
      UNION ALL
      SELECT 'Condition', 'refuted-' || p,
        {_concept(_coding(lit(CONDITION_CLINICAL), "'active'"))},
        {_concept(_coding(lit(CONDITION_VERIFICATION), "'refuted'"))},
        {_concept(_coding(lit(snomed), "'69322001'", "'Psychotic disorder'"))},
        {_ref("'Patient/' || patient_id")}, '2000-01-01', NULL
      FROM (SELECT DISTINCT p, patient_id FROM b WHERE p % 10 = 0)
    """


def _location_types() -> str:
    """The locations (``LOCATIONS``) as rows: name, type (typed by role code, in words, or not at all), class."""
    location_rows = []
    for name, (role, text, cls) in LOCATIONS.items():
        codings = [_coding(lit(ROLE_CODE), lit(role), lit(ROLE_DISPLAY[role]))] if role else []
        types = _arr(_concept(*codings, text=lit(text) if text else None))
        location_rows.append(f"SELECT {lit(name)} AS name, {types} AS type, {lit(cls)} AS cls")
    return " UNION ALL ".join(location_rows)


def _fhir_encounters(p: _FhirParts, locations: str) -> str:
    """Each row's Encounter (but those without one): its class and its location over its period."""
    period = _obj(
        start=_time("administered_at - INTERVAL 2 HOUR"), end=_time("administered_at + INTERVAL 2 HOUR")
    )
    where = _obj(
        location=_obj(
            reference="'Location/L-' || lower(replace(b.location, ' ', '-'))", display="b.location"
        ),
        status="'completed'",
        period=period,
    )
    return f"""
      SELECT 'Encounter' AS "resourceType", 'E' || i AS id, 'finished' AS status,
        {_coding(lit(ACT_CODE), "coalesce(l.cls, 'IMP')")} AS "class",
        {p.subject} AS subject, {period} AS period,
        CASE WHEN b.location IS NOT NULL THEN {_arr(where)} END AS location
      FROM b LEFT JOIN ({locations}) l ON l.name = b.location
      WHERE NOT ({p.no_context})
    """


def _fhir_procedures() -> str:
    """Each surgery (``surgery``) as a Procedure in the row's Encounter, an hour before."""
    return f"""
      SELECT 'Procedure' AS "resourceType", 'SURG' || s.i AS id, 'completed' AS status,
        {_concept(_coding(_system_url("s.system"), "s.code", "s.display"))} AS code,
        {_ref("'Patient/' || b.patient_id")} AS subject, {_ref("'Encounter/E' || s.i")} AS encounter,
        {_time("b.administered_at - INTERVAL 1 HOUR")} AS "performedDateTime"
      FROM surgery s JOIN b ON b.i = s.i
    """


def _fhir_statements(p: _FhirParts) -> str:
    """For oral and intranasal use, a MedicationStatement of an IV infusion a month before: completed when the
    row had a prior course, else not taken."""
    snomed = SYSTEMS["snomed"]
    iv_route = _concept(_coding(lit(snomed), "'47625008'", "'Intravenous route'"))
    dosage = _arr(_obj(route=iv_route, doseAndRate=_arr(_obj(rateQuantity=_quantity("0.3", "'mg/kg/h'")))))
    effective = _obj(
        start=_time("administered_at - INTERVAL 30 DAY"), end=_time("administered_at - INTERVAL 29 DAY")
    )
    return f"""
      SELECT 'MedicationStatement' AS "resourceType", 'S' || i AS id,
        CASE WHEN prior_iv_ketamine THEN 'completed' ELSE 'not-taken' END AS status,
        {p.ket_code} AS "medicationCodeableConcept", {p.subject} AS subject,
        {effective}
          AS "effectivePeriod",
        {dosage}
          AS dosage
      FROM b WHERE route <> 'intravenous'
    """


def _opioid_requests() -> str:
    """The opioid prescriptions as FHIR MedicationRequests: the ingredient's RxNorm code and the product's name,
    tablets per dose, doses a day, as needed, and the period they cover (``timing.repeat.boundsPeriod``)."""
    rxnorm = SYSTEMS["rxnorm"]
    codes = " ".join(
        f"WHEN {lit(o.ingredient)} THEN {lit(o.rxnorm)}" for o in load_knowledge().opioids.values()
    )
    coding = _coding(lit(rxnorm), f"CASE ingredient {codes} END", "ingredient")
    dose = _obj(value="per_dose", unit="'tablet'")
    repeat = _obj(
        frequency="per_day",
        period="1",
        periodUnit="'d'",
        boundsPeriod=_obj(start="strftime(start_day, '%Y-%m-%d')", end="strftime(end_day, '%Y-%m-%d')"),
    )
    dosage = _obj(
        timing=_obj(repeat=repeat),
        asNeededBoolean="CASE WHEN as_needed THEN true END",
        doseAndRate=_arr(_obj(doseQuantity=dose)),
    )
    return f"""
      SELECT 'MedicationRequest' AS "resourceType", rx_id AS id, status, 'order' AS intent,
        {_concept(coding, text="name")} AS "medicationCodeableConcept", {_ref("'Patient/' || patient_id")} AS subject,
        strftime(start_day, '%Y-%m-%d') AS "authoredOn", {_arr(dosage)} AS "dosageInstruction"
      FROM rx
    """


# ----------------------------------------------------------------------------------------------------
# OMOP CDM v5.4

BODY_WEIGHT_CONCEPT = 3025315  # OMOP standard concept for LOINC 29463-7 Body weight (see omop.py)
LOCAL_CONCEPT_BASE = 2_000_000_000  # OMOP reserves concept ids above 2 000 000 000 for site-local concepts
OPIOID_INGREDIENT_BASE = (
    LOCAL_CONCEPT_BASE + 100
)  # the synthetic vocabulary's ids: site-local, unlike real ones
OPIOID_PRODUCT_BASE = LOCAL_CONCEPT_BASE + 200
UNIT_MG = LOCAL_CONCEPT_BASE + 300
OMOP_VISITS = {"inpatient": 9201, "outpatient": 9202, "emergency": 9203, "intensive-care": 32037}
OMOP_ROUTE_WORDS = {  # route_source_value spellings, chosen per row
    "intravenous": ("IV", "intravenous", "47625008"),
    "oral": ("PO", "oral"),
    "intranasal": ("intranasal", "nasal"),
}
OMOP_LOCATIONS: Mapping[str, str] = {  # care site -> how the setting is recorded
    "ICU 1": "intensive-care",
    "SICU": "intensive-care",
    "Cardiac ICU": "intensive-care",
    "Ward 4B": "ward",
    "Ward 6A": "ward",
    "PACU": "ward",
    "Emergency": "emergency",
    "Pain clinic": "outpatient",
}


def write_omop(rows: int, out_dir: Path, seed: int = 20261124) -> Path:
    """The OMOP form: ``omop/<table>.parquet``, OMOP CDM v5.4 tables (ids are the rows' numbers: administration
    A000000042 is drug_exposure 42, patient P00000007 is person 7)."""
    kb = load_knowledge()
    target = out_dir / "omop"
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("*.parquet"):
        old.unlink()
    con = duckdb.connect()
    try:
        _prepare(con, rows, seed, kb)
        con.execute(_omop_rows(seed, kb))
        for table, select in _omop_tables(seed, kb).items():
            con.execute(
                f"COPY ({select}) TO '{target / (table + '.parquet')}' (FORMAT parquet, COMPRESSION zstd)"
            )
    finally:
        con.close()
    return target


def _omop_vocabulary(kb: KnowledgeBase) -> dict[str, str]:
    """A small vocabulary for the synthetic OMOP tables, with site-local concept ids (never real ones): the
    knowledge base's ketamine RxNorm codes and opioid ingredients (RxNorm, by their codes), the opioid products
    below their ingredient (``concept_ancestor``, with each concept's row to itself as OMOP writes it) and
    their strengths (``drug_strength``, mg per tablet), and the unit mg (UCUM)."""
    ketamine = sorted(kb.ketamine_rxnorm)
    opioids = list(kb.opioids.values())
    rows = [
        (LOCAL_CONCEPT_BASE + k, "ketamine" if code == "6130" else f"RxNorm {code}", "Drug", "RxNorm", code)
        for k, code in enumerate(ketamine)
    ]
    rows += [
        (OPIOID_INGREDIENT_BASE + j, o.ingredient, "Drug", "RxNorm", o.rxnorm) for j, o in enumerate(opioids)
    ]
    rows += [
        (OPIOID_PRODUCT_BASE + k, name, "Drug", "RxNorm Extension", f"SYNTH-OPIOID-{k}")
        for k, (name, _, _) in enumerate(OPIOID_PRODUCTS)
    ]
    rows.append((UNIT_MG, "milligram", "Unit", "UCUM", "mg"))
    concept_rows = ", ".join(
        f"({cid}, {lit(name)}, {lit(domain)}, {lit(vocabulary)}, {lit(code)})"
        for cid, name, domain, vocabulary, code in rows
    )
    ingredient_of = {o.ingredient: OPIOID_INGREDIENT_BASE + j for j, o in enumerate(opioids)}
    ketamine_root = LOCAL_CONCEPT_BASE + ketamine.index("6130")
    pairs = [(cid, cid) for cid, *_ in rows if cid != UNIT_MG]
    pairs += [(ketamine_root, LOCAL_CONCEPT_BASE + k) for k, code in enumerate(ketamine) if code != "6130"]
    pairs += [(ingredient_of[i], OPIOID_PRODUCT_BASE + k) for k, (_, i, _) in enumerate(OPIOID_PRODUCTS)]
    strengths = ", ".join(
        f"({OPIOID_PRODUCT_BASE + k}, {ingredient_of[i]}, {mg}, {UNIT_MG})"
        for k, (_, i, mg) in enumerate(OPIOID_PRODUCTS)
    )
    return {
        "concept": f"""
          SELECT concept_id, concept_name, domain_id, vocabulary_id,
            CASE WHEN vocabulary_id = 'RxNorm' AND concept_code IN ({_in_list(["6130", *(o.rxnorm for o in opioids)])})
              THEN 'Ingredient' WHEN domain_id = 'Unit' THEN 'Unit' ELSE 'Clinical Drug' END AS concept_class_id,
            CASE WHEN domain_id = 'Unit' OR vocabulary_id = 'RxNorm' THEN 'S' END AS standard_concept, concept_code,
            DATE '1970-01-01' AS valid_start_date, DATE '2099-12-31' AS valid_end_date,
            CAST(NULL AS VARCHAR) AS invalid_reason
          FROM (VALUES {concept_rows}) v(concept_id, concept_name, domain_id, vocabulary_id, concept_code)""",
        "concept_ancestor": "SELECT * FROM (VALUES "
        + ", ".join(f"({a}, {d}, {0 if a == d else 1}, {0 if a == d else 1})" for a, d in pairs)
        + ") v(ancestor_concept_id, descendant_concept_id, min_levels_of_separation, max_levels_of_separation)",
        "drug_strength": f"""
          SELECT drug_concept_id, ingredient_concept_id, amount_value, amount_unit_concept_id,
            CAST(NULL AS DOUBLE) AS numerator_value, CAST(NULL AS INTEGER) AS numerator_unit_concept_id,
            CAST(NULL AS DOUBLE) AS denominator_value, CAST(NULL AS INTEGER) AS denominator_unit_concept_id,
            CAST(NULL AS INTEGER) AS box_size, DATE '1970-01-01' AS valid_start_date, DATE '2099-12-31' AS valid_end_date,
            CAST(NULL AS VARCHAR) AS invalid_reason
          FROM (VALUES {strengths}) v(drug_concept_id, ingredient_concept_id, amount_value, amount_unit_concept_id)""",
    }


def _omop_rows(seed: int, kb: KnowledgeBase) -> str:
    """Temp table ``ob``: ``b`` with how each administration is recorded in OMOP (visit, visit detail, care site,
    drug naming, route spelling)."""
    sites = list(OMOP_LOCATIONS)
    site_id = "CASE location " + " ".join(f"WHEN {lit(s)} THEN {k + 1}" for k, s in enumerate(sites)) + " END"
    site_kind = (
        "CASE location "
        + " ".join(f"WHEN {lit(s)} THEN {lit(v)}" for s, v in OMOP_LOCATIONS.items())
        + " END"
    )
    coded_uses = _in_list(u.id for u in kb.uses.values() if u.concept)
    route_source = (
        "CASE route "
        + " ".join(
            f"WHEN {lit(r)} THEN {str_list(words)}[1 + {_h(seed, 'route-word', len(words))}]"
            for r, words in OMOP_ROUTE_WORDS.items()
        )
        + " END"
    )
    return f"""
        CREATE OR REPLACE TEMP TABLE ob AS
        SELECT *,
          CASE WHEN no_visit THEN NULL ELSE i END AS visit_id,
          CASE WHEN has_detail THEN i END AS detail_id,
          CASE site_kind WHEN 'emergency' THEN {OMOP_VISITS["emergency"]} WHEN 'outpatient' THEN {OMOP_VISITS["outpatient"]}
            WHEN 'intensive-care' THEN CASE WHEN has_detail THEN {OMOP_VISITS["inpatient"]}
              ELSE {OMOP_VISITS["intensive-care"]} END
            ELSE {OMOP_VISITS["inpatient"]} END AS visit_concept_id,
          CASE WHEN has_detail THEN CASE site_kind WHEN 'intensive-care' THEN {OMOP_VISITS["intensive-care"]}
            ELSE {OMOP_VISITS["inpatient"]} END END AS detail_concept_id
        FROM (
          SELECT *,
            setting = 'unknown' AND procedure_class IS NULL AND weight_value IS NOT NULL
              AND coalesce(indication NOT IN ({coded_uses}), true) AND {_h(seed, "no-visit", 2)} = 0 AS no_visit,
            location IS NOT NULL AND ({site_kind} = 'ward'
              OR ({site_kind} = 'intensive-care' AND {_h(seed, "icu-detail", 2)} = 0)) AS has_detail,
            {site_kind} AS site_kind, {site_id} AS site_id,
            CASE WHEN unit_trimmed IN ('mL', 'mL/h', 'ml/hr') THEN 3 ELSE {_h(seed, "drug", 3)} END AS drug_variant,
            {_h(seed, "drug-code", len(kb.ketamine_rxnorm))} AS drug_code_k,
            {route_source} AS route_source,
            {_h(seed, "weight-concept", 2)} = 0 AS weight_concept
          FROM b)
    """


def _in_list(items: Iterable[str]) -> str:
    return ", ".join(lit(i) for i in items) or "NULL"


def _source_code(seed: int, row: str, system: str, code: str) -> str:
    """A code as a condition_source_value is written: ICD-10-CM dotted, undotted or prefixed, SNOMED CT bare or
    prefixed (the reader reads every form)."""
    form = f"CAST(hash({row}, {seed}, 'code-form') % 3 AS BIGINT)"
    return (
        f"CASE WHEN {system} = 'icd10cm' THEN CASE {form} WHEN 0 THEN {code} WHEN 1 THEN replace({code}, '.', '') "
        f"ELSE 'ICD10CM:' || {code} END ELSE CASE WHEN {form} = 0 THEN 'SNOMED:' || {code} ELSE {code} END END"
    )


def _omop_tables(seed: int, kb: KnowledgeBase) -> dict[str, str]:
    """The SELECT of each synthetic OMOP table, over the rows ``ob`` (``_omop_rows``), in the order written."""
    return {
        **_omop_person_table(),
        **_omop_vocabulary(kb),
        **_omop_drug_tables(seed),
        **_omop_visit_tables(),
        **_omop_event_tables(seed, kb),
    }


def _omop_person_table() -> dict[str, str]:
    return {
        "person": """
          SELECT DISTINCT p AS person_id, 0 AS gender_concept_id,
            1930 + CAST(hash(p, 'born') % 70 AS INTEGER) AS year_of_birth, 0 AS race_concept_id,
            0 AS ethnicity_concept_id, patient_id AS person_source_value
          FROM ob ORDER BY p""",
    }


def _omop_drug_tables(seed: int) -> dict[str, str]:
    """The care sites and the drug exposures: each row's ketamine (coded or named), a morphine one now and
    then, and the opioid prescriptions (``rx``)."""
    day = "CAST(administered_at AS DATE)"
    return {
        "care_site": "SELECT * FROM (VALUES "
        + ", ".join(f"({k + 1}, {lit(s)}, 0)" for k, s in enumerate(OMOP_LOCATIONS))
        + ") v(care_site_id, care_site_name, place_of_service_concept_id)",
        "drug_exposure": f"""
          SELECT i AS drug_exposure_id, p AS person_id,
            CASE WHEN drug_variant = 0 THEN {LOCAL_CONCEPT_BASE} + drug_code_k ELSE 0 END AS drug_concept_id,
            {day} AS drug_exposure_start_date, administered_at AS drug_exposure_start_datetime,
            {day} AS drug_exposure_end_date, administered_at + INTERVAL 1 HOUR AS drug_exposure_end_datetime,
            0 AS drug_type_concept_id, dose_value AS quantity,
            CASE WHEN pca_sole_agent THEN 'ketamine infusion by IV PCA' END AS sig,
            0 AS route_concept_id, visit_id AS visit_occurrence_id, detail_id AS visit_detail_id,
            CASE drug_variant WHEN 1 THEN 'Ketamine HCl injection' WHEN 2 THEN 'KETALAR'
              WHEN 3 THEN 'ketamine 10 mg/mL injection' END AS drug_source_value,
            0 AS drug_source_concept_id, route_source AS route_source_value, dose_unit AS dose_unit_source_value,
            CAST(NULL AS INTEGER) AS days_supply
          FROM ob
          UNION ALL
          SELECT 1000000000 + i, p, 0, {day}, administered_at, {day}, administered_at, 0, 4.0, NULL, 0, visit_id,
            NULL, 'morphine sulfate 4 mg/mL injection', 0, 'IV', 'mg', NULL
          FROM ob WHERE i % 25 = 3
          UNION ALL
          SELECT 2000000000 + row_number() OVER (ORDER BY patient, k), patient,
            CASE WHEN hash(patient, k, {seed}, 'rx-concept') % 2 = 0 THEN {OPIOID_PRODUCT_BASE} + product ELSE 0 END,
            start_day, start_day, end_day, end_day, 0, per_dose * per_day * days,
            per_dose || ' tablet ' || per_day || ' times a day' || CASE WHEN as_needed THEN ' as needed' ELSE '' END,
            0, NULL, NULL, name, 0, 'PO', NULL, days
          FROM rx""",
    }


def _omop_visit_tables() -> dict[str, str]:
    """Each row's visit, and its visit detail where it has one."""
    return {
        "visit_occurrence": """
          SELECT i AS visit_occurrence_id, p AS person_id, visit_concept_id,
            CAST(administered_at - INTERVAL 2 HOUR AS DATE) AS visit_start_date,
            administered_at - INTERVAL 2 HOUR AS visit_start_datetime,
            CAST(administered_at + INTERVAL 2 HOUR AS DATE) AS visit_end_date,
            administered_at + INTERVAL 2 HOUR AS visit_end_datetime, 0 AS visit_type_concept_id,
            CASE WHEN NOT has_detail THEN site_id END AS care_site_id
          FROM ob WHERE visit_id IS NOT NULL""",
        "visit_detail": """
          SELECT i AS visit_detail_id, p AS person_id, detail_concept_id AS visit_detail_concept_id,
            CAST(administered_at - INTERVAL 1 HOUR AS DATE) AS visit_detail_start_date,
            administered_at - INTERVAL 1 HOUR AS visit_detail_start_datetime,
            CAST(administered_at + INTERVAL 1 HOUR AS DATE) AS visit_detail_end_date,
            administered_at + INTERVAL 1 HOUR AS visit_detail_end_datetime, 0 AS visit_detail_type_concept_id,
            site_id AS care_site_id, i AS visit_occurrence_id
          FROM ob WHERE has_detail""",
    }


def _omop_event_tables(seed: int, kb: KnowledgeBase) -> dict[str, str]:
    """Each row's body weight, conditions (and coded reasons), surgery, and observations (an indication no
    concept names, whether there was a prior IV course)."""
    uncoded = [(u.id, u.label) for u in kb.uses.values() if not u.concept]
    labels = ", ".join(f"({lit(i)}, {lit(label)})" for i, label in uncoded)
    day = "CAST(administered_at AS DATE)"
    return {
        "measurement": f"""
          SELECT i AS measurement_id, p AS person_id,
            CASE WHEN weight_concept THEN {BODY_WEIGHT_CONCEPT} ELSE 0 END AS measurement_concept_id,
            {day} AS measurement_date, administered_at AS measurement_datetime, 0 AS measurement_type_concept_id,
            weight_value AS value_as_number, CASE weight_unit WHEN 'kg' THEN 9529 ELSE 0 END AS unit_concept_id,
            visit_id AS visit_occurrence_id, '29463-7' AS measurement_source_value,
            CASE WHEN weight_value IS NULL THEN NULL WHEN weight_unit = '[lb_av]' THEN 'lb' ELSE weight_unit END
              AS unit_source_value
          FROM ob""",
        "condition_occurrence": f"""
          WITH coded AS (
            SELECT i AS ci, k AS ck, system AS csystem, code AS ccode FROM conds
            UNION ALL SELECT ri, 100, rsystem, rcode FROM reason)
          SELECT row_number() OVER (ORDER BY ci, ck) AS condition_occurrence_id, p AS person_id,
            0 AS condition_concept_id, {day} AS condition_start_date, administered_at AS condition_start_datetime,
            CAST(administered_at + INTERVAL 1 SECOND AS DATE) AS condition_end_date,
            administered_at + INTERVAL 1 SECOND AS condition_end_datetime, 0 AS condition_type_concept_id,
            visit_id AS visit_occurrence_id,
            {_source_code(seed, "ci * 1000 + ck", "csystem", "ccode")} AS condition_source_value,
            0 AS condition_source_concept_id
          FROM coded JOIN ob ON ob.i = coded.ci""",
        "procedure_occurrence": """
          SELECT s.i AS procedure_occurrence_id, ob.p AS person_id, 0 AS procedure_concept_id,
            CAST(ob.administered_at - INTERVAL 1 HOUR AS DATE) AS procedure_date,
            ob.administered_at - INTERVAL 1 HOUR AS procedure_datetime, 0 AS procedure_type_concept_id,
            ob.visit_id AS visit_occurrence_id, s.code AS procedure_source_value, 0 AS procedure_source_concept_id
          FROM surgery s JOIN ob ON ob.i = s.i""",
        "observation": f"""
          SELECT row_number() OVER (ORDER BY i, what) AS observation_id, p AS person_id, 0 AS observation_concept_id,
            CAST(administered_at AS DATE) AS observation_date, administered_at AS observation_datetime,
            0 AS observation_type_concept_id, said AS value_as_string, what AS observation_source_value,
            i AS observation_event_id, 0 AS obs_event_field_concept_id
          FROM (
            SELECT ob.*, 'indication' AS what, u.label AS said
            FROM ob JOIN (VALUES {labels}) u(use_id, label) ON u.use_id = ob.indication
            WHERE ob.procedure_class IS NULL
            UNION ALL
            SELECT ob.*, 'prior-iv-ketamine', CASE WHEN prior_iv_ketamine THEN 'yes' ELSE 'no' END FROM ob
            WHERE route <> 'intravenous')""",
    }
