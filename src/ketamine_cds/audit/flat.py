"""The flat table form: one row per administration, the canonical columns, as CSV or Parquet."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from .._errors import InputError
from .canonical import COLUMNS
from .sql import read_path

NUMERIC = {"dose_value", "concentration_mg_per_ml", "weight_value"}
BOOLEAN = {"prior_iv_ketamine", "pca_sole_agent"}


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


# The columns a flat table may have: the canonical ones, but for input_problem (the readers' own)
FLAT_COLUMNS = tuple(name for name, _, _ in COLUMNS if name != "input_problem")
LEAVE_OUT = "-"  # --column NAME=- : a column of the input that is not read


def parse_column_mappings(items: Iterable[str]) -> dict[str, str]:
    """``--column NAME=COLUMN`` options as {input column: canonical column, or "-" to leave it out}."""
    found: dict[str, str] = {}
    for item in items:
        name, sep, column = item.partition("=")
        name, column = name.strip(), column.strip()
        if not sep or not name or not column:
            raise InputError(
                "--column", f"expected NAME=COLUMN (or NAME=- to leave a column out), not {item!r}"
            )
        if name in found:
            raise InputError("--column", f"the column {name!r} is mapped twice")
        if column != LEAVE_OUT:
            canonical = {c.lower(): c for c in FLAT_COLUMNS}.get(column.lower())
            if canonical is None:
                raise InputError(
                    "--column",
                    f"{column!r} is not a column of the flat table (one of: {', '.join(FLAT_COLUMNS)}; or - to "
                    "leave the column out)",
                )
            column = canonical
        found[name] = column
    return found


def resolve_columns(found: Sequence[str], mappings: Mapping[str, str] | None = None) -> dict[str, str]:
    """{canonical column: the input's column} for a flat table with columns ``found``, as both engines read it.

    A column is the canonical one whose name it is, ignoring case and surrounding spaces (``WEIGHT_VALUE`` is
    ``weight_value``), or the one ``mappings`` names for it (``--column weight_kg=weight_value``; ``-``: not
    read). A column neither names is refused, naming it and the columns expected: a misspelt ``weight_kg``
    must not leave every weight empty without a word. So is a canonical column named twice."""
    mappings = dict(mappings or {})
    exact = set(found)
    by_lower: dict[str, list[str]] = {}
    for name in found:
        by_lower.setdefault(name.strip().lower(), []).append(name)
    mapped: dict[str, str] = {}  # input column -> canonical or "-"
    for name, column in mappings.items():
        matches = [name] if name in exact else by_lower.get(name.strip().lower(), [])
        if len(matches) != 1:
            raise InputError(
                "--column",
                f"no column {name!r} in the input"
                if not matches
                else f"{name!r} names {len(matches)} columns",
            )
        mapped[matches[0]] = column
    canonical = {c.lower(): c for c in FLAT_COLUMNS}
    columns: dict[str, list[str]] = {}
    unknown: list[str] = []
    for name in found:
        named = mapped.get(name) or canonical.get(name.strip().lower())
        if named is None:
            unknown.append(name)
        elif named != LEAVE_OUT:
            columns.setdefault(named, []).append(name)
    if unknown:
        raise InputError(
            "INPUT",
            f"unknown column{'s' if len(unknown) > 1 else ''} {', '.join(repr(u) for u in unknown)} in the flat "
            f"table (expected: {', '.join(FLAT_COLUMNS)}); map one with --column NAME=COLUMN, or leave it out "
            "with --column NAME=-",
        )
    for column, names in columns.items():
        if len(names) > 1:
            raise InputError(
                "INPUT",
                f"the columns {' and '.join(repr(n) for n in names)} both name {column!r}: which one holds it "
                f"cannot be told (leave one out with --column {names[-1]}=-)",
            )
    return {column: names[0] for column, names in columns.items()}


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


def flat_files(names: Sequence[str]) -> list[str]:
    """The files a folder's flat table is read from, by the names of the files directly in it: its Parquet
    files, else its CSV files (not hidden ones, ``forms.hidden``)."""
    from .forms import hidden

    shown = [n for n in names if not hidden(n)]
    parquet = sorted(n for n in shown if n.endswith(".parquet"))
    return parquet or sorted(n for n in shown if n.endswith(".csv"))


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def flat_source(path: Path, mappings: Mapping[str, str] | None = None) -> str:
    """A SELECT yielding canonical rows from a flat CSV or Parquet file (or a folder of them).

    Its columns are matched to the canonical ones by ``resolve_columns`` (case ignored, ``mappings`` from
    ``--column``, an unknown column refused). Columns that Parquet already stores with the right type pass
    through; text columns (all of a CSV) are converted, and a value that does not convert sets
    ``input_problem`` instead of silently becoming empty.
    """
    if path.is_dir():
        named = flat_files([p.name for p in path.iterdir() if p.is_file()])
        listed = "[" + ", ".join(read_path(path / name) for name in named) + "]"
        files = listed if named else read_path(path, "*.csv")  # none: DuckDB says no file was found
        parquet = bool(named) and named[0].endswith(".parquet")
    else:
        files, parquet = read_path(path), path.name.endswith(".parquet")
    reader = f"read_parquet({files})" if parquet else f"read_csv({files}, header = true, all_varchar = true)"
    found = _column_types(reader)
    columns = resolve_columns(list(found), mappings)
    selects, problems = [], []
    for name, kind, _ in COLUMNS:
        if name == "input_problem":
            continue
        if name not in columns:
            selects.append(f"CAST(NULL AS {kind}) AS {name}")
            continue
        column = _identifier(columns[name])
        written = found[columns[name]]
        typed = kind in _TYPED and written in _TYPED[kind]
        raw = f"CAST({column} AS VARCHAR)"
        if typed and written == "FLOAT":  # a float32 is read as its shortest text: 15.05 stays 15.05
            selects.append(f"CAST({raw} AS DOUBLE) AS {name}")
        elif typed:
            selects.append(f"CAST({column} AS {kind}) AS {name}")
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
            value = _calendar_time(column if typed else f"TRY_CAST({raw} AS TIMESTAMP)")
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
