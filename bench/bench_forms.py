"""The audit of the same synthetic administrations in each input form: flat table, FHIR Bulk NDJSON, OMOP CDM.

Prints figures; never asserts on timing (exit 0 unless something errors: an audit fails, the forms disagree).

    python bench/bench_forms.py                    # 200,000 rows (the issue's figure): about a minute
    python bench/bench_forms.py --rows 20000       # a smoke check
    python bench/bench_forms.py --runs 3 --keep --workdir /tmp/bench-forms

1. ``ketamine-cds synth --rows N`` writes the three forms once (fixed seed); they are cached in the work
   folder under their row count and seed.
2. ``ketamine-cds audit <form folder> --out ...`` runs end to end (read, decide, findings, summary, report)
   for each form, each run in a child process of its own, forms interleaved; best of ``--runs`` (2). Peak RSS
   is the ``ru_maxrss`` that ``wait4`` returns for the child.
3. The findings of the three forms are compared (verdict, statements, problem per administration): a form
   that is fast because it read less would show here.
4. Opioid tolerance: what the audit's ``summary.json`` records of the tolerance step (patients and days
   decided by the engine's rules, seconds), as a cost per administration.

Target, printed next to the figures: FHIR within 10x of the flat form.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

SEED = 20261124
FORMS = ("flat", "fhir", "omop")
TARGET_FHIR_RATIO = 10.0


@dataclass(frozen=True)
class Measured:
    form: str
    seconds: float
    cpu_s: float
    rss_mib: float
    summary: dict[str, Any]

    @property
    def rows(self) -> int:
        return int(self.summary.get("administrations", 0))

    @property
    def rate(self) -> float:
        return self.rows / max(self.seconds, 1e-9)


def default_workdir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "ketamine-cds" / "bench-forms"


def command() -> list[str]:
    return [sys.executable, "-m", "ketamine_cds"]


def synthetic(rows: int, seed: int, root: Path) -> tuple[Path, str]:
    folder = root / f"forms-{rows}-seed{seed}"
    if all((folder / form).is_dir() for form in FORMS) and (folder / ".complete").exists():
        return folder, f"cached in {folder}"
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run(
        [*command(), "synth", "--rows", str(rows), "--out", str(folder), "--seed", str(seed)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (folder / ".complete").write_text("")
    sizes = ", ".join(f"{form} {_size_mib(folder / form):,.0f} MiB" for form in FORMS)
    return folder, f"written in {time.perf_counter() - started:.1f} s ({sizes})"


def _size_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def audit(form: str, folder: Path, out: Path) -> Measured:
    """One end-to-end ``ketamine-cds audit`` in a child process: wall time, CPU time and peak RSS."""
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    child = subprocess.Popen(
        [*command(), "audit", str(folder / form), "--out", str(out), "--form", form],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert child.stderr is not None
    errors = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"audit of the {form} form failed ({child.returncode}): {errors.decode()[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return Measured(form, seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, summary)


def same_findings(outs: dict[str, Path]) -> str:
    """Whether every form gave every administration the same verdict, statements and problem."""
    con = duckdb.connect()
    try:
        key = {"flat": "admin_id", "fhir": "admin_id", "omop": "'A' || lpad(admin_id, 9, '0')"}
        tables = {
            form: f"(SELECT {key[form]} AS admin_id, verdict, statements, problem, opioid_tolerance "
            f"FROM read_parquet('{out / 'findings.parquet'}'))"
            for form, out in outs.items()
        }
        notes = []
        for form in ("fhir", "omop"):
            query = f"SELECT * FROM {tables['flat']} EXCEPT ALL SELECT * FROM {tables[form]}"
            (differ,) = con.execute(f"SELECT count(*) FROM ({query})").fetchone() or (0,)
            notes.append(f"{form}: {'identical' if not differ else f'{differ:,} rows differ'}")
        return "; ".join(notes)
    finally:
        con.close()


def tolerance_cost(m: Measured) -> str:
    stats = m.summary.get("opioid_tolerance_step")
    if not isinstance(stats, dict):
        return "not recorded"
    seconds, moments = float(stats.get("seconds", 0.0)), int(stats.get("moments", 0))
    reading = float(stats.get("reading_seconds", 0.0))
    per_row = seconds / max(m.rows, 1) * 1e6
    per_moment = seconds / max(moments, 1) * 1e6
    return (
        f"{int(stats.get('prescriptions', 0)):,} prescriptions of {int(stats.get('patients', 0)):,} patients "
        f"read in {reading:.2f} s ({reading / max(m.rows, 1) * 1e6:,.2f} us per administration); "
        f"{moments:,} patient-days decided in {seconds:.2f} s ({per_moment:,.1f} us each; "
        f"{per_row:,.2f} us per administration)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000, help="administrations (default 200,000)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--runs", type=int, default=2, help="runs per form, best kept (default 2)")
    parser.add_argument("--workdir", type=Path, default=None, help=f"cache and outputs ({default_workdir()})")
    parser.add_argument("--keep", action="store_true", help="keep this run's outputs")
    args = parser.parse_args(argv)
    root = args.workdir or default_workdir()
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=root))
    print(
        f"bench_forms: Python {platform.python_version()}, DuckDB {duckdb.__version__}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} "
        "(other work on the machine inflates every wall time below)"
    )
    try:
        folder, note = synthetic(args.rows, args.seed, root)
        print(f"1. synthetic forms, {args.rows:,} administrations: {note}")
        runs: dict[str, list[Measured]] = {form: [] for form in FORMS}
        for i in range(max(1, args.runs)):
            for form in FORMS:
                runs[form].append(audit(form, folder, work / f"{form}-{i}"))
        best = {form: min(ms, key=lambda m: m.seconds) for form, ms in runs.items()}
        flat = best["flat"].seconds
        print(f"2. ketamine-cds audit, end to end, best of {args.runs}")
        columns = f"{'rows':>9} {'seconds':>8} {'cpu s':>7} {'rows/s':>10} {'peak RSS MiB':>13} {'x flat':>7}"
        print(f"  {'form':6} {columns}")
        for form in FORMS:
            m = best[form]
            print(
                f"  {form:6} {m.rows:>9,} {m.seconds:>8.2f} {m.cpu_s:>7.1f} {m.rate:>10,.0f} "
                f"{m.rss_mib:>13,.0f} {m.seconds / flat:>7.2f}"
            )
        ratio = best["fhir"].seconds / flat
        met = "met" if ratio <= TARGET_FHIR_RATIO else "NOT met"
        print(f"  target: FHIR within {TARGET_FHIR_RATIO:g}x of the flat form: {ratio:.2f}x, {met}")
        agreement = same_findings({form: work / f"{form}-0" for form in FORMS})
        print(f"3. findings against the flat form's: {agreement}")
        print("4. opioid tolerance (the engine's rules, once per patient and day)")
        for form in ("fhir", "omop"):
            print(f"  {form}: {tolerance_cost(best[form])}")
        print(
            f"SUMMARY: {args.rows:,} rows: flat {flat:.1f} s, FHIR {best['fhir'].seconds:.1f} s "
            f"({ratio:.1f}x flat, target <= {TARGET_FHIR_RATIO:g}x {met}), OMOP {best['omop'].seconds:.1f} s "
            f"({best['omop'].seconds / flat:.1f}x); peak RSS FHIR {best['fhir'].rss_mib:,.0f} MiB; "
            f"{agreement}"
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
