"""``ketamine-cds report`` on SQLite and on a real PostgreSQL server: cards shown, feedback coverage, override
rates over cards with feedback and over cards shown, reasons, empty periods, ``--json`` and ``--csv``."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ketamine_cds._cli import main
from ketamine_cds.service.override_report import build_report, incomplete_hooks_lines, report_csv, report_text
from ketamine_cds.service.settings import Settings
from ketamine_cds.service.store import (
    AssessmentRecord,
    CardRecord,
    FeedbackRecord,
    SQLiteStore,
    Store,
    open_store,
    pseudonym,
)

NOW = dt.datetime(2026, 11, 24, 9, 30, tzinfo=dt.UTC)
DAY = NOW.date()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        settings = Settings(data_dir=tmp_path)
    else:
        settings = Settings(data_dir=tmp_path, database_url=request.getfixturevalue("postgres_database"))
    opened = open_store(settings)
    yield opened
    opened.close()


def _assess(
    store: Store,
    *cards: tuple[str, str],
    verdict: str | None = "dose-exceeds-limit",
    completeness: str = "full",
    unread: tuple[str, ...] = (),
) -> None:
    """One assessment at NOW with the given (card uuid, statement) cards."""
    store.record_assessment(
        AssessmentRecord(
            id=str(uuid.uuid4()),
            created_at=NOW,
            service="ketamine-order-sign",
            hook="order-sign",
            hook_instance=str(uuid.uuid4()),
            client="https://ehr.example",
            kb_version="2026.11.1",
            verdict=verdict,
            statements=[s for _, s in cards],
            patient=pseudonym(b"k", "123"),
            latency_ms=3.0,
            cards=[CardRecord(card, statement, "critical") for card, statement in cards],
            completeness=completeness,
            unread=unread,
        )
    )


def _feedback(store: Store, card: str, outcome: str, code: str | None = None) -> None:
    store.record_feedback(
        [
            FeedbackRecord(
                str(uuid.uuid4()),
                NOW,
                "ketamine-order-sign",
                card,
                outcome,
                None,
                code,
                None,
                None,
                None,
                [],
                None,
            )
        ]
    )


def _scenario(store: Store) -> None:
    """Eight bolus cards, one overridden (the issue's 100% from one feedback); two pregnancy cards, one
    accepted and one with two feedback entries (overridden, then accepted again by a retrying EHR); a
    third statement overridden without a reason; and an assessment without cards."""
    bolus = [str(uuid.uuid4()) for _ in range(8)]
    for card in bolus:
        _assess(store, (card, "dose-bolus-limit"))
    _feedback(store, bolus[0], "overridden", "prior-ketamine-exposure")
    pregnant = [str(uuid.uuid4()), str(uuid.uuid4())]
    _assess(
        store, (pregnant[0], "contra-pregnancy"), (pregnant[1], "contra-pregnancy"), verdict="contraindicated"
    )
    _feedback(store, pregnant[0], "accepted")
    _feedback(store, pregnant[1], "overridden", "benefit-outweighs-risk")
    _feedback(store, pregnant[1], "accepted")
    infusion = str(uuid.uuid4())
    _assess(store, (infusion, "dose-infusion-limit"))
    _feedback(store, infusion, "overridden")
    _assess(store, verdict="consider")


def test_rates_over_cards_with_feedback_and_over_cards_shown(store: Store) -> None:
    _scenario(store)
    report = build_report(store, DAY, DAY)
    assert report["assessments"] == 11 and report["note"] is None
    assert list(report["verdicts"].items()) == [
        ("dose-exceeds-limit", 9),
        ("consider", 1),
        ("contraindicated", 1),
    ]
    by = {s["statement"]: s for s in report["statements"]}
    assert [s["statement"] for s in report["statements"]] == [
        "dose-bolus-limit",
        "contra-pregnancy",
        "dose-infusion-limit",
    ]
    bolus = by["dose-bolus-limit"]
    assert (bolus["cards_shown"], bolus["cards_with_feedback"], bolus["accepted"], bolus["overridden"]) == (
        8,
        1,
        0,
        1,
    )
    assert bolus["feedback_coverage"] == 0.125
    assert bolus["override_rate_of_feedback"] == 1.0  # the one card we heard about
    assert bolus["override_rate_of_shown"] == 0.125  # of all eight shown
    assert bolus["override_reasons"] == {"prior-ketamine-exposure": 1}
    assert bolus["title"] == "IV bolus limit (acute pain)"
    pregnancy = by["contra-pregnancy"]
    assert (pregnancy["cards_shown"], pregnancy["cards_with_feedback"]) == (2, 2)
    assert (pregnancy["accepted"], pregnancy["overridden"]) == (
        1,
        1,
    )  # two entries for one card: counted once
    assert pregnancy["override_rate_of_feedback"] == 0.5 and pregnancy["override_reasons"] == {
        "benefit-outweighs-risk": 1
    }
    assert by["dose-infusion-limit"]["override_reasons"] == {"no reason given": 1}
    total = report["cards"]
    assert total["statement"] == "all statements"
    assert (total["cards_shown"], total["cards_with_feedback"], total["accepted"], total["overridden"]) == (
        11,
        4,
        1,
        3,
    )
    assert (total["override_rate_of_feedback"], total["override_rate_of_shown"]) == (0.75, round(3 / 11, 4))
    assert report["incomplete_hooks"] == {"precondition-failed": 0, "partial": 0, "unread": {}}


def test_the_text_report_shows_both_rates_and_coverage(store: Store) -> None:
    _scenario(store)
    text = report_text(build_report(store, DAY, DAY))
    assert text.startswith(f"Assessments on {DAY.isoformat()}: 11 (mean 3.0 ms, max 3.0 ms)")
    assert "override rate of the cards with feedback and of all cards shown" in text
    (bolus,) = [line for line in text.splitlines() if line.strip().startswith("dose-bolus-limit")]
    assert bolus.split() == ["dose-bolus-limit", "8", "1", "12.5%", "0", "1", "100.0%", "12.5%"]
    (total,) = [line for line in text.splitlines() if line.strip().startswith("all statements")]
    assert total.split()[2:] == ["11", "4", "36.4%", "1", "3", "75.0%", "27.3%"]
    assert "overridden because no reason given: 1" in text


def test_an_empty_period_says_so_in_a_sentence(store: Store) -> None:
    _scenario(store)
    later = DAY + dt.timedelta(days=1)
    report = build_report(store, later, later)
    assert report["assessments"] == 0 and report["statements"] == []
    assert (
        report["note"]
        == f"No hook call was recorded on {later.isoformat()}: there is nothing to report for this period."
    )
    text = report_text(report)
    assert text == f"Assessments on {later.isoformat()}: 0\n\n{report['note']}\n"  # no bare headers
    assert report_csv(report).splitlines() == [report_csv(report).splitlines()[0]]  # the header only


def test_a_period_with_cards_but_no_feedback_or_no_cards_says_which(store: Store) -> None:
    _assess(store, verdict="consider")
    report = build_report(store, DAY, DAY)
    assert report["note"] is not None and report["note"].startswith(f"No card was shown on {DAY.isoformat()}")
    _assess(store, (str(uuid.uuid4()), "dose-bolus-limit"))
    report = build_report(store, DAY, DAY)
    assert report["note"] == (
        f"None of the 1 card(s) shown on {DAY.isoformat()} has feedback from the EHR yet: the override rate "
        "of cards with feedback cannot be computed."
    )
    assert report["statements"][0]["override_rate_of_feedback"] is None
    assert report["statements"][0]["override_rate_of_shown"] == 0.0


def test_csv_has_a_row_per_statement_and_neutralises_formulas(store: Store) -> None:
    _scenario(store)
    card = str(uuid.uuid4())
    _assess(store, (card, "contra-psychosis"))
    _feedback(store, card, "overridden", '=HYPERLINK("http://evil.example")')
    rows = list(csv.DictReader(io.StringIO(report_csv(build_report(store, DAY, DAY)))))
    assert [r["statement"] for r in rows][-1] == "all statements" and len(rows) == 5
    bolus = next(r for r in rows if r["statement"] == "dose-bolus-limit")
    assert bolus["cards_shown"] == "8" and bolus["feedback_coverage"] == "0.125"
    assert bolus["override_rate_of_feedback"] == "1.0" and bolus["override_rate_of_shown"] == "0.125"
    assert bolus["since"] == bolus["until"] == DAY.isoformat()
    psychosis = next(r for r in rows if r["statement"] == "contra-psychosis")
    assert psychosis["override_reasons"].startswith("'=HYPERLINK")  # a spreadsheet shows it, never runs it


def test_hooks_that_could_not_run_fully_are_counted_with_what_could_not_be_read(store: Store) -> None:
    _assess(store, (str(uuid.uuid4()), "dose-bolus-limit"))
    _assess(store, verdict="consider", completeness="partial", unread=("conditions", "location"))
    _assess(store, verdict="dose-exceeds-limit", completeness="partial", unread=("location",))
    _assess(store, verdict=None, completeness="precondition-failed", unread=("patient",))
    report = build_report(store, DAY, DAY)
    # a 412 is not an assessment: no verdict, no latency, but counted as a call that could not run
    assert report["assessments"] == 3 and None not in report["verdicts"] and "None" not in report["verdicts"]
    assert report["incomplete_hooks"] == {
        "precondition-failed": 1,
        "partial": 2,
        "unread": {"location": 2, "conditions": 1, "patient": 1},
    }
    assert incomplete_hooks_lines(report) == [
        "",
        "Hook calls that could not run fully: 1 refused (412: the patient or the orders could not be read), "
        "2 answered with data missing.",
        "  Not read: location 2, conditions 1, patient 1",
    ]
    assert "Hook calls that could not run fully" in report_text(report)
    assert build_report(store, DAY + dt.timedelta(days=1))["incomplete_hooks"]["partial"] == 0
    _assess(store, (str(uuid.uuid4()), "dose-bolus-limit"))
    only_412 = build_report(store, DAY - dt.timedelta(days=3), DAY - dt.timedelta(days=3))
    assert incomplete_hooks_lines(only_412) == []  # nothing happened that day: no line at all


# --- the command ----------------------------------------------------------------------------------------


def test_the_command_prints_text_json_or_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = SQLiteStore(str(tmp_path / "ketamine-cds.sqlite3"))
    try:
        _scenario(store)
    finally:
        store.close()
    day = ["--since", DAY.isoformat(), "--until", DAY.isoformat(), "--data-dir", str(tmp_path)]
    assert main(["report", *day]) == 0
    assert "all statements" in capsys.readouterr().out
    assert main(["report", *day, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cards"]["cards_shown"] == 11
    assert main(["report", *day, "--csv"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("since,until,statement,title,cards_shown,") and captured.err == ""
    later = (DAY + dt.timedelta(days=1)).isoformat()
    assert main(["report", "--since", later, "--data-dir", str(tmp_path), "--csv"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 1 and "No hook call was recorded" in captured.err
    with pytest.raises(SystemExit) as exit_info:
        main(["report", *day, "--json", "--csv"])
    assert exit_info.value.code == 2
