"""caution-hepatic-moderate: a caution adds a warning finding and never changes the verdict."""

from builders import COLONOSCOPY, condition, ids, run
from ketamine_cds import Verdict

S = "caution-hepatic-moderate"


def test_caution_adds_a_warning_and_keeps_the_verdict() -> None:
    without = run()
    with_caution = run(conditions=(condition("liver-disease-moderate"),))
    assert with_caution.verdict is without.verdict is Verdict.CONSIDER
    finding = next(f for f in with_caution.findings if f.statement.id == S)
    assert finding.severity == "warning"


def test_caution_keeps_a_negative_verdict_too() -> None:
    assert (
        run(procedure=COLONOSCOPY, conditions=(condition("liver-disease-moderate"),)).verdict
        is Verdict.NOT_INDICATED
    )


def test_absent_does_not_fire() -> None:
    assert S not in ids(run())
