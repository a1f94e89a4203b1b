"""Body weight: the latest final LOINC 29463-7 Observation, any mass unit, never guessed."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from fhir_bundles import FIXTURES, TODAY, ketamine, load, patient, procedure, quantity, read, weight
from hypothesis import given
from hypothesis import strategies as st

from ketamine_cds import ImpossibleValueError, UnitError, assess, assessment_json
from ketamine_cds.adapters.fhir import facts_from_bundle


def test_the_latest_weight_wins_whatever_the_order_of_entries() -> None:
    older = weight(92, when="2025-01-10", id="old")
    newer = weight(78, when="2026-11-20T08:00:00Z", id="new")
    assert read(patient(), newer, older).weight_kg == 78
    assert read(patient(), older, newer).weight_kg == 78


def test_time_zones_are_respected_when_ordering() -> None:
    # 23:00 at UTC-05:00 is 04:00 UTC the next day: later than 02:00 UTC that day
    late_evening = weight(70, when="2026-11-20T23:00:00-05:00", id="a")
    early_morning = weight(71, when="2026-11-21T02:00:00Z", id="b")
    assert read(late_evening, early_morning).weight_kg == 70


def test_a_weight_taken_after_the_assessment_date_is_not_used() -> None:
    facts = read(weight(80, when="2026-11-01", id="a"), weight(60, when="2026-12-01", id="b"))
    assert facts.weight_kg == 80


def test_preliminary_and_cancelled_weights_are_not_used() -> None:
    final = weight(80, when="2026-10-01", id="a")
    preliminary = weight(95, when="2026-11-20", id="b", status="preliminary")
    cancelled = weight(99, when="2026-11-21", id="c", status="entered-in-error")
    assert read(final, preliminary, cancelled).weight_kg == 80


def test_amended_and_corrected_weights_count() -> None:
    assert read(weight(81, status="amended")).weight_kg == 81
    assert read(weight(82, status="corrected")).weight_kg == 82


def test_effective_period_start_and_issued_date_a_weight() -> None:
    by_period = weight(90, when=None, id="a")
    by_period["effectivePeriod"] = {"start": "2026-11-22T10:00:00Z"}
    by_issue = weight(70, when=None, id="b")
    by_issue["issued"] = "2026-11-01T10:00:00Z"
    assert read(by_issue, by_period).weight_kg == 90


def test_an_undated_weight_is_used_only_when_nothing_is_dated() -> None:
    assert read(weight(72, when=None)).weight_kg == 72
    assert read(weight(72, when=None, id="a"), weight(80, when="2020-01-01", id="b")).weight_kg == 80


def test_no_weight_is_unknown_never_guessed() -> None:
    assert read(patient()).weight_kg is None
    height = weight(180, "cm", code="cm")
    height["code"] = {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]}
    assert read(patient(), height).weight_kg is None


def test_a_weight_recorded_as_absent_is_skipped() -> None:
    absent = weight(1, id="absent", when="2026-11-23")
    del absent["valueQuantity"]
    absent["dataAbsentReason"] = {"coding": [{"code": "unknown"}]}
    assert read(absent, weight(64, when="2026-11-01")).weight_kg == 64


@pytest.mark.parametrize(
    ("value", "unit", "code", "kg"),
    [
        (154, "lb", "[lb_av]", Fraction("69.85322498")),  # 154 x 0.45359237
        (154, "lbs", None, Fraction("69.85322498")),
        (70500, "g", "g", Fraction("70.5")),
        ("80.4", "kg", "kg", Fraction("80.4")),
        (81.2, "kilogram", "kg", Fraction("81.2")),  # the UCUM code wins over the human unit
    ],
)
def test_any_mass_unit_is_converted_exactly(value: object, unit: str, code: str | None, kg: Fraction) -> None:
    assert read(weight(value, unit, code=code)).weight_kg == kg


def test_the_lb_fixture_is_converted() -> None:
    facts = facts_from_bundle(load(FIXTURES / "icu-infusion-ml-per-h.json"), as_of=TODAY)
    assert facts.weight_kg == Fraction(154) * Fraction("0.45359237")


@pytest.mark.parametrize("value", [-70, 0, 0.0, 501, 70000, 0.19])
def test_impossible_weights_are_errors_naming_the_observation(value: object) -> None:
    with pytest.raises(ImpossibleValueError) as caught:
        read(patient(), weight(value, id="w9"))
    assert caught.value.field == "Observation/w9.valueQuantity.value"


@pytest.mark.parametrize(("value", "unit"), [(70, "g"), (199, "g"), (70, "mg"), (70000, "mg"), (70, "ug")])
def test_a_weight_too_small_for_a_patient_in_any_mass_unit_is_impossible(value: int, unit: str) -> None:
    # 70 g or 70 mg is a wrong unit, not a 0.07 kg patient: the same error as a weight over 500 kg
    with pytest.raises(ImpossibleValueError) as caught:
        read(patient(), weight(value, unit, code=unit, id="w9"))
    assert caught.value.field == "Observation/w9.valueQuantity.value"
    assert "under 0.2 kg" in caught.value.message


def test_the_smallest_plausible_weight_is_assessed() -> None:
    assert read(weight(200, "g", code="g")).weight_kg == Fraction(1, 5)
    assert read(weight(70_000_000, "mg", code="mg")).weight_kg == 70  # any mass unit, read exactly


@pytest.mark.parametrize("value", [Decimal("NaN"), float("nan"), Decimal("Infinity")])
def test_a_weight_that_is_not_a_finite_number_is_an_error(value: object) -> None:
    with pytest.raises(ImpossibleValueError) as caught:
        read(weight(value, id="w9"))
    assert caught.value.field == "Observation/w9.valueQuantity.value"


@pytest.mark.parametrize(
    ("unit", "code"), [("stone", None), ("kilo", "kilo"), ("cm", "cm"), ("mg/kg", "mg/kg")]
)
def test_an_unknown_or_wrong_unit_is_an_error_naming_the_observation(unit: str, code: str | None) -> None:
    with pytest.raises(UnitError) as caught:
        read(weight(80, unit, code=code, id="w9"))
    assert caught.value.field == "Observation/w9.valueQuantity.unit"


def test_a_weight_without_unit_is_an_error() -> None:
    unitless = weight(80, id="w9")
    unitless["valueQuantity"] = {"value": 80}
    with pytest.raises(UnitError) as caught:
        read(unitless)
    assert caught.value.field == "Observation/w9.valueQuantity.unit"


def test_only_the_weight_used_is_checked() -> None:
    """An old mistyped weight does not block an assessment that uses a newer, plausible one."""
    old = weight(-80, when="2019-01-01", id="old")
    assert read(old, weight(80, when="2026-11-01", id="new")).weight_kg == 80


@given(st.decimals(min_value=Decimal("0.5"), max_value=Decimal("499.99"), places=2))
def test_the_same_weight_in_kg_g_and_lb_reads_the_same(kg: Decimal) -> None:
    in_g = read(weight(kg * 1000, "g", code="g")).weight_kg
    in_lb = read(weight(kg / Decimal("0.45359237"), "lb", code="[lb_av]")).weight_kg
    assert read(weight(kg)).weight_kg == in_g == Fraction(kg)
    assert in_lb is not None and abs(in_lb - Fraction(kg)) < Fraction(1, 10**20)


def test_the_as_of_date_chooses_among_dated_weights() -> None:
    weights = (weight(60, when="2024-05-01", id="a"), weight(70, when="2025-05-01", id="b"))
    assert read(*weights, as_of=dt.date(2024, 12, 31)).weight_kg == 60
    assert read(*weights, as_of=dt.date(2025, 5, 1)).weight_kg == 70


def test_a_weight_quantity_without_value_is_skipped() -> None:
    empty = weight(1, id="empty", when="2026-11-23")
    empty["valueQuantity"] = {"unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}
    assert read(empty, weight(64, when="2026-11-01")).weight_kg == 64


# --- odd weights that would change a dose answer without a word (issue 20) ------------------------------


def _answer(*resources: dict[str, object]) -> dict[str, Any]:
    """The assessment JSON of a planned appendectomy with a 20 mg IV bolus and these resources."""
    order = ketamine(dose=quantity(20, "mg", code="mg"))
    surgery = procedure("80146002", "Appendectomy")
    return assessment_json(assess(read(patient(), surgery, order, *resources)))


SAME_TIME = "2026-11-20T08:00:00Z"


def test_two_weights_at_the_same_time_that_disagree_are_not_used_and_both_are_named() -> None:
    light, heavy = weight(7, when=SAME_TIME, id="light"), weight(70, when=SAME_TIME, id="heavy")
    assert _answer(weight(70, when="2026-11-01", id="older"))["verdict"] == "consider"
    answers = [_answer(light, heavy), _answer(heavy, light)]
    assert answers[0] == answers[1]  # whatever the order of the entries
    answer = answers[0]
    assert answer["verdict"] == "needs-information"
    assert answer["dose_limits"]["weight_kg"] is None and answer["dose_limits"]["max_bolus_mg"] is None
    assert answer["dose_check"]["status"] == "cannot-check-no-weight"
    [missing] = [m for m in answer["missing_information"] if m["datum"] == "weight" and m["decisive"]]
    assert "7 kg" in missing["reason"] and "70 kg" in missing["reason"] and "disagree" in missing["reason"]
    [said] = [f for f in answer["findings"] if "Body weight not used" in f["summary"]]
    assert said["statement"] == "dose-bolus-limit" and said["severity"] == "warning"
    assert "7 kg" in said["summary"] and "70 kg" in said["summary"]
    assert "Observation/light" in said["detail"] and "Observation/heavy" in said["detail"]
    cannot = next(f for f in answer["findings"] if f["summary"].startswith("Cannot check bolus"))
    assert "no usable body weight" in cannot["summary"]


def test_two_weights_at_the_same_time_that_agree_as_written_are_one_weight() -> None:
    # the same weighing in kg and in pounds, each rounded as written (154.3 lb is 69.99 kg): not a conflict
    kg, lb = (
        weight(70, when=SAME_TIME, id="kg"),
        weight(Decimal("154.3"), "lb", code="[lb_av]", when=SAME_TIME, id="lb"),
    )
    for entries in ((kg, lb), (lb, kg)):  # the lower of the two, whatever the order of the entries
        assert read(*entries).weight_kg == Fraction("154.3") * Fraction("0.45359237")
    assert (
        read(weight(70, when=SAME_TIME, id="a"), weight(Decimal("70.0"), when=SAME_TIME, id="b")).weight_kg
        == 70
    )


def test_a_weight_given_as_a_bound_is_not_a_weight_to_dose_from() -> None:
    bound = weight(30, when=SAME_TIME, id="bound")
    bound["valueQuantity"]["comparator"] = "<"
    answer = _answer(bound, weight(70, when="2026-11-01", id="older"))
    assert answer["verdict"] == "needs-information"
    assert answer["dose_limits"]["weight_kg"] is None  # not 30 kg, nor the older 70 kg
    [said] = [f for f in answer["findings"] if "Body weight not used" in f["summary"]]
    assert "< 30 kg" in said["summary"] and "Observation/bound" in said["detail"]
    assert any("< 30 kg" in m["reason"] for m in answer["missing_information"] if m["datum"] == "weight")


@pytest.mark.parametrize(("unit", "code"), [("lb", "kg"), ("kg", "[lb_av]"), ("g", "kg")])
def test_a_weight_whose_unit_and_code_disagree_is_unreadable_naming_both(unit: str, code: str) -> None:
    # today the UCUM code wins without a word: 154 "lb" coded kg would be a 154 kg patient
    with pytest.raises(UnitError) as caught:
        read(weight(154, unit, code=code, id="w9"))
    assert caught.value.field == "Observation/w9.valueQuantity.unit"
    assert repr(unit) in caught.value.message and repr(code) in caught.value.message
