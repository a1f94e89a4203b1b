"""The synthetic administrations and opioid prescriptions as SQL (``ketamine-cds synth``), deterministic for a
seed: every form the audit reads (``synth.py``: flat; ``synth_forms.py``: FHIR and OMOP) is written from these.

Randomness is a hash of (seed, row, purpose), so the data do not depend on thread count or chunking.
The mix follows what hospitals record: mostly perioperative IV use, boluses in mg and mg/kg, infusions in
mg/h, mg/kg/h, mcg/kg/min and mL/h, weights in kg with some in pounds or missing, and the unit errors seen in
practice (a mg dose recorded as mg/kg, mcg for mg, free-text units such as "mgs" or "units").
"""

from __future__ import annotations

from collections.abc import Sequence

from .sql import lit

__all__ = ["OPIOID_PRODUCTS", "canonical_sql", "prescriptions_sql"]


def _u(seed: int, purpose: str) -> str:
    """A uniform number in [0, 1) for each row i, per purpose."""
    return f"((hash(i, {seed}, '{purpose}') % 1000000) / 1000000.0)"


def _pick(seed: int, purpose: str, choices: Sequence[tuple[str, float]]) -> str:
    """A SQL CASE choosing among literal values with the given weights (they need not sum to 1)."""
    total = sum(w for _, w in choices)
    u, edge, parts = _u(seed, purpose), 0.0, []
    for value, weight in choices[:-1]:
        edge += weight / total
        parts.append(f"WHEN {u} < {edge:.6f} THEN {value}")
    return f"(CASE {' '.join(parts)} ELSE {choices[-1][0]} END)"


# The mix of the synthetic administrations: (SQL value, weight) for each column drawn at random.
ROUTE_MIX = [("'intravenous'", 90), ("'oral'", 5), ("'intranasal'", 5)]
KIND_MIX = [("'bolus'", 55), ("'infusion'", 45)]
INDICATION_MIX = [
    ("'perioperative'", 62),
    ("'acute-pain'", 5),
    ("'sickle-cell-pain'", 4),
    ("'crps'", 8),
    ("'fibromyalgia'", 3),
    ("'neuropathic-pain'", 3),
    ("'cancer-pain'", 3),
    ("'chronic-pain'", 3),
    ("'spinal-cord-injury-pain'", 1),
    ("'procedural-sedation'", 3),
    ("'depression'", 2),
    ("NULL", 3),
]
PROCEDURE_CLASS_MIX = [
    ("'abdominal'", 30),
    ("'thoracic'", 10),
    ("'orthopedic-limb'", 25),
    ("'spine'", 12),
    ("'mild'", 18),
    ("NULL", 5),
]
SETTING_MIX = [("'non-intensive-care'", 68), ("'intensive-care'", 16), ("'unknown'", 16)]
BOLUS_UNIT_MIX = [
    ("'mg'", 58),
    ("'mg/kg'", 25),
    ("'mL'", 7),
    ("'mcg'", 4),
    ("'mcg/kg'", 2),
    ("'mgs'", 2),
    ("'units'", 1),
    ("'mg/kg '", 1),
]
RATE_UNIT_MIX = [
    ("'mg/h'", 30),
    ("'mg/kg/h'", 38),
    ("'mcg/kg/min'", 18),
    ("'mL/h'", 10),
    ("'mg/hr'", 2),
    ("'mg/kg/hr'", 1),
    ("'ml/hr'", 1),
]
# each condition's share of the administrations
CONDITION_RATES = [
    ("sleep-apnea", 0.06),
    ("psychosis", 0.01),
    ("pregnancy", 0.008),
    ("liver-disease-severe", 0.01),
    ("cardiovascular-disease", 0.12),
    ("cardiovascular-severe", 0.01),
    ("intracranial-pressure", 0.004),
    ("intraocular-pressure", 0.01),
    ("substance-misuse", 0.03),
    ("opioid-dependence", 0.05),
]
_CHRONIC = (
    "indication IN ('crps', 'fibromyalgia', 'neuropathic-pain', 'cancer-pain', 'chronic-pain', "
    "'spinal-cord-injury-pain')"
)


def canonical_sql(rows: int, seed: int = 20261124, patients: int | None = None) -> str:
    """A SELECT of ``rows`` synthetic canonical administrations: ``base`` (what each is for and where),
    ``shaped``, ``dosed`` (``_dosed_ctes``), then the canonical columns (``_canonical_columns``)."""
    patients = patients or max(1, rows // 8)
    return f"""
    WITH {_base_cte(rows, seed, patients)}, {_dosed_ctes(seed)}
    {_canonical_columns(seed)}
    """


def _base_cte(rows: int, s: int, patients: int) -> str:
    """``base``: each row's patient, route, kind, indication, procedure class and setting, and its draws."""
    return f"""base AS (
      SELECT i, 1 + hash(i, {s}, 'patient') % {patients} AS patient,
             {_pick(s, "route", ROUTE_MIX)} AS route, {_pick(s, "kind", KIND_MIX)} AS kind0,
             {_pick(s, "indication", INDICATION_MIX)} AS indication,
             {_pick(s, "pclass", PROCEDURE_CLASS_MIX)} AS pclass0,
             {_pick(s, "setting", SETTING_MIX)} AS setting, {_u(s, "exact")} AS u_exact, {_u(s, "error")} AS u_error,
             {_u(s, "lb")} AS u_lb, {_u(s, "noweight")} AS u_noweight
      FROM range({rows}) t(i)
    )"""


def _dosed_ctes(s: int) -> str:
    """``shaped`` (the kind for IV only, the procedure class for surgery only, the patient's true weight) and
    ``dosed`` (the dose unit and the dose per kg). Chronic pain infusions run higher (0.5-2 mg/kg/h, up to 7 in
    intensive care): a few are above 2, rarer ones above 7; acute ones mostly under 1 mg/kg/h."""
    weight_kg = f"(45 + 95 * ((hash(patient, {s}, 'w') % 1000) / 1000.0) + 2 * {_u(s, 'wjitter')})"
    per_kg_dose = f"""(CASE WHEN kind = 'bolus' THEN 0.05 + 0.45 * {_u(s, "dose")}
                        WHEN {_CHRONIC} AND {_u(s, "high")} < 0.03 THEN 5 + 4 * {_u(s, "dose")}
                        WHEN {_CHRONIC} THEN 0.2 + 2.3 * pow({_u(s, "dose")}, 2)
                        ELSE 0.05 + 1.3 * pow({_u(s, "dose")}, 2) END)"""
    bolus_unit, rate_unit = _pick(s, "bunit", BOLUS_UNIT_MIX), _pick(s, "runit", RATE_UNIT_MIX)
    return f"""shaped AS (
      SELECT *, CASE WHEN route = 'intravenous' THEN kind0 END AS kind,
             CASE WHEN indication = 'perioperative' THEN pclass0 END AS procedure_class,
             {weight_kg} AS true_weight
      FROM base
    ), dosed AS (
      SELECT *, CASE WHEN kind = 'bolus' THEN {bolus_unit} WHEN kind = 'infusion' THEN {rate_unit} END AS dose_unit,
             CASE WHEN u_exact < 0.04 AND kind = 'bolus' THEN 0.35
                  WHEN u_exact < 0.04 AND {_CHRONIC} THEN (CASE WHEN u_exact < 0.02 THEN 2.0 ELSE 0.5 END)
                  WHEN u_exact < 0.04 THEN (CASE WHEN setting = 'intensive-care' THEN 7.0 ELSE 1.0 END)
                  ELSE {per_kg_dose} END AS per_kg
      FROM shaped
    )"""


_LOCATION = """CASE setting WHEN 'intensive-care' THEN (['ICU 1', 'SICU', 'Cardiac ICU'])[1 + CAST(hash(i, 'loc') % 3 AS BIGINT)]
                  WHEN 'unknown' THEN NULL ELSE (['Ward 4B', 'Ward 6A', 'PACU', 'Emergency', 'Pain clinic'])
                  [1 + CAST(hash(i, 'loc') % 5 AS BIGINT)] END"""


def _canonical_columns(s: int) -> str:
    """The canonical columns of each ``dosed`` row: the dose in its unit (with some recorded wrong), the weight
    (some in pounds, some missing), the location, the conditions, prior IV ketamine and PCA."""
    conditions = " || ".join(
        f"CASE WHEN {_u(s, 'cond-' + c)} < {p} THEN '{c};' ELSE '' END" for c, p in CONDITION_RATES
    )
    return f"""SELECT
      'A' || lpad(CAST(i AS VARCHAR), 9, '0') AS admin_id,
      'P' || lpad(CAST(patient AS VARCHAR), 8, '0') AS patient_id,
      TIMESTAMP '2023-01-01' + to_seconds(CAST(hash(i, {s}, 't') % (3 * 365 * 86400) AS BIGINT)) AS administered_at,
      route, kind,
      CASE WHEN kind IS NULL THEN NULL
           WHEN trim(dose_unit) IN ('mg/kg', 'mg/kg/h', 'mg/kg/hr') THEN round(per_kg, 2)
           WHEN dose_unit = 'mcg/kg' THEN round(per_kg * 1000, 0)
           WHEN dose_unit = 'mcg/kg/min' THEN round(per_kg * 1000 / 60, 2)
           WHEN dose_unit IN ('mL', 'mL/h', 'ml/hr') THEN round(per_kg * true_weight / 10, 1)
           WHEN dose_unit = 'mcg' THEN round(per_kg * true_weight * 1000, -2)
           WHEN u_error < 0.01 THEN round(per_kg * true_weight, 0) * 1000  -- mcg recorded as mg
           ELSE round(per_kg * true_weight, 0) END AS dose_value,
      dose_unit,
      CASE WHEN dose_unit IN ('mL', 'mL/h', 'ml/hr') THEN 10.0 END AS concentration_mg_per_ml,
      CASE WHEN u_noweight < 0.03 THEN NULL WHEN u_noweight > 0.9995 THEN 0
           WHEN u_lb < 0.08 THEN round(true_weight / 0.45359237, 1) ELSE round(true_weight, 1) END AS weight_value,
      CASE WHEN u_lb < 0.08 THEN '[lb_av]' ELSE 'kg' END AS weight_unit,
      CAST(NULL AS VARCHAR) AS weight_problem,
      setting, {_LOCATION} AS location, indication, procedure_class,
      {conditions} AS conditions,
      CASE WHEN route <> 'intravenous' THEN hash(i, 'prior') % 5 <> 0 END AS prior_iv_ketamine,
      CASE WHEN kind = 'infusion' AND hash(i, 'pca') % 50 = 0 THEN true ELSE false END AS pca_sole_agent,
      CAST(NULL AS VARCHAR) AS input_problem
    FROM dosed"""


# Opioid products of the synthetic prescriptions: name (as RxNorm writes it), ingredient, mg per tablet.
OPIOID_PRODUCTS: tuple[tuple[str, str, int], ...] = (
    ("oxycodone hydrochloride 5 MG Oral Tablet", "oxycodone", 5),
    ("oxycodone hydrochloride 10 MG Oral Tablet", "oxycodone", 10),
    ("morphine sulfate 15 MG Oral Tablet", "morphine", 15),
    ("12 HR morphine sulfate 30 MG Extended Release Oral Tablet", "morphine", 30),
    ("hydromorphone hydrochloride 2 MG Oral Tablet", "hydromorphone", 2),
    ("tramadol hydrochloride 50 MG Oral Tablet", "tramadol", 50),
    ("acetaminophen 325 MG / hydrocodone bitartrate 10 MG Oral Tablet", "hydrocodone", 10),
)


def prescriptions_sql(rows: int, seed: int = 20261124, patients: int | None = None) -> str:
    """A SELECT of synthetic opioid prescriptions for the patients of ``canonical_sql(rows, seed, patients)``:
    about one patient in five has one, some a second; tablets of a product, 1 or 2 at a time, 1 to 4 times a
    day (some as needed), for 14 days to 18 months within the administrations' three years; ``status`` as a
    FHIR MedicationRequest records it (active or completed; every one has its end date)."""
    patients = patients or max(1, rows // 8)
    s = seed
    products = ", ".join(f"({k}, {lit(n)}, {lit(i)}, {mg})" for k, (n, i, mg) in enumerate(OPIOID_PRODUCTS))
    return f"""
    WITH p AS (SELECT 1 + x AS patient, k FROM range({patients}) t(x), range(2) r(k)),
    chosen AS (
      SELECT patient, k, CAST(hash(patient, k, {s}, 'rx-product') % {len(OPIOID_PRODUCTS)} AS BIGINT) AS product,
        1 + CAST(hash(patient, k, {s}, 'rx-per-dose') % 2 AS BIGINT) AS per_dose,
        1 + CAST(hash(patient, k, {s}, 'rx-per-day') % 4 AS BIGINT) AS per_day,
        DATE '2023-01-01' + CAST(hash(patient, k, {s}, 'rx-start') % 1000 AS INTEGER) AS start_day,
        14 + CAST(hash(patient, k, {s}, 'rx-days') % 527 AS INTEGER) AS days,
        hash(patient, k, {s}, 'rx-prn') % 100 < 15 AS as_needed,
        CASE WHEN hash(patient, k, {s}, 'rx-status') % 3 = 0 THEN 'active' ELSE 'completed' END AS status
      FROM p
      WHERE hash(patient, k, {s}, 'rx') % 100 < CASE k WHEN 0 THEN 20 ELSE 6 END
    )
    SELECT 'P' || lpad(CAST(patient AS VARCHAR), 8, '0') AS patient_id, patient, k,
      'OP' || patient || '-' || k AS rx_id, c.product, v.name, v.ingredient, v.mg AS strength_mg, per_dose, per_day,
      start_day, start_day + days - 1 AS end_day, days, as_needed, status
    FROM chosen c JOIN (VALUES {products}) v(product, name, ingredient, mg) ON v.product = c.product
    """
