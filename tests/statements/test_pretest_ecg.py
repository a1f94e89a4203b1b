"""pretest-ecg: a baseline ECG when the record shows a cardiovascular condition (C, low); never the
verdict."""

import pytest

from builders import condition, ids, messages, run
from ketamine_cds import Verdict

S = "pretest-ecg"


@pytest.mark.parametrize(
    ("concept", "verdict"),
    [("cardiovascular-disease", Verdict.CONSIDER), ("cardiovascular-severe", Verdict.CONTRAINDICATED)],
)
def test_a_cardiovascular_condition_before_a_chronic_infusion(concept: str, verdict: Verdict) -> None:
    a = run(use="crps", procedure=None, conditions=(condition(concept, "Essential hypertension"),))
    assert messages(a, S) == ["applies"] and a.verdict is verdict
    assert "pretest-none-routine" not in ids(a)


def test_not_for_acute_uses_or_without_the_condition() -> None:
    assert S not in ids(run(conditions=(condition("cardiovascular-disease"),)))
    assert S not in ids(run(use="crps", procedure=None))
