"""The clinician web page over HTTP, on the application in this process: the form, the answer, errors,
statements."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from html.parser import HTMLParser

import httpx
import pytest
from conftest import InProcessClient, in_process

from ketamine_cds import load_knowledge

KB = load_knowledge()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessClient]:
    """The service with its page, in this process."""
    with in_process(tmp_path_factory.mktemp("page")) as client:
        yield client


# The form's values as a browser sends them before anything is changed (radio and select defaults).
DEFAULTS = {
    "weight_unit": "kg",
    "pregnant": "unknown",
    "conditions_record": "unknown",  # not reviewed until the user says so
    "cardiovascular": "",
    "setting": "unknown",
    "dose_kind": "",
    "dose_unit": "mg",
    "prior_iv": "unknown",
    "opioid_record": "listed",
}
APPENDECTOMY_40MG = {
    **DEFAULTS,
    "conditions_record": "reviewed",
    "weight_value": "80",
    "indication": "perioperative",
    "procedure_class": "abdominal",
    "procedure_name": "Appendectomy",
    "setting": "non-intensive-care",
    "route": "intravenous",
    "dose_value": "40",
    "dose_unit": "mg",
}


class Page(HTMLParser):
    """Just enough of the DOM for these checks: elements with their attributes, labels and text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.labels: dict[str, str] = {}  # for= -> label text
        self.legends: list[str] = []
        self.fieldsets = 0
        self._label: str | None = None
        self._legend = False
        self._text: list[str] = []
        self.text_parts: list[str] = []
        self._skip = 0
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        self.elements.append((tag, attributes))
        if tag in ("script", "style"):
            self._skip += 1
        if tag == "label":
            self._label, self._text = attributes.get("for", ""), []
        if tag == "legend":
            self._legend, self._text = True, []
        if tag == "fieldset":
            self.fieldsets += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip -= 1
        if tag == "label" and self._label is not None:
            self.labels[self._label] = " ".join("".join(self._text).split())
            self._label = None
        if tag == "legend":
            self.legends.append(" ".join("".join(self._text).split()))
            self._legend = False

    def handle_data(self, data: str) -> None:
        if self._label is not None or self._legend:
            self._text.append(data)
        if not self._skip:
            self.text_parts.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.text_parts).split())

    def by_id(self, element_id: str) -> tuple[str, dict[str, str]]:
        found = [e for e in self.elements if e[1].get("id") == element_id]
        assert len(found) == 1, f"{len(found)} elements with id {element_id!r}"
        return found[0]

    def controls(self) -> list[tuple[str, dict[str, str]]]:
        return [
            (tag, a)
            for tag, a in self.elements
            if tag in ("input", "select", "textarea") and a.get("type") != "hidden"
        ]


def _post(server: InProcessClient, data: Mapping[str, object], path: str = "/assess") -> httpx.Response:
    return server.post(path, data=data, timeout=10)


def _result_text(response: httpx.Response) -> str:
    text = Page(response.text).text
    return text[text.index("Verdict:") :]


# --- the form ---------------------------------------------------------------------------------


def test_the_form_has_a_visible_label_for_every_control(site: InProcessClient) -> None:
    response = site.get("/", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = Page(response.text)
    controls = page.controls()
    assert len(controls) > 40
    for tag, attrs in controls:
        assert attrs.get("id"), f"{tag} {attrs} has no id"
        assert page.labels.get(attrs["id"]), f"{tag} #{attrs['id']} has no label"
    ids = [a["id"] for _, a in controls]
    assert len(ids) == len(set(ids)), "duplicate ids"
    for legend in ("Patient", "Conditions in the record", "Question", "Ketamine order", "Current opioids"):
        assert legend in page.legends
    assert page.fieldsets >= 10
    for name in ("Weight", "Weight unit", "Age (years)", "Sex", "Indication", "Route", "Dose", "Dose unit"):
        assert name in page.labels.values()


def test_the_form_offers_the_knowledge_bases_choices(site: InProcessClient) -> None:
    page = Page(site.get("/", timeout=10).text)
    options = {a.get("value") for tag, a in page.elements if tag == "option"}
    assert set(KB.uses) <= options
    assert set(KB.procedure_classes) <= options
    assert set(KB.opioids) <= options
    for unit in ("mg", "mcg", "mg/kg", "mcg/kg", "mg/h", "mg/kg/h", "mcg/kg/min", "mcg/kg/h", "mL/h"):
        assert unit in options
    assert {"kg", "lb", "g"} <= options
    groups = [a["label"] for tag, a in page.elements if tag == "optgroup"]
    assert groups == ["Acute pain", "Chronic pain", "Out of scope of the guideline"]
    ticks = {a["value"] for tag, a in page.elements if tag == "input" and a.get("name") == "conditions"}
    assert {"psychosis", "intracranial-pressure", "substance-misuse", "sleep-apnea"} <= ticks
    assert {"opioid-dependence", "sickle-cell-crisis", "liver-disease-moderate"} <= ticks
    labels = set(page.labels.values())
    assert KB.concepts["psychosis"].label in labels
    assert KB.concepts["cardiovascular-severe"].label in labels


# --- the answer -------------------------------------------------------------------------------


def test_a_bolus_over_the_limit_shows_the_verdict_first(site: InProcessClient) -> None:
    response = _post(site, APPENDECTOMY_40MG)
    assert response.status_code == 200
    page = Page(response.text)
    page.by_id("result")
    assert page.by_id("result-heading")[1]["tabindex"] == "-1"
    text = Page(response.text).text
    result = text[text.index("Verdict:") :]
    first = result[: result.index("Findings")]
    assert "Dose exceeds the limit" in first
    assert "dose-exceeds-limit" not in first  # the words, not the raw code, under the verdict heading
    assert 'data-verdict="dose-exceeds-limit"' in response.text  # the code stays for a machine
    assert "max 28 mg" in first  # the one-line reason, under the verdict
    assert text.index("Dose exceeds the limit") < text.index("Change the case")  # the form comes after
    assert "Critical Bolus 40 mg (0.5 mg/kg) is over the 0.35 mg/kg limit: max 28 mg" in result
    assert "Grade C Certainty moderate" in result
    limits = r"Dose limits for 80 kg The acute pain guideline's limits; weight as given\. "
    assert re.search(limits + r"IV bolus max 28 mg .*IV infusion max 80 mg/h", result)
    assert "Ordered bolus 40 mg (0.5 mg/kg): exceeds the limit" in result  # not "40 mg (40 mg, ...)"
    assert 'href="https://doi.org/10.1097/AAP.0000000000000806"' in response.text
    assert 'href="/statements/dose-bolus-limit"' in response.text


def test_the_dose_table_restates_the_order_and_never_rounds_onto_the_limit(site: InProcessClient) -> None:
    # 24.45 mg for 69.85 kg is 0.35004 mg/kg; the maximum, 24.4475 mg, is shown rounded down
    data = {**APPENDECTOMY_40MG, "weight_value": "69.85", "dose_value": "24.45"}
    result = _result_text(_post(site, data))
    assert "Bolus 24.45 mg (0.35004 mg/kg) is over the 0.35 mg/kg limit: max 24.44 mg" in result
    assert "IV bolus max 24.44 mg" in result
    assert "Ordered bolus 24.45 mg (0.35004 mg/kg): exceeds the limit" in result
    per_kg = {**APPENDECTOMY_40MG, "dose_value": "0.352", "dose_unit": "mg/kg"}
    result = _result_text(_post(site, per_kg))
    assert "Ordered bolus 0.352 mg/kg (28.16 mg): exceeds the limit" in result


def test_the_form_is_kept_under_the_answer(site: InProcessClient) -> None:
    page = Page(_post(site, APPENDECTOMY_40MG).text)
    assert page.by_id("weight_value")[1]["value"] == "80"
    assert page.by_id("procedure_name")[1]["value"] == "Appendectomy"
    selected = [a.get("value") for tag, a in page.elements if tag == "option" and "selected" in a]
    assert "abdominal" in selected and "perioperative" in selected and "intravenous" in selected


def test_post_to_the_root_works_too(site: InProcessClient) -> None:
    response = _post(site, APPENDECTOMY_40MG, path="/")
    assert response.status_code == 200
    assert 'data-verdict="dose-exceeds-limit"' in response.text


def test_pregnancy_is_a_contraindication_and_absence_is_not_ruled_out(site: InProcessClient) -> None:
    data = {**APPENDECTOMY_40MG, "pregnant": "yes", "dose_value": "20", "weight_value": "68"}
    result = _result_text(_post(site, data))
    assert result.startswith(
        "Verdict: Contraindicated Relative contraindication: pregnancy (stated in the case)"
    )
    assert "Pregnancy : present in the record" in result
    assert "“Not found in the record” is not “ruled out”" in result  # said once, above the list
    assert "Psychiatric disease with psychosis : not found in the record Moderate" in result
    assert result.count("not the same as ruled out") == 0
    assert "Grade B Certainty low" in result


def test_pregnancy_ruled_out_is_shown_as_ruled_out(site: InProcessClient) -> None:
    result = _result_text(_post(site, {**APPENDECTOMY_40MG, "pregnant": "no"}))
    assert "Pregnancy : ruled out in the record" in result


def test_an_infusion_in_intensive_care_is_held_to_the_highest_rate_the_guidelines_describe(
    site: InProcessClient,
) -> None:
    data = {
        **APPENDECTOMY_40MG,
        "setting": "intensive-care",
        "dose_value": "1.5",
        "dose_unit": "mg/kg/h",
    }
    result = _result_text(_post(site, data))
    assert (
        "IV infusion max 560 mg/h 7 mg/kg/h or 116.66 mcg/kg/min, in intensive care (the highest rate the "
        "guidelines describe)" in result
    )
    assert "Ordered infusion 1.5 mg/kg/h (120 mg/h, 25 mcg/kg/min): within the limit" in result


def test_a_crps_infusion_gets_the_chronic_range_and_its_duration_is_checked(site: InProcessClient) -> None:
    data = {
        **APPENDECTOMY_40MG,
        "indication": "crps",
        "procedure_class": "",
        "procedure_name": "",
        "dose_value": "1.5",
        "dose_unit": "mg/kg/h",
        "duration_value": "4",
    }
    result = _result_text(_post(site, data))
    assert result.startswith("Verdict: Consider")
    assert "The chronic pain guideline's range" in result
    assert "meets the first-infusion minimum" in result


def test_a_child_is_told_the_reference_has_no_statement_for_children(site: InProcessClient) -> None:
    result = _result_text(_post(site, {**APPENDECTOMY_40MG, "age_years": "12"}))
    assert "Note: The patient is 12 years old. This reference has no statement for children" in result


def test_an_infusion_in_ml_per_hour_uses_the_concentration(site: InProcessClient) -> None:
    data = {
        **APPENDECTOMY_40MG,
        "weight_value": "62.5",
        "dose_value": "5",
        "dose_unit": "mL/h",
        "concentration_value": "10",
        "opioid_ingredient_0": "oxycodone",
        "opioid_amount_0": "40",
        "opioid_start_0": "2026-09-01",
        "as_of": "2026-11-24",
    }
    result = _result_text(_post(site, data))
    assert result.startswith("Verdict: Consider ketamine Consider IV ketamine")
    assert "Ordered infusion 5 mL/h (50 mg/h, 0.8 mg/kg/h, 13.33 mcg/kg/min): within the limit" in result
    assert "IV bolus max 21.87 mg = 2.18 mL" in result and "IV infusion max 62.5 mg/h = 6.25 mL/h" in result
    assert "at common concentrations" not in result  # the order gives its own
    assert "Opioid tolerance: present ;" in result
    assert "60 MME/day" in result


def test_unknown_conditions_record_needs_information(site: InProcessClient) -> None:
    data = {**APPENDECTOMY_40MG, "conditions_record": "unknown", "dose_value": "20"}
    result = _result_text(_post(site, data))
    assert result.startswith("Verdict: More information needed Needs information")
    assert "conditions : the patient's conditions could not be read" in result
    assert "unknown: verify" in result


def test_no_weight_gives_the_limits_per_kg(site: InProcessClient) -> None:
    data = {**DEFAULTS, "indication": "crps"}
    result = _result_text(_post(site, data))
    assert "Dose limits (no body weight recorded)" in result
    assert "max 0.35 mg/kg" in result


def test_user_text_is_escaped(site: InProcessClient) -> None:
    data = {**APPENDECTOMY_40MG, "procedure_name": "<script>alert(1)</script> & <b>x</b>"}
    response = _post(site, data)
    assert response.status_code == 200
    assert "<script>alert(1)</script>" not in response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;x&lt;/b&gt;" in response.text


def test_pages_are_not_cached_and_have_a_content_security_policy(site: InProcessClient) -> None:
    response = _post(site, APPENDECTOMY_40MG)
    assert response.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert "<script>" not in response.text  # no inline script: the CSP would block it


def test_the_stylesheet_and_script_are_served(site: InProcessClient) -> None:
    css = site.get("/static/page.css", timeout=10)
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert "@media print" in css.text
    js = site.get("/static/page.js", timeout=10)
    assert js.status_code == 200
    assert "window.print" in js.text
    assert site.get("/static/page.py", timeout=10).status_code == 404


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"weight_value": "-80"}, "weight_value", "above zero"),
        ({"weight_value": "0"}, "weight_value", "above zero"),
        ({"weight_value": "900"}, "weight_value", "over 500 kg"),
        ({"weight_value": "70", "weight_unit": "g"}, "weight_value", "under 0.2 kg"),
        ({"weight_value": "eighty"}, "weight_value", "must be a number"),
        ({"weight_value": "1e99999999"}, "weight_value", "plain number"),
        ({"weight_unit": "stone"}, "weight_unit", "unknown unit"),
        ({"route": ""}, "route", "the route is missing"),
        ({"dose_unit": "furlong"}, "dose_unit", "unknown unit"),
        ({"dose_value": "-40"}, "dose_value", "positive"),
        ({"dose_value": "1e400"}, "dose_value", "plain number"),
        ({"weight_value": "7_0"}, "weight_value", "plain number"),  # Python reads 7_0 as 70
        ({"dose_value": "0_3", "dose_unit": "mg/kg"}, "dose_value", "plain number"),
        ({"weight_value": "\uff17\uff10"}, "weight_value", "plain number"),  # full-width digits
        ({"opioid_ingredient_1": "oxycodone", "opioid_amount_1": "4_0"}, "opioid_amount_1", "plain number"),
        ({"dose_kind": "infusion"}, "dose_unit", "an IV infusion needs a rate"),
        ({"age_years": "200"}, "age_years", "from 0 to 130"),
        ({"age_years": "²"}, "age_years", "whole number"),  # a digit to str.isdigit, not to int()
        ({"as_of": "yesterday"}, "as_of", "must be a date"),
        ({"indication": "hangover"}, "indication", "unknown indication"),
        ({"opioid_ingredient_1": "oxycodone", "opioid_amount_1": "-5"}, "opioid_amount_1", "not be negative"),
        ({"opioid_ingredient_2": "heroin"}, "opioid_ingredient_2", "unknown opioid"),
        ({"opioid_ingredient_0": "oxycodone", "opioid_start_0": "2026-13-01"}, "opioid_start_0", "date"),
        ({"opioid_record": "unknown", "opioid_ingredient_0": "morphine"}, "opioid_record", "not known"),
        ({"conditions_record": "unknown", "conditions": ["psychosis"]}, "conditions_record", "ticked"),
        ({"conditions": ["psychosis", "gout"]}, "conditions", "unknown condition"),
    ],
)
def test_bad_input_is_shown_next_to_its_field_with_the_values_kept(
    site: InProcessClient, change: dict[str, str | list[str]], field: str, message: str
) -> None:
    data: dict[str, str | list[str]] = {**APPENDECTOMY_40MG, **change}
    response = _post(site, data)
    assert response.status_code == 400
    assert "Traceback" not in response.text
    assert response.headers["content-type"].startswith("text/html")
    page = Page(response.text)
    error_id = f"{field}-error"
    error_at = next(i for i, (_, a) in enumerate(page.elements) if a.get("id") == error_id)
    text = page.text
    assert message in text[text.index("Error:", text.index("could not be assessed")) :]
    # next to the field: the error sits in the field's own block, just before the control or its choices
    group = field + "-group"
    target = next(
        i for i, (_, a) in enumerate(page.elements) if a.get("id") in (field, group) or a.get("name") == field
    )
    assert 0 <= target - error_at <= 8 or 0 <= error_at - target <= 3, (target, error_at)
    owner = page.elements[target][1]
    assert error_id in owner.get("aria-describedby", "")
    assert "The case could not be assessed" in text
    assert "Verdict:" not in text  # no half answer
    assert page.by_id("procedure_name")[1]["value"] == "Appendectomy"  # the values are kept
    if field == "weight_value":
        assert page.by_id("weight_value")[1]["value"] == change["weight_value"]
        assert owner.get("aria-invalid") == "true"


def test_an_unrecognised_choice_is_kept_and_marked(site: InProcessClient) -> None:
    page = Page(_post(site, {**APPENDECTOMY_40MG, "weight_unit": "stone"}).text)
    options = [a for tag, a in page.elements if tag == "option" and a.get("value") == "stone"]
    assert options and "selected" in options[0]
    assert "stone (not recognised)" in page.text


def test_a_malformed_body_is_a_400_page_not_a_traceback(site: InProcessClient) -> None:
    response = site.post(
        "/assess",
        content=b"\xff\xfe not multipart",
        headers={"content-type": "multipart/form-data; boundary=x"},
        timeout=10,
    )
    assert response.status_code == 400
    assert "the form could not be read" in response.text
    assert "Traceback" not in response.text


# --- statements -------------------------------------------------------------------------------


def test_the_statement_list_links_every_statement(site: InProcessClient) -> None:
    response = site.get("/statements", timeout=10)
    assert response.status_code == 200
    hrefs = {a.get("href") for tag, a in Page(response.text).elements if tag == "a"}
    assert {f"/statements/{sid}" for sid in KB.statements} <= hrefs


@pytest.mark.parametrize("statement_id", sorted(KB.statements))
def test_every_statement_has_a_page(site: InProcessClient, statement_id: str) -> None:
    response = site.get(f"/statements/{statement_id}", timeout=10)
    assert response.status_code == 200
    st = KB.statements[statement_id]
    text = Page(response.text).text
    assert st.title in text
    assert " ".join(st.text.split()) in text
    if st.grade is None and st.certainty is None:  # said once
        assert "Grade and certainty not stated" in text and text.count("not stated") == 1
    else:
        assert f"Grade {st.grade or 'not stated'}" in text
        assert f"Certainty {st.certainty or 'not stated'}" in text
    for source in st.sources:
        assert f'href="{source.url}"' in response.text
    for tag in st.tags:
        assert re.search(rf"\b{tag} ?: \w", text)


def test_a_statement_page_explains_tags_and_thresholds(site: InProcessClient) -> None:
    text = Page(site.get("/statements/dose-infusion-limit", timeout=10).text).text
    assert "limit 1 mg/kg/h" in text
    assert "tolerability range 0.1–0.5 mg/kg/h" in text
    assert "V2v : the conclusion and its grade, word for word" in text
    seed = Page(site.get("/statements/dose-bolus-limit", timeout=10).text).text
    # the seed tag says what the seed is, not "the seed summary the project was started from"
    assert (
        "seed : stated in the project's seed: a one-page summary of the 2018 ASRA/AAPM/ASA recommendations"
        in seed
    )
    text = Page(site.get("/statements/contra-pregnancy", timeout=10).text).text
    assert "Grade B" in text and "Certainty low" in text and "a relative contraindication" in text
    assert "V2 : from secondary summaries of the recommendations" in text
    assert "Noted beside the tags in the reference: 1." in text
    text = Page(site.get("/statements/chronic-dose-minimum", timeout=10).text).text
    assert "minimum total 80 mg" in text and "minimum duration 2 h" in text


def test_every_statement_linked_from_an_answer_exists(site: InProcessClient) -> None:
    data = {**APPENDECTOMY_40MG, "pregnant": "yes", "conditions": ["sleep-apnea"]}
    page = Page(_post(site, data).text)
    links = {
        a["href"] for tag, a in page.elements if tag == "a" and a.get("href", "").startswith("/statements/")
    }
    assert len(links) >= 8
    for link in links:
        assert site.get(link, timeout=10).status_code == 200


def test_an_unknown_statement_is_a_404_page(site: InProcessClient) -> None:
    response = site.get("/statements/no-such-statement", timeout=10)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "no-such-statement" in response.text
    escaped = site.get("/statements/%3Cb%3Ex", timeout=10)
    assert escaped.status_code == 404
    assert "<b>x" not in escaped.text and "&lt;b&gt;x" in escaped.text
