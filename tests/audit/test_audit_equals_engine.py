"""The audit's verdict for every administration equals the live engine's verdict for the same facts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import duckdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine_answers import engine_answers
from ketamine_cds import load_knowledge
from ketamine_cds._site import Site, load_site
from ketamine_cds.audit.duck import run_duckdb
from ketamine_cds.audit.flat import flat_source
from ketamine_cds.audit.synth import canonical_sql, write_flat

KB = load_knowledge()
EXAMPLE_SITE = load_site(
    Path(__file__).resolve().parents[2] / "examples" / "site" / "example-hospital.toml", KB
)


def test_every_synthetic_row_gets_the_live_engines_verdict(tmp_path: Path) -> None:
    flat = write_flat(20_000, tmp_path / "synth", seed=7, csv=False) / "administrations.parquet"
    run = run_duckdb(flat_source(flat), tmp_path / "out")
    assert run.rows == 20_000
    assert engine_answers(run.findings, flat_source(flat)) == []


def test_every_synthetic_row_gets_the_live_engines_verdict_under_a_site_protocol(tmp_path: Path) -> None:
    """Rows the site's caps group together may still differ for the guideline: both answers are the engine's."""
    flat = write_flat(20_000, tmp_path / "synth", seed=11, csv=False) / "administrations.parquet"
    run = run_duckdb(flat_source(flat), tmp_path / "out", site=EXAMPLE_SITE)
    assert engine_answers(run.findings, flat_source(flat), EXAMPLE_SITE) == []


ROUTES = st.sampled_from(["intravenous", "oral", "intranasal", "IV", "intramuscular", None])
UNITS = st.sampled_from(
    [
        "mg",
        "mg/kg",
        "mcg",
        "mcg/kg",
        "mL",
        "mg/h",
        "mg/kg/h",
        "mcg/kg/min",
        "mL/h",
        "mg/d",
        "mgs",
        "units",
        None,
    ]
)
# doses around the limits (0.35 mg/kg; 0.5, 1, 2 and 7 mg/kg/h) for 40, 70 and 100 kg, exact and off by a hair
DOSES = st.sampled_from(
    [
        0.5,
        0.4999,
        0.5001,
        2.0,
        1.999,
        2.001,
        7.001,
        6.999,
        20.0,
        80.0,
        80.01,
        140.0,
        140.01,
        280.0,
        280.01,
        490.0,
        490.01,
        700.0,
        33.33,
        33.34,
        116.66,
        116.67,
        8.33,
        8.34,
        0.35,
        0.3499,
        0.3501,
        1.0,
        0.999,
        1.001,
        14.0,
        24.5,
        24.51,
        35.0,
        70.0,
        70.01,
        100.0,
        350.0,
        16.67,
        16.66,
        2.5,
        0.0,
        -5.0,
        0.1,
        7.0,
        1000.0,
    ]
)
ROWS = st.fixed_dictionaries(
    {
        "route": ROUTES,
        "kind": st.sampled_from(["bolus", "infusion", None]),
        "dose_value": st.one_of(st.none(), DOSES),
        "dose_unit": UNITS,
        "concentration_mg_per_ml": st.sampled_from([None, 10.0, 50.0]),
        "weight_value": st.sampled_from([None, 40.0, 70.0, 100.0, 154.32, 0.0, 900.0, 200.0, 0.2, 500.0]),
        "weight_unit": st.sampled_from(["kg", "[lb_av]", "g", "mg", "stone"]),
        "setting": st.sampled_from(["intensive-care", "non-intensive-care", "unknown"]),
        "indication": st.sampled_from(
            [
                None,
                "perioperative",
                "crps",
                "fibromyalgia",
                "sickle-cell-pain",
                "depression",
                "acute-pain",
                "hangover",
                "spinal-cord-injury-pain",
                "chronic-pain",
                "migraine",
                "postherpetic-neuralgia",
            ]
        ),
        "procedure_class": st.sampled_from([None, "abdominal", "mild", "spine"]),
        "conditions": st.sampled_from(
            [
                "",
                "psychosis;",
                "sleep-apnea;",
                "cardiovascular-disease;",
                "pregnancy;sleep-apnea;",
                "opioid-dependence;",
                "unknown-thing;",
                "alcohol-misuse;",
                "chronic-hepatitis;cardiovascular-disease;",
            ]
        ),
        "prior_iv_ketamine": st.sampled_from([None, True, False]),
        "pca_sole_agent": st.booleans(),
        "opioid_tolerance": st.sampled_from(
            [None, "present", "absent", "not-recorded", "unknown", " Present", "yes"]
        ),
        "opioid_unknown_reason": st.sampled_from([None, "an opioid is taken as needed", "no pharmacy data"]),
    }
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(ROWS, min_size=1, max_size=60), st.sampled_from([None, EXAMPLE_SITE]))
def test_generated_rows_get_the_live_engines_verdict(
    tmp_path: Path, rows: list[dict[str, Any]], site: Site | None
) -> None:
    """Rows around every limit, odd ones among them, with and without a site protocol (its caps in mg)."""
    table = tmp_path / f"rows-{len(rows)}-{abs(hash(str(rows))) % 10**9}.parquet"
    con = duckdb.connect()
    try:
        con.execute(
            "CREATE TABLE t (admin_id VARCHAR, patient_id VARCHAR, administered_at TIMESTAMP, route VARCHAR, "
            "kind VARCHAR, dose_value DOUBLE, dose_unit VARCHAR, concentration_mg_per_ml DOUBLE, "
            "weight_value DOUBLE, weight_unit VARCHAR, setting VARCHAR, location VARCHAR, indication VARCHAR, "
            "procedure_class VARCHAR, conditions VARCHAR, prior_iv_ketamine BOOLEAN, pca_sole_agent BOOLEAN, "
            "opioid_tolerance VARCHAR, opioid_unknown_reason VARCHAR)"
        )
        for i, row in enumerate(rows):
            values = {
                "admin_id": f"A{i:05}",
                "patient_id": "P1",
                "administered_at": dt.datetime(2025, 5, 1),
                "location": "Ward",
                **row,
            }
            names = ", ".join(values)
            con.execute(
                f"INSERT INTO t ({names}) VALUES ({', '.join('?' * len(values))})", list(values.values())
            )
        con.execute(f"COPY t TO '{table}' (FORMAT parquet)")
    finally:
        con.close()
    run = run_duckdb(flat_source(table), tmp_path / f"{table.stem}-{site is not None}", site=site)
    assert run.rows == len(rows)
    assert engine_answers(run.findings, flat_source(table), site) == []


def test_synthetic_data_is_deterministic() -> None:
    con = duckdb.connect()
    try:
        first = con.execute(f"SELECT * FROM ({canonical_sql(500, seed=3)}) ORDER BY admin_id").fetchall()
        again = con.execute(f"SELECT * FROM ({canonical_sql(500, seed=3)}) ORDER BY admin_id").fetchall()
        other = con.execute(f"SELECT * FROM ({canonical_sql(500, seed=4)}) ORDER BY admin_id").fetchall()
    finally:
        con.close()
    assert first == again != other


def test_each_bad_row_is_reported_with_its_own_value(tmp_path: Path) -> None:
    con = duckdb.connect()
    table = tmp_path / "bad.parquet"
    try:
        con.execute(
            f"""COPY (SELECT * FROM (VALUES
                ('A1', 'P1', TIMESTAMP '2025-01-01', 'intravenous', 'bolus', 20.0, 'mg', NULL, 600.0, 'kg'),
                ('A2', 'P1', TIMESTAMP '2025-01-01', 'intravenous', 'bolus', 20.0, 'mg', NULL, 900.0, 'kg'),
                ('A3', 'P1', TIMESTAMP '2025-01-01', 'intravenous', 'bolus', -5.0, 'mg', NULL, 70.0, 'kg'),
                ('A4', 'P1', TIMESTAMP '2025-01-01', 'intravenous', 'bolus', -7.0, 'mg', NULL, 70.0, 'kg'))
              t(admin_id, patient_id, administered_at, route, kind, dose_value, dose_unit, concentration_mg_per_ml,
                weight_value, weight_unit)) TO '{table}' (FORMAT parquet)"""
        )
    finally:
        con.close()
    run = run_duckdb(flat_source(table), tmp_path / "out")
    con = duckdb.connect()
    try:
        problems = dict(
            con.execute(f"SELECT admin_id, problem FROM read_parquet('{run.findings}')").fetchall()
        )
    finally:
        con.close()
    assert "600" in problems["A1"] and "900" in problems["A2"]
    assert "-5" in problems["A3"] and "-7" in problems["A4"]


def test_a_weight_too_small_for_a_patient_is_a_row_reason_like_one_over_500_kg(tmp_path: Path) -> None:
    con = duckdb.connect()
    table = tmp_path / "small.parquet"
    try:
        con.execute(
            f"""COPY (SELECT * FROM (VALUES
                ('S1', 'P1', TIMESTAMP '2025-01-01', 'intravenous', 'bolus', 20.0, 'mg', NULL, 70.0, 'g'),
                ('S2', 'P1', TIMESTAMP '2025-01-01', 'intravenous', 'bolus', 20.0, 'mg', NULL, 70.0, 'mg'),
                ('S3', 'P1', TIMESTAMP '2025-01-01', 'intravenous', 'bolus', 20.0, 'mg', NULL, 200.0, 'mg'),
                ('S4', 'P1', TIMESTAMP '2025-01-01', 'intravenous', 'bolus', 20.0, 'mg', NULL, 200.0, 'g'),
                ('S5', 'P1', TIMESTAMP '2025-01-01', 'intravenous', 'bolus', 20.0, 'mg', NULL, 80.0, 'kg'))
              t(admin_id, patient_id, administered_at, route, kind, dose_value, dose_unit, concentration_mg_per_ml,
                weight_value, weight_unit)) TO '{table}' (FORMAT parquet)"""
        )
    finally:
        con.close()
    run = run_duckdb(flat_source(table), tmp_path / "out")
    con = duckdb.connect()
    try:
        found = {
            row[0]: row[1:]
            for row in con.execute(
                f"SELECT admin_id, verdict, problem FROM read_parquet('{run.findings}')"
            ).fetchall()
        }
    finally:
        con.close()
    for bad, quoted in (("S1", "0.07 kg"), ("S2", "7e-05 kg"), ("S3", "0.0002 kg")):
        verdict, problem = found[bad]
        assert verdict is None and "under 0.2 kg" in problem and quoted in problem, (bad, problem)
    assert found["S4"] == ("dose-exceeds-limit", None)  # 200 g, the smallest plausible weight: 100 mg/kg
    assert found["S5"][1] is None
    assert engine_answers(run.findings, flat_source(table)) == []
