"""dose-infusion-limit: 1 mg/kg/h outside intensive care and where the setting is unknown (acute and unknown
uses); in intensive care the dose ceiling decides instead; the limit is within."""

from fractions import Fraction

import pytest

from builders import ids, iv, messages, qty, rate_forms, run
from ketamine_cds import DoseStatus, Route, Setting, Verdict
from ketamine_cds._facts import checked_dose
from ketamine_cds._render import finding_summary, finding_texts

S = "dose-infusion-limit"


@pytest.mark.parametrize(
    ("dose", "unit", "status"),
    [
        ("80", "mg/h", DoseStatus.WITHIN),  # 80 kg: exactly 1 mg/kg/h
        ("80.01", "mg/h", DoseStatus.EXCEEDS),
        ("79.99", "mg/h", DoseStatus.WITHIN),
        ("1", "mg/kg/h", DoseStatus.WITHIN),
        ("1.01", "mg/kg/h", DoseStatus.EXCEEDS),
        ("1000", "mcg/kg/h", DoseStatus.WITHIN),
        ("16.67", "mcg/kg/min", DoseStatus.EXCEEDS),  # 1.0002 mg/kg/h
        ("16.66", "mcg/kg/min", DoseStatus.WITHIN),
        ("1.333", "mg/min", DoseStatus.WITHIN),  # 79.98 mg/h
        ("1920", "mg/d", DoseStatus.WITHIN),  # 80 mg/h exactly
        ("1921", "mg/d", DoseStatus.EXCEEDS),
        ("8", "mL/h", DoseStatus.WITHIN),  # 10 mg/mL -> 80 mg/h
        ("8.1", "mL/h", DoseStatus.EXCEEDS),
    ],
)
def test_infusion_above_at_and_below_outside_icu(dose: str, unit: str, status: DoseStatus) -> None:
    a = run(order=iv(dose, unit, concentration_mg_per_ml=Fraction(10)))
    assert a.dose_check is not None and a.dose_check.status is status
    assert (a.verdict is Verdict.DOSE_EXCEEDS_LIMIT) is (status is DoseStatus.EXCEEDS)


@pytest.mark.parametrize(("dose", "unit", "side"), rate_forms("1"))
@pytest.mark.parametrize("use", ["perioperative", "acute-pain", "sickle-cell-pain", None])
def test_the_one_mg_per_kg_per_h_boundary_in_every_unit_for_acute_and_unknown_uses(
    dose: str, unit: str, side: int, use: str | None
) -> None:
    a = run(use=use, order=iv(dose, unit, concentration_mg_per_ml=Fraction(10)))
    assert a.dose_check is not None and a.dose_check.statement == S
    assert a.dose_check.status is (DoseStatus.EXCEEDS if side > 0 else DoseStatus.WITHIN)
    assert (a.verdict is Verdict.DOSE_EXCEEDS_LIMIT) is (side > 0)


def test_a_chronic_use_is_not_held_to_the_acute_limit() -> None:
    assert S not in ids(run(use="crps", procedure=None, order=iv("1.5", "mg/kg/h")))


def test_intensive_care_lifts_the_infusion_limit_and_the_ceiling_decides() -> None:
    a = run(order=iv(2, "mg/kg/h"), setting=Setting.INTENSIVE_CARE)
    assert a.verdict is Verdict.CONSIDER
    assert messages(a, S) == ["icu"]
    assert a.dose_check is not None and a.dose_check.statement == "dose-ceiling"
    assert a.dose_limits.max_infusion_mg_per_h == 560  # 7 mg/kg/h for 80 kg
    assert a.dose_limits.infusion_limit_applies is False


def test_unknown_setting_applies_the_outside_icu_limit_unless_in_intensive_care() -> None:
    # the cautious side: an unknown setting is never read as intensive care
    a = run(order=iv(2, "mg/kg/h"), setting=Setting.UNKNOWN)
    assert a.verdict is Verdict.DOSE_EXCEEDS_LIMIT
    assert messages(a, S) == ["exceeds-setting-unknown"]
    finding = next(f for f in a.findings if f.statement.id == S)
    assert finding.severity == "critical" and "unless in intensive care" in finding_summary(finding)
    assert a.dose_check is not None and a.dose_check.status is DoseStatus.EXCEEDS_UNLESS_INTENSIVE_CARE
    assert [(m.datum, m.decisive) for m in a.missing] == [("setting", False)]
    assert a.dose_limits.max_infusion_mg_per_h == 80 and a.dose_limits.infusion_limit_applies is None


def test_unknown_setting_does_not_matter_within_the_limit() -> None:
    assert run(order=iv("0.5", "mg/kg/h"), setting=Setting.UNKNOWN).verdict is Verdict.CONSIDER


def test_over_limit_is_critical_and_overridable() -> None:
    a = run(order=iv(120, "mg/h"))
    finding = next(f for f in a.findings if f.statement.id == S)
    assert finding.severity == "critical" and finding.statement.overridable


def test_absolute_rate_without_weight_needs_information() -> None:
    a = run(order=iv(50, "mg/h"), weight_kg=None)
    assert a.verdict is Verdict.NEEDS_INFORMATION
    assert messages(a, S) == ["no-weight"]


@pytest.mark.parametrize(
    ("rate", "setting", "status"),
    [
        ("500", Setting.NON_INTENSIVE_CARE, DoseStatus.NO_WEIGHT),  # 1 mg/kg/h at 500 kg
        ("500.1", Setting.NON_INTENSIVE_CARE, DoseStatus.EXCEEDS),
        ("500.1", Setting.UNKNOWN, DoseStatus.EXCEEDS),  # not known to be within the ICU limit either
        ("3500", Setting.INTENSIVE_CARE, DoseStatus.NO_WEIGHT),  # in intensive care, 7 mg/kg/h at 500 kg
        ("3500.1", Setting.INTENSIVE_CARE, DoseStatus.EXCEEDS),
    ],
)
def test_without_a_weight_a_rate_over_the_limit_at_any_weight_exceeds_it(
    rate: str, setting: Setting, status: DoseStatus
) -> None:
    a = run(order=iv(rate, "mg/h"), weight_kg=None, setting=setting)
    assert a.dose_check is not None and a.dose_check.status is status
    over = status is DoseStatus.EXCEEDS
    assert a.verdict is (Verdict.DOSE_EXCEEDS_LIMIT if over else Verdict.NEEDS_INFORMATION)
    assert messages(a, a.dose_check.statement) == (["exceeds-any-weight"] if over else ["no-weight"])


def test_eligibility_question_reports_max_rate_for_weight() -> None:
    a = run(weight_kg=Fraction("72.5"))
    assert a.dose_limits.max_infusion_mg_per_h == Fraction("72.5") and messages(a, S) == ["limits"]
    icu = run(weight_kg=Fraction("72.5"), setting=Setting.INTENSIVE_CARE)
    assert messages(icu, S) == ["limits-icu"] and messages(icu, "dose-ceiling") == ["limits"]
    assert icu.dose_limits.max_infusion_mg_per_h == Fraction("507.5")
    unknown = run(weight_kg=Fraction("72.5"), setting=Setting.UNKNOWN)
    assert messages(unknown, S) == ["limits-setting-unknown"]


def test_an_unknown_use_says_the_acute_limits_apply() -> None:
    a = run(use=None, order=iv(20, "mg/h"))
    finding = next(f for f in a.findings if f.statement.id == S)
    assert "intended use is not stated" in finding_texts(finding)[1]


def test_bolus_order_does_not_cite_the_infusion_statement() -> None:
    assert S not in ids(run(order=iv(20, "mg")))


@pytest.mark.parametrize(
    ("rate", "status"),
    [("1.01", DoseStatus.EXCEEDS), ("1", DoseStatus.WITHIN), ("0.99", DoseStatus.WITHIN)],
)
def test_an_infusion_after_a_loading_bolus_is_checked(rate: str, status: DoseStatus) -> None:
    follow = (checked_dose(Route.INTRAVENOUS, qty(rate, "mg/kg/h"), None, "order"),)
    a = run(order=iv("0.3", "mg/kg", then=follow))
    assert messages(a, "dose-bolus-limit") == ["within"] and messages(a, S) == [status.value]
    assert (a.verdict is Verdict.DOSE_EXCEEDS_LIMIT) is (status is DoseStatus.EXCEEDS)
    assert a.dose_check is not None
    assert a.dose_check.statement == (S if status is DoseStatus.EXCEEDS else "dose-bolus-limit")


def test_an_absolute_bolus_and_rate_without_weight_need_the_weight_once() -> None:
    follow = (checked_dose(Route.INTRAVENOUS, qty(40, "mg/h"), None, "order"),)
    a = run(order=iv(20, "mg", then=follow), weight_kg=None)
    assert [c.status for c in a.dose_checks] == [DoseStatus.NO_WEIGHT, DoseStatus.NO_WEIGHT]
    assert [(m.datum, m.statement) for m in a.missing] == [
        ("weight", "dose-bolus-limit"),
        ("weight", S),
    ]
    assert a.verdict is Verdict.NEEDS_INFORMATION


def test_a_rate_over_the_limit_never_reads_as_the_limit() -> None:
    # 8.03 mL/h of 10 mg/mL for 80 kg: 1.00375 mg/kg/h, not "1 mg/kg/h ... over the 1 mg/kg/h limit"
    a = run(order=iv("8.03", "mL/h", concentration_mg_per_ml=Fraction(10)))
    finding = next(f for f in a.findings if f.statement.id == S)
    assert finding_summary(finding) == (
        "Infusion 8.03 mL/h (1.004 mg/kg/h) is over the 1 mg/kg/h limit outside ICU: max 80 mg/h = 8 mL/h"
    )


@pytest.mark.parametrize(
    ("dose", "unit", "said"),
    [
        (
            "16.67",
            "mcg/kg/min",
            "the limit is 16.666666… mcg/kg/min, so 16.67 mcg/kg/min is over it by 0.02%",
        ),
        ("16.7", "mcg/kg/min", "so 16.7 mcg/kg/min is over it by 0.2%"),
        ("16.68", "mcg/kg/min", None),  # not the limit rounded: a rate above it
        ("80.01", "mg/h", None),  # the limit, 80 mg/h, is written exactly: 80.01 is not a rounding of it
    ],
)
def test_an_order_that_writes_the_limit_rounded_is_over_it_and_the_finding_says_so(
    dose: str, unit: str, said: str | None
) -> None:
    a = run(order=iv(dose, unit))
    assert a.verdict is Verdict.DOSE_EXCEEDS_LIMIT  # exact arithmetic: a rounding up is over the limit
    detail = finding_texts(next(f for f in a.findings if f.statement.id == S))[1]
    if said is None:
        assert "writes the limit rounded" not in detail
    else:
        assert "The order writes the limit rounded" in detail and said in detail
