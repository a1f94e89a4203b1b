"""The audit on DuckDB against a plain DuckDB query over the same Parquet, in the same run; then the audit on
a real Spark standalone cluster (1 and 2 workers) beside DuckDB on the same input.

Prints figures; never asserts on timing (exit 0 unless something errors: a job fails, an input is unreadable).

    python bench/bench_audit.py                         # 10M rows on DuckDB, 1M on the cluster: minutes
    python bench/bench_audit.py --rows 2000000          # the floor comparison at 2M rows
    python bench/bench_audit.py --spark-rows 0          # DuckDB only
    python bench/bench_audit.py --workers 2             # the cluster with 2 workers only

1. The synthetic flat Parquet (``write_flat``, CSV off) is generated once and cached in the work folder under
   its row count and seed (``--no-cache``: a temporary copy, removed afterwards).
2. Baseline, the floor: one plain DuckDB query reading the same Parquet, joining a small unit-factor table,
   converting the weight to kg, computing the dose per kg and comparing it with 0.35 mg/kg (bolus) or
   1 mg/kg/h (infusion), written as zstd Parquet like the findings. Best of 2.
3. The audit: ``run_duckdb(flat_source(parquet), out)`` with its default memory limit (1GB). 1 or 2 runs.
   Targets: within 2x of the baseline; peak memory under 2 GiB. Its phases as the audit itself times them
   (``AuditRun.phases``: reading and measuring, the engine's decisions, the findings).
4. Spark: a standalone master and ``--workers`` workers (1 core, 1 GiB each) started on the loopback from
   pyspark's launcher (``tests/spark_cluster.py``), and ``run_spark`` on ``--spark-rows`` rows written as
   ``--spark-parts`` Parquet parts (a flat table's part is a bucket: a task), beside ``run_duckdb`` on the
   same folder. Peak memory of the driver (the Python process and its JVM) and of the executors (every process
   the workers start: executor JVMs, Python workers with DuckDB), sampled from ``/proc``.

Every job runs in a child process of its own; its peak RSS is the ``ru_maxrss`` that ``wait4`` returns for it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

SEED = 20261124
TESTS = Path(__file__).resolve().parents[1] / "tests"  # spark_cluster.py: the tests' cluster
TARGET_RATIO = 2.0
TARGET_RSS_MIB = 2048.0  # 2 GiB
AUDIT_MEMORY_LIMIT = "1GB"  # run_duckdb's default; the baseline runs under the same setting
AUTO_SECOND_AUDIT_S = 300.0  # a second audit run only when the first took less than this
BOLUS_LIMIT, INFUSION_LIMIT = 0.35, 1.0  # mg/kg and mg/kg/h (knowledge base: dose-bolus/infusion-limit)


# --- the baseline: the floor, written plainly ------------------------------------------------------------

BASELINE_SQL = """
WITH units(text, mg_factor, per_kg, is_rate, is_volume) AS (
  VALUES ('mg', 1.0, false, false, false),
         ('mg/kg', 1.0, true, false, false),
         ('mcg', 0.001, false, false, false),
         ('mL', 1.0, false, false, true),          -- mL x concentration (mg/mL)
         ('mg/h', 1.0, false, true, false),
         ('mg/kg/h', 1.0, true, true, false),
         ('mcg/kg/min', 0.06, true, true, false),  -- 0.001 mg x 60 min/h
         ('mL/h', 1.0, false, true, true)
),
weight_units(text, kg) AS (VALUES ('kg', 1.0), ('[lb_av]', 0.45359237)),
m AS (
  SELECT a.admin_id, a.patient_id, a.administered_at, a.location, a.indication, a.setting, a.route, a.kind,
         a.dose_value, a.dose_unit, a.weight_value * w.kg AS weight_kg, u.per_kg,
         a.dose_value * u.mg_factor
           * CASE WHEN u.is_volume THEN a.concentration_mg_per_ml ELSE 1.0 END AS amount,
         CASE WHEN coalesce(a.kind, CASE WHEN u.is_rate THEN 'infusion' ELSE 'bolus' END) = 'infusion'
              THEN {infusion} ELSE {bolus} END AS limit_per_kg
  FROM read_parquet('{parquet}') a
  LEFT JOIN units u ON u.text = a.dose_unit
  LEFT JOIN weight_units w ON w.text = a.weight_unit
),
k AS (SELECT *, CASE WHEN per_kg THEN amount ELSE amount / weight_kg END AS dose_per_kg FROM m)
SELECT admin_id, patient_id, administered_at, location, indication, setting, route, kind, dose_value,
       dose_unit, weight_kg, dose_per_kg, limit_per_kg, limit_per_kg * weight_kg AS max_for_weight,
       CASE WHEN dose_per_kg IS NULL THEN NULL WHEN dose_per_kg > limit_per_kg THEN 'above'
            ELSE 'within' END AS dose_status{more}
FROM k
"""
# The same query writing every column of the findings, with the types they have there: what the audit's own
# output costs to write (a list of statement ids, the verdicts, the tolerance), decided plainly.
SAME_OUTPUT_COLUMNS = """,
       CAST(NULL AS VARCHAR) AS opioid_tolerance, CAST(NULL AS VARCHAR) AS opioid_unknown_reason,
       CAST(NULL AS VARCHAR) AS opioid_basis,
       CASE WHEN dose_per_kg > limit_per_kg THEN 'dose-exceeds-limit' ELSE 'consider' END AS verdict,
       CASE WHEN limit_per_kg = {bolus} THEN ['dose-bolus-limit', 'perioperative-adjunct']
            ELSE ['dose-infusion-limit', 'perioperative-adjunct'] END AS statements,
       CASE WHEN dose_per_kg IS NULL THEN 'no dose per kg' END AS problem,
       'guideline' AS limit_source,
       CASE WHEN dose_per_kg > limit_per_kg THEN 'dose-exceeds-limit' ELSE 'consider' END
         AS guideline_verdict,
       CASE WHEN dose_per_kg > limit_per_kg THEN 'exceeds' ELSE 'within' END AS guideline_dose_status"""


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def _connect(temp: Path) -> duckdb.DuckDBPyConnection:
    """The settings ``run_duckdb`` uses: memory limit, no insertion order, a spill folder."""
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{AUDIT_MEMORY_LIMIT}'")
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"SET temp_directory = '{_sql_path(temp)}'")
    return con


def _rows_in(parquet: Path) -> int:
    con = duckdb.connect()
    try:
        one = con.execute(f"SELECT count(*) FROM read_parquet('{_sql_path(parquet)}')").fetchone()
    finally:
        con.close()
    return int(one[0]) if one else 0


# --- jobs (each runs in a child process: ``--job NAME``) ---------------------------------------------------


def job_synth(rows: int, seed: int, out: Path) -> dict[str, Any]:
    from ketamine_cds.audit.synth import write_flat

    started = time.perf_counter()
    folder = write_flat(rows, out, seed, csv=False)
    seconds = time.perf_counter() - started
    parquet = folder / "administrations.parquet"
    return {"seconds": seconds, "rows": rows, "bytes": parquet.stat().st_size}


def job_baseline(parquet: Path, out: Path, same_output: bool = False) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    target = out / "baseline.parquet"
    started = time.perf_counter()
    con = _connect(out / ".duckdb-tmp")
    try:
        more = SAME_OUTPUT_COLUMNS.format(bolus=BOLUS_LIMIT) if same_output else ""
        query = BASELINE_SQL.format(
            parquet=_sql_path(parquet), bolus=BOLUS_LIMIT, infusion=INFUSION_LIMIT, more=more
        )
        con.execute(f"COPY ({query}) TO '{_sql_path(target)}' (FORMAT parquet, COMPRESSION zstd)")
        one = con.execute(f"SELECT count(*) FROM read_parquet('{_sql_path(target)}')").fetchone()
    finally:
        con.close()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": int(one[0]) if one else 0, "output": str(target)}


def job_audit(parquet: Path, out: Path) -> dict[str, Any]:
    from ketamine_cds.audit.duck import run_duckdb
    from ketamine_cds.audit.flat import flat_source

    started = time.perf_counter()
    run = run_duckdb(flat_source(parquet), out)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "rows": run.rows,
        "classes": run.classes,
        "assessments": run.assessments,
        "output": str(run.findings),
        **{f"{phase}_s": s for phase, s in run.phases.items()},
    }


def _descendants(root: int) -> tuple[int, float]:
    """RSS (KiB) and CPU seconds of the processes below ``root`` (``spark_cluster.tree_usage``)."""
    sys.path.insert(0, str(TESTS))
    from spark_cluster import tree_usage

    return tree_usage(root)


class Sampler:
    """Peak RSS (KiB) of the processes below some roots, sampled every 0.25 s while a job runs."""

    def __init__(self, roots: dict[str, list[int]]) -> None:
        self.roots, self.peak = roots, dict.fromkeys(roots, 0)
        self.cpu = dict.fromkeys(roots, 0.0)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.25):
            for name, pids in self.roots.items():
                found = [_descendants(pid) for pid in pids]
                rss, cpu = sum(r for r, _ in found), sum(c for _, c in found)
                self.peak[name], self.cpu[name] = max(self.peak[name], rss), max(self.cpu[name], cpu)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()


def job_spark(folder: Path, out: Path) -> dict[str, Any]:
    """``run_spark`` on the cluster ``SPARK_MASTER`` names; the driver's JVM (a child of this process) is
    sampled here, since it is not reaped before this process exits."""
    from ketamine_cds.audit.spark import run_spark, spark_session

    settings = json.loads(os.environ.get("BENCH_SPARK_SETTINGS", "{}"))
    with Sampler({"jvm": [os.getpid()]}) as jvm:
        spark_session(None, settings)  # the JVM and executors start before the clock (as DuckDB's import)
        started = time.perf_counter()
        run = run_spark(folder, "flat", out)
        seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "rows": int(run.rows),
        "classes": int(run.classes),
        "assessments": run.assessments,
        "output": str(run.findings),
        "driver_jvm_rss_kib": jvm.peak["jvm"],
        "driver_jvm_cpu_s": jvm.cpu["jvm"],
    }


def run_job(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.job == "synth":
        result = job_synth(args.rows, args.seed, out)
    elif args.job == "baseline":
        result = job_baseline(Path(args.input), out)
    elif args.job == "same-output":
        result = job_baseline(Path(args.input), out, same_output=True)
    elif args.job == "audit":
        result = job_audit(Path(args.input), out)
    elif args.job == "spark":
        result = job_spark(Path(args.input), out)
    else:
        raise SystemExit(f"unknown job {args.job!r}")
    Path(args.result).write_text(json.dumps(result))
    return 0


# --- the parent: child processes and their peak memory -----------------------------------------------------


@dataclass
class Measured:
    job: str
    rows: int
    seconds: float
    rss_mib: float
    cpu_s: float  # user + system CPU of the child (and of the children it reaped), whole process
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.rows / max(self.seconds, 1e-9)


class JobFailed(RuntimeError):
    pass


def child(
    job: str,
    work: Path,
    tag: str,
    options: Sequence[str],
    env: dict[str, str] | None = None,
    sampled: dict[str, list[int]] | None = None,
    tree: bool = False,
) -> Measured:
    """Run one job in a fresh interpreter; its peak RSS is what ``wait4`` reports for that child. ``sampled``:
    more processes whose descendants' peak RSS goes into ``extra`` (``<name>_rss_kib``). ``tree``: the job
    starts processes of its own (the audit's decision workers), and its peak RSS is the most that the child
    and its processes held together (sampled every 0.25 s), when that is more than the child's own."""
    result, log = work / f"{tag}.json", work / f"{tag}.log"
    result.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--job", job, "--result", str(result), *options]
    roots = {**(sampled or {}), **({"tree": [os.getpid()]} if tree else {})}  # below this process: the job
    with log.open("w") as err, Sampler(roots) as sampler:
        proc = subprocess.Popen(command, stdout=err, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or not result.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise JobFailed(f"{job} ({tag}) exited with {proc.returncode}; last lines of {log}:\n{tail}")
    data: dict[str, Any] = json.loads(result.read_text())
    data.update({f"{name}_rss_kib": kib for name, kib in sampler.peak.items()})
    data.update({f"{name}_cpu_s": cpu for name, cpu in sampler.cpu.items()})
    rss_mib = max(usage.ru_maxrss, sampler.peak.get("tree", 0)) / 1024.0  # Linux: KiB
    cpu = usage.ru_utime + usage.ru_stime
    return Measured(job, int(data["rows"]), float(data["seconds"]), rss_mib, cpu, data)


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1, 5, 15 min)"


def default_workdir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ketamine-cds" / "bench-audit"


def synthetic_input(rows: int, seed: int, cache: Path, work: Path) -> tuple[Path, str]:
    """The flat Parquet for ``rows`` rows: from the cache if it is there, generated (and timed) otherwise."""
    folder = cache / f"flat-{rows}-seed{seed}"
    parquet = folder / "flat" / "administrations.parquet"
    if parquet.exists():
        size = parquet.stat().st_size
        return parquet, f"{rows:,} rows: cached ({folder}, {size / 1e6:,.0f} MB)"
    partial = cache / f".partial-{rows}-seed{seed}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    made = child(
        "synth", work, f"synth-{rows}", ["--rows", str(rows), "--seed", str(seed), "--out", str(partial)]
    )
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return parquet, (
        f"{rows:,} rows: generated in {made.seconds:.1f} s ({made.rate:,.0f} rows/s, peak RSS "
        f"{made.rss_mib:,.0f} MiB), {made.extra['bytes'] / 1e6:,.0f} MB zstd Parquet -> {folder}"
    )


# --- printing -------------------------------------------------------------------------------------------


def _header(ratio: str) -> str:
    figures = f"{'seconds':>8} {'cpu s':>7} {'rows/s':>12} {'peak RSS MiB':>13}"
    return f"  {'job':25} {'rows':>12} {figures} {ratio:>11}"


def _row(name: str, m: Measured, reference: float) -> str:
    figures = f"{m.seconds:>8.2f} {m.cpu_s:>7.1f} {m.rate:>12,.0f} {m.rss_mib:>13,.0f}"
    return f"  {name:25} {m.rows:>12,} {figures} {m.seconds / reference:>11.2f}"


def print_table(baseline: Sequence[Measured], audits: Sequence[Measured]) -> tuple[float, float]:
    best_base = min(baseline, key=lambda m: m.seconds)
    best_audit = min(audits, key=lambda m: m.seconds)
    ratio = best_audit.seconds / best_base.seconds
    peak = max(m.rss_mib for m in audits)
    print(_header("x baseline"))
    for label, runs, best in (
        ("baseline (plain SQL)", baseline, best_base),
        ("audit run_duckdb", audits, best_audit),
    ):
        for i, m in enumerate(runs):
            mark = "*" if m is best and len(runs) > 1 else " "
            name = f"{label} #{i + 1}{mark}"
            print(_row(name, m, best_base.seconds))
    print(
        "  (* best of the runs; the ratio compares best with best. cpu s: the whole child process,\n"
        f"  start-up included, on {os.cpu_count()} cores: cpu s well under cores x seconds means a job\n"
        "  waited or ran serially)"
    )
    met_ratio = "met" if ratio <= TARGET_RATIO else "NOT met"
    met_rss = "met" if peak < TARGET_RSS_MIB else "NOT met"
    print(f"  target: audit within {TARGET_RATIO:g}x of the baseline: {ratio:.2f}x, {met_ratio}")
    cpu_ratio = min(m.cpu_s for m in audits) / max(min(m.cpu_s for m in baseline), 1e-9)
    print(f"  (by CPU time instead, less sensitive to other work on the machine: {cpu_ratio:.2f}x)")
    print(f"  target: audit peak RSS under 2 GiB: {peak:,.0f} MiB, {met_rss}")
    return ratio, peak


def print_findings(audit: Measured, baseline: Measured) -> None:
    from ketamine_cds.audit.duck import summary_rows

    summary = summary_rows(Path(audit.extra["output"]))
    total = max(1, int(summary["administrations"]))
    print(
        f"  audit: {audit.extra['classes']:,} decision classes ({audit.extra['assessments']:,} engine "
        "assessments) for "
        f"{summary['administrations']:,} rows; {summary['bad_rows']:,} rows not assessable"
    )
    print("  verdicts: " + ", ".join(f"{v} {n:,} ({n / total:.1%})" for v, n in summary["verdicts"].items()))
    problems = list(summary["problems"].items())[:4]
    if problems:
        print("  top reasons not assessable: " + "; ".join(f"{p} {n:,}" for p, n in problems))
    con = duckdb.connect()
    try:
        path = _sql_path(Path(baseline.extra["output"]))
        status = con.execute(
            f"SELECT coalesce(dose_status, 'no per-kg dose'), count(*) FROM read_parquet('{path}') "
            "GROUP BY 1 ORDER BY 2 DESC"
        ).fetchall()
    finally:
        con.close()
    print("  baseline dose status: " + ", ".join(f"{s} {n:,}" for s, n in status))


# --- main -----------------------------------------------------------------------------------------------


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows for DuckDB (default 10,000,000)")
    parser.add_argument(
        "--spark-rows", type=int, default=1_000_000, help="rows for Spark (default 1,000,000; 0: no Spark)"
    )
    parser.add_argument("--seed", type=int, default=SEED, help=f"synthetic data seed (default {SEED})")
    parser.add_argument("--workdir", type=Path, default=None, help=f"cache and outputs ({default_workdir()})")
    parser.add_argument("--keep", action="store_true", help="keep this run's outputs (findings, baseline)")
    parser.add_argument("--no-cache", action="store_true", help="generate the input afresh, remove it after")
    parser.add_argument("--baseline-runs", type=int, default=2, help="baseline runs, best kept (default 2)")
    parser.add_argument(
        "--audit-runs",
        type=int,
        default=0,
        help=f"audit runs (default: 2 if the first < {AUTO_SECOND_AUDIT_S:g} s)",
    )
    parser.add_argument(
        "--workers", default="1,2", help="the cluster's sizes, workers of 1 core and 1 GiB (default 1,2)"
    )
    parser.add_argument(
        "--spark-parts", type=int, default=8, help="Parquet parts of the cluster's input (default 8)"
    )
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.job:
        return run_job(args)
    root = args.workdir or default_workdir()
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=root))
    cache = Path(tempfile.mkdtemp(prefix="input-", dir=root)) if args.no_cache else root
    print(
        f"bench_audit: Python {platform.python_version()}, DuckDB {duckdb.__version__}, "
        f"{os.cpu_count()} cores, memory limit {AUDIT_MEMORY_LIMIT} (audit and baseline); "
        f"one child process per job"
    )
    print(f"work folder {work}{' (kept)' if args.keep else ' (removed at the end)'}")
    print(f"load average at the start {_load()} (other work on the machine inflates every wall time below)")
    failed: list[str] = []
    try:
        print(f"1. synthetic flat Parquet (write_flat, seed {args.seed})")
        parquet, note = synthetic_input(args.rows, args.seed, cache, work)
        print(f"  {note}")
        rows = _rows_in(parquet)

        print(f"2-3. baseline (plain DuckDB query, best of {args.baseline_runs}) and the audit (run_duckdb)")
        inp = ["--input", str(parquet)]
        baseline = [
            child("baseline", work, f"baseline-{i}", [*inp, "--out", str(work / f"baseline-{i}")])
            for i in range(max(1, args.baseline_runs))
        ]
        audits = [child("audit", work, "audit-0", [*inp, "--out", str(work / "audit-0")], tree=True)]
        runs = args.audit_runs or (2 if audits[0].seconds < AUTO_SECOND_AUDIT_S else 1)
        for i in range(1, runs):
            audits.append(
                child("audit", work, f"audit-{i}", [*inp, "--out", str(work / f"audit-{i}")], tree=True)
            )
        ratio, peak = print_table(baseline, audits)
        if any(m.rows != rows for m in (*baseline, *audits)):
            print(f"  WARNING: a job wrote a different number of rows than the input's {rows:,}")
        print_findings(min(audits, key=lambda m: m.seconds), baseline[0])
        print_phases(min(audits, key=lambda m: m.seconds), baseline)
        same = [
            child("same-output", work, f"same-output-{i}", [*inp, "--out", str(work / f"same-output-{i}")])
            for i in range(max(1, args.baseline_runs))
        ]
        print_same_output(min(same, key=lambda m: m.seconds), min(audits, key=lambda m: m.seconds), baseline)

        print(f"4. Spark standalone cluster on {args.spark_rows:,} rows" if args.spark_rows else "4. Spark")
        spark_note = spark_part(args, cache, work, failed)
        audit = min(audits, key=lambda m: m.seconds)
        print()
        print(f"load average at the end {_load()}")
        print(
            f"SUMMARY: audit {audit.rate:,.0f} rows/s on {rows:,} rows ({audit.seconds:.1f} s), "
            f"{ratio:.2f}x the plain-query baseline (target <= {TARGET_RATIO:g}x "
            f"{'met' if ratio <= TARGET_RATIO else 'NOT met'}); peak RSS {peak:,.0f} MiB (target < 2 GiB "
            f"{'met' if peak < TARGET_RSS_MIB else 'NOT met'}); "
            f"{audit.extra['assessments']:,} engine assessments; {spark_note}"
        )
    except JobFailed as exc:
        print(f"FAILED: {exc}")
        failed.append(str(exc))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        if args.no_cache:
            shutil.rmtree(cache, ignore_errors=True)
    return 1 if failed else 0


def print_phases(phases: Measured, baseline: Sequence[Measured]) -> None:
    """Where the audit's time goes, against the floor."""
    floor = min(m.seconds for m in baseline)
    x = phases.extra
    each = x["decide_s"] / max(1, x["assessments"]) * 1e6
    sql = (x["classify_s"] + x["write_s"]) / floor
    print(
        f"  phases (of the best run): reading, measuring and classifying {x['classify_s']:.2f} s, "
        f"the engine's decisions ({x['assessments']:,} assessments, in parallel) {x['decide_s']:.2f} s "
        f"({each:.0f} us of wall time each, start-up and hand-over included), findings {x['write_s']:.2f} s;"
        f"\n  the SQL alone (all but the engine's decisions): {sql:.2f}x the baseline"
    )


def print_same_output(same: Measured, audit: Measured, baseline: Sequence[Measured]) -> None:
    """A second reference beside the floor: the plain query writing all the findings' columns."""
    floor = min(m.seconds for m in baseline)
    print(
        f"  the plain query writing every column of the findings (24, with their types; best of the runs): "
        f"{same.seconds:.2f} s ({same.seconds / floor:.2f}x the baseline);\n"
        f"  the audit against it: {audit.seconds / same.seconds:.2f}x"
    )


def _parts(parquet: Path, parts: int, cache: Path) -> Path:
    """The input as ``parts`` Parquet files (cached beside it): a flat table's part is a bucket, a task."""
    folder = cache / f"{parquet.parent.parent.name}-parts{parts}"
    if folder.is_dir() and len(list(folder.glob("*.parquet"))) == parts:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    con = duckdb.connect()
    try:
        for i in range(parts):
            con.execute(
                f"COPY (SELECT * FROM read_parquet('{_sql_path(parquet)}') "
                f"WHERE hash(admin_id) % {parts} = {i}) "
                f"TO '{_sql_path(folder / f'part-{i:03}.parquet')}' (FORMAT parquet, COMPRESSION zstd)"
            )
    finally:
        con.close()
    return folder


def spark_part(args: argparse.Namespace, cache: Path, work: Path, failed: list[str]) -> str:
    if args.spark_rows <= 0:
        print("  SKIPPED (--spark-rows 0)")
        return "Spark skipped"
    if importlib.util.find_spec("pyspark") is None:
        print("  SKIPPED: pyspark is not installed (pip install 'ketamine-cds[spark]')")
        return "Spark skipped (no pyspark)"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        print("  SKIPPED: no Java runtime (java on PATH or JAVA_HOME)")
        return "Spark skipped (no Java)"
    sys.path.insert(0, str(TESTS))
    from spark_cluster import Cluster, submit_args

    parquet, note = synthetic_input(args.spark_rows, args.seed, cache, work)
    folder = _parts(parquet, args.spark_parts, cache)
    print(f"  {note}; as {args.spark_parts} Parquet parts")
    inp = ["--input", str(folder)]
    duck = child("audit", work, "audit-spark-rows", [*inp, "--out", str(work / "audit-spark-rows")])
    runs: list[tuple[int, Measured]] = []
    for workers in [int(w) for w in args.workers.split(",") if w.strip()]:
        cluster = Cluster(work / f"cluster-{workers}", workers=workers).start()
        try:
            settings = cluster.session_settings()
            env = {
                **os.environ,
                "SPARK_MASTER": cluster.master,
                "PYSPARK_SUBMIT_ARGS": submit_args(settings),
                "BENCH_SPARK_SETTINGS": json.dumps(dict(settings)),
            }
            executors = [p.pid for p in cluster.processes[1:]]  # the workers: executors are their children
            runs.append(
                (
                    workers,
                    child(
                        "spark",
                        work,
                        f"spark-{workers}",
                        [*inp, "--out", str(work / f"spark-{workers}")],
                        env=env,
                        sampled={"executors": executors},
                    ),
                )
            )
        except JobFailed as exc:
            print(f"  FAILED: {exc}")
            failed.append(str(exc))
            return "Spark FAILED"
        finally:
            cluster.stop()
    print(
        f"  {'job':25} {'rows':>12} {'seconds':>8} {'rows/s':>12} {'driver MiB':>11} {'(py + JVM)':>12} "
        f"{'executors MiB':>14} {'x DuckDB':>9}"
    )
    print(
        f"  {'audit run_duckdb':25} {duck.rows:>12,} {duck.seconds:>8.2f} {duck.rate:>12,.0f} "
        f"{duck.rss_mib:>11,.0f} {'':>12} {'':>14} {1.0:>9.2f}"
    )
    for workers, m in runs:
        py, jvm = m.rss_mib, m.extra["driver_jvm_rss_kib"] / 1024
        executors, split = m.extra["executors_rss_kib"] / 1024, f"{py:,.0f} + {jvm:,.0f}"
        name, times = f"run_spark, {workers} worker(s)", m.seconds / duck.seconds
        print(
            f"  {name:25} {m.rows:>12,} {m.seconds:>8.2f} {m.rate:>12,.0f} {py + jvm:>11,.0f} {split:>12} "
            f"{executors:>14,.0f} {times:>9.2f}"
        )
    classes = ", ".join(f"{m.extra['classes']:,} ({m.extra['assessments']:,})" for _, m in runs)
    print(
        "  (Spark's seconds: from the session up, the JVMs and executors started before; driver: the Python\n"
        "  process (wait4) and its JVM, executors: every process the workers start, sampled every 0.25 s;\n"
        f"  decision classes (engine assessments): DuckDB {duck.extra['classes']:,} "
        f"({duck.extra['assessments']:,}), Spark {classes})"
    )
    best = min(runs, key=lambda r: r[1].seconds)[1]
    ratio = best.seconds / duck.seconds
    return f"Spark cluster {best.rate:,.0f} rows/s on {best.rows:,} rows ({ratio:.1f}x DuckDB)"


if __name__ == "__main__":
    raise SystemExit(main())
