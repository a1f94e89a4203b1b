"""The audit report: one self-contained HTML file for a pharmacy or quality team, and per-unit CSV exports.

Every number is aggregated by DuckDB over ``findings.parquet`` (a dozen grouped queries, each returning at
most a few thousand rows), so Python never holds more than that, for ten rows or ten million; findings from
DuckDB and from Spark go through the same code. What is counted, and how, is defined in ``measures.py``
(categories and headline measures), ``departures.py`` (reasons, the documentation-error rule, the exports)
and ``runchart.py`` (the run-chart rules). The page is drawn by Jinja2 templates (``templates/``, automatic
escaping); the plots are inline SVG; the file has no scripts, loads nothing and links only to the guideline
sources (DOIs) and to the unit exports written beside it (``departures/``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any

import duckdb
import jinja2

from .._errors import UnitError
from .._kb import KnowledgeBase, load_knowledge
from .._units import parse_unit
from . import charts, fmt
from .charts import Group, Histogram
from .decide import limits
from .departures import (
    CAUSE_SQL,
    CAUSES,
    DOCUMENTATION_ERROR_SQL,
    EXPORT_DIR,
    MANY_TIMES,
    MULTIPLE_EDGES,
    MULTIPLE_SQL,
    multiple_bin_label,
    multiple_bin_sql,
    swappable_units,
    write_exports,
)
from .measures import (
    CATEGORIES,
    Cell,
    Measure,
    Partition,
    classify,
    headline_measures,
    partition,
)
from .runchart import MIN_POINTS, RULES, RunChart, run_chart
from .sql import str_list
from .svg import Chart

VERDICT_MEANINGS: Mapping[str, str] = {
    "out-of-scope": "a use the pain guidelines do not cover (anesthesia, procedural sedation, depression)",
    "contraindicated": "the record shows a contraindication",
    "dose-exceeds-limit": "the dose is over the subanesthetic limit",
    "not-indicated": "the guideline finds no benefit or recommends against (mild-pain procedures, grade D conditions)",
    "insufficient-evidence": "the evidence for this use is limited (e.g. ketamine as the only PCA analgesic)",
    "needs-information": "a datum the decision depends on is missing (e.g. the indication)",
    "consider": "supported (should be considered, or moderate certainty)",
    "may-consider": "supported with low certainty only",
    "not assessed": "the row could not be read (see the rows that could not be assessed)",
}
STATUS_TEXT: Mapping[str, str] = {
    "within": "within the limit",
    "exceeds": "over the limit",
    "below-range": "below the range used for chronic pain",
    "exceeds-unless-intensive-care": "over, unless in intensive care",
    "cannot-check-no-weight": "not checked: no weight",
    "cannot-check-no-concentration": "not checked: no concentration",
}

TOP_GROUPS = 15  # indications shown before "other"
TOP_PROBLEMS = 15
EXAMPLES = 20
RUN_CHART_UNITS = 12  # the busiest units get a run chart of their own; every unit is in the table
IN_SCOPE = "category NOT IN ('not-assessed', 'scope')"


# --- what the report holds ------------------------------------------------------------------------------


@dataclass
class Example:
    admin_id: str
    administered_at: Any
    location: str | None
    indication: str | None
    route: str | None
    dose_value: float | None
    dose_unit: str | None
    dose_per_kg: float | None
    multiple: float | None
    cause: str | None
    dose_status: str | None
    verdict: str | None
    statements: list[str]

    @property
    def rate(self) -> bool | None:
        """Whether the dose is a rate (an infusion), read from its unit by the engine's parser."""
        try:
            return parse_unit(self.dose_unit).is_rate if self.dose_unit else None
        except UnitError:
            return None

    @property
    def per_kg_unit(self) -> str:
        return "mg/kg/h" if self.rate else "mg/kg"

    @property
    def what(self) -> str:
        route = (self.route or "route not recorded").strip()
        if self.rate is None:
            return route
        return f"{route}, {'infusion' if self.rate else 'bolus'}"

    @property
    def check(self) -> str:
        if self.multiple is not None:
            return f"{fmt.times(self.multiple)} the limit"
        return STATUS_TEXT.get(self.dose_status or "", "dose not checked")


@dataclass
class Departures:
    administrations: int = 0  # category departs
    contraindicated: int = 0
    over: int = 0
    clinical: int = 0
    documentation_errors: int = 0
    both: int = 0  # contraindicated and over the limit
    by_contraindication: list[tuple[str, int]] = field(default_factory=list)
    by_dose_statement: list[tuple[tuple[str, ...], int, int]] = field(
        default_factory=list
    )  # clinical, errors
    multiples: list[tuple[int | None, int, int]] = field(default_factory=list)  # bin, clinical, errors
    causes: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class Series:
    """Departures per period for one unit (or all): the table, the run chart and the unit's export."""

    unit: str | None
    label: str
    assessed: int = 0  # within the guideline's scope
    departed: int = 0
    contraindicated: int = 0
    clinical: int = 0
    documentation_errors: int = 0
    by_period: dict[dt.date, tuple[int, int]] = field(default_factory=dict)  # period -> (departed, assessed)
    chart: RunChart = field(default_factory=lambda: run_chart([]))
    export: str | None = None

    def points(self, periods: Sequence[dt.date]) -> list[tuple[int, int] | None]:
        return [self.by_period.get(p) for p in periods]

    def compute(self, periods: Sequence[dt.date]) -> None:
        self.chart = run_chart(
            [Fraction(d, a) for d, a in (self.by_period.get(p, (0, 0)) for p in periods) if a]
        )


@dataclass
class Aggregates:
    administrations: int = 0
    bad: int = 0
    cells: list[Cell] = field(default_factory=list)
    measures: list[Measure] = field(default_factory=list)
    partition: Partition = field(default_factory=Partition)
    first: Any = None
    last: Any = None
    verdicts: list[tuple[str, int]] = field(default_factory=list)
    problems: list[tuple[str, int]] = field(default_factory=list)
    other_problems: tuple[int, int] = (0, 0)  # distinct reasons, rows
    bolus: Histogram = field(default_factory=lambda: Histogram(0.025, 40))
    infusion: Histogram = field(default_factory=lambda: Histogram(0.05, 50))
    icu_infusions: int = 0
    chronic_doses: int = 0  # checked against the chronic pain range: counted in the measures, not the charts
    icu_per_kg: tuple[float | None, float | None, float | None] = (None, None, None)  # median, p95, max
    out_of_scope_doses: int = 0
    period: str = "month"
    period_starts: list[dt.date] = field(default_factory=list)
    by_period: dict[dt.date, dict[str, int]] = field(default_factory=dict)
    without_time: int = 0
    locations: list[Group] = field(default_factory=list)
    indications: list[Group] = field(default_factory=list)
    departures: Departures = field(default_factory=Departures)
    overall: Series = field(default_factory=lambda: Series(None, "All units"))
    units: list[Series] = field(default_factory=list)
    clinical_examples: list[Example] = field(default_factory=list)
    error_examples: list[Example] = field(default_factory=list)
    contraindicated_examples: list[Example] = field(default_factory=list)

    @property
    def assessed(self) -> int:
        return self.administrations - self.bad

    @property
    def periods(self) -> list[tuple[dt.date, dict[str, int]]]:
        return [(p, self.by_period.get(p, {})) for p in self.period_starts]


# --- reading the findings -----------------------------------------------------------------------------------


def _parquet(path: Path) -> str:
    from .duck import parquet_reader

    return parquet_reader(path)


def _ids(kb: KnowledgeBase, role: str) -> str:
    ids = sorted(s.id for s in kb.statements.values() if s.role == role)
    return str_list(ids)


def open_findings(findings: Path, kb: KnowledgeBase) -> duckdb.DuckDBPyConnection:
    """A connection with the view ``f``: each finding with its category, departure reasons and dose bins."""
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = false")
    source = _parquet(findings)
    pairs = con.execute(
        f"SELECT DISTINCT problem IS NOT NULL OR verdict IS NULL, verdict, dose_status FROM {source}"
    ).fetchall()
    classes = [classify(bool(bad), verdict, status) for bad, verdict, status in pairs]
    con.execute(
        "CREATE TEMP TABLE row_classes AS SELECT unnest(?::BOOLEAN[]) AS bad, unnest(?::VARCHAR[]) AS verdict, "
        "unnest(?::VARCHAR[]) AS dose_status, unnest(?::VARCHAR[]) AS category, "
        "unnest(?::BOOLEAN[]) AS contraindicated, unnest(?::BOOLEAN[]) AS over",
        [
            [bool(p[0]) for p in pairs],
            [p[1] for p in pairs],
            [p[2] for p in pairs],
            [c.category for c in classes],
            [c.contraindicated for c in classes],
            [c.over for c in classes],
        ],
    )
    units = [r[0] for r in con.execute(f"SELECT DISTINCT dose_unit FROM {source}").fetchall()]
    con.execute(
        "CREATE TEMP TABLE swappable_units AS SELECT unnest(?::VARCHAR[]) AS text", [swappable_units(units)]
    )
    con.execute(f"""
        CREATE TEMP VIEW f AS
        WITH x AS (SELECT *, problem IS NOT NULL OR verdict IS NULL AS bad FROM {source}),
        c AS (
          SELECT x.*, r.category, r.contraindicated, r.over,
                 CASE WHEN r.over THEN {MULTIPLE_SQL} END AS multiple,
                 list_filter(x.statements, s -> list_contains({_ids(kb, "contraindication")}, s)) AS contra_statements,
                 list_filter(x.statements, s -> list_contains({_ids(kb, "dose-limit")}, s)) AS dose_statements,
                 CASE WHEN list_contains(x.statements, 'dose-infusion-limit') THEN 'infusion'
                      WHEN list_contains(x.statements, 'dose-bolus-limit') THEN 'bolus' END AS dose_kind,
                 coalesce(lower(trim(x.setting)), 'unknown') = 'intensive-care' AS icu,
                 CASE WHEN x.dose_status = 'within' THEN 'within' WHEN x.dose_status = 'exceeds' THEN 'over'
                      WHEN x.dose_status = 'exceeds-unless-intensive-care' THEN 'over-unless-icu' ELSE 'other' END
                   AS status_group
          FROM x JOIN row_classes r ON r.bad = x.bad AND r.verdict IS NOT DISTINCT FROM x.verdict
                                    AND r.dose_status IS NOT DISTINCT FROM x.dose_status
        ),
        d AS (SELECT *, {DOCUMENTATION_ERROR_SQL} AS documentation_error FROM c)
        SELECT *, {CAUSE_SQL} AS cause, {multiple_bin_sql()} AS multiple_bin FROM d
    """)
    return con


def aggregate(findings: Path, kb: KnowledgeBase | None = None, exports_to: Path | None = None) -> Aggregates:
    """Everything the report shows, computed by DuckDB over the findings (never all rows in Python).

    With ``exports_to``, each unit's departed administrations are written there as CSV (``departures.py``).
    """
    kb = kb or load_knowledge()
    lim = limits(kb)
    # the limit on a bin edge: boluses 0 to 1 mg/kg in 0.025 steps, infusions 0 to 2.5 mg/kg/h in 0.05 steps
    agg = Aggregates(bolus=Histogram(lim["bolus"] / 14, 40), infusion=Histogram(lim["infusion"] / 20, 50))
    con = open_findings(findings, kb)
    try:
        _headline(con, agg)
        _problems(con, agg)
        _doses(con, agg)
        _over_time(con, agg)
        agg.locations = _groups(con, "location", "units", None)
        agg.indications = _groups(con, "indication", "indications", kb)
        _departures(con, agg)
        _units(con, agg)
        _examples(con, agg)
        if exports_to is not None:
            files = write_exports(con, exports_to, {s.id: s.title for s in kb.statements.values()})
            for series in agg.units:
                series.export = files.get(series.unit)
    finally:
        con.close()
    return agg


def _headline(con: duckdb.DuckDBPyConnection, agg: Aggregates) -> None:
    """Counts per (verdict, dose status): the measures, the categories, the verdicts and the period covered."""
    rows = con.execute("""
        SELECT bad, verdict, dose_status, count(*), count(*) FILTER (WHERE documentation_error),
               min(administered_at), max(administered_at),
               count(*) FILTER (WHERE administered_at IS NULL),
               count(*) FILTER (WHERE verdict = 'out-of-scope' AND dose_value IS NOT NULL
                                AND lower(trim(route)) IN ('intravenous', 'iv'))
        FROM f GROUP BY 1, 2, 3
    """).fetchall()
    verdicts: dict[str, int] = {}
    firsts, lasts = [], []
    for bad, verdict, status, n, errors, first, last, no_time, out_of_scope in rows:
        agg.cells.append(Cell(bool(bad), verdict, status, int(n), int(errors)))
        agg.administrations += int(n)
        name = "not assessed" if bad else str(verdict)
        verdicts[name] = verdicts.get(name, 0) + int(n)
        if bad:
            agg.bad += int(n)
            continue
        agg.without_time += int(no_time)
        agg.out_of_scope_doses += int(out_of_scope)
        firsts += [first] if first is not None else []
        lasts += [last] if last is not None else []
    agg.cells.sort(key=lambda c: (c.bad, c.verdict or "", c.status or ""))
    agg.measures = headline_measures(agg.cells)
    agg.partition = partition(agg.cells)
    agg.first, agg.last = min(firsts, default=None), max(lasts, default=None)
    agg.verdicts = sorted(verdicts.items(), key=lambda kv: (-kv[1], kv[0]))


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


def _count(con: duckdb.DuckDBPyConnection, where: str) -> int:
    row = con.execute(f"SELECT count(*) FROM f WHERE {where}").fetchone()
    return int(row[0]) if row else 0


def _doses(con: duckdb.DuckDBPyConnection, agg: Aggregates) -> None:
    """Both histograms in one scan (bins right-closed, so a dose exactly at the limit is in the bin below)."""
    b, i = agg.bolus, agg.infusion
    agg.chronic_doses = _count(con, "NOT bad AND list_contains(statements, 'chronic-dose-range')")
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


def _dated(agg: Aggregates) -> bool:
    """Times of administration are dates (not text outside the calendar, read as such by the driver)."""
    return isinstance(agg.first, dt.date) and isinstance(agg.last, dt.date)


def _period_sql(agg: Aggregates) -> str:
    if not _dated(agg):
        return "CAST(NULL AS DATE)"
    return f"CAST(date_trunc('{agg.period}', administered_at) AS DATE)"


def _over_time(con: duckdb.DuckDBPyConnection, agg: Aggregates) -> None:
    """Per month; per quarter or year when the data span more than six years or a stray date stretches them."""
    if not _dated(agg):
        return
    first, last = agg.first, agg.last
    months = (last.year - first.year) * 12 + last.month - first.month + 1
    agg.period = "month" if months <= 72 else "quarter" if months <= 216 else "year"
    rows = con.execute(
        f"SELECT {_period_sql(agg)}, category, count(*) FROM f WHERE NOT bad AND administered_at IS NOT NULL "
        "GROUP BY 1, 2"
    ).fetchall()
    for start, key, n in rows:
        agg.by_period.setdefault(start, {})[str(key)] = int(n)
    agg.period_starts = _period_starts(sorted(agg.by_period), agg.period)


def _period_starts(present: list[dt.date], period: str) -> list[dt.date]:
    """Every period from the first to the last with data (a span of centuries: only those with data)."""
    if not present or (period == "year" and len(present) > 72):
        return present
    step = {"month": 1, "quarter": 3, "year": 12}[period]
    starts, current = [], present[0]
    while current <= present[-1]:
        starts.append(current)
        index = current.year * 12 + current.month - 1 + step
        if index // 12 > dt.MAXYEAR:
            break
        current = dt.date(index // 12, index % 12 + 1, 1)
    return starts


def _groups(
    con: duckdb.DuckDBPyConnection, column: str, plural: str, kb: KnowledgeBase | None
) -> list[Group]:
    """The busiest groups by category, the rest together (a ward list can be long)."""
    rows = con.execute(f"""
        WITH g AS (SELECT {column} AS label, category, count(*) AS n FROM f WHERE NOT bad GROUP BY 1, 2),
        t AS (SELECT label, row_number() OVER (ORDER BY sum(n) DESC, label NULLS LAST) AS rn,
                     count(*) OVER () AS groups
              FROM g GROUP BY 1)
        SELECT least(t.rn, {TOP_GROUPS + 1}) AS bucket, CASE WHEN t.rn <= {TOP_GROUPS} THEN g.label END,
               g.category, sum(g.n), any_value(t.groups)
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


def _departures(con: duckdb.DuckDBPyConnection, agg: Aggregates) -> None:
    """Departures by reason: which contraindication, which dose statement, how many times the limit (one scan)."""
    rows = con.execute("""
        SELECT contraindicated, over, documentation_error, contra_statements, dose_statements, multiple_bin, cause,
               count(*)
        FROM f WHERE category = 'departs' GROUP BY ALL
    """).fetchall()
    d = agg.departures
    contra: dict[str, int] = {}
    dose: dict[tuple[str, ...], tuple[int, int]] = {}
    bins: dict[int | None, tuple[int, int]] = {}
    causes: dict[str, int] = {}
    for contraindicated, over, error, contra_ids, dose_ids, bin_, cause, count in rows:
        n = int(count)
        d.administrations += n
        if contraindicated:
            d.contraindicated += n
            d.both += n if over else 0
            for sid in contra_ids or [""]:  # "": no contraindication statement cited (never expected)
                contra[str(sid)] = contra.get(str(sid), 0) + n
        if not over:
            continue
        d.over += n
        d.documentation_errors += n if error else 0
        d.clinical += 0 if error else n
        key = tuple(str(x) for x in (dose_ids or []))
        a, b = dose.get(key, (0, 0))
        dose[key] = (a, b + n) if error else (a + n, b)
        index = None if bin_ is None else int(bin_)
        a, b = bins.get(index, (0, 0))
        bins[index] = (a, b + n) if error else (a + n, b)
        if error:
            causes[str(cause)] = causes.get(str(cause), 0) + n
    d.by_contraindication = sorted(contra.items(), key=lambda kv: (-kv[1], kv[0] == "", kv[0]))
    d.by_dose_statement = sorted(
        ((k, a, b) for k, (a, b) in dose.items()), key=lambda r: (-(r[1] + r[2]), r[0])
    )
    # every bin, empty ones too (the shape of the distribution), and "not known" only when there is one
    d.multiples = [(i, *bins.get(i, (0, 0))) for i in range(len(MULTIPLE_EDGES))]
    if None in bins:
        d.multiples.append((None, *bins[None]))
    d.causes = sorted(causes.items(), key=lambda kv: (-kv[1], kv[0]))


def _units(con: duckdb.DuckDBPyConnection, agg: Aggregates) -> None:
    """Per unit (location) and period: administrations within scope and departures, with their reasons."""
    rows = con.execute(f"""
        SELECT location, {_period_sql(agg)} AS p, count(*), count(*) FILTER (WHERE category = 'departs'),
               count(*) FILTER (WHERE contraindicated), count(*) FILTER (WHERE over AND NOT documentation_error),
               count(*) FILTER (WHERE documentation_error)
        FROM f WHERE {IN_SCOPE} GROUP BY 1, 2
    """).fetchall()
    units: dict[str | None, Series] = {}
    for location, start, assessed, departed, contra, clinical, errors in rows:
        unit = units.setdefault(
            location, Series(location, "(not recorded)" if location is None else str(location))
        )
        for series in (unit, agg.overall):
            series.assessed += int(assessed)
            series.departed += int(departed)
            series.contraindicated += int(contra)
            series.clinical += int(clinical)
            series.documentation_errors += int(errors)
            if start is not None:
                d, a = series.by_period.get(start, (0, 0))
                series.by_period[start] = (d + int(departed), a + int(assessed))
    agg.units = sorted(units.values(), key=lambda s: (-s.assessed, s.unit is None, s.label))
    for series in [agg.overall, *agg.units]:
        series.compute(agg.period_starts)


_EXAMPLE_COLUMNS = (
    "admin_id, administered_at, location, indication, route, dose_value, dose_unit, dose_per_kg, multiple, "
    "cause, dose_status, verdict, statements"
)


def _examples(con: duckdb.DuckDBPyConnection, agg: Aggregates) -> None:
    def rows(where: str, order: str) -> list[Example]:
        found = con.execute(
            f"SELECT {_EXAMPLE_COLUMNS} FROM f WHERE {where} ORDER BY {order}, admin_id LIMIT {EXAMPLES}"
        )
        return [_example(r) for r in found.fetchall()]

    agg.clinical_examples = rows("over AND NOT documentation_error", "multiple DESC NULLS LAST")
    agg.error_examples = rows("documentation_error", "multiple DESC NULLS LAST")
    agg.contraindicated_examples = rows("contraindicated", "administered_at DESC NULLS LAST")


def _example(r: Sequence[Any]) -> Example:
    return Example(
        admin_id="" if r[0] is None else str(r[0]),
        administered_at=r[1],
        location=r[2],
        indication=r[3],
        route=r[4],
        dose_value=_float(r[5]),
        dose_unit=r[6],
        dose_per_kg=_float(r[7]),
        multiple=_float(r[8]),
        cause=r[9],
        dose_status=r[10],
        verdict=r[11],
        statements=[str(s) for s in (r[12] or [])],
    )


# --- the page -----------------------------------------------------------------------------------------------

_TEMPLATES = Path(__file__).parent / "templates"


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(fmt.FILTERS)
    return env


def _kb_text(summary: Mapping[str, Any], kb: KnowledgeBase) -> str:
    recorded = summary.get("knowledge_base") or summary.get("kb_version")
    if isinstance(recorded, Mapping):
        return f"{recorded.get('version', kb.version)} ({recorded.get('digest', kb.digest)})"
    if recorded:
        return str(recorded)
    return f"{kb.version} ({kb.digest})"


def _summary_value(summary: Mapping[str, Any], key: str) -> str:
    value = summary.get(key)
    return "not recorded" if value is None or value == "" else str(value)


def _sources(kb: KnowledgeBase) -> list[tuple[str, str]]:
    seen: dict[str, str] = {}
    for st in kb.statements.values():
        for source in st.sources:
            seen.setdefault(source.url, source.label)
    return list(seen.items())


def _charts(agg: Aggregates, kb: KnowledgeBase) -> dict[str, Chart]:
    lim = limits(kb)
    labels = [fmt.period_label(p, agg.period) for p in agg.period_starts]
    drawn = {
        "dose-bolus": charts.histogram(agg.bolus, lim["bolus"], "mg/kg", "bolus", "dose-bolus"),
        "dose-infusion": charts.histogram(
            agg.infusion, lim["infusion"], "mg/kg/h", "infusion", "dose-infusion"
        ),
        "time": charts.time_bars(agg.periods, agg.period, "time"),
        "location": charts.share_bars(agg.locations, "location", "location"),
        "indication": charts.share_bars(agg.indications, "indication", "indication"),
        "multiples": charts.multiples(
            [(_bin_label(b), x, y) for b, x, y in agg.departures.multiples], "multiples"
        ),
    }
    for i, series in enumerate([agg.overall, *agg.units[:RUN_CHART_UNITS]]):
        plot_id = "run-all" if i == 0 else f"run-unit-{i}"
        title = f"Departure rate per {agg.period}: {series.label}"
        drawn[plot_id] = charts.run_chart(
            title, labels, series.points(agg.period_starts), series.chart, plot_id
        )
    return drawn


def _bin_label(index: int | None) -> str:
    return "not known" if index is None else multiple_bin_label(index)


# what the templates name: the definitions, never data
_DEFINITIONS: dict[str, Any] = {
    "categories": CATEGORIES,
    "verdict_meanings": VERDICT_MEANINGS,
    "causes": CAUSES,
    "many_times": MANY_TIMES,
    "bin_label": lambda index: _bin_label(index),
    "rules": RULES,
    "min_points": MIN_POINTS,
    "run_chart_units": RUN_CHART_UNITS,
    "export_dir": EXPORT_DIR,
    "examples": EXAMPLES,
    "top_groups": TOP_GROUPS,
    "signal_lines": lambda series, period: _signal_lines(series, period),
}


def _meta(summary: Mapping[str, Any], kb: KnowledgeBase, written: dt.datetime) -> list[tuple[str, str]]:
    seconds = summary.get("seconds")
    return [
        ("Knowledge base", _kb_text(summary, kb)),
        ("Guideline", kb.guideline),
        ("Checked against", _protocol_text(summary)),
        ("Engine", _summary_value(summary, "engine")),
        ("Input", _summary_value(summary, "input")),
        ("Input form", _summary_value(summary, "form")),
        ("Decision classes", _summary_value(summary, "decision_classes")),
        ("Engine assessments", _summary_value(summary, "engine_assessments")),
        ("Audit run time", f"{seconds} s" if seconds is not None else "not recorded"),
        ("Report written", written.strftime("%Y-%m-%d %H:%M %Z").strip()),
    ]


def _protocol_text(summary: Mapping[str, Any]) -> str:
    """The site protocol the doses were checked against, and what the guideline alone would have said."""
    site = summary.get("site")
    if not site:
        return "the guideline alone (no site protocol)"
    own = summary.get("guideline_verdicts") or {}
    differ = summary.get("differs_from_guideline", 0)
    return (
        f"site protocol {site['name']} ({site['version']}, {site['digest']}); against the guideline alone "
        f"{differ} administration(s) would get another verdict ({', '.join(f'{v}: {n}' for v, n in own.items())})"
    )


def _legend_categories(agg: Aggregates) -> list[tuple[str, str]]:
    """The categories' legend: "not classified" only when some administration is."""
    return [(label, c) for key, label, c in CATEGORIES if key != "unclassified" or agg.partition.unknown]


def _statement_lookups(kb: KnowledgeBase) -> dict[str, Any]:
    statements = kb.statements
    return {
        "title": lambda sid: statements[sid].title if sid in statements else "",
        "role": lambda sid: statements[sid].role if sid in statements else "",
        "sources": _sources(kb),
    }


def render(agg: Aggregates, summary: Mapping[str, Any], kb: KnowledgeBase, written: dt.datetime) -> str:
    lim = limits(kb)
    per_period = [sum(v.values()) for _, v in agg.periods]
    page = {
        "agg": agg,
        "kb": kb,
        "kb_text": _kb_text(summary, kb),
        "meta": _meta(summary, kb, written),
        "written": written.strftime("%Y-%m-%d %H:%M"),
        "input_name": _summary_value(summary, "input"),
        "bolus_limit": lim["bolus"],
        "infusion_limit": lim["infusion"],
        "charts": _charts(agg, kb),
        "categories_shown": _legend_categories(agg),
        "time_total": sum(per_period),
        "time_min": min(per_period, default=0),
        "time_max": max(per_period, default=0),
        "period_rows": lambda series: _period_rows(series, agg),
        "summary": summary,
    }
    template = _environment().get_template("report.html")
    return template.render(**_DEFINITIONS, **_statement_lookups(kb), **page)


def _period_rows(series: Series, agg: Aggregates) -> list[tuple[str, int, int, list[str]]]:
    """Each period's row of a run chart's table: label, departed, assessed, the rules the point signals."""
    rows = []
    k = 0  # the run chart's points are the periods with something assessed
    for p in agg.period_starts:
        departed, assessed = series.by_period.get(p, (0, 0))
        flagged: list[str] = []
        if assessed:
            flagged = [_rule_name(s.rule) for s in series.chart.flagged(k)]
            k += 1
        rows.append((fmt.period_label(p, agg.period), departed, assessed, flagged))
    return rows


def _rule_name(rule: str) -> str:
    return RULES[rule].split(":")[0]  # type: ignore[index]


def _signal_lines(series: Series, period: str) -> list[str]:
    """Each signal of a unit's run chart in words: "Shift above the median, 2024-02 to 2024-08"."""
    starts = [p for p in sorted(series.by_period) if series.by_period[p][1]]
    labels = [fmt.period_label(p, period) for p in starts]
    lines = []
    side = {"above": " above the median", "below": " below the median", "up": " up", "down": " down"}
    for s in series.chart.signals:
        if s.whole:
            lines.append(charts.runs_text(series.chart, s.rule))
        else:
            lines.append(
                f"{_rule_name(s.rule)}{side.get(s.direction, '')}, {labels[s.first]} to {labels[s.last]}"
            )
    return lines


def write_html(agg: Aggregates, summary: Mapping[str, Any], kb: KnowledgeBase, path: Path) -> None:
    text = render(agg, summary, kb, dt.datetime.now().astimezone())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_report(findings: Path, summary: Mapping[str, Any], path: Path) -> Aggregates:
    """Write the HTML report for ``findings.parquet``, and the unit exports in ``departures/`` beside it."""
    kb = load_knowledge()
    agg = aggregate(findings, kb, exports_to=path.parent / EXPORT_DIR)
    write_html(agg, summary, kb, path)
    return agg
