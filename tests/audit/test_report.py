"""The audit's HTML report: self-contained, complete, honest about bad rows, and drawn in a real browser.

The browser test renders the report in headless Chromium with the network cut off and saves a full-page
screenshot to ``artifacts/audit-report.png`` (and a phone-width one beside it) for a person to look at, and
one of each new section (measures, departures, where and when) at both widths.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
from markupsafe import escape

from browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from ketamine_cds import load_knowledge
from ketamine_cds.audit.canonical import COLUMN_NAMES
from ketamine_cds.audit.duck import run_duckdb, summary_rows
from ketamine_cds.audit.flat import flat_source
from ketamine_cds.audit.report import aggregate, write_report
from ketamine_cds.audit.run import run_audit, write_outputs
from ketamine_cds.audit.synth import write_flat
from report_html import FORBIDDEN_TAGS, Page

MEASURES = ("dose-within-limit", "contraindicated", "unsupported", "cannot-tell")
PLOTS = {"dose-bolus", "dose-infusion", "time", "location", "indication", "multiples", "run-all"}


def _plots(page: Page) -> set[str]:
    """The fixed plots; a run chart per unit (run-unit-N) comes on top, as many as there are busy units."""
    return {f.plot for f in page.figures if not f.plot.startswith("run-unit-")}


# --- data ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Audited:
    findings: Path
    summary: dict[str, Any]
    report: Path
    text: str


def _audit(flat: Path, out: Path, summary_extra: Mapping[str, Any] | None = None) -> Audited:
    """As ``ketamine-cds audit`` does: findings, then the exports, summary.json and report.html from them."""
    run = run_duckdb(flat_source(flat), out)
    about = {
        "engine": "duckdb",
        "form": "flat",
        "input": str(flat),
        "decision_classes": run.classes,
        "seconds": round(run.seconds, 2),
        **(summary_extra or {}),
    }
    summary = write_outputs(run.findings, out, about)
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary, default=str))
    report = out / "report.html"
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
    assert _plots(page) == PLOTS
    assert {f.plot for f in page.figures} - PLOTS == {f"run-unit-{i}" for i in range(1, 10)}  # 9 units
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
    assert "Doses over the limit" in texts["multiples"] and "10× to 100×" in texts["multiples"]
    run_all = next(f for f in page.figures if f.plot == "run-all").svgs[0].texts
    assert "Departure rate" in texts["run-all"] and any(t.startswith("median ") for t in run_all)
    assert "intensive care" in next(f.caption for f in page.figures if f.plot == "dose-infusion").lower()


def test_nothing_is_loaded_from_anywhere(synthetic: Audited) -> None:
    page = Page(synthetic.text)
    assert not (page.tags & FORBIDDEN_TAGS), page.tags & FORBIDDEN_TAGS
    for tag, attribute, value in page.urls:  # a link to a unit's export beside the report loads nothing
        local = re.fullmatch(r"departures/[a-z0-9-]+\.csv", value) and tag == "a"
        assert value.startswith("#") or value.startswith("https://doi.org/") or local, (tag, attribute, value)
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
    for key, measure in s["measures"].items():  # each card is the summary's numerator over its denominator
        card = page.by_id[f"m-{key}"]
        assert card.endswith(f"{measure['numerator']:,} of {measure['denominator']:,}"), (key, card)
        assert measure["denominator"] + sum(measure["excluded"].values()) == s["administrations"], key
    categories = page.table_after("Assessed administrations by category", synthetic.text)
    assert (
        sum(int(row[1].replace(",", "")) for row in categories[1:-1]) == s["administrations"] - s["bad_rows"]
    )
    assert "0.35 mg/kg" in page.by_id["definition"] and "never within the limit" in page.by_id["definition"]

    verdicts = page.table_after("Verdict counts", synthetic.text)
    shown = {row[0].split()[0]: int(row[1].replace(",", "")) for row in verdicts[1:]}
    assert shown == {("not" if k == "not assessed" else k): v for k, v in s["verdicts"].items()}

    reasons = page.table_after("Reasons rows were not assessed", synthetic.text)
    listed = {row[0]: int(row[1].replace(",", "")) for row in reasons[1:-1]}
    assert listed == s["problems"]  # every reason, with its count: nothing silently dropped
    assert reasons[-1][1] == f"{s['bad_rows']:,}"


def test_examples_are_the_worst_doses_and_the_contraindicated(synthetic: Audited) -> None:
    page = Page(synthetic.text)
    over = page.table_after("Highest clinical over-limit doses", synthetic.text)[1:]
    errors = page.table_after("Likely documentation errors to review", synthetic.text)[1:]
    contra = page.table_after("Contraindicated administrations to review", synthetic.text)[1:]
    assert len(over) == 20 and len(errors) == 20 and len(contra) == 20
    con = duckdb.connect()
    try:
        f = f"read_parquet('{synthetic.findings}')"
        ranked = (
            f"SELECT admin_id, dose_per_kg / CAST(limit_per_kg AS DOUBLE) AS m FROM {f} "
            "WHERE dose_status = 'exceeds' AND problem IS NULL AND verdict <> 'out-of-scope'"
        )
        worst = con.execute(
            f"SELECT admin_id FROM ({ranked}) WHERE m < 10 ORDER BY m DESC, admin_id LIMIT 20"
        ).fetchall()
        largest = con.execute(
            f"SELECT admin_id FROM ({ranked}) WHERE m >= 10 ORDER BY m DESC, admin_id LIMIT 20"
        ).fetchall()
        contraindicated = {
            r[0]
            for r in con.execute(f"SELECT admin_id FROM {f} WHERE verdict = 'contraindicated'").fetchall()
        }
    finally:
        con.close()
    assert [row[0].split()[0] for row in over] == [w[0] for w in worst]
    assert [row[0].split()[0] for row in errors] == [w[0] for w in largest]
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
        assert over == count(f"{bolus} AND {per_kg} AND dose_status = 'exceeds'")  # drawn per kg
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
    assert _plots(page) == PLOTS
    assert page.by_id["n-administrations"].startswith("3")
    assert page.by_id["n-assessed"].startswith("2")
    assert page.by_id["n-bad-rows"].startswith("1")
    assert "unknown unit 'mgs'" in page.by_id["bad-rows"]
    assert page.by_id["m-dose-within-limit"] == "50.0%1 of 2"
    assert page.by_id["m-contraindicated"] == "0.0%0 of 2"
    over = page.table_after("Highest clinical over-limit doses", audited.text)[1:]
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
    assert _plots(page) == PLOTS
    for figure in page.figures:
        assert figure.svgs and figure.svgs[0].title, figure.plot
    assert page.by_id["n-administrations"].startswith(str(len(rows)))
    assert not re.search(r"\b(nan|inf)\b", audited.text, re.IGNORECASE)  # no NaN or infinite numbers
    reasons = audited.summary["problems"]
    for reason in reasons:
        assert str(escape(reason)) in audited.text


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
    assert _plots(page) == PLOTS
    assert page.by_id["n-administrations"].startswith("0")
    assert all(page.by_id[f"m-{key}"] == "–0 of 0" for key in MEASURES)
    assert (
        "No assessed administration within the guideline's scope departs" in page.by_id["departures-summary"]
    )


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
    assert "&lt;script&gt;" in audited.text and "A&amp;&lt;b&gt;1&#34;" in audited.text


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
        for plot in sorted(_plots(Page(synthetic.text))):
            svg = page.locator(f'figure[data-plot="{plot}"] svg')
            assert svg.count() == 1, plot
            box = svg.bounding_box()
            assert box is not None and box["width"] > 200 and box["height"] > 100, (plot, box)
            marks = svg.locator("rect.mark, path.mark, circle.mark")
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
        _section_screenshots(page, "desktop")
        assert problems == [], problems
    finally:
        context.close()


SECTIONS = ("summary", "departures", "where")


def _section_screenshots(page: Any, width: str) -> None:
    """The measures, the departures by reason and the where-and-when section, each on its own."""
    for section in SECTIONS:
        page.locator(f"section#{section}").screenshot(
            path=str(ARTIFACTS / f"audit-report-{section}-{width}.png")
        )


def test_the_report_fits_a_phone(chromium: Any, synthetic: Audited) -> None:
    context, page, problems = _open(chromium, synthetic.report, 375)
    try:
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow} px wider than a phone"
        for figure in Page(synthetic.text).figures:
            box = page.locator(f'figure[data-plot="{figure.plot}"] svg').bounding_box()
            assert box is not None and 300 <= box["width"] <= 375, (figure.plot, box)
        for section in SECTIONS:  # no section is wider than the screen (tables scroll inside their region)
            box = page.locator(f"section#{section}").bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375, (section, box)
        font = page.evaluate("parseFloat(getComputedStyle(document.body).fontSize)")
        assert font >= 16
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "audit-report-phone.png"), full_page=True)
        _section_screenshots(page, "phone")
        assert problems == [], problems
    finally:
        context.close()
