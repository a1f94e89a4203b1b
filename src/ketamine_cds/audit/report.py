"""The audit report: one self-contained HTML file for a pharmacy or quality team.

Every number is aggregated by DuckDB over ``findings.parquet`` (about ten grouped queries, each returning at
most a few hundred rows), so Python never holds more than that, for ten rows or ten million (about 10 s for
10M rows on two cores). The plots are inline SVG
drawn here; the file has no scripts, loads nothing and links only to the guideline sources (DOIs).

Adherence (per assessed administration, in this order):

- *departs*: the verdict is ``contraindicated`` or the dose is over its limit (``dose_status = 'exceeds'``);
- *out of scope*: a use the guideline does not cover (anesthesia, procedural sedation, depression);
- *cannot tell*: the dose could not be checked (no weight, no concentration) or an infusion is over the
  outside-intensive-care limit while the setting is unknown;
- *follows*: everything else: nothing the record shows contraindicates it and the dose is within its limit
  (or has no limit: infusions in intensive care, oral and intranasal doses).
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from .._kb import KnowledgeBase, load_knowledge
from .decide import limits

# --- what the numbers mean ------------------------------------------------------------------------

CATEGORIES: tuple[tuple[str, str, str], ...] = (  # key, label, colour (Okabe-Ito, colour-blind safe)
    ("follows", "follows the guideline", "#0072b2"),
    ("unclear", "cannot tell", "#a9b1ba"),
    ("scope", "outside the guideline's scope", "#e0cf9a"),
    ("departs", "departs from it", "#d55e00"),
)

VERDICT_MEANINGS: Mapping[str, str] = {
    "out-of-scope": "a use the pain guidelines do not cover (anesthesia, procedural sedation, depression)",
    "contraindicated": "the record shows a contraindication",
    "dose-exceeds-limit": "the dose is over the subanesthetic limit",
    "not-indicated": "procedure expected to cause only mild pain, and nothing else supports ketamine",
    "insufficient-evidence": "the evidence for this use is weak or absent",
    "needs-information": "a datum the decision depends on is missing (e.g. the indication)",
    "consider": "supported (grade B or moderate certainty)",
    "may-consider": "supported with low certainty only",
    "not assessed": "the row could not be read (see the rows that could not be assessed)",
}

STATUS_SERIES: tuple[tuple[str, str, str], ...] = (  # dose_status group, label, colour
    ("within", "within the limit", "#0072b2"),
    ("over", "over the limit", "#d55e00"),
    ("over-unless-icu", "over the limit, setting unknown", "#e69f00"),
    ("other", "not compared (see the verdict)", "#a9b1ba"),
)

ROLE_COLOURS: tuple[tuple[str, str, str], ...] = (  # role group, label, colour
    ("contraindication", "contraindication", "#d55e00"),
    ("caution", "caution", "#e69f00"),
    ("dose-limit", "dose limit (cited whenever a dose is checked)", "#0072b2"),
    ("evidence", "evidence for the use (for, against or insufficient)", "#6b7b8c"),
)

TOP_GROUPS = 15  # locations, indications and findings shown before "other"
TOP_PROBLEMS = 15
EXAMPLES = 20
_INK, _MUTED, _GRID = "#1b1f24", "#4a5561", "#d5dbe1"


def _adherence_sql(source: str) -> str:
    return f"""
    SELECT *,
      (problem IS NOT NULL OR verdict IS NULL) AS bad,
      CASE WHEN problem IS NOT NULL OR verdict IS NULL THEN NULL
           WHEN verdict = 'contraindicated' OR dose_status = 'exceeds' THEN 'departs'
           WHEN verdict = 'out-of-scope' THEN 'scope'
           WHEN dose_status IS NULL OR dose_status IN ('within', 'limit-not-applicable') THEN 'follows'
           ELSE 'unclear' END AS adherence,
      CASE WHEN list_contains(statements, 'dose-infusion-limit') THEN 'infusion'
           WHEN list_contains(statements, 'dose-bolus-limit') THEN 'bolus' END AS dose_kind,
      coalesce(lower(trim(setting)), 'unknown') = 'intensive-care' AS icu,
      CASE WHEN dose_status = 'within' THEN 'within' WHEN dose_status = 'exceeds' THEN 'over'
           WHEN dose_status = 'exceeds-unless-intensive-care' THEN 'over-unless-icu' ELSE 'other' END
        AS status_group
    FROM {source}
    """


# --- the aggregates ----------------------------------------------------------------------------------


@dataclass
class Histogram:
    width: float  # bin width
    bins: int  # regular bins over [0, width * bins]; one more bin for everything above
    counts: dict[int, dict[str, int]] = field(default_factory=dict)  # bin -> status group -> rows
    shown: int = 0
    without_per_kg: int = 0


@dataclass
class Group:
    label: str
    counts: dict[str, int]
    hint: str = ""

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class Example:
    admin_id: str
    administered_at: Any
    location: str | None
    indication: str | None
    setting: str | None
    kind: str | None
    dose_value: float | None
    dose_unit: str | None
    weight_kg: float | None
    dose_per_kg: float | None
    limit_per_kg: float | None
    dose_status: str | None
    verdict: str | None
    statements: list[str]


@dataclass
class Aggregates:
    administrations: int = 0
    bad: int = 0
    adherence: dict[str, int] = field(default_factory=dict)
    first: Any = None
    last: Any = None
    verdicts: list[tuple[str, int]] = field(default_factory=list)
    problems: list[tuple[str, int]] = field(default_factory=list)
    other_problems: tuple[int, int] = (0, 0)  # distinct reasons, rows
    bolus: Histogram = field(default_factory=lambda: Histogram(0.025, 40))
    infusion: Histogram = field(default_factory=lambda: Histogram(0.05, 50))
    icu_infusions: int = 0
    icu_per_kg: tuple[float | None, float | None, float | None] = (None, None, None)  # median, p95, max
    out_of_scope_doses: int = 0
    periods: list[tuple[dt.date, dict[str, int]]] = field(default_factory=list)
    period: str = "month"
    without_time: int = 0
    locations: list[Group] = field(default_factory=list)
    indications: list[Group] = field(default_factory=list)
    statements: list[tuple[str, int]] = field(default_factory=list)
    statement_kinds: int = 0
    over_limit: list[Example] = field(default_factory=list)
    over_limit_total: int = 0
    contraindicated: list[Example] = field(default_factory=list)
    contraindicated_total: int = 0

    @property
    def assessed(self) -> int:
        return self.administrations - self.bad


def _parquet(path: Path) -> str:
    return "read_parquet('" + str(path).replace("'", "''") + "')"


def aggregate(findings: Path, kb: KnowledgeBase | None = None) -> Aggregates:
    """Everything the report shows, computed by DuckDB over the findings (never all rows in Python).

    About ten scans of the Parquet file, each reading only the columns it needs; every result is small.
    """
    kb = kb or load_knowledge()
    lim = limits(kb)
    # the limit on a bin edge: boluses 0 to 1 mg/kg in 0.025 steps, infusions 0 to 2.5 mg/kg/h in 0.05 steps
    agg = Aggregates(bolus=Histogram(lim["bolus"] / 14, 40), infusion=Histogram(lim["infusion"] / 20, 50))
    con = duckdb.connect()
    try:
        con.execute("SET preserve_insertion_order = false")
        con.execute(f"CREATE TEMP VIEW f AS {_adherence_sql(_parquet(findings))}")
        _headline(con, agg)
        _problems(con, agg)
        _doses(con, agg)
        _over_time(con, agg)
        agg.locations = _groups(con, "location", "units")
        agg.indications = _groups(con, "indication", "indications", kb)
        _statements(con, agg)
        _examples(con, agg)
    finally:
        con.close()
    return agg


def _headline(con: duckdb.DuckDBPyConnection, agg: Aggregates) -> None:
    """Counts per verdict and adherence category, the period covered and a few counts for the captions."""
    rows = con.execute("""
        SELECT bad, adherence, verdict, count(*),
               min(administered_at), max(administered_at),
               count(*) FILTER (WHERE administered_at IS NULL),
               count(*) FILTER (WHERE dose_status = 'exceeds'),
               count(*) FILTER (WHERE verdict = 'out-of-scope' AND dose_value IS NOT NULL
                                AND lower(trim(route)) IN ('intravenous', 'iv'))
        FROM f GROUP BY 1, 2, 3
    """).fetchall()
    verdicts: dict[str, int] = {}
    firsts, lasts = [], []
    for bad, adherence, verdict, n, first, last, no_time, over, out_of_scope in rows:
        agg.administrations += int(n)
        name = "not assessed" if bad else str(verdict)
        verdicts[name] = verdicts.get(name, 0) + int(n)
        if bad:
            agg.bad += int(n)
            continue
        agg.adherence[str(adherence)] = agg.adherence.get(str(adherence), 0) + int(n)
        agg.without_time += int(no_time)
        agg.over_limit_total += int(over)
        agg.out_of_scope_doses += int(out_of_scope)
        firsts += [first] if first is not None else []
        lasts += [last] if last is not None else []
    agg.first, agg.last = min(firsts, default=None), max(lasts, default=None)
    agg.verdicts = sorted(verdicts.items(), key=lambda kv: (-kv[1], kv[0]))
    agg.contraindicated_total = verdicts.get("contraindicated", 0)


def _problems(con: duckdb.DuckDBPyConnection, agg: Aggregates) -> None:
    """The most frequent reasons a row could not be assessed; the rest summed, so every bad row is counted."""
    rows = con.execute(f"""
        WITH g AS (SELECT coalesce(problem, 'no verdict was recorded') AS reason, count(*) AS n
                   FROM f WHERE bad GROUP BY 1),
        r AS (SELECT reason, n, row_number() OVER (ORDER BY n DESC, reason) AS rn FROM g)
        SELECT CASE WHEN rn <= {TOP_PROBLEMS} THEN reason END AS reason, count(*), sum(n)
        FROM r GROUP BY 1 ORDER BY 1 IS NULL, 3 DESC, 1
    """).fetchall()
    for reason, kinds, n in rows:
        if reason is None:
            agg.other_problems = (int(kinds), int(n))
        else:
            agg.problems.append((str(reason), int(n)))


def _doses(con: duckdb.DuckDBPyConnection, agg: Aggregates) -> None:
    """Both histograms in one scan (bins right-closed, so a dose exactly at the limit is in the bin below)."""
    b, i = agg.bolus, agg.infusion
    rows = con.execute(f"""
        SELECT dose_kind, icu,
               CASE WHEN dose_per_kg IS NULL OR NOT isfinite(dose_per_kg) OR dose_per_kg < 0 THEN NULL
                    WHEN dose_kind = 'bolus'
                    THEN least(greatest(ceil(dose_per_kg / {b.width} - 1e-9) - 1, 0), {b.bins})
                    ELSE least(greatest(ceil(dose_per_kg / {i.width} - 1e-9) - 1, 0), {i.bins}) END AS bin,
               status_group, count(*)
        FROM f WHERE NOT bad AND dose_kind IS NOT NULL GROUP BY 1, 2, 3, 4
    """).fetchall()
    for kind, icu, bin_, status, n in rows:
        if kind == "infusion" and icu:
            agg.icu_infusions += int(n)
            continue
        hist = b if kind == "bolus" else i
        if bin_ is None:
            hist.without_per_kg += int(n)
            continue
        counts = hist.counts.setdefault(int(bin_), {})
        counts[str(status)] = counts.get(str(status), 0) + int(n)
        hist.shown += int(n)
    if agg.icu_infusions:
        row = con.execute(
            "SELECT quantile_cont(dose_per_kg, [0.5, 0.95]), max(dose_per_kg) FROM f "
            "WHERE NOT bad AND dose_kind = 'infusion' AND icu AND isfinite(dose_per_kg)"
        ).fetchone()
        if row and row[0] is not None:
            agg.icu_per_kg = (_float(row[0][0]), _float(row[0][1]), _float(row[1]))


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _over_time(con: duckdb.DuckDBPyConnection, agg: Aggregates) -> None:
    """Per month; per quarter or year when the data span more than six years or a stray date stretches them."""
    if not isinstance(agg.first, dt.date) or not isinstance(agg.last, dt.date):
        return  # no time, or one outside the calendar (read as text by the driver)
    first, last = agg.first, agg.last
    months = (last.year - first.year) * 12 + last.month - first.month + 1
    agg.period = "month" if months <= 72 else "quarter" if months <= 216 else "year"
    rows = con.execute(
        f"SELECT CAST(date_trunc('{agg.period}', administered_at) AS DATE), adherence, count(*) "
        "FROM f WHERE NOT bad AND administered_at IS NOT NULL GROUP BY 1, 2"
    ).fetchall()
    by: dict[dt.date, dict[str, int]] = {}
    for start, key, n in rows:
        by.setdefault(start, {})[str(key)] = int(n)
    if agg.period == "year" and len(by) > 72:  # a span of centuries: show the years that have data
        agg.periods = sorted(by.items())
        return
    step = {"month": 1, "quarter": 3, "year": 12}[agg.period]
    current, end = min(by), max(by)
    while current <= end:
        agg.periods.append((current, by.get(current, {})))
        index = current.year * 12 + current.month - 1 + step
        if index // 12 > dt.MAXYEAR:
            break
        current = dt.date(index // 12, index % 12 + 1, 1)


def _groups(
    con: duckdb.DuckDBPyConnection, column: str, plural: str, kb: KnowledgeBase | None = None
) -> list[Group]:
    """The busiest groups by adherence category, the rest together (a ward list can be long)."""
    rows = con.execute(f"""
        WITH g AS (SELECT {column} AS label, adherence, count(*) AS n FROM f WHERE NOT bad GROUP BY 1, 2),
        t AS (SELECT label, row_number() OVER (ORDER BY sum(n) DESC, label NULLS LAST) AS rn,
                     count(*) OVER () AS groups
              FROM g GROUP BY 1)
        SELECT least(t.rn, {TOP_GROUPS + 1}) AS bucket, CASE WHEN t.rn <= {TOP_GROUPS} THEN g.label END,
               g.adherence, sum(g.n), any_value(t.groups)
        FROM g JOIN t ON t.label IS NOT DISTINCT FROM g.label
        GROUP BY 1, 2, 3 ORDER BY 1
    """).fetchall()
    groups: dict[int, Group] = {}
    for bucket, label, key, n, total_groups in rows:
        b = int(bucket)
        if b not in groups:
            if b > TOP_GROUPS:
                text, hint = f"all other {plural} ({int(total_groups) - TOP_GROUPS:,})", ""
            elif label is None:
                text, hint = "(not recorded)", ""
            else:
                text = str(label)
                hint = kb.uses[text].label if kb is not None and text in kb.uses else ""
            groups[b] = Group(text, {}, hint)
        groups[b].counts[str(key)] = groups[b].counts.get(str(key), 0) + int(n)
    return [groups[b] for b in sorted(groups)]


def _statements(con: duckdb.DuckDBPyConnection, agg: Aggregates) -> None:
    rows = con.execute(
        "SELECT s, count(*) FROM (SELECT unnest(statements) AS s FROM f WHERE NOT bad) "
        "GROUP BY 1 ORDER BY 2 DESC, 1"
    ).fetchall()  # one row per statement id: a few dozen at most
    agg.statement_kinds = len(rows)
    agg.statements = [(str(s), int(n)) for s, n in rows[:TOP_GROUPS]]


_EXAMPLE_COLUMNS = (
    "admin_id, administered_at, location, indication, setting, dose_kind, dose_value, dose_unit, weight_kg, "
    "dose_per_kg, CAST(limit_per_kg AS DOUBLE), dose_status, verdict, statements"
)


def _examples(con: duckdb.DuckDBPyConnection, agg: Aggregates) -> None:
    agg.over_limit = _rows(
        con.execute(
            f"SELECT {_EXAMPLE_COLUMNS} FROM f WHERE NOT bad AND dose_status = 'exceeds' "
            f"ORDER BY dose_per_kg / CAST(limit_per_kg AS DOUBLE) DESC NULLS LAST, admin_id LIMIT {EXAMPLES}"
        ).fetchall()
    )
    agg.contraindicated = _rows(
        con.execute(
            f"SELECT {_EXAMPLE_COLUMNS} FROM f WHERE NOT bad AND verdict = 'contraindicated' "
            f"ORDER BY administered_at DESC NULLS LAST, admin_id LIMIT {EXAMPLES}"
        ).fetchall()
    )


def _rows(rows: Iterable[Sequence[Any]]) -> list[Example]:
    return [
        Example(
            admin_id="" if r[0] is None else str(r[0]),
            administered_at=r[1],
            location=r[2],
            indication=r[3],
            setting=r[4],
            kind=r[5],
            dose_value=_float(r[6]),
            dose_unit=r[7],
            weight_kg=_float(r[8]),
            dose_per_kg=_float(r[9]),
            limit_per_kg=_float(r[10]),
            dose_status=r[11],
            verdict=r[12],
            statements=[str(s) for s in (r[13] or [])],
        )
        for r in rows
    ]


# --- formatting ---------------------------------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _n(value: int) -> str:
    return f"{value:,}"


def _pct(part: int, whole: int) -> str:
    if whole <= 0:
        return "–"
    share = 100.0 * part / whole
    if 0 < share < 0.1:
        return "<0.1%"
    if 99.9 < share < 100:
        return ">99.9%"
    return f"{share:.1f}%"


def _num(value: float | None, digits: int = 2) -> str:
    if value is None or math.isnan(value):
        return "–"
    if math.isinf(value):
        return "∞"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        digits = min(digits, 1)
    text = f"{value:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _compact(value: float) -> str:
    """Axis numbers: 800, 2.5k, 400k, 1.5M."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


def _time(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _date(value: Any) -> str:
    if isinstance(value, dt.datetime | dt.date):
        return value.strftime("%Y-%m-%d")
    return "–" if value is None else str(value)


# --- SVG ------------------------------------------------------------------------------------------------


def _nice_ticks(top: float, count: int = 5, integer: bool = False) -> list[float]:
    """Round tick values from 0 to at least ``top`` (whole numbers only for counts)."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    if integer:
        step = max(1.0, float(math.ceil(step)))
    ticks = [0.0]
    while ticks[-1] < top - 1e-9:
        ticks.append(ticks[-1] + step)
    return ticks


def _svg_open(width: int, height: int, title: str, label: str, plot_id: str) -> list[str]:
    return [
        f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{_e(label)}" aria-describedby="{plot_id}-caption" class="chart" id="{plot_id}-svg" '
        f'font-family="system-ui, -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif" '
        f'font-size="12" fill="{_INK}" preserveAspectRatio="xMidYMin meet">',
        f"<title>{_e(title)}</title>",
    ]


def _text(x: float, y: float, text: str, *, anchor: str = "start", size: float = 12, **attrs: str) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{_e(v)}"' for k, v in attrs.items())
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size:g}"{extra}>{_e(text)}</text>'
    )


def _rect(x: float, y: float, w: float, h: float, colour: str, tip: str) -> str:
    return (
        f'<rect class="mark" x="{x:.2f}" y="{y:.2f}" width="{max(w, 0):.2f}" height="{max(h, 0):.2f}" '
        f'fill="{colour}"><title>{_e(tip)}</title></rect>'
    )


def _empty(width: int, height: int, message: str) -> str:
    """A dashed frame and a message on a white ground (drawn over grid and limit lines)."""
    box = _text_width(message, 14) + 20
    return (
        f'<rect x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" fill="none" stroke="{_GRID}" '
        f'stroke-dasharray="4 4"/><rect x="{(width - box) / 2:.1f}" y="{height / 2 - 30:.1f}" '
        f'width="{box:.1f}" height="28" fill="#ffffff"/>'
        + _text(width / 2, height / 2 - 11, message, anchor="middle", size=14, fill=_MUTED)
    )


# type sizes in SVG units: a 480-unit chart on a 360-pixel phone is drawn at 3/4 size, so 13 is 10 px there
_TICK, _LABEL, _W = 13.0, 14.0, 480


def _text_width(text: str, size: float, bold: bool = False) -> float:
    """Roughly how wide a line of proportional text is (good enough to lay out labels)."""
    return len(text) * size * (0.6 if bold else 0.55)


def _chars(width: float, size: float, bold: bool = False) -> int:
    return max(8, int(width / (size * (0.6 if bold else 0.55))))


def histogram_svg(hist: Histogram, limit: float, unit: str, kind: str, plot_id: str) -> str:
    width, height = _W, 290
    left, right, top, bottom = 62, 16, 28, 58
    pw, ph = width - left - right, height - top - bottom
    slot = pw / (hist.bins + 1.6)  # the overflow bin stands apart
    title = f"IV {kind} doses per kg against the {_num(limit)} {unit} limit"
    label = (
        f"Histogram of {_n(hist.shown)} IV {kind} doses per kg; "
        f"{_n(_series_total(hist, 'over'))} over the {_num(limit)} {unit} limit"
    )
    out = _svg_open(width, height, title, label, plot_id)
    top_edge = hist.width * hist.bins
    xticks = [t for t in _nice_ticks(top_edge, 5) if t < top_edge - 1e-9]

    def x_of(value: float) -> float:
        return left + value / hist.width * slot

    ymax = max((sum(c.values()) for c in hist.counts.values()), default=0)
    yticks = _nice_ticks(ymax or 1, 4, integer=True)
    ytop = yticks[-1]

    def y_of(count: float) -> float:
        return top + ph - count / ytop * ph

    for t in yticks:
        y = y_of(t)
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{_GRID}"/>')
        out.append(_text(left - 6, y + 4.5, _compact(t), anchor="end", size=_TICK, fill=_MUTED))
    for b, by_status in sorted(hist.counts.items()):
        x = x_of(b * hist.width) if b < hist.bins else left + (hist.bins + 0.6) * slot
        lo, hi = b * hist.width, (b + 1) * hist.width
        where = f"{_num(lo, 3)}–{_num(hi, 3)} {unit}" if b < hist.bins else f"over {_num(top_edge)} {unit}"
        base = 0
        for key, series_label, colour in STATUS_SERIES:
            n = by_status.get(key, 0)
            if not n:
                continue
            y0, y1 = y_of(base), y_of(base + n)
            out.append(_rect(x + 0.4, y1, slot - 0.8, y0 - y1, colour, f"{where}: {_n(n)} {series_label}"))
            base += n
    axis_y = top + ph
    out.append(f'<line x1="{left}" x2="{width - right}" y1="{axis_y}" y2="{axis_y}" stroke="{_INK}"/>')
    for t in xticks:
        x = x_of(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{axis_y}" y2="{axis_y + 4}" stroke="{_INK}"/>')
        out.append(_text(x, axis_y + 18, _num(t), anchor="middle", size=_TICK))
    over_x = left + (hist.bins + 1.1) * slot
    out.append(_text(over_x, axis_y + 18, f">{_num(top_edge)}", anchor="end", size=_TICK))
    lx = x_of(limit)
    out.append(
        f'<line class="limit" x1="{lx:.1f}" x2="{lx:.1f}" y1="{top - 10}" y2="{axis_y}" stroke="{_INK}" '
        f'stroke-width="2" stroke-dasharray="6 3"/>'
    )
    out.append(_text(lx + 5, top - 2, f"limit {_num(limit)} {unit}", size=_LABEL, font_weight="600"))
    if not hist.shown:
        out.append(_empty(width, height, f"No IV {kind} dose per kg to show"))
    out.append(_text(left + pw / 2, height - 10, f"Dose per kg ({unit})", anchor="middle", size=_LABEL))
    out.append(
        _text(
            15,
            top + ph / 2,
            "Administrations",
            anchor="middle",
            size=_LABEL,
            transform=f"rotate(-90 15 {top + ph / 2:.1f})",
        )
    )
    out.append("</svg>")
    return "".join(out)


def _series_total(hist: Histogram, key: str) -> int:
    return sum(c.get(key, 0) for c in hist.counts.values())


def _period_label(start: dt.date, period: str) -> str:
    if period == "month":
        return start.strftime("%Y-%m")
    if period == "quarter":
        return f"{start.year} Q{(start.month - 1) // 3 + 1}"
    return str(start.year)


def time_svg(periods: list[tuple[dt.date, dict[str, int]]], period: str, plot_id: str) -> str:
    width, height = _W, 280
    left, right, top, bottom = 52, 12, 14, 58
    pw, ph = width - left - right, height - top - bottom
    follows = sum(c.get("follows", 0) for _, c in periods)
    total = sum(sum(c.values()) for _, c in periods)
    title = f"Adherence per {period}"
    label = (
        f"Stacked bars, one per {period}, of the share of assessed administrations that follow the guideline, "
        f"cannot be told, are outside its scope or depart from it; overall {_pct(follows, total)} follow"
    )
    out = _svg_open(width, height, title, label, plot_id)
    for t in (0, 25, 50, 75, 100):
        y = top + ph - t / 100 * ph
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{_GRID}"/>')
        out.append(_text(left - 6, y + 4.5, f"{t}%", anchor="end", size=_TICK, fill=_MUTED))
    if not periods:
        out.append(_empty(width, height, "No administration time to show"))
    slot = pw / max(len(periods), 1)
    bar = min(slot * 0.8, 36.0)
    step_months = {"month": 1, "quarter": 3, "year": 12}[period]
    label_every = next(
        s
        for s in (1, 2, 3, 6, 12, 24, 60, 120, 10**9)
        if s >= step_months and len(periods) * step_months / s <= 6
    )
    axis_y = top + ph
    for i, (start, counts) in enumerate(periods):
        x = left + i * slot
        n = sum(counts.values())
        name = _period_label(start, period)
        if n == 0:
            out.append(
                f'<rect x="{x + (slot - bar) / 2:.2f}" y="{top}" width="{bar:.2f}" height="{ph}" '
                f'fill="none" stroke="{_GRID}" stroke-dasharray="2 2"><title>{_e(name)}: no administrations'
                "</title></rect>"
            )
        base = 0
        for key, cat_label, colour in CATEGORIES:
            c = counts.get(key, 0)
            if not c:
                continue
            y0 = axis_y - base / n * ph
            y1 = axis_y - (base + c) / n * ph
            tip = f"{name}: {_pct(c, n)} {cat_label} ({_n(c)} of {_n(n)})"
            out.append(_rect(x + (slot - bar) / 2, y1, bar, y0 - y1, colour, tip))
            base += c
        index = start.year * 12 + start.month - 1
        if index % label_every == 0 or len(periods) == 1:
            cx = x + slot / 2
            out.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{axis_y}" y2="{axis_y + 4}" stroke="{_INK}"/>')
            out.append(_text(cx, axis_y + 18, name, anchor="middle", size=_TICK))
    out.append(f'<line x1="{left}" x2="{width - right}" y1="{axis_y}" y2="{axis_y}" stroke="{_INK}"/>')
    out.append(
        _text(
            left + pw / 2, height - 10, f"Time of administration (per {period})", anchor="middle", size=_LABEL
        )
    )
    out.append(
        _text(
            13,
            top + ph / 2,
            "Share of administrations",
            anchor="middle",
            size=_LABEL,
            transform=f"rotate(-90 13 {top + ph / 2:.1f})",
        )
    )
    out.append("</svg>")
    return "".join(out)


def _wrap(text: str, limit: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > limit:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        lines.append(current)
    return [line if len(line) <= limit else line[: limit - 1] + "…" for line in lines] or [""]


def _percent_axis(out: list[str], left: float, pw: float, top: float, axis_y: float) -> None:
    for t in (0, 25, 50, 75, 100):
        x = left + t / 100 * pw
        anchor = "start" if t == 0 else "end" if t == 100 else "middle"
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{axis_y}" stroke="{_GRID}"/>')
        out.append(_text(x, axis_y + 17, f"{t}%", anchor=anchor, size=_TICK, fill=_MUTED))


def share_bars_svg(groups: list[Group], what: str, plot_id: str) -> str:
    """One 100% bar per group, its label and numbers above it, coloured by adherence category."""
    width = _W
    left, right, line_h, bar_h, gap = 2, 2, 17, 15, 11
    pw = width - left - right
    laid = []
    for g in groups:
        stat = f"n {_n(g.total)} · {_pct(g.counts.get('follows', 0), g.total)} follow"
        if g.counts.get("departs", 0):
            stat += f" · {_pct(g.counts['departs'], g.total)} depart"
        room = pw - _text_width(stat, _TICK) - 12
        lines = _wrap(g.label, _chars(room, _LABEL, bold=True))
        laid.append((g, stat, lines, len(lines) * line_h + 4 + bar_h + gap))
    top, axis_h = 4, 50
    height = top + (sum(h for *_, h in laid) if groups else 70) + axis_h
    title = f"Adherence by {what}"
    worst = max(groups, key=lambda g: g.counts.get("departs", 0) / max(g.total, 1), default=None)
    label = (
        f"One bar per {what} showing the share of its assessed administrations in each adherence category"
        + (
            f"; highest share departing: {worst.label}, {_pct(worst.counts.get('departs', 0), worst.total)}"
            if worst
            else ""
        )
    )
    out = _svg_open(width, height, title, label, plot_id)
    axis_y = height - axis_h + 8
    _percent_axis(out, left, pw, top, axis_y)
    if not groups:
        out.append(_empty(width, height - axis_h, f"No assessed administration to show by {what}"))
    y = top
    for g, stat, lines, h in laid:
        for i, line in enumerate(lines):
            out.append(_text(left, y + (i + 1) * line_h - 4, line, size=_LABEL, font_weight="600"))
        out.append(_text(width - right, y + line_h - 4, stat, anchor="end", size=_TICK, fill=_MUTED))
        by = y + len(lines) * line_h + 2
        base = 0
        for key, cat_label, colour in CATEGORIES:
            c = g.counts.get(key, 0)
            if not c or not g.total:
                continue
            name = f"{g.label} ({g.hint})" if g.hint else g.label
            tip = f"{name}: {_pct(c, g.total)} {cat_label} ({_n(c)} of {_n(g.total)})"
            out.append(_rect(left + base / g.total * pw, by, c / g.total * pw, bar_h, colour, tip))
            base += c
        y += h
    out.append(f'<line x1="{left}" x2="{width - right}" y1="{axis_y}" y2="{axis_y}" stroke="{_INK}"/>')
    out.append(
        _text(
            left + pw / 2,
            height - 6,
            f"Share of the {what}'s assessed administrations",
            anchor="middle",
            size=_LABEL,
        )
    )
    out.append("</svg>")
    return "".join(out)


def _role_group(role: str) -> str:
    if role in ("contraindication", "caution", "dose-limit"):
        return role
    return "evidence"


def findings_svg(statements: list[tuple[str, int]], assessed: int, kb: KnowledgeBase, plot_id: str) -> str:
    width = _W
    left, right, line_h, bar_h, gap = 2, 4, 17, 13, 10
    count_room = _text_width(_n(max((n for _, n in statements), default=0)), _TICK) + 8
    pw = width - left - right - count_room
    labels = []
    for sid, _ in statements:
        st = kb.statements.get(sid)
        labels.append(_wrap(f"{sid}: {st.title}" if st else sid, _chars(width - left - right, _LABEL)))
    heights = [len(lines) * line_h + 3 + bar_h + gap for lines in labels]
    top, axis_h = 4, 50
    height = top + (sum(heights) if statements else 70) + axis_h
    title = "Most frequent findings (guideline statements cited)"
    label = "Bars of how many assessed administrations cite each guideline statement" + (
        f"; most frequent: {statements[0][0]} ({_n(statements[0][1])})" if statements else ""
    )
    out = _svg_open(width, height, title, label, plot_id)
    xticks = _nice_ticks(max((n for _, n in statements), default=1), 3, integer=True)
    xtop = xticks[-1]
    axis_y = height - axis_h + 8
    for t in xticks:
        x = left + t / xtop * pw
        anchor = "start" if t == 0 else "middle"
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{axis_y}" stroke="{_GRID}"/>')
        out.append(_text(x, axis_y + 17, _compact(t), anchor=anchor, size=_TICK, fill=_MUTED))
    if not statements:
        out.append(_empty(width, height - axis_h, "No finding to show"))
    colours = {key: colour for key, _, colour in ROLE_COLOURS}
    y = top
    for (sid, n), lines, h in zip(statements, labels, heights, strict=True):
        st = kb.statements.get(sid)
        for i, line in enumerate(lines):
            out.append(_text(left, y + (i + 1) * line_h - 4, line, size=_LABEL))
        by = y + len(lines) * line_h + 1
        colour = colours[_role_group(st.role)] if st else _MUTED
        w = n / xtop * pw
        tip = f"{sid}: {_n(n)} administrations ({_pct(n, assessed)} of assessed)"
        out.append(_rect(left, by, w, bar_h, colour, tip))
        out.append(_text(left + w + 4, by + bar_h - 2, _n(n), size=_TICK, fill=_MUTED))
        y += h
    out.append(f'<line x1="{left}" x2="{left + pw}" y1="{axis_y}" y2="{axis_y}" stroke="{_INK}"/>')
    out.append(
        _text(left + pw / 2, height - 6, "Administrations citing the statement", anchor="middle", size=_LABEL)
    )
    out.append("</svg>")
    return "".join(out)


# --- the page -------------------------------------------------------------------------------------------

_CSS = """
:root { --ink: #1b1f24; --muted: #4a5561; --line: #c4cbd3; --wash: #f3f5f7; --link: #0b57a4;
  --stop: #a4161a; --go: #0072b2; color-scheme: light; }
*, *::before, *::after { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; text-size-adjust: 100%; }
body { margin: 0; font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  line-height: 1.5; color: var(--ink); background: #fff; overflow-wrap: break-word; }
header, main, footer { max-width: 60rem; margin: 0 auto; padding: 0 1rem; }
header { border-bottom: 4px solid var(--link); padding-top: 0.75rem; padding-bottom: 0.5rem; }
h1 { font-size: 1.6rem; line-height: 1.2; margin: 0.5rem 0; }
h2 { font-size: 1.3rem; line-height: 1.25; margin: 2rem 0 0.5rem; border-bottom: 1px solid var(--line);
  padding-bottom: 0.2rem; }
h3 { font-size: 1.08rem; margin: 1.25rem 0 0.25rem; }
a { color: var(--link); overflow-wrap: anywhere; }
.lede { color: var(--muted); margin: 0 0 0.5rem; }
.cards { display: grid; grid-template-columns: repeat(4, 1fr); gap: 0.6rem; margin: 0.75rem 0; padding: 0; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 0.5rem 0.75rem; background: var(--wash);
  margin: 0; }
.card dt { font-size: 0.85rem; color: var(--muted); font-weight: 600; }
.card dd { margin: 0; font-size: 1.55rem; font-weight: 700; line-height: 1.2; }
.card dd small { display: block; font-size: 0.8rem; font-weight: 400; color: var(--muted); }
.card.follows { border-left: 6px solid #0072b2; }
.card.departs { border-left: 6px solid #d55e00; }
.card.unclear { border-left: 6px solid #a9b1ba; }
.card.scope { border-left: 6px solid #e0cf9a; }
.card.bad { border-left: 6px solid var(--stop); }
.definition { background: var(--wash); border-left: 4px solid var(--link); padding: 0.5rem 0.75rem; }
.table-wrap { overflow-x: auto; margin: 0.5rem 0 1rem; }
table { border-collapse: collapse; font-size: 0.92rem; min-width: 18rem; }
table.wide { width: 100%; min-width: 36rem; font-size: 0.88rem; }
td small { color: var(--muted); font-size: 0.85em; white-space: nowrap; }
td.verdict small { white-space: normal; }
td code, th code { white-space: nowrap; }
th, td { text-align: left; padding: 0.3rem 0.55rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--wash); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.id { white-space: nowrap; }
td.statements { min-width: 13rem; }
td.statements code { display: inline-block; margin: 0 0.35rem 0.1rem 0; white-space: nowrap; font-size: 0.85em; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.9em; }
.contra { color: var(--stop); font-weight: 700; }
.plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 26rem), 1fr)); gap: 0 1.5rem; }
figure.plot { margin: 1rem 0; break-inside: avoid; page-break-inside: avoid; max-width: 38rem; }
figure.plot svg { display: block; width: 100%; height: auto; max-width: 100%; }
figcaption { font-size: 0.9rem; color: var(--muted); margin-top: 0.35rem; }
figcaption strong { color: var(--ink); }
.legend { display: flex; flex-wrap: wrap; gap: 0.15rem 1rem; list-style: none; padding: 0; margin: 0.25rem 0 0;
  font-size: 0.88rem; }
.legend li { display: flex; align-items: center; gap: 0.35rem; }
.swatch { display: inline-block; width: 0.95rem; height: 0.95rem; border-radius: 2px; flex: none;
  border: 1px solid rgba(0,0,0,.25); }
.swatch.line { height: 0; border: 0; border-top: 2px dashed var(--ink); border-radius: 0; }
.note { color: var(--muted); font-size: 0.92rem; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 0.2rem 1rem; margin: 0.5rem 0; }
dl.meta dt { font-weight: 600; }
dl.meta dd { margin: 0; overflow-wrap: anywhere; }
footer { margin-top: 2rem; padding-top: 0.75rem; padding-bottom: 2rem; border-top: 1px solid var(--line);
  color: var(--muted); font-size: 0.85rem; }
@media (max-width: 40rem) {
  h1 { font-size: 1.35rem; }
  .cards { grid-template-columns: repeat(2, 1fr); }
  .card dd { font-size: 1.3rem; }
  dl.meta { grid-template-columns: 1fr; }
  dl.meta dd { margin-bottom: 0.4rem; }
}
@media print {
  @page { margin: 14mm; }
  body { font-size: 10pt; }
  header, main, footer { max-width: none; padding: 0; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  h2 { break-after: avoid; page-break-after: avoid; }
  .table-wrap { overflow: visible; }
  table { font-size: 8.5pt; }
  tr, .card, figure.plot { break-inside: avoid; page-break-inside: avoid; }
  figure.plot { max-width: 15cm; }
  a { color: var(--ink); text-decoration: none; }
  a[href^="https://doi.org/"]::after { content: " (" attr(href) ")"; font-size: 0.85em; }
}
"""


def _legend(items: Iterable[tuple[str, str]], limit_line: str | None = None) -> str:
    parts = [f'<li><span class="swatch" style="background:{c}"></span>{_e(label)}</li>' for label, c in items]
    if limit_line:
        parts.append(f'<li><span class="swatch line"></span>{_e(limit_line)}</li>')
    return '<ul class="legend">' + "".join(parts) + "</ul>"


def _status_legend(hist: Histogram) -> str:
    return _legend([(lbl, c) for k, lbl, c in STATUS_SERIES if _series_total(hist, k)], "the limit")


def _figure(plot_id: str, heading: str, svg: str, legend: str, caption: str) -> str:
    return (
        f'<figure class="plot" data-plot="{plot_id}" id="{plot_id}">'
        f"<h3>{_e(heading)}</h3>{svg}{legend}"
        f'<figcaption id="{plot_id}-caption">{caption}</figcaption></figure>'
    )


def _card(key: str, label: str, value: str, note: str, css: str = "") -> str:
    small = f"<small>{note}</small>" if note else ""
    return f'<div class="card {css}"><dt>{_e(label)}</dt><dd id="n-{key}">{_e(value)}{small}</dd></div>'


def _table(
    headers: Sequence[tuple[str, str]], rows: Iterable[Sequence[tuple[str, str]]], label: str, css: str = ""
) -> str:
    head = "".join(f'<th scope="col" class="{cls}">{_e(h)}</th>' for h, cls in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="{cls}">{cell}</td>' for cell, cls in row) + "</tr>" for row in rows
    )
    return (
        f'<div class="table-wrap" role="region" aria-label="{_e(label)}" tabindex="0">'
        f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
    )


def _summary_value(summary: Mapping[str, Any], key: str) -> str:
    value = summary.get(key)
    return "not recorded" if value is None or value == "" else str(value)


def _kb_text(summary: Mapping[str, Any], kb: KnowledgeBase) -> str:
    recorded = summary.get("knowledge_base") or summary.get("kb_version")
    if isinstance(recorded, Mapping):
        version = recorded.get("version", kb.version)
        digest = recorded.get("digest", kb.digest)
        return f"{version} ({digest})"
    if recorded:
        return str(recorded)
    return f"{kb.version} ({kb.digest})"


def render(agg: Aggregates, summary: Mapping[str, Any], kb: KnowledgeBase, written: dt.datetime) -> str:
    lim = limits(kb)
    bolus_limit, infusion_limit = lim["bolus"], lim["infusion"]
    assessed = agg.assessed
    a = agg.adherence
    period = (
        f"{_date(agg.first)} to {_date(agg.last)}"
        if agg.first is not None
        else "no administration time recorded"
    )
    parts: list[str] = []
    add = parts.append
    add(
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="color-scheme" content="light">'
        f"<title>Ketamine audit report: {_e(_summary_value(summary, 'input'))}</title>"
        f"<style>{_CSS}</style></head><body>"
    )
    add(
        "<header><h1>Ketamine administrations: guideline audit</h1>"
        f'<p class="lede">{_n(agg.administrations)} administrations from {period}, audited against the '
        f"{_e(kb.guideline)} (knowledge base {_e(_kb_text(summary, kb))}).</p></header><main>"
    )

    # --- at a glance
    add('<section id="summary" aria-labelledby="summary-h"><h2 id="summary-h">At a glance</h2>')
    add('<dl class="cards" aria-label="Rows">')
    add(_card("administrations", "Administrations", _n(agg.administrations), "rows in the input"))
    add(_card("assessed", "Assessed", _n(assessed), _e(_pct(assessed, agg.administrations)) + " of rows"))
    add(
        _card(
            "bad-rows",
            "Not assessed (bad rows)",
            _n(agg.bad),
            f'<a href="#bad-rows">{_e(_pct(agg.bad, agg.administrations))} of rows: why</a>',
            "bad",
        )
    )
    add('</dl><dl class="cards" aria-label="Adherence of the assessed administrations">')
    for key, _, _ in CATEGORIES:
        text = {
            "follows": "Follow the guideline",
            "unclear": "Cannot tell",
            "scope": "Outside its scope",
            "departs": "Depart from it",
        }[key]
        add(_card(key, text, _pct(a.get(key, 0), assessed), f"{_n(a.get(key, 0))} of assessed", key))
    add("</dl>")
    add(
        '<p class="definition" id="definition"><strong>Following the guideline</strong> means: the '
        "administration was assessed, nothing the record shows contraindicates it, and its dose is within the "
        f"subanesthetic limit: IV bolus at most {_num(bolus_limit)} mg/kg in every setting, IV infusion at "
        f"most {_num(infusion_limit)} mg/kg/h outside intensive care (no limit applies in intensive care; oral "
        "and intranasal doses have none). It <strong>departs</strong> when contraindicated or over the limit. "
        "<strong>Cannot tell</strong>: the dose could not be checked (no weight for a dose in mg, no "
        "concentration for a volume) or an infusion is over the limit while the setting is not recorded. "
        "<strong>Outside its scope</strong>: anesthesia, procedural sedation or depression, which the pain "
        "guidelines do not cover. Shares are of assessed administrations; whether the evidence supports the "
        "indication (weak evidence, mild-pain procedures) is shown in the verdicts, not counted here.</p>"
    )
    add("</section>")

    # --- bad rows
    add(
        '<section id="bad-rows" aria-labelledby="bad-rows-h"><h2 id="bad-rows-h">Rows that could not be '
        "assessed</h2>"
    )
    if agg.bad == 0:
        add("<p>None: every row was assessed.</p>")
    else:
        add(
            f"<p>{_n(agg.bad)} of {_n(agg.administrations)} rows ({_pct(agg.bad, agg.administrations)}) could "
            "not be read well enough to assess. They are counted here and left out of every share and plot "
            "below; fix them in the source data and run the audit again.</p>"
        )
        rows = [[(_e(r), ""), (_n(n), "num"), (_pct(n, agg.bad), "num")] for r, n in agg.problems]
        kinds, rest = agg.other_problems
        if rest:
            rows.append(
                [(f"<em>{_n(kinds)} other reasons</em>", ""), (_n(rest), "num"), (_pct(rest, agg.bad), "num")]
            )
        rows.append(
            [
                ("<strong>Total</strong>", ""),
                (f"<strong>{_n(agg.bad)}</strong>", "num"),
                (_pct(agg.bad, agg.bad), "num"),
            ]
        )
        add(
            _table(
                [("Reason", ""), ("Rows", "num"), ("Share", "num")], rows, "Reasons rows were not assessed"
            )
        )
    add("</section>")

    # --- verdicts
    add('<section id="verdicts" aria-labelledby="verdicts-h"><h2 id="verdicts-h">Verdicts</h2>')
    add(
        "<p>The engine's verdict for each administration, the most decisive that applies (a contraindication "
        "outranks a dose over the limit, which outranks the evidence for the use).</p>"
    )
    vrows = [
        [
            (f"<code>{_e(v)}</code><br><small>{_e(VERDICT_MEANINGS.get(v, ''))}</small>", "verdict"),
            (_n(n), "num"),
            (_pct(n, agg.administrations), "num"),
        ]
        for v, n in agg.verdicts
    ]
    add(_table([("Verdict", ""), ("Administrations", "num"), ("Share", "num")], vrows, "Verdict counts"))
    add("</section>")

    # --- doses
    add(
        '<section id="doses" aria-labelledby="doses-h"><h2 id="doses-h">Doses against the limits</h2>'
        '<div class="plots">'
    )
    over = _series_total(agg.bolus, "over")
    bolus_caption = (
        f"Each assessed IV bolus by its dose per kg, in bins of {_num(agg.bolus.width, 3)} mg/kg; the last bar "
        f"gathers everything over {_num(agg.bolus.width * agg.bolus.bins)} mg/kg (often a unit error). "
        + (
            f"<strong>{_n(over)} of {_n(agg.bolus.shown)} ({_pct(over, agg.bolus.shown)})</strong> are over the "
            f"{_num(bolus_limit)} mg/kg limit, which applies in every setting."
            if agg.bolus.shown
            else "No assessed IV bolus has a dose per kg."
        )
        + _not_shown(agg.bolus.without_per_kg, "bolus", "boluses", "a dose per kg")
    )
    add(
        _figure(
            "dose-bolus",
            "IV boluses",
            histogram_svg(agg.bolus, bolus_limit, "mg/kg", "bolus", "dose-bolus"),
            _status_legend(agg.bolus),
            bolus_caption,
        )
    )
    inf_over = _series_total(agg.infusion, "over")
    inf_unknown = _series_total(agg.infusion, "over-unless-icu")
    icu_median, icu_p95, icu_max = agg.icu_per_kg
    icu_note = (
        f" <strong>Intensive care is not in this chart:</strong> {_plural(agg.icu_infusions, 'infusion')} "
        "there (no limit applies)"
        + (
            f": median {_num(icu_median)}, 95th percentile {_num(icu_p95)}, highest {_num(icu_max)} mg/kg/h."
            if icu_median is not None
            else "."
        )
    )
    infusion_caption = (
        "Each assessed IV infusion outside intensive care (or with the setting not recorded) by its rate per "
        f"kg, in bins of {_num(agg.infusion.width, 3)} mg/kg/h. "
        + (
            f"<strong>{_n(inf_over)} of {_n(agg.infusion.shown)} ({_pct(inf_over, agg.infusion.shown)})"
            f"</strong> are over the {_num(infusion_limit)} mg/kg/h limit"
            + (
                f"; {_n(inf_unknown)} more are over it with the setting not recorded (within the rules if given "
                "in intensive care)."
                if inf_unknown
                else "."
            )
            if agg.infusion.shown
            else "No assessed IV infusion outside intensive care has a rate per kg."
        )
        + _not_shown(agg.infusion.without_per_kg, "infusion", "infusions", "a rate per kg")
        + icu_note
    )
    add(
        _figure(
            "dose-infusion",
            "IV infusions outside intensive care",
            histogram_svg(agg.infusion, infusion_limit, "mg/kg/h", "infusion", "dose-infusion"),
            _status_legend(agg.infusion),
            infusion_caption,
        )
    )
    add("</div>")
    if agg.out_of_scope_doses:
        add(
            f'<p class="note">{_n(agg.out_of_scope_doses)} IV doses for uses outside the guidelines\' scope '
            "(anesthesia, procedural sedation, depression) are not compared with the limits and not shown.</p>"
        )
    add("</section>")

    # --- over time, location, indication
    cat_legend = _legend([(label, colour) for _, label, colour in CATEGORIES])
    add(
        '<section id="adherence" aria-labelledby="adherence-h"><h2 id="adherence-h">Where and when</h2>'
        '<div class="plots">'
    )
    in_time = sum(sum(c.values()) for _, c in agg.periods)
    counts = [sum(c.values()) for _, c in agg.periods]
    busy = f" (from {_n(min(counts))} to {_n(max(counts))} a {agg.period})" if len(set(counts)) > 1 else ""
    add(
        _figure(
            "time",
            f"Adherence per {agg.period}",
            time_svg(agg.periods, agg.period, "time"),
            cat_legend,
            f"The share of assessed administrations in each category, per {agg.period} of administration, "
            f"{_plural(in_time, 'administration')} in {_plural(len(agg.periods), agg.period)}{busy}."
            + (f" A dashed outline marks a {agg.period} without any." if any(not c for c in counts) else "")
            + (
                f" {_n(agg.without_time)} assessed administrations without a time are not shown."
                if agg.without_time
                else ""
            ),
        )
    )
    add(
        _figure(
            "location",
            "By location",
            share_bars_svg(agg.locations, "location", "location"),
            cat_legend,
            f"The share of each location's (ward's or unit's) assessed administrations in each category, the "
            f"{TOP_GROUPS} busiest first"
            + (", the rest together" if len(agg.locations) > TOP_GROUPS else "")
            + ". Small units swing widely; n is the number of administrations.",
        )
    )
    add(
        _figure(
            "indication",
            "By indication",
            share_bars_svg(agg.indications, "indication", "indication"),
            cat_legend,
            "The share of each recorded indication's assessed administrations in each category, most frequent "
            "first. Out-of-scope uses are the indications the pain guidelines do not cover.",
        )
    )
    add(
        _figure(
            "findings",
            "Most frequent findings",
            findings_svg(agg.statements, assessed, kb, "findings"),
            _legend([(label, colour) for _, label, colour in ROLE_COLOURS]),
            "How many assessed administrations cite each guideline statement ("
            + (
                f"the {TOP_GROUPS} most frequent of {agg.statement_kinds}"
                if agg.statement_kinds > TOP_GROUPS
                else f"all {agg.statement_kinds} cited"
            )
            + "). One administration usually cites several. Dose-limit statements are cited "
            "whenever a dose is checked, within the limit or not; contraindications and cautions only when "
            "the record shows the condition.",
        )
    )
    add("</div></section>")

    # --- adherence by opioid tolerance (issue 16: tolerance_report.py)
    from .tolerance_report import tolerance_section

    add(tolerance_section(summary))

    # --- examples
    add(
        '<section id="examples" aria-labelledby="examples-h"><h2 id="examples-h">Administrations to review</h2>'
        "<p>Identifiers exactly as they appear in the input. Patient identifiers are left out of this report; "
        "the administration id leads back to the record.</p>"
    )
    add(f"<h3>{_heading(agg.over_limit_total, 'Doses over the limit', 'highest doses over the limit')}</h3>")
    add(
        "<p>Ranked by how many times the limit the dose is. A dose ten or a thousand times the limit is more "
        "often a unit error in the record (mcg written as mg, a per-kg dose written as mg) than a dose given; "
        "either way it needs a look.</p>"
    )
    add(_examples_table(agg.over_limit, kb, "Highest doses over the limit", "No dose is over its limit."))
    add(
        "<h3>"
        + _heading(
            agg.contraindicated_total,
            "Contraindicated administrations",
            "most recent contraindicated administrations",
        )
        + "</h3>"
    )
    add(
        _examples_table(
            agg.contraindicated,
            kb,
            "Contraindicated administrations",
            "No administration is contraindicated.",
        )
    )
    add("</section>")

    # --- about
    add(
        '<section id="about" aria-labelledby="about-h"><h2 id="about-h">About this audit</h2><dl class="meta">'
    )
    seconds = summary.get("seconds")
    meta = [
        ("Knowledge base", _kb_text(summary, kb)),
        ("Guideline", kb.guideline),
        ("Engine", _summary_value(summary, "engine")),
        ("Input", _summary_value(summary, "input")),
        ("Input form", _summary_value(summary, "form")),
        ("Decision classes", _summary_value(summary, "decision_classes")),
        ("Audit run time", f"{seconds} s" if seconds is not None else "not recorded"),
        ("Report written", written.strftime("%Y-%m-%d %H:%M %Z").strip()),
    ]
    for key, value in meta:
        add(f"<dt>{_e(key)}</dt><dd>{_e(value)}</dd>")
    add("</dl>")
    add(
        "<h3>What the audit cannot see</h3><ul>"
        "<li><strong>Opioid use</strong> is read from the opioid prescriptions in the input (FHIR, OMOP) or its "
        "tolerance column; where it cannot be, tolerance is <em>unknown</em> (never counted as not tolerant), "
        "and support that rests on it (opioid-tolerant surgery, sickle cell pain) is cited only when the "
        "record lists opioid dependence as a condition.</li>"
        "<li><strong>Conditions</strong> are those the input lists at the time. A contraindication the record "
        "does not mention is <em>not found</em>, not ruled out: the share departing is a lower bound.</li>"
        f"<li><strong>Setting</strong>: where it is not recorded, an infusion over {_num(infusion_limit)} "
        "mg/kg/h cannot be judged "
        "(the limit does not apply in intensive care); these count as <em>cannot tell</em>.</li>"
        "<li><strong>Weight</strong>: a dose in mg without a weight cannot be compared with a per-kg limit. "
        "The weight is the one the input gives; it is never guessed.</li>"
        "<li><strong>Each administration on its own</strong>: cumulative doses, repeated boluses, infusion "
        "duration, monitoring and outcomes are not assessed. Oral and intranasal doses have no limit in the "
        "guidelines and are not checked.</li>"
        "<li>Verdicts come from the same engine as the clinician page and the CDS Hooks service; see each "
        "statement's grade and wording there.</li></ul>"
    )
    add("<h3>Sources</h3><ul>")
    seen: dict[str, str] = {}
    for st in kb.statements.values():
        for source in st.sources:
            seen.setdefault(source.url, source.label)
    for url, source_label in seen.items():
        link = f'<a href="{_e(url)}">{_e(url)}</a>' if url.startswith("https://doi.org/") else _e(url)
        add(f"<li>{_e(source_label)}. {link}</li>")
    add("</ul></section></main>")
    add(
        f"<footer>ketamine-cds audit report · knowledge base {_e(_kb_text(summary, kb))} · written "
        f"{_e(written.strftime('%Y-%m-%d %H:%M'))}. Decision support, not a substitute for clinical "
        "judgement.</footer></body></html>\n"
    )
    return "".join(parts)


_STATUS_TEXT: Mapping[str, str] = {
    "within": "within the limit",
    "exceeds": "over the limit",
    "limit-not-applicable": "no limit (intensive care)",
    "exceeds-unless-intensive-care": "over, unless in intensive care",
    "cannot-check-no-weight": "not checked: no weight",
    "cannot-check-no-concentration": "not checked: no concentration",
}


def _heading(total: int, all_of_them: str, top: str) -> str:
    if total <= EXAMPLES:
        return f"{all_of_them} ({_n(total)})" if total else f"{all_of_them} (none)"
    return f"The {EXAMPLES} {top} (of {_n(total)})"


def _not_shown(n: int, one: str, many: str, what: str) -> str:
    if not n:
        return ""
    return (
        f" {_n(n)} {one if n == 1 else many} without {what} (no weight for a dose in mg, or no concentration "
        f"for a volume) {'is' if n == 1 else 'are'} not shown."
    )


def _plural(n: int, word: str) -> str:
    return f"{_n(n)} {word}" + ("" if n == 1 else "s")


def _examples_table(rows: list[Example], kb: KnowledgeBase, label: str, none: str) -> str:
    """Few, stacked columns, so the table fits a page and a phone without hiding the statements."""
    if not rows:
        return f"<p>{_e(none)}</p>"
    body = []
    for r in rows:
        unit = "mg/kg/h" if r.kind == "infusion" else "mg/kg"
        dose = "–" if r.dose_value is None else f"{_num(r.dose_value, 3)} {r.dose_unit or ''}".strip()
        per_kg = "–" if r.dose_per_kg is None else f"{_num(r.dose_per_kg)} {unit}"
        if r.dose_status == "exceeds" and r.dose_per_kg is not None and r.limit_per_kg:
            check = f"{_num(r.dose_per_kg / r.limit_per_kg, 1)}× the limit"
        else:
            check = _STATUS_TEXT.get(r.dose_status or "", "dose not checked")
        statements = " ".join(_statement_code(s, kb) for s in r.statements) or "–"
        body.append(
            [
                (f"<code>{_e(r.admin_id)}</code><br><small>{_e(_time(r.administered_at))}</small>", "id"),
                (
                    f"{_e(r.location or '(not recorded)')}<br><small>{_e(r.indication or '(no indication)')}</small>",
                    "",
                ),
                (f"{_e(dose)}<br><small>{_e(r.kind or 'not IV')}</small>", "num"),
                (f"{_e(per_kg)}<br><small>{_e(check)}</small>", "num"),
                (f"<code>{_e(r.verdict or '–')}</code>", ""),
                (statements, "statements"),
            ]
        )
    headers = [
        ("Administration, time", ""),
        ("Location, indication", ""),
        ("Dose as recorded", "num"),
        ("Per kg, check", "num"),
        ("Verdict", ""),
        ("Statements", ""),
    ]
    return _table(headers, body, label, "wide")


def _statement_code(sid: str, kb: KnowledgeBase) -> str:
    st = kb.statements.get(sid)
    css = ' class="contra"' if st is not None and st.role == "contraindication" else ""
    title = f' title="{_e(st.title)}"' if st is not None else ""
    return f"<code{css}{title}>{_e(sid)}</code>"


def write_report(findings: Path, summary: Mapping[str, Any], path: Path) -> None:
    """Write the HTML report for ``findings.parquet`` (see the module docstring for the definitions)."""
    kb = load_knowledge()
    agg = aggregate(findings, kb)
    text = render(agg, summary, kb, dt.datetime.now().astimezone())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
