"""The store on SQLite and on a real PostgreSQL server: audit, feedback, token replay, pseudonyms."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from ketamine_cds.service.settings import Settings
from ketamine_cds.service.store import (
    AssessmentRecord,
    AuditWriter,
    CardRecord,
    FeedbackRecord,
    SQLiteStore,
    Store,
    open_store,
    pseudonym,
)

NOW = dt.datetime(2026, 11, 24, 9, 30, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        settings = Settings(data_dir=tmp_path)
    else:
        settings = Settings(data_dir=tmp_path, database_url=request.getfixturevalue("postgres_database"))
    opened = open_store(settings)
    yield opened
    opened.close()


def _assessment(card: str) -> AssessmentRecord:
    return AssessmentRecord(
        id=str(uuid.uuid4()),
        created_at=NOW,
        service="ketamine-order-sign",
        hook="order-sign",
        hook_instance=str(uuid.uuid4()),
        client="https://ehr.example",
        kb_version="2026.11.1",
        verdict="dose-exceeds-limit",
        statements=["dose-bolus-limit"],
        patient=pseudonym(b"k", "123"),
        latency_ms=3.2,
        cards=[CardRecord(card, "dose-bolus-limit", "critical")],
    )


def test_assessment_and_feedback_are_stored_and_joined(store: Store) -> None:
    card = str(uuid.uuid4())
    store.record_assessment(_assessment(card))
    store.record_feedback(
        [
            FeedbackRecord(
                str(uuid.uuid4()),
                NOW,
                "ketamine-order-sign",
                card,
                "overridden",
                None,
                "prior-ketamine-exposure",
                "urn:x",
                "Prior exposure",
                None,
                [],
                None,
            )
        ]
    )
    rows = store.query(
        "SELECT c.statement, f.outcome, f.override_code FROM feedback f JOIN cards c ON c.uuid = f.card "
        "WHERE c.uuid = ?",
        [card],
    )
    assert rows == [("dose-bolus-limit", "overridden", "prior-ketamine-exposure")]


def test_a_token_id_is_accepted_once(store: Store) -> None:
    jti = str(uuid.uuid4())
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    assert store.remember_token("https://ehr.example", jti, later) is True
    assert store.remember_token("https://ehr.example", jti, later) is False
    assert store.remember_token("https://other.example", jti, later) is True


def test_no_patient_identifier_is_stored_in_clear(store: Store) -> None:
    card = str(uuid.uuid4())
    store.record_assessment(_assessment(card))
    stored = store.query(
        "SELECT patient FROM assessments a JOIN cards c ON c.assessment_id = a.id WHERE c.uuid = ?", [card]
    )
    assert stored == [(pseudonym(b"k", "123"),)] and "123" not in str(stored)


def test_completeness_and_unread_data_are_stored_with_each_row(store: Store) -> None:
    """Answered fully, answered with data missing (which), or refused with 412 (no verdict, no cards)."""
    full = _assessment(str(uuid.uuid4()))
    partial = replace(
        _assessment(str(uuid.uuid4())), completeness="partial", unread=("conditions", "location")
    )
    refused = replace(
        _assessment(str(uuid.uuid4())),
        verdict=None,
        statements=(),
        cards=(),
        completeness="precondition-failed",
        unread=("patient",),
    )
    store.record_assessments([full, partial, refused])
    rows = store.query(
        "SELECT id, verdict, completeness, unread FROM assessments WHERE id IN (?, ?, ?)",
        [full.id, partial.id, refused.id],
    )
    assert sorted(rows) == sorted(
        [
            (full.id, "dose-exceeds-limit", "full", "[]"),
            (partial.id, "dose-exceeds-limit", "partial", '["conditions", "location"]'),
            (refused.id, None, "precondition-failed", '["patient"]'),
        ]
    )


def test_a_row_has_no_verdict_exactly_when_it_was_refused() -> None:
    with pytest.raises(ValueError, match="412"):
        replace(_assessment("c"), verdict=None)
    with pytest.raises(ValueError, match="412"):
        replace(_assessment("c"), completeness="precondition-failed")
    with pytest.raises(ValueError, match="completeness"):
        replace(_assessment("c"), completeness="half")


# The assessments table as versions before the completeness columns made it (verdict required).
_OLD_ASSESSMENTS = """CREATE TABLE assessments (
    id TEXT PRIMARY KEY, created_at TEXT NOT NULL, service TEXT NOT NULL, hook TEXT NOT NULL,
    hook_instance TEXT, client TEXT, kb_version TEXT NOT NULL, verdict TEXT NOT NULL,
    statements TEXT NOT NULL, patient TEXT, latency_ms DOUBLE PRECISION NOT NULL)"""
_OLD_ROW = (
    "INSERT INTO assessments VALUES ('old-1', '2026-11-01T10:00:00.000+00:00', 'ketamine-order-sign', "
    "'order-sign', 'hi', NULL, '2026.11.1', 'consider', '[]', NULL, 2.5)"
)


def _check_migrated(store: Store) -> None:
    assert store.query("SELECT verdict, completeness, unread, site FROM assessments WHERE id = 'old-1'") == [
        ("consider", "full", "[]", None)
    ]
    refused = replace(
        _assessment("c"), verdict=None, cards=(), completeness="precondition-failed", unread=("patient",)
    )
    store.record_assessment(refused)  # verdict may now be NULL
    assert store.query("SELECT completeness FROM assessments WHERE id = ?", [refused.id]) == [
        ("precondition-failed",)
    ]


def test_an_sqlite_audit_trail_from_before_is_migrated_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as old:
        old.execute(_OLD_ASSESSMENTS)
        old.execute(_OLD_ROW)
        old.commit()
    for _ in range(2):  # a second opening finds it migrated
        store = SQLiteStore(str(path))
        try:
            assert store.integrity_ok()
            assert store.query("SELECT count(*) FROM assessments WHERE id = 'old-1'") == [(1,)]
        finally:
            store.close()
    store = SQLiteStore(str(path))
    try:
        _check_migrated(store)
        names = [row[1] for row in store.query("PRAGMA table_info(assessments)")]
        assert names[-3:] == ["completeness", "unread", "site"]
        indexes = store.query("SELECT name FROM sqlite_master WHERE tbl_name = 'assessments'")
        assert ("assessments_created",) in indexes
    finally:
        store.close()


def test_a_postgresql_audit_trail_from_before_is_migrated_with_its_rows(
    tmp_path: Path, postgres_database: str
) -> None:
    import psycopg

    with psycopg.connect(postgres_database) as old:
        old.execute(_OLD_ASSESSMENTS)
        old.execute(_OLD_ROW)
    for _ in range(2):
        open_store(Settings(data_dir=tmp_path, database_url=postgres_database)).close()
    store = open_store(Settings(data_dir=tmp_path, database_url=postgres_database))
    try:
        _check_migrated(store)
    finally:
        store.close()


def test_pseudonyms_are_stable_and_depend_on_the_secret() -> None:
    assert pseudonym(b"a", "p1") == pseudonym(b"a", "p1")
    assert pseudonym(b"a", "p1") != pseudonym(b"b", "p1") != pseudonym(b"a", "p2")
    assert pseudonym(b"a", None) is None


def test_sqlite_store_survives_reopening(tmp_path: Path) -> None:
    first = SQLiteStore(str(tmp_path / "db.sqlite3"))
    first.record_assessment(_assessment("card-1"))
    first.close()
    again = SQLiteStore(str(tmp_path / "db.sqlite3"))
    assert again.query("SELECT uuid FROM cards") == [("card-1",)]
    assert again.integrity_ok()


def test_settings_make_a_persistent_pseudonym_secret(tmp_path: Path) -> None:
    first = Settings(data_dir=tmp_path / "d").prepared()
    second = Settings(data_dir=tmp_path / "d").prepared()
    assert first.pseudonym_secret and first.pseudonym_secret == second.pseudonym_secret
    assert oct((tmp_path / "d" / "pseudonym.key").stat().st_mode & 0o777) == "0o600"


def test_report_counts_verdicts_and_override_rates(store: Store) -> None:
    from ketamine_cds.service.override_report import build_report, report_text

    cards = [str(uuid.uuid4()) for _ in range(4)]
    for card in cards:
        store.record_assessment(_assessment(card))
    outcomes = ["overridden", "overridden", "accepted"]
    store.record_feedback(
        [
            FeedbackRecord(
                str(uuid.uuid4()),
                NOW,
                "ketamine-order-sign",
                card,
                outcome,
                None,
                "prior-ketamine-exposure" if outcome == "overridden" else None,
                None,
                None,
                None,
                [],
                None,
            )
            for card, outcome in zip(cards, outcomes, strict=False)
        ]
    )
    day = NOW.date()
    report = build_report(store, day, day)
    assert report["assessments"] == 4 and report["verdicts"] == {"dose-exceeds-limit": 4}
    bolus = next(s for s in report["statements"] if s["statement"] == "dose-bolus-limit")
    assert (bolus["cards_shown"], bolus["cards_with_feedback"], bolus["accepted"], bolus["overridden"]) == (
        4,
        3,
        1,
        2,
    )
    assert bolus["override_reasons"] == {"prior-ketamine-exposure": 2}
    assert "dose-bolus-limit" in report_text(report)
    # a period counts only its own rows: the days on either side of NOW are empty
    assert build_report(store, day + dt.timedelta(days=1))["assessments"] == 0
    assert build_report(store, None, day - dt.timedelta(days=1))["assessments"] == 0


# --- the audit writer: rows committed before write() returns, many calls per commit -----------------


def test_audit_writer_commits_concurrent_calls_before_they_return(store: Store) -> None:
    writer = AuditWriter(store)
    records = [_assessment(f"card-{uuid.uuid4()}") for _ in range(40)]

    async def one(record: AssessmentRecord) -> int:
        await writer.write([record])
        # committed by now: visible to the store's own queries
        return len(store.query("SELECT 1 FROM assessments WHERE id = ?", (record.id,)))

    async def all_of_them() -> list[int]:
        return list(await asyncio.gather(*(one(r) for r in records)))

    try:
        assert asyncio.run(all_of_them()) == [1] * len(records)
    finally:
        writer.close()
    for record in records:  # the card rows went with their assessment
        cards = store.query("SELECT uuid FROM cards WHERE assessment_id = ?", (record.id,))
        assert cards == [(record.cards[0].uuid,)]


def test_audit_writer_fails_only_the_call_whose_rows_cannot_be_written(store: Store) -> None:
    writer = AuditWriter(store)
    written = _assessment(f"card-{uuid.uuid4()}")
    store.record_assessment(written)
    good = [_assessment(f"card-{uuid.uuid4()}") for _ in range(10)]

    async def outcomes() -> list[BaseException | None]:
        calls = (
            [writer.write([r]) for r in good[:5]]
            + [writer.write([written])]
            + [writer.write([r]) for r in good[5:]]
        )
        return list(await asyncio.gather(*calls, return_exceptions=True))

    try:
        results = asyncio.run(outcomes())
    finally:
        writer.close()
    assert [r is None for r in results] == [True] * 5 + [False] + [True] * 5
    assert isinstance(results[5], Exception)  # the same id twice: the database refused it
    for record in [written, *good]:
        assert store.query("SELECT count(*) FROM assessments WHERE id = ?", (record.id,)) == [(1,)]


# --- SQLite: audit rows straight from the event loop, never waiting for a lock or a checkpoint --------


def test_sqlite_audit_rows_are_written_at_once_when_nothing_holds_the_database(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "a.sqlite3"))
    try:
        record = _assessment(f"card-{uuid.uuid4()}")
        assert store.record_assessments_now([record]) is True
        assert store.query("SELECT verdict FROM assessments WHERE id = ?", (record.id,)) == [
            ("dose-exceeds-limit",)
        ]
    finally:
        store.close()


def test_sqlite_audit_write_never_waits_on_the_event_loop_for_a_held_database(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    store = SQLiteStore(str(path))
    writer = AuditWriter(store)
    holder = sqlite3.connect(path, isolation_level=None)
    record = _assessment(f"card-{uuid.uuid4()}")

    async def scenario() -> tuple[bool, bool]:
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the database
        assert store.record_assessments_now([record]) is False  # refused at once, not waited for
        write = asyncio.ensure_future(writer.write([record]))
        started = time.perf_counter()
        await asyncio.sleep(0.2)  # the loop keeps running meanwhile
        loop_was_free = time.perf_counter() - started < 0.5
        pending = not write.done()
        holder.execute("COMMIT")
        await write
        return loop_was_free, pending

    try:
        assert asyncio.run(scenario()) == (True, True)
        assert store.query("SELECT count(*) FROM assessments WHERE id = ?", (record.id,)) == [(1,)]
    finally:
        writer.close()
        holder.close()
        store.close()


@pytest.mark.skipif(
    "faketime" in os.environ.get("LD_PRELOAD", ""),
    reason="libfaketime breaks timed thread waits (threading.Event.wait never times out under it), which the "
    "background checkpointer relies on; the date itself plays no part here",
)
def test_sqlite_audit_rows_are_checkpointed_into_the_database_file_in_the_background(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    store = SQLiteStore(str(path))
    records = [_assessment(f"card-{uuid.uuid4()}") for _ in range(20)]
    try:
        for record in records:
            assert store.record_assessments_now([record])
        deadline = time.monotonic() + 15.0  # the checkpointer runs every second
        in_file = 0
        while time.monotonic() < deadline and in_file < len(records):
            time.sleep(0.1)
            # the database file alone (immutable: the WAL is not read): rows there were checkpointed
            with contextlib.closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as db:
                try:
                    in_file = db.execute("SELECT count(*) FROM assessments").fetchone()[0]
                except sqlite3.OperationalError:  # not even the table is in the file yet
                    in_file = 0
        assert in_file == len(records)
    finally:
        store.close()


def test_an_sqlite_audit_trail_with_completeness_but_no_site_column_gains_it(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    first = SQLiteStore(str(path))
    first.record_assessment(_assessment("card-x"))
    first.close()
    with contextlib.closing(sqlite3.connect(path)) as db:  # as a store of the release before site protocols
        db.execute("ALTER TABLE assessments DROP COLUMN site")
        db.commit()
    again = SQLiteStore(str(path))
    try:
        again.record_assessment(replace(_assessment("card-y"), site="Example (1)"))
        assert set(again.query("SELECT site FROM assessments")) == {(None,), ("Example (1)",)}
    finally:
        again.close()


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    """The usual umask (022: files world-readable unless made otherwise), whatever the test runner's."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> str:
    return oct(path.stat().st_mode & 0o777)


def test_the_data_folder_and_the_sqlite_files_are_made_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "new" / "data"
    with _umask(0o022):
        settings = Settings(data_dir=data_dir).prepared()
        store = open_store(settings)
        try:
            store.record_assessment(_assessment("card-private"))  # the WAL and its index exist now
            assert _mode(data_dir) == "0o700"
            for name in ("ketamine-cds.sqlite3", "ketamine-cds.sqlite3-wal", "ketamine-cds.sqlite3-shm"):
                assert _mode(data_dir / name) == "0o600", name
        finally:
            store.close()


def test_an_sqlite_file_made_world_readable_by_an_earlier_version_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "ketamine-cds.sqlite3"
    with _umask(0o022):
        sqlite3.connect(path).close()
        assert _mode(path) == "0o644"
        SQLiteStore(str(path)).close()
    assert _mode(path) == "0o600"


def _feedback_record(card: str) -> FeedbackRecord:
    return FeedbackRecord(
        id=str(uuid.uuid4()),
        received_at=NOW,
        service="ketamine-order-sign",
        card=card,
        outcome="accepted",
        outcome_timestamp=None,
        override_code=None,
        override_system=None,
        override_display=None,
        user_comment=None,
        accepted_suggestions=[],
        client=None,
    )


def test_a_postgresql_connection_the_server_closed_is_replaced_and_the_write_made_once(
    tmp_path: Path, postgres_database: str
) -> None:
    import psycopg

    store = open_store(Settings(data_dir=tmp_path, database_url=postgres_database))
    try:
        store.record_feedback([_feedback_record("before")])
        with psycopg.connect(postgres_database, autocommit=True) as admin:  # as a restart does to it
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        store.record_feedback([_feedback_record("after")])
        assert store.query("SELECT card FROM feedback ORDER BY card") == [("after",), ("before",)]
        store.ping()
    finally:
        store.close()


def test_a_postgresql_server_that_cannot_be_reached_is_store_unavailable(
    tmp_path: Path, postgres_database: str
) -> None:
    from ketamine_cds.service.store import PostgresStore, StoreUnavailable

    store = open_store(Settings(data_dir=tmp_path, database_url=postgres_database))
    assert isinstance(store, PostgresStore)
    try:
        store._url = "postgresql://postgres@127.0.0.1:1/postgres"  # where no server listens
        store._db.close()  # the connection is gone, and a new one cannot be made
        with pytest.raises(StoreUnavailable):
            store.record_feedback([_feedback_record("lost")])
        with pytest.raises(StoreUnavailable):
            store.ping()
    finally:
        store.close()


def test_an_sqlite_database_that_cannot_be_written_is_store_unavailable(tmp_path: Path) -> None:
    from ketamine_cds.service.store import StoreUnavailable

    store = SQLiteStore(str(tmp_path / "ketamine-cds.sqlite3"))
    try:
        store._db.execute("PRAGMA query_only = ON")  # as a read-only or full disk would refuse the write
        with pytest.raises(StoreUnavailable):
            store.record_feedback([_feedback_record("refused")])
    finally:
        store.close()
