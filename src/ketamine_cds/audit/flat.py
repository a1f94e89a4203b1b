"""The flat table form: one row per administration, the canonical columns, as CSV or Parquet."""

from __future__ import annotations

from pathlib import Path

from .canonical import COLUMNS

_NUMERIC = {"dose_value", "concentration_mg_per_ml", "weight_value"}
_BOOLEAN = {"prior_iv_ketamine", "pca_sole_agent"}


def _quote(path: Path) -> str:
    return str(path).replace("'", "''")


def flat_source(path: Path) -> str:
    """A SELECT yielding canonical rows from a flat CSV or Parquet file (or a folder of them)."""
    files = path / "*.parquet" if path.is_dir() and any(path.glob("*.parquet")) else path
    if path.is_dir() and not any(path.glob("*.parquet")):
        files = path / "*.csv"
    if str(files).endswith(".parquet"):
        reader = f"read_parquet('{_quote(files)}')"
    else:
        reader = f"read_csv('{_quote(files)}', header = true, all_varchar = true)"
    selects, problems = [], []
    for name, kind, _ in COLUMNS:
        if name == "input_problem":
            continue
        raw = f"CAST({name} AS VARCHAR)"
        if name in _NUMERIC:
            selects.append(f"TRY_CAST({raw} AS DOUBLE) AS {name}")
            problems.append(
                f"WHEN nullif(trim({raw}), '') IS NOT NULL AND TRY_CAST({raw} AS DOUBLE) IS NULL "
                f"THEN '{name} is not a number: ' || {raw}"
            )
        elif name in _BOOLEAN:
            selects.append(f"TRY_CAST({raw} AS BOOLEAN) AS {name}")
        elif kind == "TIMESTAMP":
            selects.append(f"TRY_CAST({raw} AS TIMESTAMP) AS {name}")
            problems.append(
                f"WHEN TRY_CAST({raw} AS TIMESTAMP) IS NULL THEN 'administered_at is not a time: ' "
                f"|| coalesce({raw}, 'missing')"
            )
        else:
            selects.append(f"nullif(trim({raw}), '') AS {name}")
    problem = "CASE " + " ".join(problems) + " END AS input_problem"
    return f"SELECT {', '.join(selects)}, {problem} FROM {reader}"
