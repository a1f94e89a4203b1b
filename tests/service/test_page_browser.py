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
    expect(page.locator("#result .verdict-code")).to_have_text("dose-exceeds-limit")
    expect(page.get_by_label("Weight", exact=True)).to_have_value("80")

    # the tab order follows the page: every stop comes later in the document than the previous one
    order = page.evaluate(
        "ids => ids.map(id => [...document.querySelectorAll('[id]')].findIndex(e => e.id === id))",
        [v for v in visited if v],
    )
    assert order == sorted(order), visited
    assert page.evaluate("document.getElementById('pregnant-2').checked")
    _shot(page, "page-result-keyboard.png")


def test_mouse_driven_pregnancy_is_contraindicated(dev_server: Server, page: Page) -> None:
    page.goto(dev_server.url + "/")
    page.get_by_label("Weight", exact=True).click()
    page.get_by_label("Weight", exact=True).fill("68")
    page.get_by_role("group", name="Pregnant?").get_by_label("Yes").click()
    page.get_by_label("Indication", exact=True).select_option("perioperative")
    page.get_by_label("Planned surgery: class").select_option("abdominal")
    page.get_by_label("Planned surgery: name (optional)").fill("Laparoscopic cholecystectomy")
    page.get_by_label("Route", exact=True).select_option("intravenous")
    page.get_by_label("Dose", exact=True).fill("20")
    page.get_by_role("button", name="Assess").click()

    expect(page.locator("#result-heading")).to_contain_text("Contraindicated")
    expect(page.locator("#result .verdict-reason")).to_contain_text("pregnant")
    screening = page.locator("#result .screening")
    expect(screening).to_contain_text("Pregnancy: present in the record")
    expect(screening).to_contain_text("not found in the record (not the same as ruled out)")
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
