"""chronic-no-long-term: apart from CRPS, no evidence for intermediate- or long-term relief."""

from builders import ids, run
from ketamine_cds import Verdict

S = "chronic-no-long-term"


def test_unspecified_chronic_pain_rests_on_absent_evidence() -> None:
    a = run(use="chronic-pain", procedure=None)
    assert S in ids(a)
    assert a.verdict is Verdict.INSUFFICIENT_EVIDENCE
    assert "indication" in {m.datum for m in a.missing}  # naming the condition could change it (CRPS)


def test_not_for_crps_and_not_for_acute_uses() -> None:
    assert S not in ids(run(use="crps", procedure=None))
    assert S not in ids(run())
