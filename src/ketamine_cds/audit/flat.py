"""The flat table form: one row per administration, the canonical columns, as CSV or Parquet."""

from __future__ import annotations

from pathlib import Path

from .canonical import COLUMNS

NUMERIC = {"dose_value", "concentration_mg_per_ml", "weight_value"}
BOOLEAN = {"prior_iv_ketamine", "pca_sole_agent"}


def _quote(path: Path) -> str:
    return str(path).replace("'", "''")


_TYPED = {
    "DOUBLE": {
        "DOUBLE",
        "FLOAT",
        "INTEGER",
        "BIGINT",
        "SMALLINT",
        "TINYINT",
        "HUGEINT",
        "UINTEGER",
        "UBIGINT",
    },
    "BOOLEAN": {"BOOLEAN"},
    "TIMESTAMP": {"TIMESTAMP", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S", "DATE"},
}
COMPARED = {
    "route",
    "kind",
    "dose_unit",
    "weight_unit",
    "setting",
    "indication",
    "procedure_class",
    "conditions",
    "opioid_tolerance",
}


def number_sql(text: str) -> str:
    """A number read from text as DuckDB's ``TRY_CAST(... AS DOUBLE)`` reads it, except that a digit separator is
    refused (NULL): DuckDB reads "7_0" as 70 and "0_3" as 3, which no one means by a weight or a dose."""
    return f"CASE WHEN contains({text}, '_') THEN NULL ELSE TRY_CAST({text} AS DOUBLE) END"


def _column_types(reader: str) -> dict[str, str]:
    import duckdb

    con = duckdb.connect()
    try:
        return {str(r[0]): str(r[1]) for r in con.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()}
    finally:
        con.close()


def flat_source(path: Path) -> str:
    """A SELECT yielding canonical rows from a flat CSV or Parquet file (or a folder of them).

    Columns that Parquet already stores with the right type pass through; text columns (all of a CSV) are
    converted, and a value that does not convert sets ``input_problem`` instead of silently becoming empty.
    """
    files = path / "*.parquet" if path.is_dir() and any(path.glob("*.parquet")) else path
    if path.is_dir() and not any(path.glob("*.parquet")):
        files = path / "*.csv"
    if str(files).endswith(".parquet"):
        reader = f"read_parquet('{_quote(files)}')"
    else:
        reader = f"read_csv('{_quote(files)}', header = true, all_varchar = true)"
    types = _column_types(reader)
    selects, problems = [], []
    for name, kind, _ in COLUMNS:
        if name == "input_problem":
            continue
        if name not in types:
            selects.append(f"CAST(NULL AS {kind}) AS {name}")
            continue
        typed = kind in _TYPED and types[name] in _TYPED[kind]
        raw = f"CAST({name} AS VARCHAR)"
        if typed and types[name] == "FLOAT":  # a float32 is read as its shortest text: 15.05 stays 15.05
            selects.append(f"CAST({raw} AS DOUBLE) AS {name}")
        elif typed:
            selects.append(f"CAST({name} AS {kind}) AS {name}")
        elif name in NUMERIC:
            selects.append(f"{number_sql(raw)} AS {name}")
            problems.append(
                f"WHEN nullif(trim({raw}), '') IS NOT NULL AND {number_sql(raw)} IS NULL "
                f"THEN '{name} is not a number: ' || {raw}"
            )
        elif name in BOOLEAN:  # true or false (any case, trimmed); anything else is not guessed
            word = f"lower(trim({raw}))"
            selects.append(f"CASE {word} WHEN 'true' THEN true WHEN 'false' THEN false END AS {name}")
            problems.append(
                f"WHEN nullif(trim({raw}), '') IS NOT NULL AND {word} NOT IN ('true', 'false') "
                f"THEN '{name} is not true or false: ' || {raw}"
            )
        elif kind == "TIMESTAMP":
            selects.append(f"{_calendar_time(f'TRY_CAST({raw} AS TIMESTAMP)')} AS {name}")
        elif name in COMPARED:
            selects.append(f"nullif(trim({raw}), '') AS {name}")
        else:
            selects.append(f"nullif({raw}, '') AS {name}")
        if kind == "TIMESTAMP":
            value = _calendar_time(name if typed else f"TRY_CAST({raw} AS TIMESTAMP)")
            problems.append(
                f"WHEN {value} IS NULL THEN 'administered_at is not a time: ' || coalesce({raw}, 'missing')"
            )
    problem = (
        "CASE " + " ".join(problems) + " END" if problems else "CAST(NULL AS VARCHAR)"
    ) + " AS input_problem"
    return f"SELECT {', '.join(selects)}, {problem} FROM {reader}"


def _calendar_time(value: str) -> str:
    """A time of the calendar Python and Spark know (years 1 to 9999), else NULL: DuckDB also reads
    10000-01-01, infinity and epoch-like words, which would then fail the report or disagree with Spark."""
    return f"CASE WHEN isfinite({value}) AND year({value}) BETWEEN 1 AND 9999 THEN {value} END"
