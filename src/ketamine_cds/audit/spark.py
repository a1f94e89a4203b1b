"""The audit on Apache Spark: a distribution layer over the DuckDB audit, with the same findings.

Spark lists and reads the input where it is stored (any location Spark reads: a local folder, ``hdfs://``,
``s3a://``, ...), moves its records into buckets that keep each patient's data together, and runs the DuckDB
audit on each bucket in a task (``bucket.py``: the forms' own readers, the audit's own SQL). Nothing here
knows about units, numbers, times or FHIR; the driver reads nothing of the input but the decision classes.

1. List the input's files (Hadoop's file system, on the driver: names and sizes only) and tell its form
   (``forms.form_of``), and which of its files each form reads (``flat.flat_files``, ``fhir_ndjson.is_ndjson``,
   ``omop.table_files_in``).
2. Route and bucket. FHIR: the NDJSON files' lines (Spark's text source, split across tasks), each given the
   key of its patient (``bucket.route_fhir_lines``). OMOP: each table file (Spark's binary file source) read by
   the OMOP reader's rules, each row keyed by its ``person_id`` (``bucket.route_omop_files``). A record without
   a key (a Location, a ``concept``) goes to every bucket; the others to the bucket of their key's hash. One
   shuffle puts each bucket in a task of its own. A flat table needs neither: each file is a bucket.
3. Audit each bucket (``bucket.audit_buckets``, ``bucket.audit_flat_files``): the measured rows, kept on the
   executors' disks, each bucket's representative of each of its classes, and its facts.
4. Merge each class's representatives across buckets (``bucket.merge_classes``, in tasks), collect the classes
   (thousands) on the driver, decide them with the engine (``bucket.decide_merged``), broadcast the answers.
5. Findings: every measured row with its class's answer (``bucket.write_findings``), written by Spark as
   ``out/findings.parquet``, a folder of part files (DuckDB's ``read_parquet`` reads it like a file; so do
   ``summary.json`` and ``report.html``, made from it as for the DuckDB engine).

Executors need the package, DuckDB and pyarrow (``pip install 'ketamine-cds[spark]'``; README "The audit on
a Spark cluster"). ``out`` must be a folder the driver and the executors both reach (one machine, or a shared
file system). The Spark session is created once per process and reused by later calls (the JVM takes seconds
to start); an explicit ``master`` different from the running session's restarts it. Local mode binds to
127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .._errors import InputError
from .._kb import KnowledgeBase, load_knowledge
from .._site import Site
from .bucket import (
    CLASSES,
    FHIR_LINES,
    FINDINGS_COLUMNS,
    FINDINGS_INPUT,
    MEASURED,
    PRESCRIPTIONS,
    ROUTED_LINES,
    Job,
    audit_buckets,
    audit_flat_files,
    count_fhir_prescriptions,
    decide_merged,
    facts_of,
    location_key,
    merge_classes,
    omop_routed_schema,
    route_fhir_lines,
    route_omop_files,
    write_findings,
)
from .decisions import Decided
from .duck import AuditRun
from .forms import Form, check_column_mappings, form_of, hidden

try:  # the spark extra: pip install 'ketamine-cds[spark]'
    import pyarrow as pa
    from pyspark import StorageLevel
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql import functions as F
except ImportError as exc:  # pragma: no cover - exercised only without pyspark
    raise ImportError(
        "the Spark engine needs pyspark and pyarrow: pip install 'ketamine-cds[spark]'"
    ) from exc

_LOG4J2 = """\
rootLogger.level = error
logger.repl.name = org.apache.spark.api.python.PythonGatewayServer
logger.repl.level = error
rootLogger.appenderRef.stderr.ref = stderr
appender.console.type = Console
appender.console.name = stderr
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
"""


# --- the session -------------------------------------------------------------------------------------------


def configured_master(master: str | None = None) -> str:
    """The argument, else ``SPARK_MASTER``, else ``spark.master`` (PYSPARK_SUBMIT_ARGS, spark-defaults.conf),
    else ``local[*]``."""
    if master:
        return master
    if os.environ.get("SPARK_MASTER"):
        return os.environ["SPARK_MASTER"]
    args = shlex.split(os.environ.get("PYSPARK_SUBMIT_ARGS", ""))
    for i, arg in enumerate(args):
        if arg == "--master" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--master="):
            return arg.split("=", 1)[1]
        if arg == "--conf" and i + 1 < len(args) and args[i + 1].startswith("spark.master="):
            return args[i + 1].split("=", 1)[1]
    conf_dir = os.environ.get("SPARK_CONF_DIR") or (
        str(Path(os.environ["SPARK_HOME"]) / "conf") if os.environ.get("SPARK_HOME") else None
    )
    if conf_dir and (Path(conf_dir) / "spark-defaults.conf").is_file():
        for line in (Path(conf_dir) / "spark-defaults.conf").read_text().splitlines():
            parts = line.strip().split(None, 1)
            if len(parts) == 2 and parts[0] == "spark.master":
                return parts[1].strip()
    return "local[*]"


def _local_threads(master: str) -> int | None:
    """Worker threads of a local master (``local``, ``local[4]``, ``local[*]``), None for a cluster."""
    match = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\s*\d+)?\])?", master.strip())
    if match is None:
        return None
    count = match.group(1)
    if count == "*":
        return os.cpu_count() or 1
    return int(count) if count else 1


def _on_loopback(master: str) -> bool:
    """A standalone master on this machine's loopback (``spark://127.0.0.1:7077``)."""
    return re.fullmatch(r"spark://(127\.0\.0\.1|localhost):\d+", master.strip()) is not None


def spark_session(master: str | None = None, settings: Mapping[str, str] | None = None) -> SparkSession:
    """The process's Spark session: created on first use (quiet, no Hive, no UI), reused afterwards.
    ``settings``: more Spark settings for a new session (``spark.executor.memory``, ...)."""
    chosen = configured_master(master)
    active = SparkSession.getActiveSession()
    if active is not None:
        if master is None or active.sparkContext.master == chosen:
            return active
        active.stop()
    threads = _local_threads(chosen)
    builder = (
        SparkSession.builder.master(chosen)
        .appName("ketamine-cds audit")
        .config("spark.sql.catalogImplementation", "in-memory")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.parquet.compression.codec", "zstd")
        .config("spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs", "false")
    )
    if threads is not None or _on_loopback(chosen):  # one machine, no network: the driver on the loopback
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = builder.config("spark.driver.host", "127.0.0.1").config(
            "spark.driver.bindAddress", "127.0.0.1"
        )
    if threads is not None:  # the tasks run this interpreter; a few shuffle partitions
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = builder.config("spark.sql.shuffle.partitions", str(max(2, threads)))
    for key, value in (settings or {}).items():
        builder = builder.config(key, value)
    if "spark.driver.extraJavaOptions" not in os.environ.get("PYSPARK_SUBMIT_ARGS", ""):
        builder = builder.config(
            "spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={_log_config()}"
        )
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _log_config() -> Path:
    path = Path(tempfile.gettempdir()) / "ketamine-cds-spark-log4j2.properties"
    if not path.exists() or path.read_text() != _LOG4J2:
        path.write_text(_LOG4J2)
    return path


# --- moving Arrow batches ---------------------------------------------------------------------------------

_TYPES = {
    "VARCHAR": "string",
    "DOUBLE": "double",
    "BOOLEAN": "boolean",
    "TIMESTAMP": "timestamp_ntz",
    "BIGINT": "bigint",
    "INTEGER": "int",
    "BLOB": "binary",
}
BUCKETS_SETTING = "spark.ketamine_cds.buckets"  # how many buckets (default: from the cores and the input)
BUCKET_BYTES = 128 * 1024 * 1024  # default: a bucket per this much input, at least one per core


def _spark_type(duck: str) -> str:
    """A column type of ``bucket.py``'s schemas in Spark's DDL."""
    if duck.endswith("[]"):
        return f"array<{_spark_type(duck[:-2])}>"
    if duck.startswith("STRUCT("):
        fields = re.findall(r"(\w+) (\w+(?:\[\])?)(?:, |\)$)", duck[len("STRUCT(") :])
        return "struct<" + ", ".join(f"{n}: {_spark_type(t)}" for n, t in fields) + ">"
    return _TYPES[duck]


def _schema(columns: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"`{name}` {_spark_type(kind)}" for name, kind in columns)


def _in_tasks(
    frame: DataFrame,
    work: Callable[[Job, Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]],
    job: Any,
    schema: Sequence[tuple[str, str]],
) -> DataFrame:
    """``work(job, batches)`` on each partition of ``frame`` (``job``: a broadcast ``Job``)."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return work(job.value, batches)

    return frame.mapInArrow(run, _schema(schema))


# --- the input -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listing:
    """An input's files as Hadoop's file system lists them: (name relative to the input, location, bytes)."""

    is_dir: bool
    files: list[tuple[str, str, int]]

    def entries(self) -> list[str]:
        """The names of the folder's own entries (files and folders)."""
        return sorted({PurePosixPath(name).parts[0] for name, _, _ in self.files})

    def located(self, names: Sequence[str]) -> list[str]:
        """The files' locations for Spark's readers, each read literally (``_literal``)."""
        where = {name: location for name, location, _ in self.files}
        return [_literal(where[name]) for name in names]


def _literal(location: str) -> str:
    """A listed file's location as Spark's readers take it: they read a location as a Hadoop glob, so each
    character the glob gives a meaning is escaped (a file named ``data[1].csv`` is read, never ``data1.csv``)."""
    return re.sub(r"([\\\[\]{}*?])", r"\\\1", location)


def _location(given: str | Path) -> str:
    """A local path as a ``file:`` location, as written (Hadoop's path quotes what a URI cannot hold: a
    space, ``[``, ``%``); any other location (``hdfs://...``) as it is."""
    text = str(given)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text) or text.startswith("file:"):
        return text
    return "file://" + str(Path(text).resolve())


def _listing(spark: SparkSession, location: str) -> Listing:
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    path = jvm.org.apache.hadoop.fs.Path(location)
    system = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if not system.exists(path):
        raise InputError("INPUT", f"no such file or folder: {location}")
    status = system.getFileStatus(path)
    root = str(status.getPath().toString())
    if not status.isDirectory():
        return Listing(False, [(PurePosixPath(root).name, root, int(status.getLen()))])
    found, files = system.listFiles(status.getPath(), True), []
    while found.hasNext():
        entry = found.next()
        where = str(entry.getPath().toString())
        files.append((where[len(root) :].lstrip("/"), where, int(entry.getLen())))
    return Listing(True, sorted(files))


def _input_error(exc: Exception) -> InputError | None:
    """A task's error about the input: DuckDB's reading it (not CSV, not UTF-8, ...), or the reader's own
    (a flat table's unknown column), said as the DuckDB engine says it."""
    said = re.search(r"ketamine_cds\._errors\.InputError: ([^\n]+)", str(exc))
    if said:
        return InputError("", said.group(1).strip())
    found = re.search(r"duckdb\.(?:IOException|InvalidInputException): ([^\n]+)", str(exc))
    return InputError("INPUT", f"cannot be read: {found.group(1).strip()}") if found else None


# --- buckets ---------------------------------------------------------------------------------------------


def _bucket_count(spark: SparkSession, listing: Listing, chosen: Sequence[str]) -> int:
    setting = spark.conf.get(BUCKETS_SETTING, None)
    if setting:
        return max(1, int(setting))
    size = sum(n for name, _, n in listing.files if name in set(chosen))
    return max(spark.sparkContext.defaultParallelism, math.ceil(size / BUCKET_BYTES))


def _partition_values(spark: SparkSession, count: int) -> list[int]:
    """For each of ``count`` partitions, a bucket number that Spark's hash partitioning puts there, so that
    each bucket has a task of its own."""
    found: dict[int, int] = {}
    span = 16 * count
    while len(found) < count:
        probe = spark.range(span - 16 * count, span).select(
            F.col("id").cast("int").alias("v"),
            F.pmod(F.hash(F.col("id").cast("int")), F.lit(count)).alias("p"),
        )
        for row in probe.collect():
            found.setdefault(int(row["p"]), int(row["v"]))
        span += 16 * count
    return [found[p] for p in range(count)]


def _bucketed(spark: SparkSession, routed: DataFrame, count: int) -> DataFrame:
    """Routed records (``key``) in their buckets: a keyed record in one (by its key's hash), one without a
    key in every bucket; each bucket in a partition of its own."""
    values = _partition_values(spark, count)
    every: Column = F.array(*(F.lit(v) for v in values))
    one = F.array(F.element_at(every, (F.pmod(F.xxhash64("key"), F.lit(count)) + 1).cast("int")))
    bucketed = routed.withColumn("bucket", F.explode(F.when(F.col("key").isNull(), every).otherwise(one)))
    return bucketed.drop("key").repartition(count, "bucket")


# --- the audit ---------------------------------------------------------------------------------------------


def run_spark(
    path: str | Path,
    form: Form | None,
    out_dir: Path,
    *,
    master: str | None = None,
    kb: KnowledgeBase | None = None,
    site: Site | None = None,
    memory_limit: str = "1GB",
    columns: Mapping[str, str] | None = None,
) -> AuditRun:
    """Audit the input at ``path`` (a local path, or any location Spark reads) on Spark: write
    ``out_dir/findings.parquet`` (a folder). ``form``: flat, fhir or omop (None: detected);
    ``memory_limit``: DuckDB's in each task; ``columns``: a flat table's column mappings."""
    kb = kb or load_knowledge()
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    spark = spark_session(master)
    listing = _listing(spark, _location(path))
    form = form or form_of(listing.entries(), listing.is_dir)
    check_column_mappings(columns, form)
    job = Job(
        form,
        kb,
        site,
        memory_limit,
        threads=int(spark.conf.get("spark.task.cpus", "1") or 1),
        files={location_key(where): name for name, where, _ in listing.files},
        columns=dict(columns or {}),
    )
    try:
        measured, job = _measured(spark, listing, job)
        measured = measured.persist(StorageLevel.DISK_ONLY)  # read by the classes and again by the findings
        try:
            findings, counts, tolerance = _audit(spark, measured, job, out_dir)
        finally:
            measured.unpersist()
    except InputError:
        raise
    except Exception as exc:  # a task could not read the input (Spark wraps DuckDB's error)
        error = _input_error(exc)
        if error is None:
            raise
        raise error from None
    seconds = time.monotonic() - started
    return AuditRun(
        counts.rows, counts.classes, seconds, findings, tolerance, form, assessments=counts.assessments
    )


def _measured(spark: SparkSession, listing: Listing, job: Job) -> tuple[DataFrame, Job]:
    """The input read, bucketed and audited bucket by bucket (``bucket.MEASURED`` rows)."""
    if job.form == "flat":
        from .flat import flat_files

        names = [n for n, _, _ in listing.files]
        chosen = flat_files([n for n in names if "/" not in n]) if listing.is_dir else names
        if not listing.is_dir and hidden(names[0]):
            raise InputError("INPUT", f"cannot be read: Spark does not read a file named {names[0]!r}")
        files = _binary_files(spark, listing, chosen)
        return _in_tasks(files, audit_flat_files, spark.sparkContext.broadcast(job), MEASURED), job
    if job.form == "fhir":
        from .fhir_ndjson import is_ndjson, may_hold_drugs

        chosen = [n for n, _, _ in listing.files if is_ndjson(PurePosixPath(n).name)]
        drugs = [n for n in chosen if may_hold_drugs(PurePosixPath(n).name)]
        holds = bool(drugs) and _any_prescription(spark, listing, drugs, job)
        job = dataclasses.replace(job, holds_prescriptions=holds)
        shared = spark.sparkContext.broadcast(job)
        routed = _in_tasks(_lines(spark, listing, chosen), route_fhir_lines, shared, ROUTED_LINES)
    else:
        from .omop import TABLES, table_columns, table_files_in

        names = [n for n, _, _ in listing.files]
        by_table = {t: table_files_in(names, t) for t in TABLES}
        chosen = [n for files in by_table.values() for n in files]
        columns = sorted({c for t in TABLES for c in table_columns(t)})
        job = dataclasses.replace(job, tables=[t for t, f in by_table.items() if f], omop_columns=columns)
        shared = spark.sparkContext.broadcast(job)
        routed = _in_tasks(
            _binary_files(spark, listing, chosen), route_omop_files, shared, omop_routed_schema(job)
        )
    buckets = _bucketed(spark, routed, _bucket_count(spark, listing, chosen))
    return _in_tasks(buckets, audit_buckets, shared, MEASURED), job


def _lines(spark: SparkSession, listing: Listing, names: Sequence[str]) -> DataFrame:
    if not names:
        raise InputError("INPUT", "cannot be read: no NDJSON file found")
    text = spark.read.text(listing.located(names))
    return text.select(
        F.col("_metadata.file_path").alias(FHIR_LINES[0][0]), F.col("value").cast("binary").alias("line")
    )


def _binary_files(spark: SparkSession, listing: Listing, names: Sequence[str]) -> DataFrame:
    if not names:
        raise InputError("INPUT", "cannot be read: no file of the input's form found")
    files = spark.read.format("binaryFile").load(listing.located(names))
    return files.select("path", "content")


def _any_prescription(spark: SparkSession, listing: Listing, names: Sequence[str], job: Job) -> bool:
    """Whether the export holds a prescription of any drug (it can tell opioid use): stops at the first."""
    shared = spark.sparkContext.broadcast(job)
    counted = _in_tasks(_lines(spark, listing, names), count_fhir_prescriptions, shared, PRESCRIPTIONS)
    return counted.where(F.col("prescriptions") > 0).limit(1).count() > 0


def _audit(spark: SparkSession, measured: DataFrame, job: Job, out_dir: Path) -> tuple[Path, Decided, Any]:
    """Classes merged and decided on the driver, findings written by the executors."""
    shared = spark.sparkContext.broadcast(job)
    representatives = measured.where(F.col("class_rows").isNotNull()).drop("bucket_facts")
    merged = _in_tasks(
        representatives.repartition(spark.sparkContext.defaultParallelism, "class_key"),
        merge_classes,
        shared,
        CLASSES,
    )
    found = merged.toArrow()
    facts = [r[0] for r in measured.where(F.col("bucket_facts").isNotNull()).select("bucket_facts").collect()]
    decided, counts = decide_merged(found, job.kb, job.site, out_dir)
    decisions = spark.sparkContext.broadcast(decided)

    def findings_of(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return write_findings(shared.value, decisions.value, batches)

    findings = out_dir / "findings.parquet"
    if findings.is_file():
        findings.unlink()  # a DuckDB run's single file
    rows_only = measured.where(F.col("bucket_facts").isNull()).select(*FINDINGS_INPUT)
    (
        rows_only.mapInArrow(findings_of, _schema(FINDINGS_COLUMNS))
        .write.mode("overwrite")
        .option("compression", "zstd")
        .parquet(findings.resolve().as_uri())
    )
    _tidy_output(findings)
    return findings, counts, facts_of(facts)


def _tidy_output(folder: Path) -> None:
    """Only the Parquet part files stay (no checksums, no markers) so any Parquet reader takes the folder."""
    for entry in folder.iterdir():
        if entry.name.startswith((".", "_")) and entry.is_file():
            entry.unlink()
