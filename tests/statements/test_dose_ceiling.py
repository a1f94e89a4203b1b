"""dose-ceiling: no rate above 7 mg/kg/h appears in either guideline; above it exceeds in any use and
setting (the finding for acute and unknown uses; chronic-dose-range says it for chronic uses)."""

from fractions import Fraction

import pytest

from builders import ids, iv, messages, rate_forms, run
from ketamine_cds import DoseStatus, Setting, Verdict
from ketamine_cds.service.cards import cards_for

S = "dose-ceiling"


@pytest.mark.parametrize(("dose", "unit", "side"), rate_forms("7"))
@pytest.mark.parametrize("use", ["perioperative", "acute-pain", None])
def test_in_intensive_care_seven_mg_per_kg_per_h_in_every_unit(
    dose: str, unit: str, side: int, use: str | None
) -> None:
    a = run(
        use=use, order=iv(dose, unit, concentration_mg_per_ml=Fraction(10)), setting=Setting.INTENSIVE_CARE
    )
    assert a.dose_check is not None and a.dose_check.statement == S
    assert a.dose_check.status is (DoseStatus.EXCEEDS if side > 0 else DoseStatus.WITHIN)
    assert messages(a, S) == ["exceeds" if side > 0 else "within"]
    assert (a.verdict is Verdict.DOSE_EXCEEDS_LIMIT) is (side > 0)


def test_the_fifty_mg_per_kg_per_h_icu_infusion_exceeds_and_interrupts() -> None:
    # 4,000 mg/h for 80 kg in intensive care passed as "consider" before revision 2
    a = run(order=iv(4000, "mg/h"), setting=Setting.INTENSIVE_CARE)
    assert a.verdict is Verdict.DOSE_EXCEEDS_LIMIT
    finding = next(f for f in a.findings if f.statement.id == S)
    assert finding.severity == "critical" and finding.statement.overridable
    order = {"resourceType": "MedicationRequest", "id": "k1", "status": "draft"}
    cards = cards_for(a, hook="order-sign", order=order, base_url="https://cds.example")
    assert [c.statement for c in cards] == [S]


@pytest.mark.parametrize("setting", [Setting.NON_INTENSIVE_CARE, Setting.UNKNOWN])
def test_outside_intensive_care_it_is_reported_beside_the_acute_limit(setting: Setting) -> None:
    a = run(order=iv("7.01", "mg/kg/h"), setting=setting)
    assert messages(a, S) == ["exceeds-beside"]
    assert messages(a, "dose-infusion-limit") == ["exceeds"]  # over 7: over the limit in any setting
    assert a.dose_check is not None and a.dose_check.status is DoseStatus.EXCEEDS
    assert a.verdict is Verdict.DOSE_EXCEEDS_LIMIT
    assert S not in ids(run(order=iv(7, "mg/kg/h"), setting=setting))


def test_for_chronic_uses_the_chronic_range_says_it() -> None:
    a = run(use="crps", procedure=None, order=iv(8, "mg/kg/h"), setting=Setting.INTENSIVE_CARE)
    assert S not in ids(a) and messages(a, "chronic-dose-range") == ["exceeds"]


def test_no_grade_is_invented_for_a_fact_about_the_sources() -> None:
    a = run(order=iv(8, "mg/kg/h"), setting=Setting.INTENSIVE_CARE)
    statement = next(f for f in a.findings if f.statement.id == S).statement
    assert (statement.grade, statement.certainty, statement.verification_note) == (None, None, "derived")


def test_a_bolus_is_not_held_to_an_infusion_ceiling() -> None:
    assert S not in ids(run(order=iv(20, "mg"), setting=Setting.INTENSIVE_CARE))
