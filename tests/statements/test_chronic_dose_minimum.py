"""chronic-dose-minimum: a first chronic pain infusion should total at least 80 mg over more than 2 hours
(information only: it never changes the verdict)."""

from fractions import Fraction

import pytest

from builders import ids, iv, messages, qty, run
from ketamine_cds import Verdict
from ketamine_cds._render import finding_summary

S = "chronic-dose-minimum"


@pytest.mark.parametrize(
    ("rate", "unit", "hours", "key"),
    [
        ("40", "mg/h", "2.01", "meets"),  # 80.4 mg over just over 2 h
        ("40", "mg/h", "2", "below"),  # 80 mg but not over MORE than 2 hours
        ("26.6", "mg/h", "3", "below"),  # 79.8 mg
        ("0.5", "mg/kg/h", "2.5", "meets"),  # 80 kg: 40 mg/h, 100 mg
        ("4", "mL/h", "3", "meets"),  # 10 mg/mL: 40 mg/h, 120 mg
    ],
)
def test_total_and_duration_against_80_mg_over_more_than_2_h(
    rate: str, unit: str, hours: str, key: str
) -> None:
    order = iv(rate, unit, concentration_mg_per_ml=Fraction(10), duration_h=Fraction(hours))
    a = run(use="crps", procedure=None, order=order)
    assert messages(a, S) == [key]
    assert a.verdict is Verdict.CONSIDER  # never the verdict
    assert next(f for f in a.findings if f.statement.id == S).severity == "info"


def test_a_total_beside_the_rate_gives_the_duration() -> None:
    # 500 mg at 40 mg/h runs 12.5 h
    a = run(use="crps", procedure=None, order=iv(40, "mg/h", total=qty(500, "mg")))
    finding = next(f for f in a.findings if f.statement.id == S)
    assert finding.message_key == "meets" and "500 mg over 12.5 h" in finding_summary(finding)


def test_exactly_80_mg_over_two_and_a_half_hours_meets_it() -> None:
    a = run(use="crps", procedure=None, order=iv(32, "mg/h", total=qty(80, "mg")))
    assert messages(a, S) == ["meets"]


def test_without_duration_or_total_the_finding_states_the_minimum() -> None:
    a = run(use="crps", procedure=None, order=iv(22, "mg/h"))
    assert messages(a, S) == ["duration-unknown"]
    assert "80 mg" in finding_summary(next(f for f in a.findings if f.statement.id == S))


def test_a_per_kg_rate_without_weight_cannot_give_the_amount() -> None:
    a = run(use="crps", procedure=None, weight_kg=None, order=iv("0.5", "mg/kg/h", duration_h=Fraction(4)))
    assert messages(a, S) == ["amount-unknown"]


def test_an_eligibility_question_is_told_the_minimum() -> None:
    assert messages(run(use="crps", procedure=None), S) == ["minimum"]


def test_not_for_a_bolus_an_acute_use_or_oral_follow_up() -> None:
    assert S not in ids(run(use="crps", procedure=None, order=iv(20, "mg")))
    assert S not in ids(run(order=iv(20, "mg/h")))
    from builders import oral

    assert S not in ids(run(use="crps", procedure=None, order=oral()))
