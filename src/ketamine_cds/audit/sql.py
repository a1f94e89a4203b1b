"""SQL text the audit writes for DuckDB: string literals, lists, and paths to read from or write to.

One helper per meaning, used by every reader and step of the audit:

- ``lit``: a string as an SQL string literal (``o'brien`` -> ``'o''brien'``);
- ``lit_or_null``: the same, or a NULL VARCHAR for None;
- ``str_list``: strings as a VARCHAR[] literal;
- ``read_path``: a path as the literal DuckDB's readers take, read literally (never a glob);
- ``sql_path``: a path DuckDB writes to (``COPY ... TO``, ``temp_directory``), to go inside a literal.

``read_path`` and ``sql_path`` differ on purpose: DuckDB's readers expand glob characters in a path, its
writers do not, so only the reader's path has them put in classes of their own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

__all__ = ["lit", "lit_or_null", "read_path", "sql_path", "str_list"]


def lit(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def lit_or_null(text: str | None) -> str:
    """A SQL string literal, or a NULL VARCHAR for None."""
    return "CAST(NULL AS VARCHAR)" if text is None else lit(text)


def str_list(items: Iterable[str]) -> str:
    """A SQL VARCHAR[] literal."""
    values = [lit(i) for i in items]
    return f"[{', '.join(values)}]" if values else "CAST([] AS VARCHAR[])"


def sql_path(path: Path) -> str:
    """A path inside an SQL string literal (a folder named o'brien is a folder, not an SQL error), for a
    path DuckDB writes to (COPY ... TO, temp_directory): never read as a pattern. To read, ``read_path``."""
    return str(path).replace("'", "''")


_PATTERN_CHARACTERS = re.compile(r"[*?\[]")


def read_path(path: Path | str, pattern: str | None = None) -> str:
    """A file or folder path as the SQL string literal DuckDB's readers (read_csv, read_parquet, read_json)
    take, read literally: made absolute (DuckDB would expand a leading ``~``), and each character its glob
    gives a meaning (``*``, ``?``, ``[``) put in a class of its own (``[*]``, ``[?]``, ``[[]``), so that a file
    named ``data[1].csv`` is read, never ``data1.csv``. ``pattern`` (the program's own, e.g. ``*.csv`` for
    the files of a folder, never the user's) is appended after the folder, as a pattern."""
    text = _PATTERN_CHARACTERS.sub(lambda m: f"[{m.group()}]", os.path.abspath(path))
    if pattern is not None:
        text = text.rstrip("/") + "/" + pattern
    return lit(text)
