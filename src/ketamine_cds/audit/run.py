"""``ketamine-cds audit``: read an input form, audit it on an engine, write findings, summary and report."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import InputError
from .._kb import load_knowledge
from .._render import site_json
from .._site import Site
from .forms import Form, check_column_mappings, form_of, read_canonical, source_sql

if TYPE_CHECKING:
    from .tolerance import Staged

__all__ = ["Form", "canonical_parquet", "detect_form", "run_audit", "source_sql", "write_outputs"]


def detect_form(path: Path) -> Form:
    """FHIR Bulk NDJSON (*.ndjson), OMOP CDM tables (person, drug_exposure, ...), or the flat table."""
    if not path.exists():
        raise InputError("INPUT", f"no such file or folder: {path}")
    return form_of([p.name for p in path.iterdir()] if path.is_dir() else [], path.is_dir())


@dataclass(frozen=True)
class Canonical:
    """The canonical rows of a FHIR or OMOP input, and what the tolerance step did."""

    path: Path
    tolerance: Staged


def canonical_parquet(
    path: Path, form: Form, out_dir: Path, memory_limit: str = "1GB", site: Site | None = None
) -> Canonical:
    """FHIR or OMOP input read once by its DuckDB reader into ``out_dir/canonical/administrations.parquet``,
    with opioid tolerance decided once per patient and day (``forms.read_canonical``).

    The DuckDB audit reads its input more than once (the units it holds, the decision classes, the findings):
    a flat table can be read again at no cost, but a FHIR export is JSON to parse and join, so it is read
    once, in bounded memory, and every later pass reads the canonical Parquet."""
    import duckdb

    from .duck import checked_memory_limit, tune
    from .sql import sql_path

    kb = load_knowledge()
    target = out_dir / "canonical"
    target.mkdir(parents=True, exist_ok=True)
    parquet = target / "administrations.parquet"
    con = duckdb.connect()
    try:
        con.execute(f"SET memory_limit = '{checked_memory_limit(memory_limit)}'")
        con.execute("SET preserve_insertion_order = false")
        con.execute(f"SET temp_directory = '{sql_path(out_dir / '.duckdb-tmp')}'")
        tune(con)
        select, staged = read_canonical(con, path, form, kb, site)
        con.execute(f"COPY ({select}) TO '{sql_path(parquet)}' (FORMAT parquet, COMPRESSION zstd)")
    finally:
        con.close()
    return Canonical(parquet, staged)


class _Reporter:
    """A progress bar with rows per second on a terminal; one JSON log line per event otherwise."""

    def __init__(self, total_rows: int | None, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.total = total_rows

    def progress(self, phase: str, done: float, seconds: float) -> None:
        if not self.tty:
            return
        rows = f"{self.total * done / max(seconds, 1e-9):,.0f} rows/s" if self.total else ""
        bar = "#" * int(done * 30)
        self.stream.write(f"\r{phase:9} [{bar:30}] {done:4.0%} {seconds:6.1f} s {rows}   ")
        self.stream.flush()

    def event(self, name: str, **fields: Any) -> None:
        if self.tty:
            self.stream.write("\r" + " " * 90 + "\r")
            details = ", ".join(f"{k} {v}" for k, v in fields.items())
            self.stream.write(f"{name}: {details}\n")
        else:
            self.stream.write(json.dumps({"event": name, **fields}, default=str) + "\n")
        self.stream.flush()


def run_audit(
    path: Path | str,
    out_dir: Path,
    *,
    engine: str = "duckdb",
    form: Form | None = None,
    memory_limit: str = "1GB",
    threads: int | None = None,
    on_event: Callable[[str], None] | None = None,
    site: Site | None = None,
    columns: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``columns``: a flat table's column mappings (``--column NAME=COLUMN``, ``flat.resolve_columns``)."""
    import duckdb

    from .duck import checked_memory_limit

    memory_limit = checked_memory_limit(memory_limit)  # a size, or exit 2: it goes into SQL
    try:
        return _run_audit(path, out_dir, engine, form, memory_limit, threads, site, columns)
    except (duckdb.IOException, duckdb.InvalidInputException) as exc:
        # the input cannot be read at all (no files, not UTF-8, not CSV or Parquet), or the output cannot be
        # written (a full disk): one line naming which, exit 2
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if str(out_dir.absolute()) in first or str(out_dir) in first:
            raise InputError("--out", f"cannot be written: {first}") from None
        raise InputError("INPUT", f"cannot be read: {first}") from None


def _run_audit(
    path: Path | str,
    out_dir: Path,
    engine: str,
    form: Form | None,
    memory_limit: str,
    threads: int | None,
    site: Site | None = None,
    columns: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    from .duck import clear_findings, parquet_reader

    if engine != "spark":  # a flat table's columns are checked before anything is written
        form = form or detect_form(Path(path))
        check_column_mappings(columns, form)
        if form == "flat":
            source = source_sql(Path(path), form, columns=columns)
    out_dir.mkdir(parents=True, exist_ok=True)
    clear_findings(out_dir / "findings.parquet")  # before the work: a folder of the user's stops the run
    started = time.monotonic()
    tolerance_step: dict[str, Any] | None = None  # the FHIR and OMOP readers decide tolerance (tolerance.py)
    if engine == "spark":  # Spark lists and reads the input where it is stored; the driver reads none of it
        try:
            from .spark import run_spark
        except ImportError as exc:
            raise InputError(
                "--engine", f"Spark is not installed ({exc}): pip install 'ketamine-cds[spark]'"
            ) from None
        reporter = _Reporter(None)
        reporter.event("audit.start", input=str(path), form=form, engine=engine, rows=None)
        run = run_spark(path, form, out_dir, site=site, memory_limit=memory_limit, columns=columns)
        form = form or run.form
        tolerance_step = run.tolerance.as_dict() if run.tolerance is not None else None
    else:
        if form is not None and form != "flat":  # read once: every later pass reads the canonical rows
            canonical = canonical_parquet(Path(path), form, out_dir, memory_limit, site)
            source = f"SELECT * FROM {parquet_reader(canonical.path)}"
            tolerance_step = canonical.tolerance.as_dict()
        reporter = _Reporter(_count(source))
        reporter.event("audit.start", input=str(path), form=form, engine=engine, rows=reporter.total)
        from .duck import run_duckdb

        run = run_duckdb(
            source, out_dir, memory_limit=memory_limit, threads=threads, progress=reporter.progress, site=site
        )
    about: dict[str, Any] = {
        "engine": engine,
        "form": form,
        "input": str(path),
        "decision_classes": run.classes,
        "engine_assessments": run.assessments,
        "site": site_json(site),
        **({"opioid_tolerance_step": tolerance_step} if tolerance_step is not None else {}),
    }
    summary = write_outputs(run.findings, out_dir, about, started)
    seconds = max(time.monotonic() - started, 1e-9)
    reporter.event(
        "audit.done",
        rows=run.rows,
        bad_rows=summary["bad_rows"],
        seconds=round(seconds, 2),
        rows_per_second=round(run.rows / seconds),
        out=str(out_dir),
    )
    return summary


def write_outputs(
    findings: Path, out_dir: Path, about: dict[str, Any], started: float | None = None
) -> dict[str, Any]:
    """From the findings: the unit exports (``departures/``), ``summary.json`` and ``report.html``.

    The summary holds ``duck.summary_rows``'s counts, the report's measures, departures and run charts
    (``summary.quality_summary``, the same numbers as the page) and ``about`` (engine, input...).
    """
    from .departures import EXPORT_DIR
    from .duck import summary_rows
    from .report import aggregate, write_html
    from .summary import quality_summary
    from .tolerance_report import tolerance_summary

    kb = load_knowledge()
    agg = aggregate(findings, kb, exports_to=out_dir / EXPORT_DIR)
    summary = summary_rows(findings)
    summary.update(quality_summary(agg))
    summary["opioid_tolerance"] = tolerance_summary(findings, kb)
    summary.update(about)
    if started is not None:
        summary["seconds"] = round(time.monotonic() - started, 2)
    summary["knowledge_base"] = {"version": kb.version, "digest": kb.digest}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    write_html(agg, summary, kb, out_dir / "report.html")
    return summary


def _count(source: str) -> int | None:
    import duckdb

    try:
        con = duckdb.connect()
        try:
            row = con.execute(f"SELECT count(*) FROM ({source})").fetchone()
        finally:
            con.close()
    except duckdb.Error:
        return None
    return int(row[0]) if row else None
