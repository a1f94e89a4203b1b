"""The audit's HTML report: self-contained, complete, honest about bad rows, and drawn in a real browser.

The browser test renders the report in headless Chromium with the network cut off and saves a full-page
screenshot to ``artifacts/audit-report.png`` (and a phone-width one beside it) for a person to look at.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import duckdb
import pytest

from browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from ketamine_cds import load_knowledge
from ketamine_cds.audit.canonical import COLUMN_NAMES
from ketamine_cds.audit.duck import run_duckdb, summary_rows
from ketamine_cds.audit.flat import flat_source
from ketamine_cds.audit.report import aggregate, write_report
from ketamine_cds.audit.run import run_audit
from ketamine_cds.audit.synth import write_flat

PLOTS = {"dose-bolus", "dose-infusion", "time", "location", "indication", "findings"}

URL_ATTRIBUTES = {
    "src",
    "href",
    "xlink:href",
    "srcset",
    "action",
    "poster",
    "data",
    "formaction",
    "background",
}
FORBIDDEN_TAGS = {"script", "link", "img", "iframe", "object", "embed", "base", "audio", "video", "source"}


# --- reading the HTML ---------------------------------------------------------------------------------


@dataclass
class Svg:
    attrs: dict[str, str]
    title: str | None = None
    first_child: str | None = None
    marks: int = 0
    texts: list[str] = field(default_factory=list)


@dataclass
class Figure:
    plot: str
    svgs: list[Svg] = field(default_factory=list)
    caption: str = ""


class Page(HTMLParser):
    """The parts of the report the tests look at: plots, URLs, tags, text by element id, tables."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.figures: list[Figure] = []
        self.urls: list[tuple[str, str, str]] = []  # tag, attribute, value
        self.tags: set[str] = set()
        self.by_id: dict[str, str] = {}
        self.styles: list[str] = []
        self.tables: list[list[list[str]]] = []
        self._stack: list[tuple[str, dict[str, str]]] = []
        self._svg: Svg | None = None
        self._in_title = self._in_caption = self._in_text = self._in_style = False
        self._ids: list[tuple[str, int, list[str]]] = []  # id, depth, text parts
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        for key, value in a.items():
            if key in URL_ATTRIBUTES:
                self.urls.append((tag, key, value))
        if tag == "figure" and "data-plot" in a:
            self.figures.append(Figure(a["data-plot"]))
        elif tag == "svg":
            self._svg = Svg(a)
            if self.figures:
                self.figures[-1].svgs.append(self._svg)
        elif self._svg is not None:
            if self._svg.first_child is None:
                self._svg.first_child = tag
            if tag in ("rect", "path") and "mark" in a.get("class", "").split():
                self._svg.marks += 1
            if tag == "title" and self._stack and self._stack[-1][0] == "svg":
                self._in_title = True
            if tag == "text":
                self._in_text = True
                self._svg.texts.append("")
        if tag == "figcaption":
            self._in_caption = True
        if tag == "style":
            self._in_style = True
        if tag == "table":
            self.tables.append([])
        if tag == "tr":
            self._row = []
        if tag in ("td", "th"):
            self._cell = []
        if tag == "br" and self._cell is not None:
            self._cell.append(" ")
        if "id" in a:
            self._ids.append((a["id"], len(self._stack), []))
        if tag not in ("br", "meta", "line", "input", "hr"):
            self._stack.append((tag, a))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in ("br", "meta", "line", "input", "hr"):
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._svg = None
        if tag == "title":
            self._in_title = False
        if tag == "text":
            self._in_text = False
        if tag == "figcaption":
            self._in_caption = False
        if tag == "style":
            self._in_style = False
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        if tag == "tr" and self._row is not None and self.tables:
            self.tables[-1].append(self._row)
            self._row = None
        if self._stack and self._stack[-1][0] == tag:
            self._stack.pop()
            while self._ids and self._ids[-1][1] >= len(self._stack):
                ident, _, parts = self._ids.pop()
                self.by_id[ident] = " ".join("".join(parts).split())

    def handle_data(self, data: str) -> None:
        for _, _, parts in self._ids:
            parts.append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._in_style:
            self.styles.append(data)
        if self._svg is not None:
            if self._in_title:
                self._svg.title = (self._svg.title or "") + data
            if self._in_text:
                self._svg.texts[-1] += data
        if self._in_caption and self.figures:
            self.figures[-1].caption += data

    def table_after(self, heading_fragment: str, text: str) -> list[list[str]]:
        """The first table whose region label contains ``heading_fragment`` (our tables are labelled)."""
        index = [m.start() for m in re.finditer(r'<div class="table-wrap"[^>]*aria-label="([^"]*)"', text)]
        labels = re.findall(r'<div class="table-wrap"[^>]*aria-label="([^"]*)"', text)
        for i, label in enumerate(labels):
            if heading_fragment in label:
                assert len(index) == len(self.tables)
                return self.tables[i]
        raise AssertionError(f"no table labelled {heading_fragment!r}")


# --- data ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Audited:
    findings: Path
    summary: dict[str, Any]
    report: Path
    text: str


def _audit(flat: Path, out: Path, summary_extra: Mapping[str, Any] | None = None) -> Audited:
    run = run_duckdb(flat_source(flat), out)
    summary = summary_rows(run.findings)
    summary.update(
        {
            "engine": "duckdb",
            "form": "flat",
            "input": str(flat),
            "decision_classes": run.classes,
            "seconds": round(run.seconds, 2),
            **(summary_extra or {}),
        }
    )
    report = out / "report.html"
    write_report(run.findings, summary, report)
    return Audited(run.findings, summary, report, report.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Audited:
    root = tmp_path_factory.mktemp("report")
    flat = write_flat(20_000, root / "synth", seed=11, csv=False) / "administrations.parquet"
    return _audit(flat, root / "out")


def _row(**values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {name: "" for name in COLUMN_NAMES if name != "input_problem"}
    row.update(
        {
            "administered_at": "2025-03-01 10:00:00",
            "route": "intravenous",
            "kind": "bolus",
            "dose_unit": "mg",
            "weight_value": 80,
            "weight_unit": "kg",
            "setting": "non-intensive-care",
            "location": "Ward 4B",
            "indication": "perioperative",
            "procedure_class": "abdominal",
            "conditions": "",
            "pca_sole_agent": "false",
        }
    )
    row.update(values)
    return row


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[c for c in COLUMN_NAMES if c != "input_problem"])
        writer.writeheader()
        writer.writerows(rows)
    return path


# --- the synthetic audit --------------------------------------------------------------------------------


def test_every_plot_is_inline_svg_with_title_label_axes_and_caption(synthetic: Audited) -> None:
    page = Page(synthetic.text)
    assert {f.plot for f in page.figures} == PLOTS
    for figure in page.figures:
        assert len(figure.svgs) == 1, figure.plot
        svg = figure.svgs[0]
        assert svg.first_child == "title" and svg.title and svg.title.strip(), figure.plot
        assert svg.attrs.get("role") == "img" and svg.attrs.get("aria-label", "").strip(), figure.plot
        assert svg.attrs.get("viewbox") or svg.attrs.get("viewBox"), figure.plot
        assert svg.marks > 0, f"{figure.plot}: no marks drawn"
        assert len(figure.caption.split()) >= 8, f"{figure.plot}: caption too short"
    texts = {f.plot: " ".join(f.svgs[0].texts) for f in page.figures}
    assert "Dose per kg (mg/kg)" in texts["dose-bolus"] and "limit 0.35 mg/kg" in texts["dose-bolus"]
    assert "Dose per kg (mg/kg/h)" in texts["dose-infusion"] and "limit 1 mg/kg/h" in texts["dose-infusion"]
    assert "Time of administration (per month)" in texts["time"] and "100%" in texts["time"]
    assert "Share of the location's assessed administrations" in texts["location"]
    assert "Share of the indication's assessed administrations" in texts["indication"]
    assert "Administrations citing the statement" in texts["findings"]
    assert "intensive care" in next(f.caption for f in page.figures if f.plot == "dose-infusion").lower()


def test_nothing_is_loaded_from_anywhere(synthetic: Audited) -> None:
    page = Page(synthetic.text)
    assert not (page.tags & FORBIDDEN_TAGS), page.tags & FORBIDDEN_TAGS
    for tag, attribute, value in page.urls:
        assert value.startswith("#") or value.startswith("https://doi.org/"), (tag, attribute, value)
    assert any(v.startswith("https://doi.org/10.1097/AAP.0000000000000806") for _, _, v in page.urls)
    style = "".join(page.styles)
    assert "url(" not in style and "@import" not in style and "@font-face" not in style
    assert not re.search(r"\son[a-z]+\s*=", synthetic.text), "no inline event handlers"
    assert "http://" not in synthetic.text


def test_headline_numbers_are_the_findings_counts(synthetic: Audited) -> None:
    page = Page(synthetic.text)
    s = synthetic.summary
    assert s["administrations"] == 20_000
    assert page.by_id["n-administrations"].startswith(f"{s['administrations']:,}")
    assert page.by_id["n-bad-rows"].startswith(f"{s['bad_rows']:,}")
    assert page.by_id["n-assessed"].startswith(f"{s['administrations'] - s['bad_rows']:,}")
    shares = [page.by_id[f"n-{k}"] for k in ("follows", "unclear", "scope", "departs")]
    counts = [int(re.search(r"([\d,]+) of assessed", t).group(1).replace(",", "")) for t in shares]  # type: ignore[union-attr]
    assert sum(counts) == s["administrations"] - s["bad_rows"]
    assert (
        "nothing the record shows contraindicates it" in page.by_id["definition"]
        and "0.35 mg/kg" in page.by_id["definition"]
    )

    verdicts = page.table_after("Verdict counts", synthetic.text)
    shown = {row[0].split()[0]: int(row[1].replace(",", "")) for row in verdicts[1:]}
    assert shown == {("not" if k == "not assessed" else k): v for k, v in s["verdicts"].items()}

    reasons = page.table_after("Reasons rows were not assessed", synthetic.text)
    listed = {row[0]: int(row[1].replace(",", "")) for row in reasons[1:-1]}
    assert listed == s["problems"]  # every reason, with its count: nothing silently dropped
    assert reasons[-1][1] == f"{s['bad_rows']:,}"


def test_examples_are_the_worst_doses_and_the_contraindicated(synthetic: Audited) -> None:
    page = Page(synthetic.text)
    over = page.table_after("Highest doses over the limit", synthetic.text)[1:]
    contra = page.table_after("Contraindicated administrations", synthetic.text)[1:]
    assert len(over) == 20 and len(contra) == 20
    con = duckdb.connect()
    try:
        f = f"read_parquet('{synthetic.findings}')"
        worst = con.execute(
            f"SELECT admin_id FROM {f} WHERE dose_status = 'exceeds' AND problem IS NULL "
            "ORDER BY dose_per_kg / CAST(limit_per_kg AS DOUBLE) DESC, admin_id LIMIT 20"
        ).fetchall()
        contraindicated = {
            r[0]
            for r in con.execute(f"SELECT admin_id FROM {f} WHERE verdict = 'contraindicated'").fetchall()
        }
    finally:
        con.close()
    assert [row[0].split()[0] for row in over] == [w[0] for w in worst]
    assert all(row[0].split()[0] in contraindicated for row in contra)
    assert all(re.search(r"\bcontra-[a-z-]+", row[5]) for row in contra)


def test_histograms_count_every_checked_dose(synthetic: Audited) -> None:
    """Each dose the engine checked is in its histogram or counted as having no dose per kg; none is lost."""
    agg = aggregate(synthetic.findings)
    con = duckdb.connect()
    try:
        f = f"read_parquet('{synthetic.findings}') WHERE problem IS NULL"

        def count(where: str) -> int:
            row = con.execute(f"SELECT count(*) FROM {f} AND {where}").fetchone()
            return int(row[0]) if row else -1

        bolus = "list_contains(statements, 'dose-bolus-limit')"
        infusion = "list_contains(statements, 'dose-infusion-limit') AND setting <> 'intensive-care'"
        per_kg = "dose_per_kg IS NOT NULL AND isfinite(dose_per_kg)"
        assert agg.bolus.shown == count(f"{bolus} AND {per_kg}") > 5_000
        assert agg.bolus.without_per_kg == count(f"{bolus} AND NOT ({per_kg})") > 0
        assert agg.infusion.shown == count(f"{infusion} AND {per_kg}") > 3_000
        assert agg.infusion.without_per_kg == count(f"{infusion} AND NOT ({per_kg})") > 0
        over = sum(c.get("over", 0) for c in agg.bolus.counts.values())
        assert over == count(f"{bolus} AND dose_status = 'exceeds'")
        assert agg.icu_infusions == count(
            "list_contains(statements, 'dose-infusion-limit') AND setting = 'intensive-care'"
        )
        # right-closed bins: nothing over the limit is drawn at or below it, nothing within above it
        limit_bin = 13  # (0.325, 0.35] mg/kg
        assert all(c.get("over", 0) == 0 for b, c in agg.bolus.counts.items() if b <= limit_bin)
        assert all(c.get("within", 0) == 0 for b, c in agg.bolus.counts.items() if b > limit_bin)
    finally:
        con.close()


def test_run_metadata_and_blind_spots_are_stated(synthetic: Audited) -> None:
    page = Page(synthetic.text)
    about = page.by_id["about"]
    kb = load_knowledge()
    assert kb.version in about and kb.digest in about
    assert "duckdb" in about and str(synthetic.summary["input"]) in about
    assert f"{synthetic.summary['seconds']} s" in about
    assert "Opioid use is read from the opioid prescriptions" in about and "unknown" in about


# --- small and odd inputs ---------------------------------------------------------------------------------


def test_three_rows_one_bad(tmp_path: Path) -> None:
    flat = _write_csv(
        tmp_path / "in" / "three.csv",
        [
            _row(admin_id="X1", patient_id="P1", dose_value=20),
            _row(admin_id="X2", patient_id="P2", dose_value=50, location="PACU"),  # 0.625 mg/kg: over
            _row(admin_id="X3", patient_id="P3", dose_value=20, dose_unit="mgs"),  # unknown unit: bad row
        ],
    )
    audited = _audit(flat, tmp_path / "out")
    page = Page(audited.text)
    assert {f.plot for f in page.figures} == PLOTS
    assert page.by_id["n-administrations"].startswith("3")
    assert page.by_id["n-assessed"].startswith("2")
    assert page.by_id["n-bad-rows"].startswith("1")
    assert "unknown unit 'mgs'" in page.by_id["bad-rows"]
    assert page.by_id["n-follows"].startswith("50.0%") and page.by_id["n-departs"].startswith("50.0%")
    over = page.table_after("Highest doses over the limit", audited.text)[1:]
    assert [row[0].split()[0] for row in over] == ["X2"]
    assert "No IV infusion dose per kg to show" in " ".join(
        t for f in page.figures if f.plot == "dose-infusion" for t in f.svgs[0].texts
    )  # drawn empty, not crashed
    assert "No administration is contraindicated." in audited.text


@pytest.mark.parametrize(
    "rows",
    [
        pytest.param(
            [_row(admin_id="B1", patient_id="P1", dose_value=5, dose_unit="units")], id="one-bad-row"
        ),
        pytest.param(
            [
                _row(admin_id="B1", patient_id="P1", dose_value=5, dose_unit="units"),
                _row(admin_id="B2", patient_id="P2", dose_value="lots"),
                _row(admin_id="B3", patient_id="P3", dose_value=20, administered_at="yesterday"),
            ],
            id="all-bad",
        ),
        pytest.param([_row(admin_id="G1", patient_id="P1", dose_value=10)], id="one-good-bolus"),
        pytest.param(
            [_row(admin_id="O1", patient_id="P1", route="oral", kind="", dose_value="", dose_unit="")],
            id="oral-only",
        ),
    ],
)
def test_tiny_inputs_render_every_section(tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    audited = _audit(_write_csv(tmp_path / "in" / "rows.csv", rows), tmp_path / "out")
    page = Page(audited.text)
    assert {f.plot for f in page.figures} == PLOTS
    for figure in page.figures:
        assert figure.svgs and figure.svgs[0].title, figure.plot
    assert page.by_id["n-administrations"].startswith(str(len(rows)))
    assert not re.search(r"\b(nan|inf)\b", audited.text, re.IGNORECASE)  # no NaN or infinite numbers
    reasons = audited.summary["problems"]
    for reason in reasons:
        assert reason.replace("'", "&#x27;") in audited.text


def test_no_rows_at_all(tmp_path: Path) -> None:
    """A findings file without a single row (an empty extract) still gives a readable report."""
    flat = _write_csv(tmp_path / "in" / "one.csv", [_row(admin_id="G1", patient_id="P1", dose_value=10)])
    run = run_duckdb(flat_source(flat), tmp_path / "one")
    empty = tmp_path / "empty.parquet"
    con = duckdb.connect()
    try:
        con.execute(
            f"COPY (SELECT * FROM read_parquet('{run.findings}') LIMIT 0) TO '{empty}' (FORMAT parquet)"
        )
    finally:
        con.close()
    write_report(empty, summary_rows(empty), tmp_path / "empty.html")
    page = Page((tmp_path / "empty.html").read_text())
    assert {f.plot for f in page.figures} == PLOTS
    assert page.by_id["n-administrations"].startswith("0")
    assert page.by_id["n-follows"].startswith("–")


def test_text_from_the_data_is_escaped(tmp_path: Path) -> None:
    hostile = '<script>alert("x")</script>'
    flat = _write_csv(
        tmp_path / "in" / "hostile.csv",
        [
            _row(admin_id='A&<b>1"', patient_id="P1", dose_value=90, location=hostile),
            _row(admin_id="A2", patient_id="P2", dose_value=20, dose_unit="<img src=x>"),
        ],
    )
    audited = _audit(flat, tmp_path / "out", {"input": hostile})
    page = Page(audited.text)
    assert "script" not in page.tags and "img" not in page.tags
    assert hostile not in audited.text and "<img src=x>" not in audited.text
    assert "&lt;script&gt;" in audited.text and "A&amp;&lt;b&gt;1&quot;" in audited.text


def test_the_audit_command_writes_the_report(tmp_path: Path) -> None:
    flat = _write_csv(tmp_path / "in" / "two.csv", [_row(admin_id="R1", patient_id="P1", dose_value=20)])
    summary = run_audit(flat, tmp_path / "out")
    text = (tmp_path / "out" / "report.html").read_text()
    assert summary["administrations"] == 1
    assert "duckdb" in Page(text).by_id["about"]


# --- in a browser ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not CHROMIUM.exists():
        if os.environ.get("KETAMINE_CDS_REQUIRE_CHROMIUM"):
            pytest.fail("KETAMINE_CDS_REQUIRE_CHROMIUM is set but /usr/bin/chromium is missing")
        pytest.skip("needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _open(browser: Any, report: Path, width: int) -> tuple[Any, Any, list[str]]:
    """A page with the network cut off: everything but the report file itself is aborted and recorded."""
    context = browser.new_context(viewport={"width": width, "height": 900}, offline=True)
    page = context.new_page()
    url = report.resolve().as_uri()
    blocked: list[str] = []

    def only_the_file(route: Any) -> None:
        if route.request.url == url:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_file)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(url)
    page.wait_for_load_state("load")
    return context, page, blocked + errors


def test_the_report_draws_in_chromium_offline(chromium: Any, synthetic: Audited) -> None:
    context, page, problems = _open(chromium, synthetic.report, 1100)
    try:
        for plot in sorted(PLOTS):
            svg = page.locator(f'figure[data-plot="{plot}"] svg')
            assert svg.count() == 1, plot
            box = svg.bounding_box()
            assert box is not None and box["width"] > 200 and box["height"] > 100, (plot, box)
            marks = svg.locator("rect.mark, path.mark")
            assert marks.count() > 0, plot
            sizes = page.evaluate(
                "(plot) => Array.from(document.querySelectorAll(`figure[data-plot='${plot}'] .mark`))"
                ".map(m => { const b = m.getBoundingClientRect(); return b.width * b.height; })",
                plot,
            )
            assert max(sizes) > 20, f"{plot}: marks have no area"
            assert svg.locator("title").first.text_content(), plot
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "audit-report.png"), full_page=True)
        assert problems == [], problems
    finally:
        context.close()


def test_the_report_fits_a_phone(chromium: Any, synthetic: Audited) -> None:
    context, page, problems = _open(chromium, synthetic.report, 375)
    try:
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow} px wider than a phone"
        for plot in sorted(PLOTS):
            box = page.locator(f'figure[data-plot="{plot}"] svg').bounding_box()
            assert box is not None and 300 <= box["width"] <= 375, (plot, box)
        font = page.evaluate("parseFloat(getComputedStyle(document.body).fontSize)")
        assert font >= 16
        page.screenshot(path=str(ARTIFACTS / "audit-report-phone.png"), full_page=True)
        assert problems == [], problems
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        context.close()
