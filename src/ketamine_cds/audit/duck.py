"""The audit on DuckDB: two streaming passes over the input in bounded memory.

Pass 1 groups the rows into decision classes (``decide.py``); the engine assesses one real row of each.
Pass 2 joins every row to its class's verdict and writes the per-administration findings as Parquet.

The SQL here (``measured_sql``, ``classes_sql``, ``findings_sql``) is the whole audit's arithmetic, and the
Spark engine runs the same SQL in DuckDB inside its tasks (``bucket.py``): one rule, one place.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from .._errors import InputError
from .._kb import KnowledgeBase, load_knowledge
from .._site import Site
from .canonical import COLUMN_NAMES
from .decide import (
    BOUNDARY,
    CLASS_COLUMNS,
    ROW_LIMIT_SQL,
    limits,
    thresholds,
    unit_rows,
    weight_unit_rows,
)
from .decisions import decide_classes, load_ndjson, write_ndjson
from .sql import read_path, sql_path

if TYPE_CHECKING:
    from .forms import Form
    from .tolerance import Staged

Progress = Callable[[str, float, float], None]  # phase, fraction done (0..1), seconds elapsed


@dataclass(frozen=True)
class AuditRun:
    rows: int
    classes: int
    seconds: float
    findings: Path
    tolerance: Staged | None = None  # what the opioid tolerance step did, when the engine read the input
    form: Form | None = None  # the input's form, when the engine told it
    # seconds of each phase, where the engine times them: classify (reading, measuring and grouping the rows),
    # decide (the engine's assessments), write (the findings joined and written)
    phases: Mapping[str, float] = field(default_factory=dict)
    assessments: int | None = None  # the engine's (classes at a limit on the same sides share one)


def parquet_reader(path: Path) -> str:
    """``read_parquet`` of findings or canonical rows: one file (DuckDB's), or a folder of part files
    (Spark's), read literally."""
    return f"read_parquet({read_path(path, '*.parquet' if path.is_dir() else None)})"


_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*", re.IGNORECASE)
_UNITS = {u.lower(): u for u in ("B", "KB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "TiB")}


def checked_memory_limit(text: str) -> str:
    """``--memory-limit`` as DuckDB's setting takes it: a number and a unit (512MB, 2GiB, 1.5 GB). It goes
    into a SET statement, so anything else is refused with ``InputError`` naming the argument."""
    match = _SIZE.fullmatch(text)
    if match is None or float(match.group(1)) <= 0:
        raise InputError(
            "--memory-limit",
            f"{text!r} is not a size: write a number and a unit, such as 512MB, 2GiB or 1.5GB "
            "(B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)",
        )
    return f"{match.group(1)}{_UNITS[match.group(2).lower()]}"


# What a Spark run leaves in findings.parquet (its part files; markers and checksums until it tidies them, or
# its scratch folder after a crash). A folder holding anything else was not made by an audit: never removed.
_SPARK_OUTPUT = re.compile(r"part-.*|_SUCCESS|\..*\.crc|_committed_.*|_started_.*|_temporary")


def clear_findings(findings: Path) -> None:
    """Make room for this run's ``findings.parquet``: a Spark run's folder of part files is removed; a folder
    holding anything an audit does not write is the user's, and the run stops (``InputError`` naming
    ``--out``) rather than delete it. A file of that name is an earlier DuckDB run's, overwritten."""
    if not findings.is_dir() or findings.is_symlink():
        if findings.is_symlink():
            raise InputError("--out", f"{findings} is a link; this audit writes findings.parquet itself")
        return
    foreign = sorted(e.name for e in findings.iterdir() if not _SPARK_OUTPUT.fullmatch(e.name))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise InputError(
            "--out",
            f"{findings} is a folder with files an audit does not write ({shown}): it is left as it is; "
            "move them, or choose another --out",
        )
    shutil.rmtree(findings)


def tune(con: duckdb.DuckDBPyConnection) -> None:
    """Settings for the readers' queries (FHIR, OMOP) wherever they run.

    DuckDB estimates a JSON or CSV file it has not read yet at a few dozen rows, and runs an ASOF join (the
    weight in effect, the pregnancy status) as a nested loop when the estimate is under
    ``asof_loop_join_threshold``: quadratic in the rows, 90% of the FHIR reader's time on 200,000
    administrations. With the threshold at 0 it is a sort-merge ASOF join whatever the estimate."""
    found = con.execute(
        "SELECT count(*) FROM duckdb_settings() WHERE name = 'asof_loop_join_threshold'"
    ).fetchone()
    if found and found[0]:
        con.execute("SET asof_loop_join_threshold = 0")


def _band_sql(dose: str, limits: list[float]) -> str:
    """How many of ``limits`` the dose is above (NULL without a dose per kg)."""
    terms = " + ".join(f"CAST({dose} > CAST({t!r} AS DOUBLE) AS INTEGER)" for t in limits) or "0"
    return f"CASE WHEN {dose} IS NULL OR isnan({dose}) THEN NULL ELSE {terms} END"


def _at_threshold_sql(dose: str, limits: list[float]) -> str:
    """The dose is within a hair of one of ``limits``: binary floats cannot be trusted to say which side."""
    near = " OR ".join(f"abs({dose} - CAST({t!r} AS DOUBLE)) <= {BOUNDARY * t!r}" for t in limits) or "false"
    return f"coalesce({dose} IS NOT NULL AND NOT isnan({dose}) AND ({near}), false)"


def measured_sql(source: str, kinds: dict[str, list[float]]) -> str:
    """Per-row arithmetic: weight in kg, dose per kg, and its band among the limits of its kind (and the dose
    in mg or mg/h among a site's absolute caps), the row's decision class (``class_key``) and ``row_hash``. No
    decisions. Needs the tables ``prepare`` makes."""
    bolus, infusion = kinds["bolus"], kinds["infusion"]
    bolus_mg, infusion_mg = kinds["bolus_amount"], kinds["infusion_amount"]
    return f"""
    WITH src AS ({source}),
    m AS (
      SELECT s.*,
        lower(trim(s.route)) AS route_n,
        s.weight_value * w.kg AS weight_kg,
        coalesce(u.ok, s.dose_unit IS NULL) AS unit_ok,
        u.per_kg, u.is_rate, u.is_volume,
        CASE WHEN u.is_volume THEN s.dose_value * u.factor * s.concentration_mg_per_ml
             ELSE s.dose_value * u.factor END AS amount
      FROM src s
      LEFT JOIN units u ON u.text = s.dose_unit
      LEFT JOIN weight_units w ON w.text = s.weight_unit
    ),
    k AS (
      SELECT m.*,
        CASE WHEN m.per_kg THEN m.amount ELSE m.amount / m.weight_kg END AS dose_per_kg,
        CASE WHEN m.per_kg THEN m.amount * m.weight_kg ELSE m.amount END AS dose_amount,
        coalesce(nullif(lower(trim(m.kind)), ''), CASE WHEN m.is_rate THEN 'infusion' ELSE 'bolus' END)
          = 'infusion' AS is_infusion,
        m.weight_kg IS NOT NULL AS has_weight,
        m.concentration_mg_per_ml IS NOT NULL AS has_concentration,
        CASE WHEN m.concentration_mg_per_ml IS NULL THEN 'none'
             WHEN NOT isfinite(m.concentration_mg_per_ml) OR m.concentration_mg_per_ml <= 0 THEN 'not-usable'
             ELSE 'positive' END AS concentration_sign,
        CASE WHEN NOT m.unit_ok THEN 'unknown:' || m.dose_unit WHEN m.dose_unit IS NULL THEN 'none'
             ELSE concat(CASE WHEN m.per_kg THEN 'per-kg' WHEN m.is_volume THEN 'volume' ELSE 'mass' END,
                         CASE WHEN m.is_rate THEN '-rate' ELSE '' END) END AS dose_shape,
        CASE WHEN m.weight_value IS NULL THEN 'none' WHEN m.weight_kg IS NULL THEN 'unknown-unit'
             WHEN isnan(m.weight_kg) OR m.weight_kg < min_weight_kg * (1 + {BOUNDARY})
                  OR m.weight_kg > max_weight_kg * (1 - {BOUNDARY}) THEN 'impossible'
             ELSE 'ok' END AS weight_range,
        CASE WHEN m.dose_value IS NULL THEN 'none' WHEN isnan(m.dose_value) OR m.dose_value <= 0
             THEN 'not-positive' WHEN isinf(m.dose_value) THEN 'not-finite' ELSE 'positive' END AS dose_sign
      FROM m, (SELECT min_weight_kg, max_weight_kg FROM audit_limits)
    ),
    b AS (
      SELECT k.*,
        CASE WHEN k.is_infusion THEN {_band_sql("k.dose_per_kg", infusion)}
             ELSE {_band_sql("k.dose_per_kg", bolus)} END AS dose_band,
        CASE WHEN k.is_infusion THEN {_band_sql("k.dose_amount", infusion_mg)}
             ELSE {_band_sql("k.dose_amount", bolus_mg)} END AS amount_band,
        CASE WHEN k.is_infusion THEN {_at_threshold_sql("k.dose_per_kg", infusion)}
             ELSE {_at_threshold_sql("k.dose_per_kg", bolus)} END AS near_per_kg,
        CASE WHEN k.is_infusion THEN {_at_threshold_sql("k.dose_amount", infusion_mg)}
             ELSE {_at_threshold_sql("k.dose_amount", bolus_mg)} END AS near_amount
      FROM k
    ),
    t AS (
      SELECT b.*, b.near_per_kg OR b.near_amount AS at_threshold,
        -- the weight changes where such a dose lies: in mg (or mg/h) by the weight, or near an amount
        b.near_amount OR NOT coalesce(b.per_kg, false) AS exact_weight
      FROM b
    )
    SELECT t.*, {CLASS_KEY} AS class_key, {ROW_HASH} AS row_hash,
      CASE WHEN t.at_threshold THEN {CONTEXT_KEY} END AS context_key
    FROM t
    """


def _signed(hashed: str) -> str:
    """A DuckDB hash (UBIGINT) as a BIGINT, one to one (Spark has no unsigned 64-bit integer)."""
    return f"CAST(CAST({hashed} AS HUGEINT) - 9223372036854775808 AS BIGINT)"


# everything the engine's decision depends on but the dose's exact value: for a bad row, the value its reason
# quotes (e.g. "got 900 kg", "unknown unit 'stone'"), not another row's; a weight within a hair of a bound
# (0.2 kg, 500 kg) is decided exactly by the engine, never with a neighbour's verdict (200 g is a patient, 200 mg
# is not). DuckDB's hash is the same in every process of one DuckDB version (no seed), so Spark's tasks, each
# hashing its own bucket, give one class one key
_CONTEXT_PARTS = f"""{", ".join(CLASS_COLUMNS)},
    CASE WHEN weight_range IN ('impossible', 'unknown-unit') THEN weight_value END,
    CASE WHEN weight_range IN ('impossible', 'unknown-unit') THEN weight_unit END,
    CASE WHEN dose_sign IN ('not-positive', 'not-finite') THEN dose_value END,
    CASE WHEN concentration_sign = 'not-usable' THEN concentration_mg_per_ml END"""
# a row within a hair of a limit (``at_threshold``) also by its exact dose (and the weight, where the weight
# moves it: not for a dose per kg, unless near an amount): its class is one exact dose, and the engine's
# arithmetic puts each such class on its side of every limit (``decide.exact_side``); classes of one context on
# the same sides share one assessment
CLASS_KEY = _signed(f"""hash({_CONTEXT_PARTS},
    CASE WHEN at_threshold THEN [dose_value, CASE WHEN is_volume THEN concentration_mg_per_ml END,
                                 CASE WHEN exact_weight THEN weight_value END] END,
    CASE WHEN at_threshold THEN [dose_unit, CASE WHEN exact_weight THEN weight_unit END] END)""")
CONTEXT_KEY = _signed(f"hash({_CONTEXT_PARTS})")
ROW_HASH = _signed(f"hash({', '.join(COLUMN_NAMES)})")
# the row of a class the engine assesses: the smallest admin_id, ties (a repeated id) broken by the row's hash,
# so that reruns agree, and so that the smallest of each bucket's representatives is the whole input's
REPRESENTATIVE = "(admin_id IS NULL, coalesce(admin_id, ''), row_hash)"


# what a class's representative carries: the canonical columns the engine reads (not the patient's identifier
# nor the ward, which the classes' file, written while they are decided, need not hold)
REPRESENTED = tuple(name for name in COLUMN_NAMES if name not in ("patient_id", "location"))


def classes_sql(measured: str, rows: str = "count(*)") -> str:
    """The decision classes of ``measured`` rows: key, representative (``REPRESENTED``) and rows. ``rows``
    adds up a count column instead when ``measured`` holds classes already (several buckets' of one input)."""
    columns = ", ".join(REPRESENTED)
    return (
        f"SELECT class_key, arg_min(struct_pack({columns}, row_hash, context_key), {REPRESENTATIVE}) AS row, "
        f"{rows} AS n FROM ({measured}) GROUP BY class_key"
    )


def prepare(con: duckdb.DuckDBPyConnection, source: str, kb: KnowledgeBase) -> None:
    """The tables ``measured_sql`` joins: the dose and weight units found in ``source``, read by the engine's
    own parser, and the weight bounds."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE units (text VARCHAR, ok BOOLEAN, factor DOUBLE, per_kg BOOLEAN, "
        "is_rate BOOLEAN, is_volume BOOLEAN)"
    )
    found = con.execute(
        f"SELECT list(DISTINCT dose_unit), list(DISTINCT weight_unit) FROM ({source})"
    ).fetchone() or ([], [])
    doses, weights = found[0] or [], found[1] or []
    rows = [(u.text, u.ok, u.mg_factor, u.per_kg, u.is_rate, u.is_volume) for u in unit_rows(doses)]
    insert_rows(con, "units", rows, 6)
    con.execute("CREATE OR REPLACE TEMP TABLE weight_units (text VARCHAR, kg DOUBLE)")
    insert_rows(con, "weight_units", weight_unit_rows(weights), 2)
    lim = limits(kb)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE audit_limits AS SELECT ? AS min_weight_kg, ? AS max_weight_kg",
        [lim["min_weight_kg"], lim["max_weight_kg"]],
    )


# the findings, column by column (the Spark engine writes the same types from the same SQL)
FINDINGS: Sequence[tuple[str, str, str]] = (
    ("admin_id", "VARCHAR", "m.admin_id"),
    ("patient_id", "VARCHAR", "m.patient_id"),
    ("administered_at", "TIMESTAMP", "m.administered_at"),
    ("location", "VARCHAR", "m.location"),
    ("indication", "VARCHAR", "m.indication"),
    ("setting", "VARCHAR", "m.setting"),
    ("route", "VARCHAR", "m.route"),
    ("kind", "VARCHAR", "m.kind"),
    ("dose_value", "DOUBLE", "m.dose_value"),
    ("dose_unit", "VARCHAR", "m.dose_unit"),
    ("weight_kg", "DOUBLE", "m.weight_kg"),
    ("dose_per_kg", "DOUBLE", "m.dose_per_kg"),
    ("limit_per_kg", "DOUBLE", ROW_LIMIT_SQL["limit_per_kg"]),
    ("max_for_weight", "DOUBLE", ROW_LIMIT_SQL["max_for_weight"]),
    # the tolerance the engine used (not the row's word)
    ("opioid_tolerance", "VARCHAR", "d.tolerance_used"),
    ("opioid_unknown_reason", "VARCHAR", "d.tolerance_unknown_reason"),
    ("opioid_basis", "VARCHAR", "m.opioid_basis"),
    ("dose_status", "VARCHAR", "d.dose_status"),
    ("verdict", "VARCHAR", "d.verdict"),
    ("statements", "VARCHAR[]", "d.statements"),
    ("problem", "VARCHAR", "d.problem"),
    ("limit_source", "VARCHAR", ROW_LIMIT_SQL["limit_source"]),
    ("guideline_verdict", "VARCHAR", "d.guideline_verdict"),
    ("guideline_dose_status", "VARCHAR", "d.guideline_dose_status"),
)


def findings_sql(measured: str, decisions: str = "decisions") -> str:
    """Every measured row with its class's decision and its own limit for its weight: the findings."""
    columns = ",\n      ".join(f"CAST({value} AS {kind}) AS {name}" for name, kind, value in FINDINGS)
    return f"""
    SELECT {columns}
    FROM ({measured}) m JOIN {decisions} d ON d.class_key = m.class_key
    """


def insert_rows(con: duckdb.DuckDBPyConnection, table: str, rows: Iterable[Sequence[Any]], width: int) -> int:
    """Rows handed over as an NDJSON file (``decisions.write_ndjson``). ``rows`` may be a generator that queries
    ``con`` itself (it runs between this function's own queries); returns how many rows were inserted."""
    columns = [(str(r[0]), str(r[1])) for r in con.execute(f"DESCRIBE {table}").fetchall()]
    assert len(columns) == width
    with tempfile.TemporaryDirectory(prefix="ketamine-cds-rows-") as temp:
        path = Path(temp) / "rows.ndjson"
        count = write_ndjson(path, columns, rows)
        load_ndjson(con, table, columns, [path])
    return count


def run_duckdb(
    source: str,
    out_dir: Path,
    *,
    kb: KnowledgeBase | None = None,
    site: Site | None = None,
    memory_limit: str = "1GB",
    threads: int | None = None,
    progress: Progress | None = None,
) -> AuditRun:
    """Audit the canonical rows that ``source`` (a SELECT) yields; write ``findings.parquet`` in out_dir."""
    kb = kb or load_knowledge()
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    limit = checked_memory_limit(memory_limit)
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{limit}'")
    con.execute("SET preserve_insertion_order = false")
    tune(con)
    # progress is tracked for our own progress line, and never printed by DuckDB itself
    con.execute("SET enable_progress_bar = true")
    con.execute("SET enable_progress_bar_print = false")
    con.execute(f"SET temp_directory = '{sql_path(out_dir / '.duckdb-tmp')}'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    watch = _watcher(con, progress, started)
    phases: dict[str, float] = {}
    try:
        clock = time.perf_counter()
        prepare(con, source, kb)
        measured = measured_sql(source, thresholds(kb, site))
        phases["classify"] = time.perf_counter() - clock
        watch("classify")
        decided = decide_classes(
            con, classes_sql(measured), kb, site, temp=out_dir, workers=threads, phases=phases
        )
        findings = out_dir / "findings.parquet"
        clear_findings(findings)  # a Spark run's folder of part files; never a folder of the user's
        watch("write")
        clock = time.perf_counter()
        con.execute(
            f"COPY ({findings_sql(measured)}) TO '{sql_path(findings)}' (FORMAT parquet, COMPRESSION zstd)"
        )
        phases["write"] = time.perf_counter() - clock
        watch("")
        seconds = time.monotonic() - started
        return AuditRun(
            decided.rows, decided.classes, seconds, findings, phases=phases, assessments=decided.assessments
        )
    finally:
        con.close()


def _watcher(
    con: duckdb.DuckDBPyConnection, progress: Progress | None, started: float
) -> Callable[[str], None]:
    """Reports DuckDB's progress of the running query while a phase runs (on a background thread)."""
    state: dict[str, Any] = {"phase": "", "stop": threading.Event()}

    def poll() -> None:
        while not state["stop"].wait(0.5):
            if progress is not None and state["phase"]:
                try:
                    done = max(0.0, float(con.query_progress())) / 100.0
                except duckdb.Error:
                    continue
                progress(state["phase"], min(done, 1.0), time.monotonic() - started)

    thread = threading.Thread(target=poll, daemon=True)
    if progress is not None:
        thread.start()

    def set_phase(phase: str) -> None:
        state["phase"] = phase
        if not phase:
            state["stop"].set()

    return set_phase


def summary_rows(findings: Path) -> dict[str, Any]:
    """Counts for the summary and the report, read back from the findings."""
    con = duckdb.connect()
    try:
        f = parquet_reader(findings)
        one = con.execute(f"SELECT count(*), count(problem) FROM {f}").fetchone() or (0, 0)
        return {
            "administrations": int(one[0]),
            "bad_rows": int(one[1]),
            "verdicts": dict(
                con.execute(
                    f"SELECT coalesce(verdict, 'not assessed'), count(*) FROM {f} GROUP BY 1 ORDER BY 2 DESC, 1"
                ).fetchall()
            ),
            "problems": dict(
                con.execute(
                    f"SELECT problem, count(*) FROM {f} WHERE problem IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1"
                ).fetchall()
            ),
            "statements": dict(
                con.execute(
                    f"SELECT s, count(*) FROM (SELECT unnest(statements) AS s FROM {f}) GROUP BY 1 ORDER BY 2 DESC, 1"
                ).fetchall()
            ),
            # adherence to the guideline alone beside a site's protocol (the same as verdicts without a site)
            "guideline_verdicts": dict(
                con.execute(
                    f"SELECT coalesce(guideline_verdict, 'not assessed'), count(*) FROM {f} GROUP BY 1 ORDER BY 2 DESC, 1"
                ).fetchall()
            ),
            "differs_from_guideline": int(
                (
                    con.execute(
                        f"SELECT count(*) FROM {f} WHERE verdict IS DISTINCT FROM guideline_verdict"
                    ).fetchone()
                    or (0,)
                )[0]
            ),
        }
    finally:
        con.close()


def write_summary(findings: Path, out_dir: Path) -> dict[str, Any]:
    summary = summary_rows(findings)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary
