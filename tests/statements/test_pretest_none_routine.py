"""pretest-none-routine: no pre-infusion testing for healthy individuals (C, low); chronic IV infusions
only."""

from builders import condition, ids, iv, messages, run
from ketamine_cds import Verdict

S = "pretest-none-routine"


def test_a_chronic_infusion_with_nothing_in_the_record() -> None:
    a = run(use="crps", procedure=None, order=iv(22, "mg/h"))
    assert messages(a, S) == ["applies"] and a.verdict is Verdict.CONSIDER


def test_conditions_not_reviewed_says_so() -> None:
    assert messages(run(use="crps", procedure=None, conditions=None), S) == ["conditions-not-reviewed"]


def test_not_when_the_record_calls_for_a_test() -> None:
    assert S not in ids(run(use="crps", procedure=None, conditions=(condition("cardiovascular-disease"),)))


def test_only_for_chronic_infusions() -> None:
    assert S not in ids(run())
    assert S not in ids(run(use="crps", procedure=None, order=iv(20, "mg")))
    assert S in ids(run(use="fibromyalgia", procedure=None))  # an eligibility question
