"""dose-bolus-limit: an IV bolus should not exceed 0.35 mg/kg, in every setting; the limit is within."""

from fractions import Fraction

import pytest

from builders import ids, iv, messages, qty, run
from ketamine_cds import Assessment, DoseStatus, OrderDose, Route, Setting, Verdict
from ketamine_cds._facts import checked_dose
from ketamine_cds._render import finding_texts
from ketamine_cds._units import format_number

S = "dose-bolus-limit"


@pytest.mark.parametrize(
    ("dose", "unit", "weight", "status"),
    [
        ("15.05", "mg", 43, DoseStatus.WITHIN),  # exactly 0.35 mg/kg: a float would say 0.35000000000000003
        ("15.06", "mg", 43, DoseStatus.EXCEEDS),
        ("15.04", "mg", 43, DoseStatus.WITHIN),
        ("0.35", "mg/kg", 80, DoseStatus.WITHIN),
        ("0.351", "mg/kg", 80, DoseStatus.EXCEEDS),
        ("350", "mcg/kg", 80, DoseStatus.WITHIN),
        ("28000", "ug", 80, DoseStatus.WITHIN),
        ("28001", "mcg", 80, DoseStatus.EXCEEDS),
        ("0.028", "g", 80, DoseStatus.WITHIN),
    ],
)
def test_bolus_above_at_and_below_the_limit(dose: str, unit: str, weight: int, status: DoseStatus) -> None:
    a = run(order=iv(dose, unit), weight_kg=Fraction(weight))
    assert a.dose_check is not None and a.dose_check.status is status
    expected = Verdict.DOSE_EXCEEDS_LIMIT if status is DoseStatus.EXCEEDS else Verdict.CONSIDER
    assert a.verdict is expected


def test_over_limit_is_critical_and_names_the_maximum() -> None:
    a = run(order=iv(40, "mg"))
    finding = next(f for f in a.findings if f.statement.id == S)
    assert finding.severity == "critical"
    assert a.dose_check is not None and a.dose_check.limit_amount == 28


def test_bolus_limit_applies_in_intensive_care_too() -> None:
    a = run(order=iv(40, "mg"), setting=Setting.INTENSIVE_CARE)
    assert a.verdict is Verdict.DOSE_EXCEEDS_LIMIT


def test_per_kg_bolus_is_checked_without_a_weight() -> None:
    assert run(order=iv("0.5", "mg/kg"), weight_kg=None).verdict is Verdict.DOSE_EXCEEDS_LIMIT
    assert run(order=iv("0.3", "mg/kg"), weight_kg=None).verdict is Verdict.CONSIDER


def test_absolute_bolus_without_weight_needs_information_never_a_guess() -> None:
    a = run(order=iv(20, "mg"), weight_kg=None)
    assert a.verdict is Verdict.NEEDS_INFORMATION
    assert messages(a, S) == ["no-weight"]
    assert a.dose_check is not None and a.dose_check.status is DoseStatus.NO_WEIGHT


@pytest.mark.parametrize(
    ("mg", "status", "verdict"),
    [
        ("175", DoseStatus.NO_WEIGHT, Verdict.NEEDS_INFORMATION),  # 0.35 mg/kg at 500 kg: within for some
        ("175.01", DoseStatus.EXCEEDS, Verdict.DOSE_EXCEEDS_LIMIT),  # over it at any weight accepted
        ("4000", DoseStatus.EXCEEDS, Verdict.DOSE_EXCEEDS_LIMIT),
    ],
)
def test_without_a_weight_a_bolus_over_the_limit_at_any_weight_exceeds_it(
    mg: str, status: DoseStatus, verdict: Verdict
) -> None:
    """A dose in mg that no weight up to the heaviest accepted (500 kg) brings within 0.35 mg/kg is over the
    limit, whatever the missing weight: it interrupts, and the weight is still asked for."""
    a = run(order=iv(mg, "mg"), weight_kg=None)
    assert a.dose_check is not None and a.dose_check.status is status
    assert a.verdict is verdict
    assert [m.datum for m in a.missing] == ["weight"]
    if status is DoseStatus.EXCEEDS:
        assert messages(a, S) == ["exceeds-any-weight"]
        summary, detail = finding_texts(next(f for f in a.findings if f.statement.id == S))
        assert summary == f"{format_number(Fraction(mg))} mg is over the 0.35 mg/kg limit at any body weight"
        assert "500 kg" in detail and "comes to 175 mg" in detail


def test_volume_bolus_uses_the_concentration() -> None:
    within = run(order=iv("0.56", "mL", concentration_mg_per_ml=Fraction(50)))  # 28 mg for 80 kg
    over = run(order=iv("0.6", "mL", concentration_mg_per_ml=Fraction(50)))
    unknown = run(order=iv("0.5", "mL"))
    assert within.verdict is Verdict.CONSIDER
    assert over.verdict is Verdict.DOSE_EXCEEDS_LIMIT
    assert unknown.verdict is Verdict.NEEDS_INFORMATION and messages(unknown, S) == ["no-concentration"]


def test_eligibility_question_reports_max_bolus_for_weight() -> None:
    a = run(weight_kg=Fraction(80))
    assert a.dose_limits.max_bolus_mg == 28
    assert messages(a, S) == ["limits"]


def test_infusion_order_does_not_cite_the_bolus_statement() -> None:
    assert S not in ids(run(order=iv("0.5", "mg/kg/h")))


def then(value: str | int, unit: str) -> tuple[OrderDose, ...]:
    """A further dose of the same IV order (a maintenance infusion after the loading bolus)."""
    return (checked_dose(Route.INTRAVENOUS, qty(value, unit), None, "order"),)


@pytest.mark.parametrize(
    ("bolus", "status"),
    [("0.36", DoseStatus.EXCEEDS), ("0.35", DoseStatus.WITHIN), ("0.34", DoseStatus.WITHIN)],
)
def test_a_loading_bolus_is_checked_when_an_infusion_follows(bolus: str, status: DoseStatus) -> None:
    a = run(order=iv(bolus, "mg/kg", then=then("0.5", "mg/kg/h")))
    assert [c.status for c in a.dose_checks] == [status, DoseStatus.WITHIN]
    assert messages(a, S) == [status.value] and messages(a, "dose-infusion-limit") == ["within"]
    assert (a.verdict is Verdict.DOSE_EXCEEDS_LIMIT) is (status is DoseStatus.EXCEEDS)


def test_two_boluses_over_the_limit_are_two_findings() -> None:
    a = run(order=iv(40, "mg", then=then(30, "mg")))  # 80 kg: max 28 mg
    assert messages(a, S) == ["exceeds", "exceeds"]
    assert [c.index for c in a.dose_checks] == [0, 1]
    assert [m.datum for m in a.missing] == []


def _texts(a: Assessment) -> tuple[str, str]:
    return finding_texts(next(f for f in a.findings if f.statement.id == S))


@pytest.mark.parametrize(
    ("dose", "unit", "summary"),
    [
        ("0.005", "g", "Bolus 0.005 g (0.06 mg/kg) is within the 0.35 mg/kg limit"),  # was "0 g"
        ("0.352", "mg/kg", "Bolus 0.352 mg/kg (28.16 mg) is over the 0.35 mg/kg limit: max 28 mg"),
        ("40", "mg", "Bolus 40 mg (0.5 mg/kg) is over the 0.35 mg/kg limit: max 28 mg"),
        ("40.000", "mg", "Bolus 40 mg (0.5 mg/kg) is over the 0.35 mg/kg limit: max 28 mg"),
    ],
)
def test_the_order_is_restated_exactly_as_ordered(dose: str, unit: str, summary: str) -> None:
    assert _texts(run(order=iv(dose, unit)))[0] == summary


def test_a_converted_dose_over_the_limit_never_reads_as_the_limit() -> None:
    # 28.19 mg for 80 kg is 0.352375 mg/kg: two decimals would say "0.35 mg/kg is over the 0.35 mg/kg limit"
    summary, detail = _texts(run(order=iv("28.19", "mg")))
    assert summary == "Bolus 28.19 mg (0.352 mg/kg) is over the 0.35 mg/kg limit: max 28 mg"
    assert "**0.352 mg/kg**" in detail


def test_the_maximum_for_the_weight_is_rounded_down_and_never_reads_under_a_dose_within_it() -> None:
    # 69.85 kg x 0.35 = 24.4475 mg: shown as 24.44 (24.45 mg would be over), with more decimals only where
    # 24.44 would put an ordered dose that is within the limit above the maximum shown
    over = run(order=iv("24.45", "mg"), weight_kg=Fraction("69.85"))
    assert _texts(over)[0] == "Bolus 24.45 mg (0.35004 mg/kg) is over the 0.35 mg/kg limit: max 24.44 mg"
    within = run(order=iv("24.447", "mg"), weight_kg=Fraction("69.85"))
    summary, detail = _texts(within)
    assert summary == "Bolus 24.447 mg (0.34999 mg/kg) is within the 0.35 mg/kg limit"
    assert "at most 24.447 mg for this weight" in detail
    at_limit = _texts(run(order=iv("24.4475", "mg"), weight_kg=Fraction("69.85")))[1]
    assert "at most 24.4475 mg for this weight" in at_limit
    limits = _texts(run(weight_kg=Fraction("69.85")))[0]
    assert limits == "Maximum IV bolus: 24.44 mg (0.35 mg/kg for 69.85 kg)"
