"""The decision classes decided by the engine: in worker processes when there are many.

The classes (a ``duck.classes_sql`` query: key, representative row, rows) are written as Parquet. Each share
of them is read, decided (``decide.decide_all``) and written as NDJSON, which the ``decisions`` table loads.
Every class of one context falls in the same share, so that the classes of exact doses at a limit still meet
there. With enough classes to be worth it (tens of thousands: the engine takes about 0.1 ms a class, a process
about 0.2 s to start), one share is decided in the calling process and each other in a worker process of its
own (one share per core); spawned, never forked, since the caller holds DuckDB's threads.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import duckdb

from .._kb import KnowledgeBase
from .._site import Site
from .decide import decide_all, decision_row
from .sql import lit, read_path, sql_path

# the decisions table: the class key, then ``decide.decision_row``'s columns
DECISION_COLUMNS: Sequence[tuple[str, str]] = (
    ("class_key", "BIGINT"),
    ("verdict", "VARCHAR"),
    ("statements", "VARCHAR[]"),
    ("dose_status", "VARCHAR"),
    ("problem", "VARCHAR"),
    ("limit_per_kg", "DOUBLE"),
    ("tolerance_used", "VARCHAR"),
    ("tolerance_unknown_reason", "VARCHAR"),
    ("limit_cap", "DOUBLE"),
    ("limit_from_site", "BOOLEAN"),
    ("guideline_verdict", "VARCHAR"),
    ("guideline_dose_status", "VARCHAR"),
)
DECISIONS = ", ".join(f"{name} {kind}" for name, kind in DECISION_COLUMNS)
PARALLEL_FROM = 20_000  # classes; fewer are decided in the calling process


def decide_classes(
    con: duckdb.DuckDBPyConnection,
    classes: str,
    kb: KnowledgeBase,
    site: Site | None = None,
    *,
    workers: int | None = None,
    phases: dict[str, float] | None = None,
) -> tuple[int, int]:
    """The engine's answer for each class of ``classes`` in the temp table ``decisions``; returns (the
    engine's assessments, rows). ``workers``: processes at most (default: the machine's cores). ``phases``
    gets the seconds of the query (classify) and of the decisions (decide)."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ketamine-cds-classes-") as temp:
        found = Path(temp) / "classes.parquet"
        con.execute(f"COPY ({classes}) TO '{sql_path(found)}' (FORMAT parquet)")
        counted = con.execute(
            f"SELECT count(*), coalesce(sum(n), 0) FROM read_parquet({read_path(found)})"
        ).fetchone() or (0, 0)
        classified = time.perf_counter()
        shares = _shares(int(counted[0]), workers)
        answers = [Path(temp) / f"decisions-{i}.ndjson" for i in range(shares)]
        assessments = _decide_shares(found, answers, kb, site)
        con.execute(f"CREATE OR REPLACE TEMP TABLE decisions ({DECISIONS})")
        load_ndjson(con, "decisions", DECISION_COLUMNS, answers)
    if phases is not None:
        phases["classify"] = phases.get("classify", 0.0) + classified - started
        phases["decide"] = time.perf_counter() - classified
    return assessments, int(counted[1])


def _decide_shares(found: Path, answers: Sequence[Path], kb: KnowledgeBase, site: Site | None) -> int:
    """Share 0 decided here, each other share in a worker process of its own, at the same time."""
    shares = len(answers)
    if shares == 1:
        return decide_share(found, 0, 1, answers[0], kb, site)
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(shares - 1, mp_context=spawn) as pool:
        others = [pool.submit(decide_share, found, i, shares, answers[i], kb, site) for i in range(1, shares)]
        here = decide_share(found, 0, shares, answers[0], kb, site)
        return here + sum(o.result() for o in others)


def _shares(classes: int, workers: int | None) -> int:
    if classes < PARALLEL_FROM:
        return 1
    return max(1, min(workers or os.cpu_count() or 1, classes // PARALLEL_FROM * 2))


def decide_share(
    classes: Path, share: int, shares: int, answers: Path, kb: KnowledgeBase, site: Site | None
) -> int:
    """One share of the classes Parquet decided, written to ``answers`` as NDJSON; returns the assessments.
    Runs in a worker process (or the caller's)."""
    con = duckdb.connect(config={"threads": 1})
    try:
        found = con.execute(
            f"SELECT class_key, row, n FROM read_parquet({read_path(classes)}) "
            f"WHERE hash(coalesce(row.context_key, class_key)) % {int(shares)} = {int(share)}"
        ).fetchall()
    finally:
        con.close()
    decided, assessments = decide_all(found, kb, site)
    write_ndjson(answers, DECISION_COLUMNS, ((key, *decision_row(d)) for key, d in decided))
    return assessments


def write_ndjson(path: Path, columns: Sequence[tuple[str, str]], rows: Iterable[Sequence[Any]]) -> int:
    """Rows as an NDJSON file of ``columns``' names; returns how many were written."""
    names = [name for name, _ in columns]
    count = 0
    with path.open("w") as handle:
        for row in rows:
            handle.write(json.dumps(dict(zip(names, row, strict=True))) + "\n")
            count += 1
    return count


def load_ndjson(
    con: duckdb.DuckDBPyConnection, table: str, columns: Sequence[tuple[str, str]], paths: Sequence[Path]
) -> None:
    """NDJSON files (``write_ndjson``) inserted into ``table``; empty files are skipped. Rows go through a file
    since binding parameters costs DuckDB a module look-up per value."""
    found = [p for p in paths if p.stat().st_size]
    if not found:
        return
    spec = "{" + ", ".join(f"{lit(name)}: {lit(kind)}" for name, kind in columns) + "}"
    files = "[" + ", ".join(read_path(p) for p in found) + "]"
    con.execute(
        f"INSERT INTO {table} SELECT * FROM read_json({files}, format = 'newline_delimited', columns = {spec})"
    )
