"""chronic-weak-evidence: weak or no evidence for immediate relief; the panel recommends against (grade D)."""

import pytest

from builders import ids, iv, run
from ketamine_cds import Verdict

S = "chronic-weak-evidence"
WEAK = [
    "neuropathic-pain",
    "fibromyalgia",
    "cancer-pain",
    "ischemic-pain",
    "migraine",
    "low-back-pain",
    "phantom-limb-pain",
    "postherpetic-neuralgia",
]


@pytest.mark.parametrize("use", WEAK)
def test_weak_evidence_conditions_are_not_indicated_grade_d(use: str) -> None:
    a = run(use=use, procedure=None)
    assert a.verdict is Verdict.NOT_INDICATED
    assert {S, "chronic-no-long-term", "evidence-2019-review"} <= ids(a)
    statement = next(f for f in a.findings if f.statement.id == S).statement
    assert (statement.grade, statement.certainty) == ("D", "low")


def test_a_dose_over_the_range_is_still_reported_first() -> None:
    assert run(use="migraine", procedure=None, order=iv(3, "mg/kg/h")).verdict is Verdict.DOSE_EXCEEDS_LIMIT


def test_spinal_cord_injury_pain_is_graded_on_its_own_not_recommended_against() -> None:
    assert S not in ids(run(use="spinal-cord-injury-pain", procedure=None))


def test_crps_does_not_fire() -> None:
    assert S not in ids(run(use="crps", procedure=None))
