"""The clinician web page in a real browser (Chromium through Playwright) against a real server.

Keyboard-only and mouse-driven runs, accessible labels, a 375 px phone and print. Screenshots of the result
page go to ``artifacts/`` at the repository root (gitignored) for a person to look at.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Server
from playwright.sync_api import Browser, Page, expect, sync_playwright

from browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

if not CHROMIUM.exists() and os.environ.get("KETAMINE_CDS_REQUIRE_CHROMIUM"):
    raise RuntimeError("KETAMINE_CDS_REQUIRE_CHROMIUM is set but /usr/bin/chromium is missing")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1024, "height": 900})
    tab = context.new_page()
    yield tab
    context.close()


def _shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def _active_id(page: Page) -> str:
    value = page.evaluate("document.activeElement ? document.activeElement.id : ''")
    return str(value)


def _tab_to(page: Page, element_id: str, visited: list[str], limit: int = 120) -> None:
    """Press Tab until ``element_id`` has the focus, recording every stop on the way."""
    for _ in range(limit):
        if _active_id(page) == element_id:
            return
        page.keyboard.press("Tab")
        visited.append(_active_id(page))
    raise AssertionError(f"Tab never reached #{element_id}; stops: {visited[-20:]}")


def test_keyboard_only_fill_and_submit(dev_server: Server, page: Page) -> None:
    page.goto(dev_server.url + "/")
    visited: list[str] = []

    _tab_to(page, "weight_value", visited)
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", ""), "the focused field has no visible focus outline"
    page.keyboard.type("80")

    _tab_to(page, "pregnant-3", visited)  # a radio group is one tab stop: the checked choice
    page.keyboard.press("ArrowLeft")  # "Not known" -> "No (ruled out)"

    _tab_to(page, "conditions_record-1", visited)  # "Not reviewed" is the default: nobody has looked yet
    page.keyboard.press("ArrowDown")  # -> "Reviewed: unticked means not found in the record"
    _tab_to(page, "conditions-sleep-apnea", visited)
    page.keyboard.press("Space")

    _tab_to(page, "indication", visited)
    page.keyboard.type("perioperative")
    _tab_to(page, "procedure_class", visited)
    page.keyboard.type("abdominal")
    _tab_to(page, "procedure_name", visited)
    page.keyboard.type("Appendectomy")
    _tab_to(page, "setting-3", visited)
    page.keyboard.press("ArrowLeft")  # "Not known" -> "Not intensive care"

    _tab_to(page, "route", visited)
    page.keyboard.type("intravenous")
    _tab_to(page, "dose_value", visited)
    page.keyboard.type("40")
    page.keyboard.press("Enter")  # submits the form

    page.wait_for_url(re.compile(r"/assess$"))
    heading = page.locator("#result-heading")
    expect(heading).to_contain_text("Dose exceeds the limit")
    expect(heading).to_be_focused()  # the answer takes the focus
    expect(page.locator("#result .verdict-reason")).to_contain_text("max 28 mg")
    expect(page.locator("#result")).to_have_attribute("data-verdict", "dose-exceeds-limit")
    expect(page.locator("#result .verdict")).not_to_contain_text("dose-exceeds-limit")  # words, not the code
    expect(page.get_by_label("Weight", exact=True)).to_have_value("80")

    # the tab order follows the page: every stop comes later in the document than the previous one
    order = page.evaluate(
        "ids => ids.map(id => [...document.querySelectorAll('[id]')].findIndex(e => e.id === id))",
        [v for v in visited if v],
    )
    assert order == sorted(order), visited
    assert page.evaluate("document.getElementById('pregnant-2').checked")
    assert page.evaluate("document.getElementById('conditions_record-2').checked")
    _shot(page, "page-result-keyboard.png")


def test_mouse_driven_pregnancy_is_contraindicated(dev_server: Server, page: Page) -> None:
    page.goto(dev_server.url + "/")
    page.get_by_label("Weight", exact=True).click()
    page.get_by_label("Weight", exact=True).fill("68")
    page.get_by_role("group", name="Pregnant?").get_by_label("Yes").click()
    page.get_by_label("Reviewed: unticked means not found in the record").check()
    page.get_by_label("Indication", exact=True).select_option("perioperative")
    page.get_by_label("Planned surgery: class").select_option("abdominal")
    page.get_by_label("Planned surgery: name (optional)").fill("Laparoscopic cholecystectomy")
    page.get_by_label("Route", exact=True).select_option("intravenous")
    page.get_by_label("Dose", exact=True).fill("20")
    page.get_by_role("button", name="Assess").click()

    expect(page.locator("#result-heading")).to_contain_text("Contraindicated")
    expect(page.locator("#result .verdict-reason")).to_have_text(
        "Relative contraindication: pregnancy (stated in the case)"
    )
    screening = page.locator("#result .screening")
    expect(screening).to_contain_text("Pregnancy: present in the record")
    expect(screening).to_contain_text("Psychiatric disease with psychosis: not found in the record")
    expect(screening).not_to_contain_text("not the same as ruled out")  # said once, above the list
    expect(page.get_by_role("button", name="Print summary")).to_be_visible()
    _shot(page, "page-result-pregnancy.png")

    # the explanation page of the decisive statement, from the answer
    page.locator("#result").get_by_role("link", name=re.compile("contra-pregnancy")).first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Pregnancy")
    expect(page.locator("dl.facts")).to_contain_text("a relative contraindication")


def test_every_control_has_an_accessible_label(dev_server: Server, page: Page) -> None:
    page.goto(dev_server.url + "/")
    controls = page.locator("#case-form input:not([type=hidden]), #case-form select")
    count = controls.count()
    assert count > 40
    for i in range(count):
        control = controls.nth(i)
        element_id = control.get_attribute("id")
        label = page.locator(f'label[for="{element_id}"]')
        expect(label).to_have_count(1)
        name = " ".join((label.text_content() or "").split())
        expect(control).to_have_accessible_name(name)
        if control.get_attribute("type") not in ("radio", "checkbox"):
            found = page.get_by_label(name, exact=True)
            expect(found).to_have_count(1)
            assert found.get_attribute("id") == element_id
    for group in ("Patient", "Conditions in the record", "Question", "Ketamine order", "Current opioids"):
        expect(page.get_by_role("group", name=group, exact=True)).to_be_visible()


def test_bad_input_shows_the_error_at_the_field(dev_server: Server, page: Page) -> None:
    page.goto(dev_server.url + "/")
    page.get_by_label("Weight", exact=True).fill("-80")
    page.get_by_label("Dose", exact=True).fill("40")
    page.get_by_role("button", name="Assess").click()
    weight = page.get_by_label("Weight", exact=True)
    expect(weight).to_have_value("-80")
    expect(weight).to_have_attribute("aria-invalid", "true")
    expect(weight).to_have_accessible_description(re.compile("above zero"))
    expect(page.locator("#error-summary-heading")).to_be_focused()
    page.locator(".error-summary a").first.click()
    expect(weight).to_be_focused()


def test_a_phone_needs_no_horizontal_scrolling(dev_server: Server, browser: Browser) -> None:
    context = browser.new_context(
        viewport={"width": 375, "height": 812}, device_scale_factor=2, is_mobile=True
    )
    page = context.new_page()
    try:
        no_overflow = "document.documentElement.scrollWidth <= window.innerWidth"
        page.goto(dev_server.url + "/")
        assert page.evaluate(no_overflow), page.evaluate("document.documentElement.scrollWidth")
        page.get_by_label("Weight", exact=True).fill("176")
        page.get_by_label("Weight unit", exact=True).select_option("lb")
        page.get_by_label("Indication", exact=True).select_option("perioperative")
        page.get_by_label("Planned surgery: class").select_option("spine")
        page.get_by_label("Planned surgery: name (optional)").fill("Posterior lumbar fusion L4-L5")
        page.get_by_role("group", name="Setting").get_by_label("Intensive care", exact=True).check()
        page.get_by_label("Route", exact=True).select_option("intravenous")
        page.get_by_label("Dose", exact=True).fill("0.5")
        page.get_by_label("Dose unit", exact=True).select_option("mg/kg")
        page.get_by_role("group", name="Opioid 1").get_by_label("Opioid 1 Ingredient").select_option(
            "oxycodone"
        )
        page.get_by_label("Opioid 1 Daily dose (mg/day; fentanyl patch: mcg/h)").fill("40")
        page.get_by_label("Opioid 1 Start date").fill("2026-09-01")
        page.get_by_role("button", name="Assess").click()
        expect(page.locator("#result-heading")).to_contain_text("Dose exceeds the limit")
        expect(page.locator(".dose-table")).to_contain_text("in intensive care (the highest rate")
        assert page.evaluate(no_overflow), page.evaluate("document.documentElement.scrollWidth")
        _shot(page, "page-result-phone.png")
        page.goto(dev_server.url + "/statements/dose-infusion-limit")
        assert page.evaluate(no_overflow)
    finally:
        context.close()


def test_print_shows_the_answer_without_the_form(dev_server: Server, page: Page) -> None:
    page.goto(dev_server.url + "/")
    page.get_by_label("Weight", exact=True).fill("80")
    page.get_by_label("Reviewed: unticked means not found in the record").check()
    page.get_by_label("Indication", exact=True).select_option("crps")
    page.get_by_role("button", name="Assess").click()
    expect(page.locator("#result-heading")).to_contain_text("Consider ketamine")
    page.emulate_media(media="print")
    expect(page.locator("#case-form")).to_be_hidden()
    expect(page.get_by_role("button", name="Print summary")).to_be_hidden()
    expect(page.locator("#result-heading")).to_be_visible()
    _shot(page, "page-result-print.png")
    page.pdf(path=str(ARTIFACTS / "page-result-print.pdf"))
    page.emulate_media(media="screen")
    expect(page.locator("#case-form")).to_be_visible()


# --- numbers a pump takes, honest defaults, print, screenshots (issue 17) -----------------------------------

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_SITE = ROOT / "examples" / "site" / "example-hospital.toml"
SCREENSHOTS = ROOT / "docs" / "screenshots"  # the README's pictures, kept in the repository


@pytest.fixture(scope="module")
def site_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with the example hospital's protocol (its own concentrations: 1, 2 and 10 mg/mL)."""
    data = tmp_path_factory.mktemp("site")
    server = Server(data, {"KETAMINE_CDS_ALLOW_UNAUTHENTICATED": "1"}, args=["--site", str(EXAMPLE_SITE)])
    yield server.start()
    server.stop()


def _fill(page: Page, **fields: str) -> None:
    """The usual surgical case, reviewed record, with the given weight, dose and concentration."""
    page.get_by_label("Reviewed: unticked means not found in the record").check()
    page.get_by_label("Indication", exact=True).select_option("perioperative")
    page.get_by_label("Planned surgery: class").select_option("orthopedic-limb")
    page.get_by_label("Planned surgery: name (optional)").fill("Total knee replacement")
    page.get_by_role("group", name="Setting").get_by_label("Not intensive care", exact=True).check()
    if "weight" in fields:
        page.get_by_label("Weight", exact=True).fill(fields["weight"])
    if "dose" in fields:
        page.get_by_label("Route", exact=True).select_option("intravenous")
        page.get_by_label("Dose", exact=True).fill(fields["dose"])
        page.get_by_label("Dose unit", exact=True).select_option(fields.get("unit", "mg"))
    if "concentration" in fields:
        page.get_by_label("Concentration (mg/mL)").fill(fields["concentration"])
    page.get_by_role("button", name="Assess").click()


def test_the_defaults_are_honest(dev_server: Server, page: Page) -> None:
    page.goto(dev_server.url + "/")
    conditions = page.get_by_role("group", name="The patient's conditions are")
    expect(conditions.get_by_label("Not reviewed: contraindications are not screened")).to_be_checked()
    expect(page.get_by_role("group", name="Pregnant?").get_by_label("Not known")).to_be_checked()
    expect(page.get_by_role("group", name="Setting").get_by_label("Not known")).to_be_checked()
    # the date field shows the browser's own format: the hint names no format, only what empty means
    hint = page.locator("#as_of-hint")
    expect(hint).to_have_text(re.compile(r"^Leave it empty for today, \d{1,2} [A-Z][a-z]+ \d{4}\.$"))
    assert page.get_by_label("Date of the question (optional)").get_attribute("type") == "date"
    # nothing reviewed, nothing screened: the answer says so instead of "not found in the record"
    page.get_by_label("Indication", exact=True).select_option("crps")
    page.get_by_label("Weight", exact=True).fill("80")
    page.get_by_role("button", name="Assess").click()
    expect(page.locator("#result-heading")).to_contain_text("More information needed")
    expect(page.locator("#result .screening")).to_contain_text("unknown: verify")
    expect(page.locator("#result .screening")).not_to_contain_text("not found in the record")


def test_an_infusion_in_ml_per_hour_gets_the_numbers_a_pump_takes(dev_server: Server, page: Page) -> None:
    page.goto(dev_server.url + "/")
    _fill(page, weight="62.5", dose="5", unit="mL/h", concentration="10")
    table = page.locator(".dose-table")
    expect(table.locator("tr.limit-bolus")).to_contain_text("max 21.87 mg = 2.18 mL")
    expect(table.locator("tr.limit-infusion")).to_contain_text("max 62.5 mg/h = 6.25 mL/h")
    expect(table.locator("tr.limit-infusion")).to_contain_text("1 mg/kg/h or 16.66 mcg/kg/min")
    expect(table.locator("tr.ordered")).to_contain_text("5 mL/h (50 mg/h, 0.8 mg/kg/h, 13.33 mcg/kg/min)")
    expect(page.locator("#dose-limits + p.note")).to_contain_text("concentration 10 mg/mL")
    expect(page.locator(".pump-table")).to_have_count(0)  # the order gives its concentration
    _shot(page, "page-pump-numbers.png")


def test_without_a_concentration_the_maxima_are_given_at_the_products_concentrations(
    dev_server: Server, page: Page
) -> None:
    page.goto(dev_server.url + "/")
    _fill(page, weight="80", dose="20")
    rows = page.locator(".pump-table tbody tr")
    expect(rows).to_have_count(3)  # 10, 50 and 100 mg/mL: the knowledge base's ketamine products
    expect(rows.nth(0).locator("th, td")).to_have_text(["10 mg/mL", "max 2.8 mL", "max 8 mL/h"])
    expect(rows.nth(1).locator("th, td")).to_have_text(["50 mg/mL", "max 0.56 mL", "max 1.6 mL/h"])
    expect(rows.nth(2).locator("th, td")).to_have_text(["100 mg/mL", "max 0.28 mL", "max 0.8 mL/h"])
    expect(page.locator(".pump-table + p.note")).to_contain_text("ketamine products in the knowledge base")
    _shot(page, "page-pump-table.png")


def test_a_site_protocol_gives_its_own_concentrations(site_server: Server, page: Page) -> None:
    page.goto(site_server.url + "/")
    _fill(page, weight="80", dose="20")
    rows = page.locator(".pump-table tbody tr")
    expect(rows).to_have_count(3)
    # the site's caps: bolus 20 mg (under 0.3 mg/kg x 80 kg), infusion 40 mg/h (0.5 mg/kg/h x 80 kg)
    expect(rows.nth(0).locator("th, td")).to_have_text(["1 mg/mL", "max 20 mL", "max 40 mL/h"])
    expect(rows.nth(2).locator("th, td")).to_have_text(["10 mg/mL", "max 2 mL", "max 4 mL/h"])
    expect(page.locator(".pump-table + p.note")).to_contain_text("the concentrations of the site protocol")


def test_without_a_weight_a_dose_in_mg_says_for_which_weights_it_is_within(
    dev_server: Server, page: Page
) -> None:
    page.goto(dev_server.url + "/")
    _fill(page, dose="20")
    ordered = page.locator(".dose-table tr.ordered")
    expect(ordered).to_contain_text("20 mg: cannot be checked: no body weight")
    expect(ordered.locator(".weight-band")).to_have_text("Within the limit for patients of at least 57.2 kg.")
    expect(page.locator("#result .findings")).to_contain_text(
        "Cannot check bolus 20 mg: no body weight; within the limit for patients of at least 57.2 kg"
    )
    _shot(page, "page-weight-band.png")


def test_print_keeps_every_row_on_one_page(dev_server: Server, page: Page) -> None:
    page.goto(dev_server.url + "/")
    _fill(page, weight="80", dose="40")
    page.emulate_media(media="print")
    unsplit = page.evaluate(
        """() => [...document.querySelectorAll(
              '#result tr, #result .screening li, #result .finding, #result .missing li')]
            .map(e => getComputedStyle(e).breakInside)"""
    )
    assert unsplit and set(unsplit) == {"avoid"}, unsplit
    assert page.evaluate("getComputedStyle(document.querySelector('#result h3')).breakAfter") == "avoid"
    expect(page.locator(".pump-table")).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.pdf(path=str(ARTIFACTS / "page-result-rows.pdf"), format="A4")
    page.emulate_media(media="screen")


def test_the_readme_screenshots(dev_server: Server, browser: Browser) -> None:
    """The two pictures of the README, made here: the form, and an answer with the numbers a pump takes.
    They are written to artifacts/ on every run, and to docs/screenshots/ (kept in the repository) when
    KETAMINE_CDS_UPDATE_SCREENSHOTS is set."""
    context = browser.new_context(viewport={"width": 1000, "height": 1100})
    page = context.new_page()
    try:
        page.goto(dev_server.url + "/")
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        shots = {"page-form.png": page.screenshot()}
        _fill(page, weight="62.5", dose="8", unit="mL/h", concentration="10")
        expect(page.locator("#result-heading")).to_contain_text("Dose exceeds the limit")
        shots["page-result.png"] = page.locator("#result").screenshot()
        ARTIFACTS.mkdir(exist_ok=True)
        for name, png in shots.items():
            (ARTIFACTS / name).write_bytes(png)
            if os.environ.get("KETAMINE_CDS_UPDATE_SCREENSHOTS"):
                SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                (SCREENSHOTS / name).write_bytes(png)
            assert png.startswith(b"\x89PNG") and (SCREENSHOTS / name).exists(), name
    finally:
        context.close()
    readme = (ROOT / "README.md").read_text()
    assert "docs/screenshots/page-form.png" in readme and "docs/screenshots/page-result.png" in readme
