"""pretest-liver: liver function tests with liver dysfunction or a risk of liver toxicity (grade not
stated)."""

import pytest

from builders import condition, ids, messages, run
from ketamine_cds import Verdict

S = "pretest-liver"


@pytest.mark.parametrize(
    ("concept", "verdict"),
    [
        ("alcohol-misuse", Verdict.CONSIDER),
        ("chronic-hepatitis", Verdict.CONSIDER),
        ("liver-disease-moderate", Verdict.CONSIDER),
        ("liver-disease-severe", Verdict.CONTRAINDICATED),
    ],
)
def test_liver_dysfunction_or_risk_before_a_chronic_infusion(concept: str, verdict: Verdict) -> None:
    a = run(use="crps", procedure=None, conditions=(condition(concept),))
    assert messages(a, S) == ["applies"] and a.verdict is verdict
    statement = next(f for f in a.findings if f.statement.id == S).statement
    assert (statement.grade, statement.certainty) == (None, None)


def test_not_for_acute_uses_or_without_the_condition() -> None:
    assert S not in ids(run(conditions=(condition("chronic-hepatitis"),)))
    assert S not in ids(run(use="crps", procedure=None))
