"""Deciding the audit's classes: doses exactly at a limit share one assessment per side of it, and the classes
decided in worker processes get the answers they get in one process."""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from engine_answers import engine_answers
from ketamine_cds import load_knowledge
from ketamine_cds.audit import decisions
from ketamine_cds.audit.decide import thresholds
from ketamine_cds.audit.duck import classes_sql, measured_sql, prepare, run_duckdb
from ketamine_cds.audit.flat import flat_source
from ketamine_cds.audit.synth import write_flat

KB = load_knowledge()
COLUMNS = (
    "admin_id, patient_id, administered_at, route, kind, dose_value, dose_unit, concentration_mg_per_ml, "
    "weight_value, weight_unit, setting, indication"
)


def _table(path: Path, rows: list[tuple[Any, ...]]) -> Path:
    con = duckdb.connect()
    try:
        con.execute(
            "CREATE TABLE t (admin_id VARCHAR, patient_id VARCHAR, administered_at TIMESTAMP, route VARCHAR, "
            "kind VARCHAR, dose_value DOUBLE, dose_unit VARCHAR, concentration_mg_per_ml DOUBLE, "
            "weight_value DOUBLE, weight_unit VARCHAR, setting VARCHAR, indication VARCHAR)"
        )
        con.executemany(f"INSERT INTO t ({COLUMNS}) VALUES ({', '.join('?' * 12)})", rows)
        con.execute(f"COPY t TO '{path}' (FORMAT parquet)")
    finally:
        con.close()
    return path


def _dose(i: int, kind: str, dose: float, unit: str, weight: float) -> tuple[Any, ...]:
    """An IV dose for the perioperative use outside intensive care."""
    when = dt.datetime(2025, 3, 1, 8, 0)
    ward = ("non-intensive-care", "perioperative")
    return (f"A{i:04}", f"P{i}", when, "intravenous", kind, dose, unit, None, weight, "kg", *ward)


def _statuses(findings: Path) -> dict[str, str]:
    con = duckdb.connect()
    try:
        rows = con.execute(f"SELECT admin_id, dose_status FROM read_parquet('{findings}')").fetchall()
    finally:
        con.close()
    return {str(a): str(s) for a, s in rows}


def test_infusions_at_the_limit_share_one_assessment_whatever_the_weight(tmp_path: Path) -> None:
    """1 mg/kg/h exactly, for 150 weights: within the limit, one class (the weight does not move a dose per
    kg); the same rate written in mg/h for each weight (70 mg/h at 70 kg): a class per dose and weight, placed
    exactly, and one assessment for them all."""
    weights = [40.0 + i * 0.5 for i in range(150)]
    per_kg = [_dose(i, "infusion", 1.0, "mg/kg/h", w) for i, w in enumerate(weights)]
    per_hour = [_dose(1000 + i, "infusion", w, "mg/h", w) for i, w in enumerate(weights)]
    for rows, classes in ((per_kg, 1), (per_hour, 150)):
        table = _table(tmp_path / f"at-limit-{classes}.parquet", rows)
        run = run_duckdb(flat_source(table), tmp_path / f"out-{classes}")
        assert (run.rows, run.classes, run.assessments) == (150, classes, 1)
        assert set(_statuses(run.findings).values()) == {"within"}
        assert engine_answers(run.findings, flat_source(table)) == []


def test_a_hair_above_the_limit_is_over_it_and_decided_apart(tmp_path: Path) -> None:
    """0.35 mg/kg is within the bolus limit; 0.35000000000000003 mg/kg (the next double) is over it, though
    a float comparison within 1e-9 could not tell: the engine's exact arithmetic decides, once per side."""
    doses = [0.35] * 20 + [0.35000000000000003] * 20
    rows = [_dose(i, "bolus", dose, "mg/kg", 50.0 + i) for i, dose in enumerate(doses)]
    table = _table(tmp_path / "hair.parquet", rows)
    run = run_duckdb(flat_source(table), tmp_path / "out")
    statuses = _statuses(run.findings)
    assert {statuses[f"A{i:04}"] for i in range(20)} == {"within"}
    assert {statuses[f"A{i:04}"] for i in range(20, 40)} == {"exceeds"}
    assert run.assessments == 2
    assert engine_answers(run.findings, flat_source(table)) == []


def _decided(
    con: duckdb.DuckDBPyConnection, source: str, workers: int, temp: Path
) -> tuple[int, list[tuple[Any, ...]]]:
    temp.mkdir(parents=True, exist_ok=True)
    prepare(con, source, KB)
    classes = classes_sql(measured_sql(source, thresholds(KB)))
    counted = decisions.decide_classes(con, classes, KB, temp=temp, workers=workers)
    assert list(temp.iterdir()) == []  # the classes' rows are removed once decided
    return counted.assessments, con.execute("SELECT * FROM decisions ORDER BY class_key").fetchall()


def _alone_and_shared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: int, seed: int, workers: int, **patched: object
) -> tuple[tuple[int, list[tuple[Any, ...]]], tuple[int, list[tuple[Any, ...]]]]:
    """Synthetic rows' classes decided in the calling process, then in ``workers`` shares (``patched``: more
    of the decisions module's names replaced for the second)."""
    flat = write_flat(rows, tmp_path / "synth", seed=seed, csv=False) / "administrations.parquet"
    source = flat_source(flat)
    con = duckdb.connect()
    try:
        alone = _decided(con, source, 1, tmp_path / "alone")
        monkeypatch.setattr(decisions, "PARALLEL_FROM", 10)
        for name, value in patched.items():
            monkeypatch.setattr(decisions, name, value)
        return alone, _decided(con, source, workers, tmp_path / "shared")
    finally:
        con.close()


def test_classes_decided_in_worker_processes_get_the_same_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every class decided once, in one of three processes, as in the calling process alone."""
    alone, shared = _alone_and_shared(tmp_path, monkeypatch, 6_000, seed=5, workers=3)
    assert decisions._shares(len(alone[1]), 3) == 3
    assert shared == alone and alone[0] > 100


def test_classes_at_a_limit_meet_in_one_share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """150 classes of exact doses at a limit, one context: decided in three shares, still one assessment."""
    rows = [_dose(i, "infusion", 40.0 + i, "mg/h", 40.0 + i) for i in range(150)]
    source = flat_source(_table(tmp_path / "at-limit.parquet", rows))
    monkeypatch.setattr(decisions, "PARALLEL_FROM", 10)
    con = duckdb.connect()
    try:
        assessments, answers = _decided(con, source, 3, tmp_path / "shared")
    finally:
        con.close()
    assert decisions._shares(len(answers), 3) == 3
    assert (len(answers), assessments) == (150, 1)
    assert all(a[1:] == answers[0][1:] for a in answers)  # one answer, for every class key


def _cannot_start(*_args: object) -> subprocess.Popen[str] | None:
    return None


def _fails(*_args: object) -> subprocess.Popen[str] | None:
    command = [sys.executable, "-c", "raise ValueError('P123 was not decided')"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _hangs(*_args: object) -> subprocess.Popen[str] | None:
    command = [sys.executable, "-c", "import time; time.sleep(600)"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize(
    ("worker", "said"),
    [
        (_cannot_start, None),
        (_fails, "decision worker 1 of 2 failed (exit 1, ValueError)"),
        (_hangs, "decision worker 1 of 2 took over"),
    ],
)
def test_a_worker_that_cannot_start_fails_or_hangs_has_its_share_decided_here(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    worker: Any,
    said: str | None,
) -> None:
    """Nothing is left undecided, and the warning names no value from the rows (only the error's type)."""
    with caplog.at_level(logging.WARNING, logger="ketamine_cds.audit"):
        alone, shared = _alone_and_shared(
            tmp_path, monkeypatch, 3_000, seed=9, workers=2, WORKER_PATIENCE_S=0.5, _start_worker=worker
        )
    assert shared == alone
    if said is not None:
        assert said in caplog.text
    assert "P123" not in caplog.text


SCRIPT = """
import duckdb
from pathlib import Path
from ketamine_cds import load_knowledge
from ketamine_cds.audit import decisions
from ketamine_cds.audit.decide import thresholds
from ketamine_cds.audit.duck import classes_sql, measured_sql, prepare
from ketamine_cds.audit.flat import flat_source

print("the script ran", flush=True)
kb = load_knowledge()
decisions.PARALLEL_FROM = 10
source = flat_source(Path({flat!r}))
con = duckdb.connect()
prepare(con, source, kb)
counted = decisions.decide_classes(
    con, classes_sql(measured_sql(source, thresholds(kb))), kb, temp=Path({out!r}), workers=2
)
print(counted.assessments, counted.rows)
"""


def test_a_script_without_a_main_guard_runs_once(tmp_path: Path) -> None:
    """The workers are fresh interpreters running the decisions module: the caller's own script (here one
    that does its work at the top level, as scripts and notebooks do) is not run again in them."""
    flat = write_flat(2_000, tmp_path / "synth", seed=4, csv=False) / "administrations.parquet"
    script = tmp_path / "audit_script.py"
    (tmp_path / "out").mkdir()
    script.write_text(SCRIPT.format(flat=str(flat), out=str(tmp_path / "out")))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("the script ran") == 1
    assessments, rows = map(int, done.stdout.split()[-2:])
    assert rows == 2_000 and assessments > 0


def test_the_classes_hold_no_patient_identifier_nor_ward(tmp_path: Path) -> None:
    """The classes' representatives are written to a file while they are decided: only what the engine reads."""
    flat = write_flat(500, tmp_path / "synth", seed=2, csv=False) / "administrations.parquet"
    source = flat_source(flat)
    con = duckdb.connect()
    try:
        prepare(con, source, KB)
        query = classes_sql(measured_sql(source, thresholds(KB)))
        fields = con.execute(f"SELECT struct_keys(row) FROM ({query}) LIMIT 1").fetchone()
    finally:
        con.close()
    assert fields is not None
    assert "patient_id" not in fields[0] and "location" not in fields[0]
    assert {"admin_id", "dose_value", "conditions", "row_hash", "context_key"} <= set(fields[0])
