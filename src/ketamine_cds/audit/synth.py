"""``ketamine-cds synth``: a realistic synthetic data set, deterministic for a seed, in every form the audit
reads: flat (here), FHIR and OMOP (``synth_forms.py``), all from the rows of ``synth_sql.py``.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from .._facts import Coded, OpioidUse
from .._kb import load_knowledge
from .synth_forms import write_fhir, write_omop
from .synth_sql import canonical_sql, prescriptions_sql

__all__ = ["canonical_sql", "synthetic_prescriptions", "write_all", "write_flat"]

if TYPE_CHECKING:
    from .tolerance import Prescription


def write_all(rows: int, out_dir: Path, seed: int = 20261124) -> dict[str, Path]:
    """Every input form the audit reads, from the same synthetic administrations."""
    written = {"flat": write_flat(rows, out_dir, seed)}
    written["fhir"] = write_fhir(rows, out_dir, seed)
    written["omop"] = write_omop(rows, out_dir, seed)
    return written


def write_flat(rows: int, out_dir: Path, seed: int = 20261124, csv: bool = True) -> Path:
    """The flat form: ``flat/administrations.parquet`` (and ``.csv`` for smaller sets), with the opioid
    tolerance the synthetic prescriptions give each administration (decided as the audit decides it for the
    FHIR and OMOP forms: ``tolerance.with_tolerance``)."""
    from .tolerance import with_tolerance

    target = out_dir / "flat"
    target.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    try:
        con.execute(f"CREATE TEMP TABLE administrations AS {canonical_sql(rows, seed)}")
        prescriptions = synthetic_prescriptions(con, rows, seed)
        select, _ = with_tolerance(con, "administrations", prescriptions, load_knowledge())
        query = f"SELECT * EXCLUDE (input_problem, weight_problem) FROM ({select})"
        con.execute(
            f"COPY ({query}) TO '{target / 'administrations.parquet'}' (FORMAT parquet, COMPRESSION zstd)"
        )
        if csv and rows <= 2_000_000:
            con.execute(f"COPY ({query}) TO '{target / 'administrations.csv'}' (HEADER, DELIMITER ',')")
    finally:
        con.close()
    return target


def synthetic_prescriptions(
    con: duckdb.DuckDBPyConnection, rows: int, seed: int = 20261124
) -> dict[str, list[Prescription]]:
    """``prescriptions_sql`` as the engine reads them (what the FHIR and OMOP forms record: tablets times their
    strength times the doses a day; an as-needed one has no daily amount), by patient id."""
    from .tolerance import Prescription

    found: dict[str, list[Prescription]] = {}
    query = (
        "SELECT patient_id, name, ingredient, strength_mg, per_dose, per_day, start_day, end_day, as_needed "
        f"FROM ({prescriptions_sql(rows, seed)}) ORDER BY patient_id, k"
    )
    for patient, name, ingredient, mg, per_dose, per_day, start, end, as_needed in con.execute(
        query
    ).fetchall():
        amount = None if as_needed else Fraction(mg) * per_dose * per_day
        use = OpioidUse(ingredient, amount, start, end, Coded(name), as_needed=bool(as_needed))
        found.setdefault(patient, []).append(Prescription(use))
    return found
