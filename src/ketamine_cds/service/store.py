"""Durable storage for the audit trail, card feedback and seen JWT ids.

SQLite (WAL) by default; PostgreSQL when a database URL is configured. Every write is committed before the
call returns. Feedback and token ids are flushed to disk at each commit (synchronous=FULL / synchronous_commit
on), so whatever the service acknowledged survives a crash of the machine. Audit rows of assessments are
acknowledged to no one and sit on the order-sign path, so they are committed without waiting for the disk
(WAL with synchronous=NORMAL / synchronous_commit off): they survive a crash of the service, and only a power
loss in the last moments could lose them. Patient identifiers are stored only as keyed pseudonyms
(HMAC-SHA256 with the configured secret).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from .settings import Settings

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS assessments (
        id TEXT PRIMARY KEY, created_at TEXT NOT NULL, service TEXT NOT NULL, hook TEXT NOT NULL,
        hook_instance TEXT, client TEXT, kb_version TEXT NOT NULL, verdict TEXT NOT NULL,
        statements TEXT NOT NULL, patient TEXT, latency_ms DOUBLE PRECISION NOT NULL)""",
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
    verdict: str
    statements: Sequence[str]
    patient: str | None  # already pseudonymized
    latency_ms: float
    cards: Sequence[CardRecord] = field(default_factory=tuple)


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
    def record_feedback(self, records: Sequence[FeedbackRecord]) -> None: ...
    def remember_token(self, issuer: str, jti: str, expires_at: dt.datetime) -> bool: ...
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...
    def close(self) -> None: ...


def pseudonym(secret: bytes, patient_id: str | None) -> str | None:
    """A stable pseudonym for a patient id: the same id and secret always give the same value."""
    if not patient_id:
        return None
    return hmac.new(secret, patient_id.encode(), hashlib.sha256).hexdigest()[:32]


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds")


class _SQLStore:
    """One connection guarded by a lock; ``?`` placeholders, translated for PostgreSQL."""

    placeholder = "?"
    relaxed_commit: str | None = None  # statement that lets the next commit skip the wait for the disk
    strict_commit: str | None = None  # and the one that restores the default

    def __init__(self, connection: Any) -> None:
        self._db = connection
        self._lock = threading.Lock()
        with self._transaction() as cur:
            for statement in _SCHEMA:
                cur.execute(statement)

    @contextmanager
    def _transaction(self, relaxed: bool = False) -> Iterator[Any]:
        with self._lock:
            cur = self._db.cursor()
            try:
                if relaxed and self.relaxed_commit:
                    cur.execute(self.relaxed_commit)
                yield cur
                self._db.commit()
            except BaseException:
                self._db.rollback()
                raise
            finally:
                if relaxed and self.strict_commit:
                    cur.execute(self.strict_commit)
                cur.close()

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def record_assessment(self, record: AssessmentRecord) -> None:
        with self._transaction(relaxed=True) as cur:
            cur.execute(
                self._sql("INSERT INTO assessments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                (
                    record.id,
                    _iso(record.created_at),
                    record.service,
                    record.hook,
                    record.hook_instance,
                    record.client,
                    record.kb_version,
                    record.verdict,
                    json.dumps(list(record.statements)),
                    record.patient,
                    record.latency_ms,
                ),
            )
            for card in record.cards:
                cur.execute(
                    self._sql("INSERT INTO cards VALUES (?, ?, ?, ?, ?)"),
                    (card.uuid, record.id, record.service, card.statement, card.indicator),
                )

    def record_feedback(self, records: Sequence[FeedbackRecord]) -> None:
        with self._transaction() as cur:
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

    def remember_token(self, issuer: str, jti: str, expires_at: dt.datetime) -> bool:
        """Record a token id; False when it was seen before (a replay). Expired ids are forgotten."""
        now = _iso(dt.datetime.now(dt.UTC))
        with self._transaction() as cur:
            cur.execute(self._sql("DELETE FROM seen_tokens WHERE expires_at < ?"), (now,))
            cur.execute(self._sql("SELECT 1 FROM seen_tokens WHERE issuer = ? AND jti = ?"), (issuer, jti))
            if cur.fetchone() is not None:
                return False
            cur.execute(
                self._sql("INSERT INTO seen_tokens VALUES (?, ?, ?)"), (issuer, jti, _iso(expires_at))
            )
            return True

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._transaction() as cur:
            cur.execute(self._sql(sql), tuple(params))
            return [tuple(row) for row in cur.fetchall()]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class SQLiteStore(_SQLStore):
    relaxed_commit = "PRAGMA synchronous=NORMAL"
    strict_commit = "PRAGMA synchronous=FULL"

    def __init__(self, path: str) -> None:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level="DEFERRED")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=5000")
        super().__init__(db)

    def integrity_ok(self) -> bool:
        return self.query("PRAGMA integrity_check") == [("ok",)]


class PostgresStore(_SQLStore):
    placeholder = "%s"
    relaxed_commit = "SET LOCAL synchronous_commit = off"  # this transaction only

    def __init__(self, url: str) -> None:
        import psycopg

        super().__init__(psycopg.connect(url))


def open_store(settings: Settings) -> Store:
    if settings.database_url:
        return PostgresStore(settings.database_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return SQLiteStore(str(settings.sqlite_path))
