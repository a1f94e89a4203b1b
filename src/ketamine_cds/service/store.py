"""Durable storage for the audit trail, card feedback and seen JWT ids.

SQLite (WAL) by default; PostgreSQL when a database URL is configured. Every write is committed before the
call returns. Feedback and token ids are flushed to disk at each commit (synchronous=FULL / synchronous_commit
on), so whatever the service acknowledged survives a crash of the machine. Audit trail rows of assessments are
acknowledged to no one and sit on the order-sign path, so they are committed without waiting for the disk
(WAL with synchronous=NORMAL / synchronous_commit off): they survive a crash of the service, and only a power
loss in the last moments could lose them. A hook answers only after its audit trail rows are committed
(``AuditWriter``). Patient identifiers are stored only as keyed pseudonyms
(HMAC-SHA256 with the configured secret).

Each row of ``assessments`` says how complete the record behind it was: ``completeness`` is ``full`` (every
datum the service asked for was had), ``partial`` (answered with the data named in ``unread``, a JSON array
of data names such as ``["conditions", "location"]``, unknown) or ``precondition-failed`` (answered 412: the
patient or the order could not be read; ``verdict`` is NULL and there are no cards). Databases made before
these columns existed are brought up to date when the store opens (``_migrate``), as is ``site`` (the site
protocol in force, "name (version)", or NULL for the guideline alone): existing rows read
``full`` and ``[]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from .settings import Settings, private_dir

log = logging.getLogger("ketamine_cds.service.store")

_ASSESSMENTS_COLUMNS = """
        id TEXT PRIMARY KEY, created_at TEXT NOT NULL, service TEXT NOT NULL, hook TEXT NOT NULL,
        hook_instance TEXT, client TEXT, kb_version TEXT NOT NULL, verdict TEXT,
        statements TEXT NOT NULL, patient TEXT, latency_ms DOUBLE PRECISION NOT NULL,
        completeness TEXT NOT NULL DEFAULT 'full', unread TEXT NOT NULL DEFAULT '[]', site TEXT"""
_ASSESSMENTS_INSERT = (
    "INSERT INTO assessments (id, created_at, service, hook, hook_instance, client, kb_version, verdict, "
    "statements, patient, latency_ms, completeness, unread, site) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
COMPLETENESS = ("full", "partial", "precondition-failed")

_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS assessments ({_ASSESSMENTS_COLUMNS})",
    "CREATE INDEX IF NOT EXISTS assessments_created ON assessments (created_at)",
    """CREATE TABLE IF NOT EXISTS cards (
        uuid TEXT PRIMARY KEY, assessment_id TEXT NOT NULL, service TEXT NOT NULL, statement TEXT NOT NULL,
        indicator TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS feedback (
        id TEXT PRIMARY KEY, received_at TEXT NOT NULL, service TEXT NOT NULL, card TEXT NOT NULL,
        outcome TEXT NOT NULL, outcome_timestamp TEXT, override_code TEXT, override_system TEXT,
        override_display TEXT, user_comment TEXT, accepted_suggestions TEXT NOT NULL, client TEXT)""",
    "CREATE INDEX IF NOT EXISTS feedback_card ON feedback (card)",
    """CREATE TABLE IF NOT EXISTS seen_tokens (
        issuer TEXT NOT NULL, jti TEXT NOT NULL, expires_at TEXT NOT NULL, PRIMARY KEY (issuer, jti))""",
)


@dataclass(frozen=True)
class CardRecord:
    uuid: str
    statement: str
    indicator: str


@dataclass(frozen=True)
class AssessmentRecord:
    id: str
    created_at: dt.datetime
    service: str
    hook: str
    hook_instance: str | None
    client: str | None
    kb_version: str
    verdict: str | None  # None: no assessment was made (answered 412)
    statements: Sequence[str]
    patient: str | None  # already pseudonymized
    latency_ms: float
    cards: Sequence[CardRecord] = field(default_factory=tuple)
    completeness: str = "full"  # one of COMPLETENESS
    unread: Sequence[str] = ()  # the data names that could not be read
    site: str | None = None  # the site protocol in force: "name (version)", or None for the guideline alone

    def __post_init__(self) -> None:
        if self.completeness not in COMPLETENESS:
            raise ValueError(f"completeness must be one of {COMPLETENESS}, not {self.completeness!r}")
        if (self.verdict is None) != (self.completeness == "precondition-failed"):
            raise ValueError("a row has no verdict exactly when the call was answered 412")


@dataclass(frozen=True)
class FeedbackRecord:
    id: str
    received_at: dt.datetime
    service: str
    card: str
    outcome: str  # accepted | overridden
    outcome_timestamp: str | None
    override_code: str | None
    override_system: str | None
    override_display: str | None
    user_comment: str | None
    accepted_suggestions: Sequence[str]
    client: str | None


class Store(Protocol):
    def record_assessment(self, record: AssessmentRecord) -> None: ...
    def record_assessments(self, records: Sequence[AssessmentRecord]) -> None: ...
    def record_assessments_now(self, records: Sequence[AssessmentRecord]) -> bool: ...
    def record_feedback(self, records: Sequence[FeedbackRecord]) -> None: ...
    def remember_token(self, issuer: str, jti: str, expires_at: dt.datetime) -> bool: ...
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...
    def ping(self) -> None: ...
    def close(self) -> None: ...


def pseudonym(secret: bytes, patient_id: str | None) -> str | None:
    """A stable pseudonym for a patient id: the same id and secret always give the same value."""
    if not patient_id:
        return None
    return hmac.new(secret, patient_id.encode(), hashlib.sha256).hexdigest()[:32]


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds")


def _insert_assessments(cur: Any, sql: Callable[[str], str], records: Sequence[AssessmentRecord]) -> None:
    cur.executemany(
        sql(_ASSESSMENTS_INSERT),
        [
            (
                r.id,
                _iso(r.created_at),
                r.service,
                r.hook,
                r.hook_instance,
                r.client,
                r.kb_version,
                r.verdict,
                json.dumps(list(r.statements)),
                r.patient,
                r.latency_ms,
                r.completeness,
                json.dumps(list(r.unread)),
                r.site,
            )
            for r in records
        ],
    )
    cards = [(c.uuid, r.id, r.service, c.statement, c.indicator) for r in records for c in r.cards]
    if cards:
        cur.executemany(sql("INSERT INTO cards VALUES (?, ?, ?, ?, ?)"), cards)


class StoreUnavailable(Exception):
    """The database cannot be reached or used just now (stopped, restarting, locked, out of space): the call
    is answered 503 with Retry-After, never as if the caller were at fault."""


RETRY_AFTER_S = "1"  # with a 503: when to try again
_T = TypeVar("_T")


class _SQLStore:
    """One connection guarded by a lock; ``?`` placeholders, translated for PostgreSQL. Every operation is a
    function of a cursor run in one transaction (``_run``); the driver's errors that say the database cannot
    be used now (``unavailable``) become ``StoreUnavailable``."""

    placeholder = "?"
    relaxed_commit: str | None = None  # statement that lets the next commit skip the wait for the disk
    strict_commit: str | None = None  # and the one that restores the default
    unavailable: tuple[type[BaseException], ...] = ()

    def __init__(self, connection: Any) -> None:
        self._db: Any = connection
        self._lock = threading.Lock()
        self._run(self._create_schema)

    def _create_schema(self, cur: Any) -> None:
        for statement in _SCHEMA:
            cur.execute(statement)
        self._migrate(cur)

    def _migrate(self, cur: Any) -> None:
        """Bring a database made by an earlier version up to the current schema (in the open transaction)."""
        raise NotImplementedError

    def _connection(self) -> Any:
        """The connection to use now (PostgreSQL: a new one when the last was lost)."""
        return self._db

    def _lost(self, connection: Any) -> bool:
        """Whether the connection itself is gone (not merely the statement that failed)."""
        return False

    def _run(self, work: Callable[[Any], _T], relaxed: bool = False) -> _T:
        """``work(cursor)`` in one transaction, committed before it returns. A connection found lost before
        the commit was sent (a database restarted since the last call) is replaced and the work run once more
        on the new one: the server rolled back what the old one had begun, so nothing is done twice. A commit
        whose fate is unknown is never repeated: the caller gets ``StoreUnavailable`` and answers 503."""
        with self._lock:
            for attempt in (1, 2):
                db = self._connection()
                cur = db.cursor()
                committing = False
                try:
                    if relaxed and self.relaxed_commit:
                        cur.execute(self.relaxed_commit)
                    result = work(cur)
                    committing = True
                    db.commit()
                    return result
                except BaseException as exc:
                    with contextlib.suppress(Exception):
                        db.rollback()
                    if not isinstance(exc, self.unavailable):
                        raise
                    if attempt == 1 and not committing and self._lost(db):
                        log.warning("database connection lost (%s): reconnecting", type(exc).__name__)
                        continue
                    raise StoreUnavailable(f"the database cannot be used now ({type(exc).__name__})") from exc
                finally:
                    if relaxed and self.strict_commit:
                        with contextlib.suppress(Exception):
                            cur.execute(self.strict_commit)
                    with contextlib.suppress(Exception):
                        cur.close()
            raise AssertionError("unreachable")  # pragma: no cover

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def record_assessment(self, record: AssessmentRecord) -> None:
        self.record_assessments((record,))

    def record_assessments(self, records: Sequence[AssessmentRecord]) -> None:
        """All of them in one transaction: every row is written, or none."""
        self._run(lambda cur: _insert_assessments(cur, self._sql, records), relaxed=True)

    def record_assessments_now(self, records: Sequence[AssessmentRecord]) -> bool:
        """Write at once when that needs no wait for a lock, the disk or the network; False otherwise (the
        rows are then not written, and the caller hands them to a thread that can wait)."""
        return False

    def record_feedback(self, records: Sequence[FeedbackRecord]) -> None:
        def write(cur: Any) -> None:
            for r in records:
                cur.execute(
                    self._sql("INSERT INTO feedback VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                    (
                        r.id,
                        _iso(r.received_at),
                        r.service,
                        r.card,
                        r.outcome,
                        r.outcome_timestamp,
                        r.override_code,
                        r.override_system,
                        r.override_display,
                        r.user_comment,
                        json.dumps(list(r.accepted_suggestions)),
                        r.client,
                    ),
                )

        self._run(write)

    def remember_token(self, issuer: str, jti: str, expires_at: dt.datetime) -> bool:
        """Record a token id; False when it was seen before (a replay). Expired ids are forgotten."""
        now = _iso(dt.datetime.now(dt.UTC))

        def remember(cur: Any) -> bool:
            cur.execute(self._sql("DELETE FROM seen_tokens WHERE expires_at < ?"), (now,))
            cur.execute(self._sql("SELECT 1 FROM seen_tokens WHERE issuer = ? AND jti = ?"), (issuer, jti))
            if cur.fetchone() is not None:
                return False
            cur.execute(
                self._sql("INSERT INTO seen_tokens VALUES (?, ?, ?)"), (issuer, jti, _iso(expires_at))
            )
            return True

        return self._run(remember)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        def select(cur: Any) -> list[tuple[Any, ...]]:
            cur.execute(self._sql(sql), tuple(params))
            return [tuple(row) for row in cur.fetchall()]

        return self._run(select)

    def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the database answers (reconnecting if need be)."""
        self._run(lambda cur: cur.execute("SELECT 1"))

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()


def _sqlite_migrate(cur: Any) -> None:
    if not cur.connection.in_transaction:  # DDL runs outside a transaction unless one is open
        cur.execute("BEGIN IMMEDIATE")  # one process migrates; another waits, then finds it done
    columns = {row[1]: row for row in cur.execute("PRAGMA table_info(assessments)").fetchall()}
    verdict_required = bool(columns["verdict"][3])  # (cid, name, type, notnull, default, pk)
    if "completeness" in columns and not verdict_required:
        if "site" not in columns:
            cur.execute("ALTER TABLE assessments ADD COLUMN site TEXT")
        return
    # SQLite cannot drop a NOT NULL: the table is rebuilt, its rows copied (new columns 'full' and '[]').
    log.info("audit trail: adding completeness and unread to the assessments table")
    cur.execute("DROP TABLE IF EXISTS assessments_migrated")
    cur.execute(f"CREATE TABLE assessments_migrated ({_ASSESSMENTS_COLUMNS})")
    kept = [name for name in columns if name not in ("completeness", "unread", "site")]
    extra = [name for name in ("completeness", "unread", "site") if name in columns]
    names = ", ".join(kept + extra)
    cur.execute(f"INSERT INTO assessments_migrated ({names}) SELECT {names} FROM assessments")
    cur.execute("DROP TABLE assessments")
    cur.execute("ALTER TABLE assessments_migrated RENAME TO assessments")
    cur.execute("CREATE INDEX IF NOT EXISTS assessments_created ON assessments (created_at)")


_POSTGRES_MIGRATION = (
    "ALTER TABLE assessments ADD COLUMN IF NOT EXISTS completeness TEXT NOT NULL DEFAULT 'full'",
    "ALTER TABLE assessments ADD COLUMN IF NOT EXISTS unread TEXT NOT NULL DEFAULT '[]'",
    "ALTER TABLE assessments ALTER COLUMN verdict DROP NOT NULL",
    "ALTER TABLE assessments ADD COLUMN IF NOT EXISTS site TEXT",
)


class SQLiteStore(_SQLStore):
    """Feedback and token ids through the main connection (synchronous=FULL); audit trail rows through a
    second connection of their own (synchronous=NORMAL), written straight from the event loop: a commit there
    is tens of microseconds of work with no wait for the disk, far less than a hand-over to a thread and back.
    That connection never waits for a lock (busy_timeout 0: when another write holds the database, the rows go
    to the audit trail writer's thread instead) and never checkpoints the WAL; a background thread does, on a
    third connection, so no call ever waits for the WAL to be copied into the database."""

    relaxed_commit = "PRAGMA synchronous=NORMAL"
    strict_commit = "PRAGMA synchronous=FULL"
    unavailable = (sqlite3.OperationalError,)  # locked past the busy timeout, disk I/O, disk full, read-only
    checkpoint_every_s = 1.0

    def __init__(self, path: str) -> None:
        _private_file(path)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level="DEFERRED")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=5000")
        super().__init__(db)
        self._trail_db = _connect(path, 0.0, "PRAGMA synchronous=NORMAL", "PRAGMA wal_autocheckpoint=0")
        self._trail_lock = threading.Lock()
        self._checkpoint_db = _connect(path, 5.0)
        self._closing = threading.Event()
        self._unflushed = False
        self._checkpointer = threading.Thread(target=self._checkpoints, name="sqlite-checkpoint", daemon=True)
        self._checkpointer.start()

    def _migrate(self, cur: Any) -> None:
        _sqlite_migrate(cur)

    def record_assessments_now(self, records: Sequence[AssessmentRecord]) -> bool:
        if not self._trail_lock.acquire(blocking=False):  # another thread is writing through it
            return False
        try:
            try:
                _insert_assessments(self._trail_db, self._sql, records)
                self._trail_db.commit()
            except sqlite3.OperationalError as exc:
                self._trail_db.rollback()
                if _busy(exc):
                    return False
                raise
            except BaseException:
                self._trail_db.rollback()
                raise
            self._unflushed = True
            return True
        finally:
            self._trail_lock.release()

    def _checkpoints(self) -> None:
        while not self._closing.wait(self.checkpoint_every_s):
            self._checkpoint()

    def _checkpoint(self) -> None:
        if self._unflushed:
            self._unflushed = False
            try:
                self._checkpoint_db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:  # retried at the next round; the rows are safe in the WAL
                self._unflushed = True
                log.warning("WAL checkpoint failed (%s); retrying", exc)

    def close(self) -> None:
        self._closing.set()
        self._checkpointer.join()
        with self._trail_lock:
            self._trail_db.close()
        self._checkpoint()
        self._checkpoint_db.close()
        super().close()

    def integrity_ok(self) -> bool:
        return self.query("PRAGMA integrity_check") == [("ok",)]


def _private_file(path: str) -> None:
    """The database readable by its owner only (0600), made so before SQLite opens it; its WAL and shared
    memory index then get the same mode from SQLite. A database an earlier version made readable by others
    is its own file: it is made private (with its WAL and index, if there)."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for name in (path, f"{path}-wal", f"{path}-shm"):
        with contextlib.suppress(FileNotFoundError):
            if os.stat(name).st_mode & 0o077:
                os.chmod(name, 0o600)
                log.warning("audit database file %s was readable by other users: made private (0600)", name)


def _connect(path: str, busy_timeout_s: float, *pragmas: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, busy_timeout_s, check_same_thread=False, isolation_level="DEFERRED")
    for pragma in pragmas:
        db.execute(pragma)
    return db


def _busy(exc: sqlite3.OperationalError) -> bool:
    primary = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # extended codes (BUSY_SNAPSHOT...) in the low byte
    return primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class PostgresStore(_SQLStore):
    """One connection, checked: when the server closed it (a restart, a failover, a network cut) the next
    operation opens a new one, and while the server cannot be reached every operation raises
    ``StoreUnavailable`` (no new attempt for ``reconnect_after_s`` after a failed one, so that callers are
    answered at once rather than queued behind connection timeouts)."""

    placeholder = "%s"
    relaxed_commit = "SET LOCAL synchronous_commit = off"  # this transaction only
    connect_timeout_s = 3
    reconnect_after_s = 0.5

    def __init__(self, url: str) -> None:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        self.unavailable = (psycopg.OperationalError, psycopg.InterfaceError)
        self._url = url
        given = conninfo_to_dict(url)
        self._connect_args: dict[str, Any] = (
            {} if "connect_timeout" in given else {"connect_timeout": self.connect_timeout_s}
        )
        self._retry_at = 0.0
        super().__init__(self._connect())

    def _connect(self) -> Any:
        import psycopg

        try:
            return psycopg.connect(self._url, **self._connect_args)
        except psycopg.Error as exc:
            self._retry_at = time.monotonic() + self.reconnect_after_s
            raise StoreUnavailable(f"cannot connect to the database ({_first_line(exc)})") from exc

    def _connection(self) -> Any:
        if self._db is not None and not self._db.closed and not self._db.broken:
            return self._db
        if self._db is not None:
            with contextlib.suppress(Exception):
                self._db.close()
            self._db = None
        if time.monotonic() < self._retry_at:
            raise StoreUnavailable("the database could not be reached a moment ago")
        self._db = self._connect()
        log.warning("database connection re-established")
        return self._db

    def _lost(self, connection: Any) -> bool:
        return bool(connection.closed or connection.broken)

    def _migrate(self, cur: Any) -> None:
        for statement in _POSTGRES_MIGRATION:
            cur.execute(statement)


def _first_line(exc: BaseException) -> str:
    """An error's first line, without what follows (psycopg adds the server's detail and hints)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_store(settings: Settings) -> Store:
    if settings.database_url:
        return PostgresStore(settings.database_url)
    private_dir(settings.data_dir)
    return SQLiteStore(str(settings.sqlite_path))


_Waiting = tuple[Sequence[AssessmentRecord], asyncio.AbstractEventLoop, "asyncio.Future[None]"]


class AuditWriter:
    """Writes the audit trail rows of hook calls: at once when the store can do so without waiting (SQLite,
    when no other write holds the database), else on a thread of its own, so that the event loop never waits
    for a lock, the disk or the network. Rows that reach the thread while it commits go together into its next
    transaction (group commit). A caller's ``write`` returns once its rows are committed, or raises what the
    store raised, so a hook answers its cards only when the assessment behind them is on record."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._queue: queue.SimpleQueue[_Waiting | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()

    async def write(self, records: Sequence[AssessmentRecord]) -> None:
        if self._store.record_assessments_now(records):
            return
        loop = asyncio.get_running_loop()
        committed: asyncio.Future[None] = loop.create_future()
        self._start()
        self._queue.put((records, loop, committed))
        await committed

    def close(self) -> None:
        """Commit what is queued, then stop the thread."""
        with self._starting:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()

    def _start(self) -> None:
        if self._thread is None:
            with self._starting:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            batch, stop = ([first], False) if first is not None else ([], True)
            while not stop:
                try:
                    waiting = self._queue.get_nowait()
                except queue.Empty:
                    break
                if waiting is None:
                    stop = True
                else:
                    batch.append(waiting)
            if batch:
                self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[_Waiting]) -> None:
        try:
            self._store.record_assessments([r for records, _, _ in batch for r in records])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0], exc)
                return
            log.warning(
                "audit batch of %d calls not written (%s): writing each alone", len(batch), type(exc).__name__
            )
            for waiting in batch:  # one unwritable call must not fail the others
                self._commit([waiting])
            return
        for waiting in batch:
            _settle(waiting, None)


def _settle(waiting: _Waiting, error: BaseException | None) -> None:
    _, loop, committed = waiting

    def settle() -> None:
        if committed.done():  # the caller went away (request cancelled)
            return
        if error is None:
            committed.set_result(None)
        else:
            committed.set_exception(error)

    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
        loop.call_soon_threadsafe(settle)
