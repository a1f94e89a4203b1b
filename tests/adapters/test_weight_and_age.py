"""Every dose worked out from a weight names the weight and its date; an old or undated weight is a warning;
a child is told the reference has no statement for children (revision 2)."""

from __future__ import annotations

import datetime as dt
import json
from fractions import Fraction

import pytest
from fhir_bundles import ketamine, patient, procedure, quantity, read, weight

from builders import TODAY, iv, run
from ketamine_cds import Verdict, WeightBasis, assess, assessment_json, facts_from_document, parse_json
from ketamine_cds._render import finding_texts, text_report


def keys(assessment: object, statement: str) -> list[str]:
    return [f.message_key for f in assessment.findings if f.statement.id == statement]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("days", "warned"), [(30, False), (31, True), (2_500, True)])
def test_a_weight_older_than_30_days_gives_a_warning(days: int, warned: bool) -> None:
    measured = TODAY - dt.timedelta(days=days)
    a = run(order=iv(20, "mg"), weight_basis=WeightBasis.MEASURED, weight_measured=measured)
    assert ("weight-old" in keys(a, "dose-bolus-limit")) is warned
    assert a.verdict is Verdict.CONSIDER  # a warning, not a verdict
    if warned:
        finding = next(f for f in a.findings if f.message_key == "weight-old")
        assert finding.severity == "warning"
        assert f"measured {measured.isoformat()}" in finding_texts(finding)[1]


def test_every_dose_worked_out_from_a_weight_says_which_weight_and_when() -> None:
    a = run(order=iv(20, "mg"), weight_basis=WeightBasis.MEASURED, weight_measured=dt.date(2026, 11, 20))
    detail = finding_texts(next(f for f in a.findings if f.statement.id == "dose-bolus-limit"))[1]
    assert "for a weight of 80 kg (measured 2026-11-20)" in detail
    limits = assessment_json(a)["dose_limits"]
    assert (limits["weight_basis"], limits["weight_measured"]) == ("measured", "2026-11-20")


def test_a_weight_given_in_the_question_says_so_and_is_not_warned_about() -> None:
    a = run(order=iv(20, "mg"))
    detail = finding_texts(next(f for f in a.findings if f.statement.id == "dose-bolus-limit"))[1]
    assert "80 kg (as given)" in detail and "weight-old" not in keys(a, "dose-bolus-limit")


def test_a_recorded_weight_without_a_date_is_a_warning() -> None:
    a = run(order=iv(20, "mg"), weight_basis=WeightBasis.UNDATED)
    assert "weight-undated" in keys(a, "dose-bolus-limit")


def test_fhir_weight_date_comes_from_the_observation() -> None:
    facts = read(
        patient(), weight(80, when="2019-03-01T08:00:00Z"), ketamine(dose=quantity(20, "mg", code="mg"))
    )
    assert (facts.weight_basis, facts.weight_measured) == (WeightBasis.MEASURED, dt.date(2019, 3, 1))
    a = assess(facts)
    assert "weight-old" in keys(a, "dose-bolus-limit")
    assert read(patient(), weight(80, when=None)).weight_basis is WeightBasis.UNDATED


def test_case_document_weight_date() -> None:
    case = {
        "as_of": "2026-11-24",
        "indication": "perioperative",
        "procedure": {"class": "abdominal"},
        "patient": {"weight": {"value": 80, "unit": "kg", "date": "2026-09-01"}, "conditions": []},
        "order": {"route": "intravenous", "dose": {"value": 20, "unit": "mg"}},
    }
    a = assess(facts_from_document(parse_json(json.dumps(case)), today=TODAY))
    assert "weight-old" in keys(a, "dose-bolus-limit")


@pytest.mark.parametrize(("age", "noted"), [(17, True), (0, True), (18, False), (None, False)])
def test_a_patient_under_18_is_told_the_reference_has_no_statement_for_children(
    age: int | None, noted: bool
) -> None:
    a = run(order=iv(20, "mg"), age_years=age)
    notes = assessment_json(a)["notes"]
    assert bool(notes) is noted
    if noted:
        assert (
            notes[0]["note"] == "no-pediatric-statement" and "no statement for children" in notes[0]["text"]
        )
        assert "no statement for children" in text_report(a)
    assert a.verdict is Verdict.CONSIDER  # otherwise assessed as usual


def test_a_fhir_birth_date_makes_the_age() -> None:
    facts = read(
        patient(birth_date="2012-02-01"),
        weight(40),
        ketamine(dose=quantity(10, "mg", code="mg")),
        procedure("80146002", "Appendectomy"),
    )
    assert facts.age_years == 14
    assert [n.key for n in assess(facts).notes] == ["no-pediatric-statement"]


def test_the_weight_in_kg_is_never_rounded_into_the_limit() -> None:
    a = run(order=iv("15.05", "mg"), weight_kg=Fraction(43))
    assert a.verdict is Verdict.CONSIDER
