"""chronic-dose-range: for chronic uses, IV bolus up to 0.35 mg/kg; infusion 0.5-2 mg/kg/h outside intensive
care (and where the setting is unknown), up to 7 mg/kg/h in intensive care; under 0.5 is information."""

from fractions import Fraction

import pytest

from builders import ids, iv, messages, rate_forms, run
from ketamine_cds import DoseStatus, Setting, Verdict
from ketamine_cds._render import assessment_json, finding_summary

S = "chronic-dose-range"
CHRONIC = ["crps", "spinal-cord-injury-pain", "fibromyalgia", "migraine", "chronic-pain", "cancer-pain"]


@pytest.mark.parametrize(("dose", "unit", "side"), rate_forms("2"))
@pytest.mark.parametrize("setting", [Setting.NON_INTENSIVE_CARE, Setting.UNKNOWN])
def test_two_mg_per_kg_per_h_outside_intensive_care_in_every_unit(
    dose: str, unit: str, side: int, setting: Setting
) -> None:
    a = run(
        use="crps",
        procedure=None,
        setting=setting,
        order=iv(dose, unit, concentration_mg_per_ml=Fraction(10)),
    )
    assert a.dose_check is not None and a.dose_check.statement == S
    over = (
        DoseStatus.EXCEEDS
        if setting is Setting.NON_INTENSIVE_CARE
        else DoseStatus.EXCEEDS_UNLESS_INTENSIVE_CARE
    )
    assert a.dose_check.status is (over if side > 0 else DoseStatus.WITHIN)
    assert (a.verdict is Verdict.DOSE_EXCEEDS_LIMIT) is (side > 0)


@pytest.mark.parametrize(("dose", "unit", "side"), rate_forms("7"))
@pytest.mark.parametrize("setting", [Setting.INTENSIVE_CARE, Setting.UNKNOWN, Setting.NON_INTENSIVE_CARE])
def test_seven_mg_per_kg_per_h_in_every_unit_and_setting(
    dose: str, unit: str, side: int, setting: Setting
) -> None:
    a = run(
        use="crps",
        procedure=None,
        setting=setting,
        order=iv(dose, unit, concentration_mg_per_ml=Fraction(10)),
    )
    assert a.dose_check is not None
    if setting is Setting.INTENSIVE_CARE:
        expected = DoseStatus.EXCEEDS if side > 0 else DoseStatus.WITHIN
    elif setting is Setting.UNKNOWN:  # over 2 unless in ICU; over 7 in any setting
        expected = DoseStatus.EXCEEDS if side > 0 else DoseStatus.EXCEEDS_UNLESS_INTENSIVE_CARE
    else:
        expected = DoseStatus.EXCEEDS
    assert a.dose_check.status is expected


@pytest.mark.parametrize(("dose", "unit", "side"), rate_forms("0.5"))
def test_below_half_a_mg_per_kg_per_h_is_below_the_range_as_information(
    dose: str, unit: str, side: int
) -> None:
    a = run(use="crps", procedure=None, order=iv(dose, unit, concentration_mg_per_ml=Fraction(10)))
    assert a.dose_check is not None
    assert a.dose_check.status is (DoseStatus.BELOW_RANGE if side < 0 else DoseStatus.WITHIN)
    finding = next(f for f in a.findings if f.statement.id == S)
    assert finding.severity == "info" and a.verdict is Verdict.CONSIDER


@pytest.mark.parametrize(
    ("dose", "unit", "status"),
    [
        ("0.35", "mg/kg", DoseStatus.WITHIN),
        ("0.351", "mg/kg", DoseStatus.EXCEEDS),
        ("28", "mg", DoseStatus.WITHIN),  # 80 kg: exactly 0.35 mg/kg
        ("28.01", "mg", DoseStatus.EXCEEDS),
        ("2.8", "mL", DoseStatus.WITHIN),  # 10 mg/mL
        ("2.81", "mL", DoseStatus.EXCEEDS),
    ],
)
@pytest.mark.parametrize("setting", list(Setting))
def test_a_chronic_bolus_up_to_035_mg_per_kg_in_every_setting(
    dose: str, unit: str, status: DoseStatus, setting: Setting
) -> None:
    a = run(
        use="crps",
        procedure=None,
        setting=setting,
        order=iv(dose, unit, concentration_mg_per_ml=Fraction(10)),
    )
    assert a.dose_check is not None and (a.dose_check.statement, a.dose_check.status) == (S, status)
    assert "dose-bolus-limit" not in ids(a)


@pytest.mark.parametrize("use", CHRONIC)
def test_every_chronic_use_gets_the_chronic_range_and_no_acute_limit(use: str) -> None:
    a = run(use=use, procedure=None, order=iv("1.5", "mg/kg/h"))
    assert messages(a, S) == ["within"]
    assert not {"dose-infusion-limit", "dose-bolus-limit", "dose-ceiling"} & ids(a)


def test_over_the_range_is_critical_overridable_and_says_by_what() -> None:
    a = run(use="crps", procedure=None, order=iv(200, "mg/h"))
    finding = next(f for f in a.findings if f.statement.id == S)
    assert finding.severity == "critical" and finding.statement.overridable
    assert (
        finding_summary(finding)
        == "Infusion 200 mg/h (2.5 mg/kg/h) is over the chronic pain range (up to 2 mg/kg/h): max 160 mg/h"
    )


def test_eligibility_question_gives_the_range_for_the_weight_and_setting() -> None:
    a = run(use="crps", procedure=None)
    assert messages(a, S) == ["limits"]
    limits = assessment_json(a)["dose_limits"]
    assert (limits["guideline"], limits["max_bolus_mg"], limits["max_infusion_mg_per_h"]) == (
        "chronic",
        28,
        160,
    )
    assert limits["infusion_minimum_mg_per_kg_per_h"] == 0.5
    icu = assessment_json(run(use="crps", procedure=None, setting=Setting.INTENSIVE_CARE))["dose_limits"]
    assert icu["max_infusion_mg_per_h"] == 560 and icu["infusion_limit_applies"] is False
    summary = finding_summary(next(f for f in a.findings if f.statement.id == S))
    assert (
        summary == "Chronic pain IV range: bolus up to 28 mg; infusion 0.5-2 mg/kg/h (40-160 mg/h for 80 kg)"
    )


def test_without_a_weight_an_absolute_dose_cannot_be_checked() -> None:
    a = run(use="crps", procedure=None, weight_kg=None, order=iv(100, "mg/h"))
    assert messages(a, S) == ["no-weight"] and a.verdict is Verdict.NEEDS_INFORMATION
