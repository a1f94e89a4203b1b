"""The audit on Apache Spark: the same job as ``duck.py``, with the same findings, for data that live on a cluster.

The steps are DuckDB's (see ``decide.py``): per-row arithmetic only (weight in kg, dose per kg, how it compares
with its limit), rows grouped into decision classes by the same key columns, the engine ``decide()``s one real
row per class on the driver (the classes are few: thousands), and its answer is broadcast-joined back to every
row. ``findings.parquet`` has exactly DuckDB's columns, types and values; it is a folder of part files, which
DuckDB's ``read_parquet`` reads like a single file.

Input:

* ``flat``: read natively, CSV (every column a string; delimiter and quoting from DuckDB's CSV sniffer) or
  Parquet, with the rules of ``flat.py``: typed Parquet columns pass through, a missing column is empty, text
  is converted and what does not convert sets ``input_problem``. DuckDB's ``TRY_CAST`` is mirrored: numbers
  in DuckDB's syntax (``inf``, ``nan``, surrounding ASCII white space; not ``1_000``: ``flat.number_sql``), ``true``/``false`` in any case, its
  ``trim`` (Unicode space separators). Times: ``YYYY-MM-DD`` or ``YYYY/MM/DD`` with an optional ``[T ]HH:MM
  [:SS[.fraction]]`` and an optional offset (``Z``, ``+HH[:MM]``, `` UTC``), which DuckDB ignores and so do we;
  DuckDB's rarer forms (years before 1 or after 9999, ``epoch``, ``infinity``) are "not a time" here.
* ``fhir`` and ``omop``: their readers are DuckDB SQL (``fhir_ndjson.py``, ``omop.py``), so the driver first
  writes their canonical rows to ``out_dir/canonical/administrations.parquet`` with DuckDB
  (``run.canonical_parquet``) and Spark reads that. This is fine on one machine; on a cluster one would port those readers to Spark too,
  so that the resources are read in parallel where they are stored.

The Spark session is created once per process and reused by later calls (the JVM takes seconds to start); an
explicit ``master`` different from the running session's restarts it. Local mode binds to 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .._errors import InputError
from .._kb import KnowledgeBase, load_knowledge
from .._site import Site
from .canonical import COLUMN_NAMES, COLUMNS
from .decide import (
    BOUNDARY,
    CLASS_COLUMNS,
    decide,
    decision_row,
    limits,
    thresholds,
    unit_rows,
    weight_unit_rows,
)
from .duck import AuditRun, sql_path
from .flat import BOOLEAN, COMPARED, NUMERIC, resolve_columns

try:  # the spark extra: pip install 'ketamine-cds[spark]'
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql import functions as F
    from pyspark.sql import types as T
except ImportError as exc:  # pragma: no cover - exercised only without pyspark
    raise ImportError("the Spark engine needs pyspark: pip install 'ketamine-cds[spark]'") from exc

_SPARK_TYPES = {"VARCHAR": "string", "DOUBLE": "double", "BOOLEAN": "boolean", "TIMESTAMP": "timestamp_ntz"}

# DuckDB's trim removes Unicode space separators (category Zs) and nothing else (not tabs)
_ZS = " \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000"
# DuckDB's TRY_CAST(... AS DOUBLE) with ASCII white space around; digit groups joined by underscores ("7_0"),
# which DuckDB reads as 70, are refused (flat.number_sql)
_WS = r"[ \t\n\r\x0B\f]*"
_DIGITS = r"[0-9]+"
_NUMBER = rf"^{_WS}[+-]?(?:{_DIGITS}(?:\.(?:{_DIGITS})?)?|\.{_DIGITS})(?:[eE][+-]?{_DIGITS})?{_WS}$"
_INFINITY = rf"^{_WS}[+-]?(?i:inf|infinity){_WS}$"
_NAN = rf"^{_WS}[+-]?(?i:nan){_WS}$"
# DuckDB's TRY_CAST(... AS TIMESTAMP) for ISO-like times; the offset is accepted and ignored, as DuckDB does
_TIME = (
    r"^[ \t\n\r\x0B\f]*([0-9]{4})([-/])([0-9]{1,2})\2([0-9]{1,2})"
    r"(?:(?:T| +)([0-9]{1,2}):([0-9]{1,2})(?::([0-9]{1,2})(?:\.([0-9]*))?)?"
    r"(?:Z|[+-][0-9]{2}(?::?[0-9]{2}(?::?[0-9]{2})?)?| (?i:utc))?[ \t\n\r\x0B\f]*)?$"
)

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


def spark_session(master: str | None = None) -> SparkSession:
    """The process's Spark session: created on first use (quiet, no Hive, no UI), reused afterwards."""
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
    if threads is not None:  # one machine with no network: bind to the loopback, a few shuffle partitions
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = (
            builder.config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.sql.shuffle.partitions", str(max(2, threads)))
        )
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


# --- input -------------------------------------------------------------------------------------------------


def _zs_trim(column: Column) -> Column:
    """DuckDB's ``trim``; plain ``trim`` (spaces only, several times faster) when the text is all ASCII."""
    return F.when(F.octet_length(column) == F.length(column), F.trim(column)).otherwise(
        F.btrim(column, F.lit(_ZS))
    )


def _text(raw: Column) -> Column:
    return F.nullif(_zs_trim(raw), F.lit(""))


def _double(raw: Column) -> Column:
    digits = F.regexp_replace(raw, r"[ \t\n\r\x0B\f]", "")
    return (
        F.when(raw.rlike(_NUMBER), digits.try_cast("double"))
        .when(raw.rlike(_INFINITY), F.when(digits.startswith("-"), float("-inf")).otherwise(float("inf")))
        .when(raw.rlike(_NAN), F.lit(float("nan")))
    )


def _boolean(raw: Column) -> Column:
    word = F.lower(_zs_trim(raw))
    return F.when(word == "true", F.lit(True)).when(word == "false", F.lit(False))


def _timestamp(raw: Column) -> Column:
    def part(group: int) -> Column:
        return F.regexp_extract(raw, _TIME, group)

    hour, minute, second, fraction = part(5), part(6), part(7), part(8)
    day = F.concat_ws("-", part(1), part(3), part(4))
    clock = F.concat_ws(
        ":",
        F.when(hour == "", "0").otherwise(hour),
        F.when(minute == "", "0").otherwise(minute),
        F.when(second == "", "0").otherwise(second),
    )
    text = F.concat(day, F.lit(" "), clock, F.lit("."), F.rpad(F.substring(fraction, 1, 6), 6, "0"))
    # DuckDB reads 24:00:00 as midnight of the next day
    midnight = (hour == "24") & (F.regexp_replace(F.concat(minute, second, fraction), "0", "") == "")
    next_day = F.concat(day, F.lit(" 00:00:00")).try_cast("timestamp_ntz") + F.expr("INTERVAL 1 DAY")
    return F.when(raw.rlike(_TIME), F.when(midnight, next_day).otherwise(text.try_cast("timestamp_ntz")))


def _sniff_csv(path: Path) -> dict[str, str]:
    """Delimiter and quoting as DuckDB's ``read_csv`` detects them (the flat form's reference reader)."""
    import duckdb

    first = min(path.glob("*.csv")) if path.is_dir() else path
    options = {"sep": ",", "quote": '"', "escape": '"'}
    con = duckdb.connect()
    try:
        row = con.execute(
            "SELECT Delimiter, Quote, Escape FROM sniff_csv(?, header = true, all_varchar = true)",
            [str(first)],
        ).fetchone()
    except duckdb.Error:
        return options
    finally:
        con.close()
    if row is None:
        return options
    delimiter, quote, escape = (None if v in (None, "", "(empty)") else str(v) for v in row)
    options["sep"] = delimiter or ","
    options["quote"] = quote or ""  # an empty quote turns quoting off
    options["escape"] = escape or quote or "\\"
    return options


def _flat_files(path: Path) -> tuple[str, str]:
    """(format, path or glob) chosen as ``flat.flat_source`` chooses."""
    if path.is_dir():
        if any(path.glob("*.parquet")):
            return "parquet", str(path / "*.parquet")
        return "csv", str(path / "*.csv")
    return ("parquet" if str(path).endswith(".parquet") else "csv"), str(path)


def read_flat(spark: SparkSession, path: Path, mappings: Mapping[str, str] | None = None) -> DataFrame:
    """The flat table as canonical rows, with ``flat.py``'s column names (``resolve_columns``), casts and
    ``input_problem`` rules."""
    if not path.exists():
        raise InputError("INPUT", f"no such file or folder: {path}")
    fmt, files = _flat_files(path)
    if fmt == "parquet":
        raw = spark.read.parquet(files)
    else:
        raw = (
            spark.read.options(header=True, multiLine=True, inferSchema=False, mode="PERMISSIVE")
            .options(**_sniff_csv(path))
            .csv(files)
        )
        if raw.rdd.getNumPartitions() < spark.sparkContext.defaultParallelism:
            raw = raw.repartition(spark.sparkContext.defaultParallelism)
    fields = {f.name: f for f in raw.schema.fields}
    columns = resolve_columns(list(fields), mappings)  # as flat.py matches them
    selects, problems = [], []
    for name, kind, _ in COLUMNS:
        if name == "input_problem":
            continue
        if name not in columns:  # flat.py: a missing column is empty
            selects.append(F.lit(None).cast(_SPARK_TYPES[kind]).alias(name))
            continue
        value, problem = _flat_column(name, kind, fields[columns[name]])
        selects.append(value.alias(name))
        if problem is not None:
            problems.append(problem)
    return raw.select(*selects, F.coalesce(*problems, F.lit(None).cast("string")).alias("input_problem"))


def _flat_column(name: str, kind: str, field: T.StructField) -> tuple[Column, Column | None]:
    """One column as ``flat.flat_source`` reads it: (value, its ``input_problem`` or None).

    Parquet columns stored with the right type pass through (DuckDB's ``_TYPED``: integers and floats for
    numbers, booleans, timestamps and dates); anything else is read from its text, as DuckDB's
    ``TRY_CAST(CAST(x AS VARCHAR) AS ...)`` reads it.
    """
    column, data = F.col(f"`{field.name}`"), field.dataType
    text = column if isinstance(data, T.StringType) else column.cast("string")
    if name in NUMERIC:
        if isinstance(data, T.FloatType):  # its shortest text, as flat.py reads a float32: 15.05 stays 15.05
            return text.cast("double"), None
        if isinstance(data, T.NumericType) and not isinstance(data, T.DecimalType):
            return column.cast("double"), None
        value = _double(text)
        problem = F.when(
            _text(text).isNotNull() & value.isNull(), F.concat(F.lit(f"{name} is not a number: "), text)
        )
        return value, problem
    if name in BOOLEAN:
        if isinstance(data, T.BooleanType):
            return column, None
        value = _boolean(text)
        problem = F.when(
            _text(text).isNotNull() & value.isNull(), F.concat(F.lit(f"{name} is not true or false: "), text)
        )
        return value, problem
    if kind == "TIMESTAMP":
        if isinstance(data, T.TimestampNTZType | T.DateType):
            value = column.cast("timestamp_ntz")
        elif isinstance(data, T.TimestampType):
            # a time with a zone: DuckDB writes it as text in its local zone and reads it back without the
            # offset, i.e. local wall-clock time; Spark's session keeps the JVM's zone, the machine's, too
            value = column.cast("timestamp_ntz")
        else:
            value = _timestamp(text)
        problem = F.when(
            value.isNull(), F.concat(F.lit(f"{name} is not a time: "), F.coalesce(text, F.lit("missing")))
        )
        return value, problem
    if name in COMPARED:
        return _text(text), None
    return F.nullif(text, F.lit("")), None


def read_canonical(spark: SparkSession, parquet: Path) -> DataFrame:
    """Canonical rows already written by a DuckDB reader (FHIR, OMOP): types as ``canonical.COLUMNS``."""
    frame = spark.read.parquet(str(parquet))
    return frame.select(*(F.col(n).cast(_SPARK_TYPES[kind]).alias(n) for n, kind, _ in COLUMNS))


# --- the audit ---------------------------------------------------------------------------------------------


def _lookup_frame(spark: SparkSession, rows: list[tuple[Any, ...]], schema: str) -> DataFrame:
    return F.broadcast(spark.createDataFrame(rows, schema))


def _measured(spark: SparkSession, src: DataFrame, kb: KnowledgeBase, site: Site | None = None) -> DataFrame:
    """``duck._measured_sql`` in Spark: weight in kg, dose per kg and its band among the limits of its kind."""
    found = src.agg(F.collect_set("dose_unit").alias("d"), F.collect_set("weight_unit").alias("w")).first()
    doses, weights = (list(found["d"]), list(found["w"])) if found is not None else ([], [])
    units = _lookup_frame(
        spark,
        [(u.text, u.ok, u.mg_factor, u.per_kg, u.is_rate, u.is_volume) for u in unit_rows(doses)],
        "u_text string, u_ok boolean, u_factor double, per_kg boolean, is_rate boolean, is_volume boolean",
    )
    weight_units = _lookup_frame(spark, weight_unit_rows(weights), "w_text string, w_kg double")
    lim = limits(kb)
    c = F.col
    m = (
        src.join(units, c("dose_unit") == c("u_text"), "left")
        .join(weight_units, c("weight_unit") == c("w_text"), "left")
        .select(
            *(c(n) for n in COLUMN_NAMES),
            F.lower(_zs_trim(c("route"))).alias("route_n"),
            (c("weight_value") * c("w_kg")).alias("weight_kg"),
            F.coalesce(c("u_ok"), c("dose_unit").isNull()).alias("unit_ok"),
            "per_kg",
            "is_rate",
            "is_volume",
            F.when(c("is_volume"), c("dose_value") * c("u_factor") * c("concentration_mg_per_ml"))
            .otherwise(c("dose_value") * c("u_factor"))
            .alias("amount"),
        )
    )
    kind = F.nullif(F.lower(_zs_trim(c("kind"))), F.lit(""))
    infusion = F.coalesce(kind, F.when(c("is_rate"), "infusion").otherwise("bolus")) == "infusion"
    concentration = c("concentration_mg_per_ml")
    k = m.select(
        "*",
        F.when(c("per_kg"), c("amount"))
        .otherwise(_ieee_divide(c("amount"), c("weight_kg")))
        .alias("dose_per_kg"),
        F.when(c("per_kg"), c("amount") * c("weight_kg")).otherwise(c("amount")).alias("dose_amount"),
        infusion.alias("is_infusion"),
        c("weight_kg").isNotNull().alias("has_weight"),
        concentration.isNotNull().alias("has_concentration"),
        F.when(concentration.isNull(), "none")
        .when(
            F.isnan(concentration) | (F.abs(concentration) == float("inf")) | (concentration <= 0),
            "not-usable",
        )
        .otherwise("positive")
        .alias("concentration_sign"),
        F.when(~c("unit_ok"), F.concat(F.lit("unknown:"), c("dose_unit")))
        .when(c("dose_unit").isNull(), "none")
        .otherwise(
            F.concat(
                F.when(c("per_kg"), "per-kg").when(c("is_volume"), "volume").otherwise("mass"),
                F.when(c("is_rate"), "-rate").otherwise(""),
            )
        )
        .alias("dose_shape"),
        F.when(c("weight_value").isNull(), "none")
        .when(c("weight_kg").isNull(), "unknown-unit")
        .when(
            F.isnan("weight_kg")
            | (c("weight_kg") < F.lit(lim["min_weight_kg"] * (1 + BOUNDARY)))
            | (c("weight_kg") > F.lit(lim["max_weight_kg"] * (1 - BOUNDARY))),
            "impossible",
        )
        .otherwise("ok")
        .alias("weight_range"),
        F.when(c("dose_value").isNull(), "none")
        .when(F.isnan("dose_value") | (c("dose_value") <= 0), "not-positive")
        .when(c("dose_value") == float("inf"), "not-finite")
        .otherwise("positive")
        .alias("dose_sign"),
    )
    kinds = thresholds(kb, site)

    def by_kind(make: Callable[[str, list[float]], Column], name: str) -> Column:
        return F.when(c("is_infusion"), make(name, kinds[f"infusion{name}"])).otherwise(
            make(name, kinds[f"bolus{name}"])
        )

    near = by_kind(_at_threshold, "") | by_kind(_at_threshold, "_amount")
    keyed = (
        k.withColumn("dose_band", by_kind(_band, ""))
        .withColumn("amount_band", by_kind(_band, "_amount"))
        .withColumn("at_threshold", near)
        .withColumn("class_key", _class_key())
    )
    return keyed.select(*COLUMN_NAMES, "weight_kg", "dose_per_kg", "class_key")


_DOSE_COLUMN = {"": "dose_per_kg", "_amount": "dose_amount"}  # the dose per kg, or in mg (mg/h)


def _no_dose(column: str) -> Column:
    return F.col(column).isNull() | F.isnan(column)


def _band(name: str, limits: list[float]) -> Column:
    """``duck._band_sql``: how many of ``limits`` the dose (per kg, or in mg) is above."""
    column = _DOSE_COLUMN[name]
    above = [(F.col(column) > F.lit(t)).cast("int") for t in limits]
    total = sum(above[1:], above[0]) if above else F.lit(0)
    return F.when(_no_dose(column), F.lit(None).cast("int")).otherwise(total)


def _at_threshold(name: str, limits: list[float]) -> Column:
    """``duck._at_threshold_sql``: within a hair of one of ``limits``."""
    column = _DOSE_COLUMN[name]
    near = F.lit(False)
    for t in limits:
        near = near | (F.abs(F.col(column) - F.lit(t)) <= F.lit(BOUNDARY * t))
    return F.when(_no_dose(column), F.lit(False)).otherwise(F.coalesce(near, F.lit(False)))


def _ieee_divide(numerator: Column, denominator: Column) -> Column:
    """numerator / denominator as DuckDB (IEEE 754) divides doubles: x / 0 is +-inf or NaN, never an error."""
    negative_zero = denominator.cast("string").startswith("-")
    infinite = F.when(negative_zero, -numerator).otherwise(numerator)
    by_zero = (
        F.when(F.isnan(numerator) | (numerator == 0), F.lit(float("nan")))
        .when(infinite > 0, F.lit(float("inf")))
        .otherwise(F.lit(float("-inf")))
    )
    return (
        F.when(numerator.isNull(), F.lit(None).cast("double"))
        .when(denominator == 0, by_zero)
        .otherwise(F.try_divide(numerator, denominator))
    )


def _class_key() -> Column:
    """``duck._CLASS_KEY``'s values, hashed with a null flag each (Spark's hash skips nulls, so ``(x, NULL)``
    and ``(NULL, x)`` would otherwise collide)."""
    c = F.col
    at_limit = c("at_threshold")
    values: list[Column] = [c(n) for n in CLASS_COLUMNS]
    values += [
        F.when(at_limit, c("dose_value")),
        F.when(at_limit & c("is_volume"), c("concentration_mg_per_ml")),
        F.when(at_limit, c("weight_value")),
        F.when(at_limit, c("dose_unit")),
        F.when(at_limit, c("weight_unit")),
        F.when(c("weight_range").isin("impossible", "unknown-unit"), c("weight_value")),
        F.when(c("weight_range").isin("impossible", "unknown-unit"), c("weight_unit")),
        F.when(c("dose_sign").isin("not-positive", "not-finite"), c("dose_value")),
        F.when(c("concentration_sign") == "not-usable", c("concentration_mg_per_ml")),
    ]
    return F.xxhash64(*(x for v in values for x in (v.isNull(), v)))


def _decisions(
    spark: SparkSession, measured: DataFrame, kb: KnowledgeBase, site: Site | None = None
) -> tuple[DataFrame, int, int]:
    """One representative per class (the smallest admin_id, so reruns agree), decided by the engine."""
    representative = F.min_by(F.struct(*(F.col(n) for n in COLUMN_NAMES)), F.col("admin_id"))
    classes = (
        measured.groupBy("class_key")
        .agg(
            F.coalesce(representative, F.first(F.struct(*(F.col(n) for n in COLUMN_NAMES)))).alias("row"),
            F.count(F.lit(1)).alias("n"),
        )
        .collect()
    )
    decided = []
    rows = 0
    for cls in classes:
        decided.append((cls["class_key"], *decision_row(decide(cls["row"].asDict(), kb, site))))
        rows += int(cls["n"])
    frame = spark.createDataFrame(
        decided,
        "class_key bigint, verdict string, statements array<string>, dose_status string, problem string, "
        "limit_per_kg double, tolerance_used string, tolerance_unknown_reason string, limit_cap double, "
        "limit_from_site boolean, guideline_verdict string, guideline_dose_status string",
    )
    return F.broadcast(frame), len(classes), rows


_FINDINGS_TYPES: dict[str, list[tuple[str, str]]] = {}


def _findings_types(kb: KnowledgeBase) -> list[tuple[str, str]]:
    """The findings columns and their Spark types, read from DuckDB's own output on no rows (the reference),
    so that the two engines write the same schema; asked once per knowledge base."""
    import duckdb

    from .duck import run_duckdb

    key = kb.digest
    if key not in _FINDINGS_TYPES:
        empty = "SELECT " + ", ".join(f"CAST(NULL AS {kind}) AS {n}" for n, kind, _ in COLUMNS) + " LIMIT 0"
        with tempfile.TemporaryDirectory() as tmp:
            run = run_duckdb(empty, Path(tmp), kb=kb)
            con = duckdb.connect()
            try:
                described = con.execute(
                    f"DESCRIBE SELECT * FROM read_parquet('{sql_path(run.findings)}')"
                ).fetchall()
            finally:
                con.close()
        _FINDINGS_TYPES[key] = [(str(r[0]), _spark_type(str(r[1]))) for r in described]
    return _FINDINGS_TYPES[key]


def _spark_type(duck: str) -> str:
    if duck.endswith("[]"):
        return f"array<{_spark_type(duck[:-2])}>"
    if duck.startswith("DECIMAL"):
        return duck.lower()
    known = {**_SPARK_TYPES, "BIGINT": "bigint", "INTEGER": "int", "FLOAT": "float"}
    if duck not in known:
        raise TypeError(f"no Spark type for DuckDB's {duck}")
    return known[duck]


def _row_limits() -> dict[str, Column]:
    """``decide.ROW_LIMIT_SQL`` in Spark: each row's own limit for its weight (the tighter of the limit per kg
    and a site's cap in mg), its maximum for the weight, and whether the site's protocol set it."""
    c = F.col
    capped = c("limit_cap").isNotNull()
    by_weight = c("limit_per_kg") * c("weight_kg")
    return {
        "limit_per_kg": F.when(
            capped & (c("weight_kg") > 0), F.least(c("limit_per_kg"), c("limit_cap") / c("weight_kg"))
        ).otherwise(c("limit_per_kg")),
        "max_for_weight": F.when(
            capped & c("weight_kg").isNotNull(), F.least(by_weight, c("limit_cap"))
        ).otherwise(by_weight),
        "limit_source": F.when(c("limit_from_site").isNull(), F.lit(None).cast("string"))
        .when(
            c("limit_from_site") | (capped & c("weight_kg").isNotNull() & (c("limit_cap") < by_weight)),
            "site",
        )
        .otherwise("guideline"),
    }


def _findings_columns(kb: KnowledgeBase) -> list[Column]:
    computed: Mapping[str, Column] = {
        **_row_limits(),
        "opioid_tolerance": F.col("tolerance_used"),  # the engine's, as in DuckDB (not the row's word)
        "opioid_unknown_reason": F.col("tolerance_unknown_reason"),
    }
    return [computed.get(name, F.col(name)).cast(kind).alias(name) for name, kind in _findings_types(kb)]


def _tidy_output(folder: Path) -> None:
    """Only the Parquet part files stay (no checksums, no markers) so any Parquet reader takes the folder."""
    for entry in folder.iterdir():
        if entry.name.startswith((".", "_")) and entry.is_file():
            entry.unlink()


def run_spark(
    path: Path,
    form: str,
    out_dir: Path,
    *,
    master: str | None = None,
    kb: KnowledgeBase | None = None,
    site: Site | None = None,
    columns: Mapping[str, str] | None = None,
) -> AuditRun:
    """Audit ``path`` (form ``flat``, ``fhir`` or ``omop``; or ``canonical``, the Parquet ``run.canonical_parquet``
    wrote) on Spark; write ``out_dir/findings.parquet`` (a folder). ``columns``: a flat table's ``--column``
    mappings."""
    kb = kb or load_knowledge()
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    spark = spark_session(master)
    if form == "flat":
        src = read_flat(spark, path, columns)
    elif form in ("fhir", "omop"):
        from .run import canonical_parquet

        canonical = canonical_parquet(path, "fhir" if form == "fhir" else "omop", out_dir)
        src = read_canonical(spark, canonical.path)
    elif form == "canonical":  # FHIR or OMOP already read by ``run.canonical_parquet``
        src = read_canonical(spark, path)
    else:
        raise InputError("form", f"unknown input form {form!r} (flat, fhir or omop)")
    measured = _measured(spark, src, kb, site).persist()  # read by the classes and again by the findings
    try:
        decisions, classes, rows = _decisions(spark, measured, kb, site)
        findings = out_dir / "findings.parquet"
        if findings.is_file():
            findings.unlink()  # a DuckDB run's single file
        (
            measured.join(decisions, "class_key", "inner")
            .select(*_findings_columns(kb))
            .write.mode("overwrite")
            .option("compression", "zstd")
            .parquet(str(findings))
        )
    finally:
        measured.unpersist()
    _tidy_output(findings)
    return AuditRun(rows, classes, time.monotonic() - started, findings)
