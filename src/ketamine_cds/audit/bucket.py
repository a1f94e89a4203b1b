"""What the tasks of a Spark audit do, all in DuckDB with the audit's own readers and SQL (``spark.py`` only
moves these Arrow batches between them).

1. Route: each record of the input gets the key of the bucket it belongs to, so that a bucket holds each
   patient's whole record (``fhir_ndjson.bucket_key_sql``: FHIR resources by patient reference;
   ``omop.bucket_rows_sql``: OMOP rows by ``person_id``); a record about no patient (a Location, a Medication,
   ``care_site``, ``concept``) has no key and goes to every bucket. A flat table needs no routing: any split
   will do, and each of its files is a bucket.
2. Audit a bucket: its records are written to a local folder as the form's files, the form's reader reads it
   (``forms.read_canonical``: the same reader, opioid tolerance per patient and day), and the audit's SQL
   measures the rows (``duck.measured_sql``: weight in kg, dose per kg, bands, decision class). Out come the
   measured rows, each bucket's representative of each class with the class's rows in the bucket
   (``class_rows``), and one row of facts about the bucket (``bucket_facts``: the tolerance step).
3. Merge the buckets' classes (``duck.classes_sql``: the smallest representative, rows added up); the driver
   decides the classes with the engine.
4. Findings: every measured row joined to its class's decision (``duck.findings_sql``).
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import duckdb
import pyarrow as pa

from .._kb import KnowledgeBase
from .._site import Site
from .canonical import COLUMNS
from .decide import thresholds
from .decisions import Decided, decide_classes
from .duck import (
    FINDINGS,
    REPRESENTATIVE,
    REPRESENTED,
    classes_sql,
    findings_sql,
    measured_sql,
    prepare,
    tune,
)
from .fhir_ndjson import bucket_key_sql, prescription_lines_sql, types_named
from .flat import flat_source
from .forms import Form, read_canonical
from .omop import bucket_rows_sql, table_columns, table_of
from .sql import sql_path
from .tolerance import Staged

# the measured rows a bucket hands on: the canonical columns, what the findings need, the class
MEASURED: Sequence[tuple[str, str]] = (
    *((name, kind) for name, kind, _ in COLUMNS),
    ("weight_kg", "DOUBLE"),
    ("dose_per_kg", "DOUBLE"),
    ("class_key", "BIGINT"),
    ("row_hash", "BIGINT"),
    ("context_key", "BIGINT"),  # on a row within a hair of a limit
    # on a bucket's representative of its class: the class's rows in the bucket
    ("class_rows", "BIGINT"),
    # on the one row of facts about a bucket (JSON), whose other columns are NULL
    ("bucket_facts", "VARCHAR"),
)
CLASSES: Sequence[tuple[str, str]] = (
    ("class_key", "BIGINT"),
    (
        "row",
        "STRUCT("
        + ", ".join(f"{n} {k}" for n, k, _ in COLUMNS if n in REPRESENTED)
        + ", row_hash BIGINT, context_key BIGINT)",
    ),
    ("n", "BIGINT"),
)
FINDINGS_COLUMNS: Sequence[tuple[str, str]] = tuple((name, kind) for name, kind, _ in FINDINGS)
# the measured columns the findings read
FINDINGS_INPUT: Sequence[str] = (*(v[2:] for _, _, v in FINDINGS if v.startswith("m.")), "class_key")
FHIR_LINES: Sequence[tuple[str, str]] = (("file", "VARCHAR"), ("line", "BLOB"))
ROUTED_LINES: Sequence[tuple[str, str]] = (*FHIR_LINES, ("key", "VARCHAR"))
PRESCRIPTIONS: Sequence[tuple[str, str]] = (("prescriptions", "BIGINT"),)
BATCH_ROWS = 65_536


@dataclass(frozen=True)
class Job:
    """What every task of one audit needs (broadcast once)."""

    form: Form
    kb: KnowledgeBase
    site: Site | None
    memory_limit: str = "1GB"  # DuckDB's, per task
    threads: int = 1  # DuckDB's, per task: the task's cores
    # the input's files: their location as Spark names it (``location_key``) -> the name the form's reader
    # gives it, relative to the input (its folders kept)
    files: Mapping[str, str] = field(default_factory=dict)
    tables: Sequence[str] = ()  # OMOP: the tables the input holds (every bucket has them, rows or not)
    omop_columns: Sequence[str] = ()  # OMOP: every column the reader takes from any table
    holds_prescriptions: bool | None = None  # FHIR: the whole export holds a MedicationRequest or Statement
    columns: Mapping[str, str] = field(
        default_factory=dict
    )  # flat: ``--column`` mappings (``resolve_columns``)


def location_key(location: str) -> str:
    """A file's location as Hadoop lists it (``file:/a b/x``) and as Spark's readers name it
    (``file:///a%20b/x``), made comparable."""
    parts = urlsplit(location)
    return f"{parts.scheme or 'file'}://{parts.netloc}{unquote(parts.path)}"


def _connect(job: Job, temp: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{job.memory_limit}'")
    con.execute(f"SET threads = {max(1, int(job.threads))}")
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"SET temp_directory = '{sql_path(temp / '.duckdb-tmp')}'")
    tune(con)
    return con


def _work_folder() -> Path:
    """A folder for one bucket on the executor's local disk (Spark tells its Python workers where)."""
    local = os.environ.get("SPARK_LOCAL_DIRS", "").split(",")[0] or None
    return Path(tempfile.mkdtemp(prefix="ketamine-cds-bucket-", dir=local))


def _batches(result: duckdb.DuckDBPyConnection) -> Iterator[pa.RecordBatch]:
    read = getattr(result, "to_arrow_reader", None) or result.fetch_record_batch
    yield from read(BATCH_ROWS)


def _select(columns: Sequence[tuple[str, str]], values: Mapping[str, str]) -> str:
    """A select list in a schema's order and types, NULL for a column not in ``values``."""
    return ", ".join(f"CAST({values.get(name, 'NULL')} AS {kind}) AS {name}" for name, kind in columns)


# --- 1. route -------------------------------------------------------------------------------------------


def route_fhir_lines(job: Job, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Lines (``file``: Spark's location, ``line``) with their file's name and their bucket key."""
    with tempfile.TemporaryDirectory() as temp:
        con = _connect(job, Path(temp))
        try:
            for batch in batches:
                files = [job.files[location_key(f)] for f in batch.column("file").to_pylist()]
                admin = ["MedicationAdministration" in types_named(PurePosixPath(f).name) for f in files]
                con.register(
                    "lines", pa.table({"file": files, "admin_file": admin, "line": batch.column("line")})
                )
                yield from _batches(con.execute(f"SELECT file, line, key FROM ({bucket_key_sql('lines')})"))
                con.unregister("lines")
        finally:
            con.close()


def count_fhir_prescriptions(job: Job, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """How many of the lines are prescriptions of some drug (``fhir_ndjson.prescription_lines_sql``)."""
    with tempfile.TemporaryDirectory() as temp:
        con = _connect(job, Path(temp))
        try:
            for batch in batches:
                con.register("lines", pa.table({"line": batch.column("line")}))
                yield from _batches(con.execute(prescription_lines_sql("lines")))
                con.unregister("lines")
        finally:
            con.close()


def route_omop_files(job: Job, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Whole table files (``path``, ``content``: Spark's binary file source) as rows of their table, each with
    its bucket key, in one wide schema (``table``, ``key``, every column the reader takes from any table)."""
    for batch in batches:
        for location, content in zip(
            batch.column("path").to_pylist(), batch.column("content").to_pylist(), strict=True
        ):
            name = job.files[location_key(location)]
            table = table_of(name)
            assert table is not None
            folder = _work_folder()
            try:
                local = folder / PurePosixPath(name).name
                local.write_bytes(content)
                con = _connect(job, folder)
                try:
                    values = {"table": f"'{table}'", "key": "key"}
                    values.update({c: c for c in table_columns(table)})
                    schema = omop_routed_schema(job)
                    yield from _batches(
                        con.execute(
                            f"SELECT {_select(schema, values)} FROM ({bucket_rows_sql(local, table)})"
                        )
                    )
                finally:
                    con.close()
            finally:
                shutil.rmtree(folder, ignore_errors=True)


def omop_routed_schema(job: Job) -> list[tuple[str, str]]:
    return [("table", "VARCHAR"), ("key", "VARCHAR"), *((c, "VARCHAR") for c in job.omop_columns)]


# --- 2. audit a bucket -----------------------------------------------------------------------------------


def audit_buckets(job: Job, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Routed records with their ``bucket`` (a task may hold several buckets, in any order): each bucket
    written to a local folder, read by the form's reader and measured (``MEASURED``)."""
    buckets: dict[int, _Bucket] = {}
    for batch in batches:
        numbers = batch.column("bucket").to_pylist()
        start = 0
        for end in range(1, len(numbers) + 1):
            if end < len(numbers) and numbers[end] == numbers[start]:
                continue
            if numbers[start] not in buckets:
                buckets[numbers[start]] = _Bucket(job, numbers[start])
            buckets[numbers[start]].add(batch.slice(start, end - start))
            start = end
    for number in sorted(buckets):
        yield from buckets.pop(number).audit()


class _Bucket:
    """One bucket's records, written as the form's files in a local folder as they arrive."""

    def __init__(self, job: Job, number: int) -> None:
        self.job, self.number = job, number
        self.folder = _work_folder()
        self.input = self.folder / "input"
        self.input.mkdir()
        self.handles: dict[str, io.BufferedIOBase] = {}
        self.parts = 0

    def add(self, rows: pa.RecordBatch) -> None:
        if self.job.form == "fhir":
            self._add_lines(rows)
        else:
            self._add_rows(rows)

    def _add_lines(self, rows: pa.RecordBatch) -> None:
        """FHIR: each line into a file of the name it had (the reader reads types and bad rows by it)."""
        for name, line in zip(rows.column("file").to_pylist(), rows.column("line").to_pylist(), strict=True):
            handle = self.handles.get(name)
            if handle is None:
                handle = self.handles[name] = self._open(name)
            handle.write(line)
            handle.write(b"\n")

    def _open(self, name: str) -> io.BufferedIOBase:
        path = self.input / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".gz"):  # compressed as it was (the reader takes the name for the compression)
            return gzip.open(path, "wb", compresslevel=1)
        return path.open("wb")

    def _add_rows(self, rows: pa.RecordBatch) -> None:
        """OMOP: each table's rows as Parquet parts of text columns (read back as the reader read them)."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        table = pa.Table.from_batches([rows])
        for name in sorted(set(table.column("table").to_pylist())):
            part = table.filter(pc.equal(table.column("table"), name))
            self._write_part(name, part.select(list(table_columns(name))), pq)

    def _write_part(self, table: str, rows: pa.Table, pq: Any) -> None:
        folder = self.input / table
        folder.mkdir(exist_ok=True)
        pq.write_table(rows, folder / f"part-{self.parts:05}.parquet")
        self.parts += 1

    def audit(self) -> Iterator[pa.RecordBatch]:
        try:
            for handle in self.handles.values():
                handle.close()
            if self.job.form == "omop":
                self._every_table()
            con = _connect(self.job, self.folder)
            try:
                if self.job.form == "flat":
                    raise AssertionError("a flat table is audited file by file (audit_flat_files)")
                select, staged = read_canonical(
                    con, self.input, self.job.form, self.job.kb, self.job.site, self.job.holds_prescriptions
                )
                yield from measure(con, select, self.job, staged)
            finally:
                con.close()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _every_table(self) -> None:
        """A table the input holds is in every bucket, with no rows if need be (the reader reads the
        vocabulary when the input has its tables, whatever rows a bucket got)."""
        import pyarrow.parquet as pq

        for table in self.job.tables:
            if not (self.input / table).is_dir():
                columns = table_columns(table)
                self._write_part(table, pa.table({c: pa.array([], pa.string()) for c in columns}), pq)


def audit_flat_files(job: Job, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """A flat table's files (``path``, ``content``), each one read by ``flat.flat_source`` and measured."""
    for batch in batches:
        for location, content in zip(
            batch.column("path").to_pylist(), batch.column("content").to_pylist(), strict=True
        ):
            folder = _work_folder()
            try:
                local = folder / PurePosixPath(job.files[location_key(location)]).name
                local.write_bytes(content)
                del content
                con = _connect(job, folder)
                try:
                    yield from measure(con, flat_source(local, job.columns), job, None)
                finally:
                    con.close()
            finally:
                shutil.rmtree(folder, ignore_errors=True)


def measure(
    con: duckdb.DuckDBPyConnection, source: str, job: Job, staged: Staged | None
) -> Iterator[pa.RecordBatch]:
    """The bucket's canonical rows (``source``) measured, each class's representative marked, then one row of
    facts about the bucket."""
    prepare(con, source, job.kb)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE measured AS {measured_sql(source, thresholds(job.kb, job.site))}"
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE representatives AS SELECT arg_min(rowid, {REPRESENTATIVE}) AS row_id, "
        "count(*) AS n FROM measured GROUP BY class_key"
    )
    # every row carries what its findings need; a class's representative also what the engine decides on
    values = {
        name: f"m.{name}" if name in FINDINGS_INPUT else f"CASE WHEN r.n IS NOT NULL THEN m.{name} END"
        for name, _ in MEASURED
    }
    values.update({"class_rows": "r.n", "bucket_facts": "NULL"})
    yield from _batches(
        con.execute(
            f"SELECT {_select(MEASURED, values)} FROM measured m LEFT JOIN representatives r ON r.row_id = m.rowid"
        )
    )
    facts = {"tolerance": staged.as_dict() if staged is not None else None}
    yield from _batches(
        con.execute(f"SELECT {_select(MEASURED, {'bucket_facts': '?'})}", [json.dumps(facts)])
    )


# --- 3. and 4. merge the classes, write the findings -----------------------------------------------------


def merge_classes(job: Job, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Several buckets' representatives of the classes (all of a class's in this task): one per class."""
    rows = [b for b in batches if b.num_rows]
    if not rows:
        return
    with tempfile.TemporaryDirectory() as temp:
        con = _connect(job, Path(temp))
        try:
            con.register("representatives", pa.Table.from_batches(rows))
            merged = classes_sql("SELECT * FROM representatives", rows="sum(class_rows)")
            yield from _batches(
                con.execute(f"SELECT {_select(CLASSES, {n: n for n, _ in CLASSES})} FROM ({merged})")
            )
        finally:
            con.close()


def write_findings(job: Job, decisions: bytes, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Measured rows (``FINDINGS_INPUT``) with their class's decision: the findings (``FINDINGS_COLUMNS``).
    ``decisions``: the decisions table as an Arrow IPC stream."""
    with tempfile.TemporaryDirectory() as temp:
        con = _connect(job, Path(temp))
        try:
            con.register("decisions", pa.ipc.open_stream(decisions).read_all())
            first = next(batches, None)
            if first is None:
                return
            rows = pa.RecordBatchReader.from_batches(first.schema, itertools.chain([first], batches))
            con.register("measured_rows", rows)  # one query streams the task's rows
            yield from _batches(con.execute(findings_sql("SELECT * FROM measured_rows", "decisions")))
        finally:
            con.close()


def facts_of(rows: Sequence[str]) -> Staged | None:
    """The buckets' facts added up: what the tolerance step did (None for a flat table)."""
    found = [json.loads(r)["tolerance"] for r in rows]
    steps = [Staged(**f) for f in found if f is not None]
    if not steps:
        return None
    return Staged(
        patients=sum(s.patients for s in steps),
        prescriptions=sum(s.prescriptions for s in steps),
        moments=sum(s.moments for s in steps),
        seconds=sum(s.seconds for s in steps),
        reading_seconds=sum(s.reading_seconds for s in steps),
    )


def decide_merged(
    merged: pa.Table, kb: KnowledgeBase, site: Site | None, temp: Path
) -> tuple[bytes, Decided]:
    """The driver's step: the engine's answer for each merged class (``merge_classes``' rows), as the Arrow
    stream ``write_findings`` takes; with the numbers of classes, assessments and rows. ``temp``: a folder on
    the driver for the classes while they are decided (the audit's output folder)."""
    con = duckdb.connect()
    try:
        con.register("merged_classes", merged)
        counts = decide_classes(con, "SELECT class_key, row, n FROM merged_classes", kb, site, temp=temp)
        decided = con.execute("SELECT * FROM decisions").to_arrow_table()
    finally:
        con.close()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, decided.schema) as stream:
        stream.write_table(decided)
    return sink.getvalue().to_pybytes(), counts
