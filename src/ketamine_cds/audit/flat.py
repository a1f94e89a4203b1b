"""The flat table form: one row per administration, the canonical columns, as CSV or Parquet."""

from __future__ import annotations

from collections.abc import Sequence
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


def _column_types(reader: str) -> dict[str, str]:
    import duckdb

    con = duckdb.connect()
    try:
        return {str(r[0]): str(r[1]) for r in con.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()}
    finally:
        con.close()


def flat_files(names: Sequence[str]) -> list[str]:
    """The files a folder's flat table is read from, by the names of the files directly in it: its Parquet
    files, else its CSV files (not hidden ones, ``forms.hidden``)."""
    from .forms import hidden

    shown = [n for n in names if not hidden(n)]
    parquet = sorted(n for n in shown if n.endswith(".parquet"))
    return parquet or sorted(n for n in shown if n.endswith(".csv"))


def flat_source(path: Path) -> str:
    """A SELECT yielding canonical rows from a flat CSV or Parquet file (or a folder of them).

    Columns that Parquet already stores with the right type pass through; text columns (all of a CSV) are
    converted, and a value that does not convert sets ``input_problem`` instead of silently becoming empty.
    """
    if path.is_dir():
        named = flat_files([p.name for p in path.iterdir() if p.is_file()])
        listed = "[" + ", ".join(f"'{_quote(path / name)}'" for name in named) + "]"
        files = listed if named else f"'{_quote(path / '*.csv')}'"  # none: DuckDB says no file was found
        parquet = bool(named) and named[0].endswith(".parquet")
    else:
        files, parquet = f"'{_quote(path)}'", str(path).endswith(".parquet")
    reader = f"read_parquet({files})" if parquet else f"read_csv({files}, header = true, all_varchar = true)"
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
            selects.append(f"TRY_CAST({raw} AS DOUBLE) AS {name}")
            problems.append(
                f"WHEN nullif(trim({raw}), '') IS NOT NULL AND TRY_CAST({raw} AS DOUBLE) IS NULL "
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
