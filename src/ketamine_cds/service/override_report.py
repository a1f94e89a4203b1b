"""``ketamine-cds report``: what the service answered over a period, and what clinicians did with its cards.

Per statement: **cards shown** (every card recorded for an assessment made in the period), **cards with
feedback** (the EHR reported an outcome for them; *coverage* is their share of the cards shown), **accepted**
and **overridden**, and two override rates that answer different questions:

- *of cards with feedback*: overridden / cards with feedback; how often clinicians overrode when we know what
  they did. With low coverage it rests on few cards, so the coverage is always shown beside it;
- *of cards shown*: overridden / cards shown; a lower bound of how often cards were overridden, since a card
  without feedback may have been overridden too.

A card with several feedback entries counts once: overridden if any entry says so, else accepted. Override
reasons count cards, by the coded reason the EHR sent (``no reason given`` when it sent none). A period with
nothing to count says so in a sentence rather than printing empty tables.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from dataclasses import dataclass, field
from typing import Any

from .._kb import KnowledgeBase, load_knowledge
from .store import Store

NO_REASON = "no reason given"
ALL = "all statements"


def _bounds(since: dt.date | None, until: dt.date | None) -> tuple[str, str]:
    start = dt.datetime.combine(since or dt.date(1970, 1, 1), dt.time(), tzinfo=dt.UTC)
    end = dt.datetime.combine(
        (until or dt.date(9998, 12, 31)) + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC
    )
    return start.isoformat(timespec="milliseconds"), end.isoformat(timespec="milliseconds")


_PERIOD = "a.created_at >= ? AND a.created_at < ?"


@dataclass
class CardCounts:
    """Cards of one statement (or of all), and what the EHR told us clinicians did with them."""

    statement: str
    title: str | None = None
    shown: int = 0
    with_feedback: int = 0
    accepted: int = 0
    overridden: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # cards overridden, by reason code

    def add(self, other: CardCounts) -> None:
        self.shown += other.shown
        self.with_feedback += other.with_feedback
        self.accepted += other.accepted
        self.overridden += other.overridden
        for code, n in other.reasons.items():
            self.reasons[code] = self.reasons.get(code, 0) + n

    def json(self) -> dict[str, Any]:
        return {
            "statement": self.statement,
            "title": self.title,
            "cards_shown": self.shown,
            "cards_with_feedback": self.with_feedback,
            "feedback_coverage": _share(self.with_feedback, self.shown),
            "accepted": self.accepted,
            "overridden": self.overridden,
            "other_feedback": self.with_feedback - self.accepted - self.overridden,
            "override_rate_of_feedback": _share(self.overridden, self.with_feedback),
            "override_rate_of_shown": _share(self.overridden, self.shown),
            "override_reasons": dict(sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        }


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _card_counts(store: Store, start: str, end: str, kb: KnowledgeBase) -> list[CardCounts]:
    rows = store.query(
        f"""SELECT c.statement, COUNT(*),
                   SUM(CASE WHEN f.card IS NOT NULL THEN 1 ELSE 0 END),
                   SUM(CASE WHEN f.overridden = 0 AND f.accepted > 0 THEN 1 ELSE 0 END),
                   SUM(CASE WHEN f.overridden > 0 THEN 1 ELSE 0 END)
            FROM cards c JOIN assessments a ON a.id = c.assessment_id
            LEFT JOIN (SELECT card, SUM(CASE WHEN outcome = 'overridden' THEN 1 ELSE 0 END) AS overridden,
                              SUM(CASE WHEN outcome = 'accepted' THEN 1 ELSE 0 END) AS accepted
                       FROM feedback GROUP BY card) f ON f.card = c.uuid
            WHERE {_PERIOD} GROUP BY c.statement""",
        [start, end],
    )
    reasons = store.query(
        f"""SELECT c.statement, f.override_code, COUNT(DISTINCT c.uuid) FROM feedback f
            JOIN cards c ON c.uuid = f.card JOIN assessments a ON a.id = c.assessment_id
            WHERE f.outcome = 'overridden' AND {_PERIOD}
            GROUP BY c.statement, f.override_code""",
        [start, end],
    )
    counts = {
        str(s): CardCounts(
            str(s),
            kb.statements[str(s)].title if str(s) in kb.statements else None,
            int(shown),
            int(feedback or 0),
            int(accepted or 0),
            int(overridden or 0),
        )
        for s, shown, feedback, accepted, overridden in rows
    }
    for statement, code, n in reasons:
        if str(statement) in counts:
            key = NO_REASON if code is None or str(code) == "" else str(code)
            found = counts[str(statement)].reasons
            found[key] = found.get(key, 0) + int(n)
    return sorted(counts.values(), key=lambda c: (-c.shown, c.statement))


def incomplete_hooks(store: Store, start: str, end: str) -> dict[str, Any]:
    """Hook calls in the period that could not run fully: refused with 412 (the patient or the orders could
    not be read) or answered with data missing, and how often each datum was missing (``unread``)."""
    rows = store.query(
        f"SELECT a.completeness, a.unread, COUNT(*) FROM assessments a WHERE {_PERIOD} "
        "AND a.completeness <> 'full' GROUP BY a.completeness, a.unread",
        [start, end],
    )
    counts = {"precondition-failed": 0, "partial": 0}
    unread: dict[str, int] = {}
    for completeness, names, n in rows:
        counts[str(completeness)] = counts.get(str(completeness), 0) + int(n)
        for name in json.loads(names or "[]"):
            unread[str(name)] = unread.get(str(name), 0) + int(n)
    return {**counts, "unread": dict(sorted(unread.items(), key=lambda kv: (-kv[1], kv[0])))}


def build_report(
    store: Store, since: dt.date | None = None, until: dt.date | None = None, kb: KnowledgeBase | None = None
) -> dict[str, Any]:
    kb = kb or load_knowledge()
    start, end = _bounds(since, until)
    answered = f"{_PERIOD} AND a.verdict IS NOT NULL"  # a 412 is a row without a verdict: not an assessment
    verdicts = store.query(
        f"SELECT a.verdict, COUNT(*) FROM assessments a WHERE {answered} GROUP BY a.verdict ORDER BY 2 DESC",
        [start, end],
    )
    latency = store.query(
        f"SELECT COUNT(*), AVG(a.latency_ms), MAX(a.latency_ms) FROM assessments a WHERE {answered}",
        [start, end],
    )[0]
    statements = _card_counts(store, start, end, kb)
    total = CardCounts(ALL)
    for counts in statements:
        total.add(counts)
    report: dict[str, Any] = {
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "assessments": int(latency[0]),
        "mean_latency_ms": round(float(latency[1]), 1) if latency[1] is not None else None,
        "max_latency_ms": round(float(latency[2]), 1) if latency[2] is not None else None,
        "verdicts": {str(v): int(n) for v, n in sorted(verdicts, key=lambda r: (-int(r[1]), str(r[0])))},
        "cards": total.json(),
        "statements": [s.json() for s in statements],
    }
    report["incomplete_hooks"] = incomplete_hooks(store, start, end)
    report["note"] = empty_sentence(report)
    return report


def _period_text(report: dict[str, Any]) -> str:
    since, until = report["since"], report["until"]
    if since and until and since == until:
        return f"on {since}"
    return f"from {since or 'the beginning'} to {until or 'now'}"


def empty_sentence(report: dict[str, Any]) -> str | None:
    """What a period without anything to count means, in words; None when there is something to count."""
    period = _period_text(report)
    cards = report["cards"]
    refused = report["incomplete_hooks"]["precondition-failed"]
    if report["assessments"] == 0 and refused:
        return f"No assessment was made {period}: {refused} hook call(s) were refused (412)."
    if report["assessments"] == 0:
        return f"No hook call was recorded {period}: there is nothing to report for this period."
    if cards["cards_shown"] == 0:
        return (
            f"No card was shown {period}: the service made {report['assessments']} assessment(s), none of "
            "which needed a card, so there are no override rates."
        )
    if cards["cards_with_feedback"] == 0:
        return (
            f"None of the {cards['cards_shown']} card(s) shown {period} has feedback from the EHR yet: the "
            "override rate of cards with feedback cannot be computed."
        )
    return None


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _statement_line(s: dict[str, Any]) -> str:
    return (
        f"  {s['statement']:30} {s['cards_shown']:>6} {s['cards_with_feedback']:>9} "
        f"{_pct(s['feedback_coverage']):>9} {s['accepted']:>9} {s['overridden']:>11} "
        f"{_pct(s['override_rate_of_feedback']):>14} {_pct(s['override_rate_of_shown']):>11}"
    )


def incomplete_hooks_lines(report: dict[str, Any]) -> list[str]:
    """The text report's line on hook calls that could not run fully (see ``incomplete_hooks``)."""
    incomplete = report["incomplete_hooks"]
    refused, partial = incomplete["precondition-failed"], incomplete["partial"]
    if not refused and not partial:
        return ["", "Every hook call could read what it needed."] if report["assessments"] else []
    lines = [
        "",
        f"Hook calls that could not run fully: {refused} refused (412: the patient or the orders could not "
        f"be read), {partial} answered with data missing.",
    ]
    if incomplete["unread"]:
        lines.append("  Not read: " + ", ".join(f"{k} {v}" for k, v in incomplete["unread"].items()))
    return lines


def report_text(report: dict[str, Any]) -> str:
    lines = [f"Assessments {_period_text(report)}: {report['assessments']}"]
    if report["mean_latency_ms"] is not None:
        lines[0] += f" (mean {report['mean_latency_ms']} ms, max {report['max_latency_ms']} ms)"
    lines += incomplete_hooks_lines(report)
    if report["note"]:
        lines += ["", report["note"]]
    if report["verdicts"]:
        lines += ["", "Verdicts:"] + [f"  {v:24} {n}" for v, n in report["verdicts"].items()]
    if report["statements"]:
        lines += [
            "",
            "Cards per statement: shown; with feedback from the EHR and its coverage of the cards shown;",
            "accepted; overridden; the override rate of the cards with feedback and of all cards shown.",
            "",
            f"  {'statement':30} {'shown':>6} {'feedback':>9} {'coverage':>9} {'accepted':>9} "
            f"{'overridden':>11} {'of feedback':>14} {'of shown':>11}",
        ]
        for s in report["statements"]:
            lines.append(_statement_line(s))
            for code, n in s["override_reasons"].items():
                lines.append(f"      overridden because {code}: {n}")
        lines.append(_statement_line(report["cards"]))
    return "\n".join(lines) + "\n"


CSV_COLUMNS = (
    "since",
    "until",
    "statement",
    "title",
    "cards_shown",
    "cards_with_feedback",
    "feedback_coverage",
    "accepted",
    "overridden",
    "other_feedback",
    "override_rate_of_feedback",
    "override_rate_of_shown",
    "override_reasons",
)


def _cell(value: Any) -> str:
    """A CSV cell; text a spreadsheet would run as a formula gets a leading ' (reasons come from EHRs)."""
    if value is None:
        return ""
    text = str(value)
    return "'" + text if isinstance(value, str) and text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def report_csv(report: dict[str, Any]) -> str:
    """One row per statement and one for all statements; reasons as ``code: n`` joined by ``; ``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    rows = [*report["statements"], report["cards"]] if report["statements"] else []
    for s in rows:
        values = {
            **s,
            "since": report["since"],
            "until": report["until"],
            "override_reasons": "; ".join(f"{code}: {n}" for code, n in s["override_reasons"].items()),
        }
        writer.writerow([_cell(values[c]) for c in CSV_COLUMNS])
    return out.getvalue()
