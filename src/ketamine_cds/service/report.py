"""``ketamine-cds report``: verdict counts and override rates per statement over a period."""

from __future__ import annotations

import datetime as dt
from typing import Any

from .store import Store


def _bounds(since: dt.date | None, until: dt.date | None) -> tuple[str, str]:
    start = dt.datetime.combine(since or dt.date(1970, 1, 1), dt.time(), tzinfo=dt.UTC)
    end = dt.datetime.combine(
        (until or dt.date(9998, 12, 31)) + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC
    )
    return start.isoformat(timespec="milliseconds"), end.isoformat(timespec="milliseconds")


def build_report(store: Store, since: dt.date | None = None, until: dt.date | None = None) -> dict[str, Any]:
    start, end = _bounds(since, until)
    period = "a.created_at >= ? AND a.created_at < ?"
    verdicts = store.query(
        f"SELECT a.verdict, COUNT(*) FROM assessments a WHERE {period} GROUP BY a.verdict ORDER BY 2 DESC",
        [start, end],
    )
    cards = store.query(
        f"""SELECT c.statement, COUNT(*),
                   SUM(CASE WHEN f.outcome = 'accepted' THEN 1 ELSE 0 END),
                   SUM(CASE WHEN f.outcome = 'overridden' THEN 1 ELSE 0 END)
            FROM cards c JOIN assessments a ON a.id = c.assessment_id
            LEFT JOIN (SELECT card, MAX(outcome) AS outcome FROM feedback GROUP BY card) f ON f.card = c.uuid
            WHERE {period} GROUP BY c.statement ORDER BY 2 DESC""",
        [start, end],
    )
    reasons = store.query(
        f"""SELECT c.statement, f.override_code, COUNT(*) FROM feedback f
            JOIN cards c ON c.uuid = f.card JOIN assessments a ON a.id = c.assessment_id
            WHERE f.outcome = 'overridden' AND {period}
            GROUP BY c.statement, f.override_code ORDER BY 3 DESC""",
        [start, end],
    )
    latency = store.query(
        f"SELECT COUNT(*), AVG(a.latency_ms), MAX(a.latency_ms) FROM assessments a WHERE {period}",
        [start, end],
    )[0]
    statements = []
    for statement, shown, accepted, overridden in cards:
        answered = int(accepted or 0) + int(overridden or 0)
        statements.append(
            {
                "statement": statement,
                "cards": int(shown),
                "accepted": int(accepted or 0),
                "overridden": int(overridden or 0),
                "override_rate": round(int(overridden or 0) / answered, 3) if answered else None,
                "override_reasons": {str(code): int(n) for s, code, n in reasons if s == statement},
            }
        )
    return {
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "assessments": int(latency[0]),
        "mean_latency_ms": round(float(latency[1]), 1) if latency[1] is not None else None,
        "max_latency_ms": round(float(latency[2]), 1) if latency[2] is not None else None,
        "verdicts": {str(v): int(n) for v, n in verdicts},
        "statements": statements,
    }


def report_text(report: dict[str, Any]) -> str:
    period = f"{report['since'] or 'the beginning'} to {report['until'] or 'now'}"
    lines = [f"Assessments from {period}: {report['assessments']}"]
    if report["mean_latency_ms"] is not None:
        lines[0] += f" (mean {report['mean_latency_ms']} ms, max {report['max_latency_ms']} ms)"
    lines += ["", "Verdicts:"] + [f"  {v:24} {n}" for v, n in report["verdicts"].items()]
    lines += ["", f"  {'statement':30} {'cards':>6} {'accepted':>9} {'overridden':>11} {'override rate':>14}"]
    for s in report["statements"]:
        rate = f"{s['override_rate']:.1%}" if s["override_rate"] is not None else "-"
        lines.append(
            f"  {s['statement']:30} {s['cards']:>6} {s['accepted']:>9} {s['overridden']:>11} {rate:>14}"
        )
        for code, n in s["override_reasons"].items():
            lines.append(f"      overridden because {code}: {n}")
    return "\n".join(lines) + "\n"
