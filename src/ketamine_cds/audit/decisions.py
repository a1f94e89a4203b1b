"""The decision classes decided by the engine: in worker processes when there are many.

The classes (a ``duck.classes_sql`` query: key, representative row, rows) are written as Parquet. Each share
of them is read, decided (``decide.decide_all``) and written as NDJSON, which the ``decisions`` table loads.
Every class of one context falls in the same share, so that the classes of exact doses at a limit still meet
there. With enough classes to be worth it (tens of thousands: the engine takes about 0.1 ms a class, a process
about 0.2 s to start), one share is decided in the calling process and each other in a worker process of its
own (one share per core). A worker is a fresh, isolated interpreter on the caller's import path: never a fork,
since the caller holds DuckDB's threads, and never ``multiprocessing``'s spawn, which runs the caller's main
script again in the child (a script without a ``__main__`` guard would run twice). A worker that cannot start,
fails or hangs has its share decided in the calling process instead: nothing is left undecided.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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
WORKER_PATIENCE_S = 120.0  # at least this long for a worker after the calling process's own share
log = logging.getLogger("ketamine_cds.audit")


@dataclass(frozen=True)
class Decided:
    classes: int  # decision classes (class keys)
    assessments: int  # the engine's assessments (classes at a limit on the same sides share one)
    rows: int


def decide_classes(
    con: duckdb.DuckDBPyConnection,
    classes: str,
    kb: KnowledgeBase,
    site: Site | None = None,
    *,
    temp: Path,
    workers: int | None = None,
    phases: dict[str, float] | None = None,
) -> Decided:
    """The engine's answer for each class of ``classes`` in the temp table ``decisions``. ``temp``: a folder
    for the classes' rows while they are decided (the audit's output folder: where its findings, with the same
    identifiers, go); ``workers``: processes at most (default: the cores this process may run on). ``phases``
    gets the seconds of the query (classify) and of the decisions (decide)."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".decisions-", dir=temp) as folder:
        found = Path(folder) / "classes.parquet"
        con.execute(f"COPY ({classes}) TO '{sql_path(found)}' (FORMAT parquet)")
        counted = con.execute(
            f"SELECT count(*), coalesce(sum(n), 0) FROM read_parquet({read_path(found)})"
        ).fetchone() or (0, 0)
        classified = time.perf_counter()
        shares = _shares(int(counted[0]), workers)
        answers = [Path(folder) / f"decisions-{i}.ndjson" for i in range(shares)]
        assessments = _decide_shares(found, answers, kb, site)
        con.execute(f"CREATE OR REPLACE TEMP TABLE decisions ({DECISIONS})")
        load_ndjson(con, "decisions", DECISION_COLUMNS, answers)
    if phases is not None:
        phases["classify"] = phases.get("classify", 0.0) + classified - started
        phases["decide"] = time.perf_counter() - classified
    return Decided(int(counted[0]), assessments, int(counted[1]))


def _decide_shares(found: Path, answers: Sequence[Path], kb: KnowledgeBase, site: Site | None) -> int:
    """Share 0 decided here, each other share in a worker process of its own, at the same time; a share
    whose worker could not start, failed or hung is decided here after."""
    shares = len(answers)
    if shares == 1:
        return decide_share(found, 0, 1, answers[0], kb, site)
    job = found.with_name("job.pickle")
    job.write_bytes(pickle.dumps((kb, site)))
    workers: dict[int, subprocess.Popen[str]] = {}
    try:
        for share in range(1, shares):
            started = _start_worker(found, share, shares, answers[share], job)
            if started is not None:
                workers[share] = started
        clock = time.monotonic()
        assessments = decide_share(found, 0, shares, answers[0], kb, site)
        patience = max(WORKER_PATIENCE_S, 10 * (time.monotonic() - clock))  # shares are of a size
        for share in range(1, shares):
            done = _finished(workers[share], share, shares, patience) if share in workers else None
            if done is None:
                done = decide_share(found, share, shares, answers[share], kb, site)
            assessments += done
        return assessments
    finally:
        for worker in workers.values():
            if worker.poll() is None:
                worker.kill()
                worker.wait()


def _start_worker(
    found: Path, share: int, shares: int, answers: Path, job: Path
) -> subprocess.Popen[str] | None:
    """A fresh interpreter deciding one share: isolated (``-I``: no current folder, no PYTHON* settings, no
    user site) and importing from this process's own import path, so it runs this very code."""
    bootstrap = (
        "import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
        "from ketamine_cds.audit.decisions import _worker; raise SystemExit(_worker(sys.argv[2:]))"
    )
    arguments = [json.dumps(sys.path), str(found), str(share), str(shares), str(answers), str(job)]
    try:
        return subprocess.Popen(
            [sys.executable, "-I", "-c", bootstrap, *arguments],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    except OSError as exc:
        what = type(exc).__name__
        log.warning(
            "decision worker %d of %d could not start (%s): its share is decided here", share, shares, what
        )
        return None


def _finished(worker: subprocess.Popen[str], share: int, shares: int, patience: float) -> int | None:
    """The assessments a worker made, or None when it failed or took more than ``patience`` seconds (it is
    then stopped). The warning names the error's type only: its message could quote a row."""
    try:
        out, err = worker.communicate(timeout=patience)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.communicate()
        log.warning(
            "decision worker %d of %d took over %.0f s: its share is decided here", share, shares, patience
        )
        return None
    last = out.split()[-1:] if worker.returncode == 0 else []
    if last and last[0].isdigit():
        return int(last[0])
    error = (err.strip().splitlines() or ["no error"])[-1].split(":")[0][:80]
    code = worker.returncode
    log.warning(
        "decision worker %d of %d failed (exit %s, %s): its share is decided here", share, shares, code, error
    )
    return None


def _shares(classes: int, workers: int | None) -> int:
    if classes < PARALLEL_FROM:
        return 1
    return max(1, min(workers or _cores(), classes // PARALLEL_FROM * 2))


def _cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells it, as in a container)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def decide_share(
    classes: Path, share: int, shares: int, answers: Path, kb: KnowledgeBase, site: Site | None
) -> int:
    """One share of the classes Parquet decided, written to ``answers`` as NDJSON; returns the assessments.
    Runs in a worker process (or the caller's)."""
    con = duckdb.connect(config={"threads": 1})
    try:
        result = con.execute(  # the row's fields as columns: DuckDB hands a struct over as a dict more slowly
            f"SELECT class_key, n, row.* FROM read_parquet({read_path(classes)}) "
            f"WHERE hash(coalesce(row.context_key, class_key)) % {int(shares)} = {int(share)}"
        )
        names = [d[0] for d in result.description][2:]
        found = [(r[0], dict(zip(names, r[2:], strict=True)), r[1]) for r in result.fetchall()]
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


def _worker(argv: Sequence[str]) -> int:
    """A worker's work (``_start_worker``): CLASSES SHARE SHARES ANSWERS JOB; one share decided, the number of
    assessments printed."""
    classes, share, shares, answers, job = argv
    kb, site = pickle.loads(Path(job).read_bytes())
    print(decide_share(Path(classes), int(share), int(shares), Path(answers), kb, site))
    return 0
