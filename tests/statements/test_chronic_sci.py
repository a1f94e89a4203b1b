"""chronic-sci: spinal cord injury pain, weak evidence of short-term improvement (C, low) -> may-consider."""

from builders import ids, iv, messages, run
from ketamine_cds import Verdict

S = "chronic-sci"


def test_spinal_cord_injury_pain_may_consider_with_grade_c_low() -> None:
    a = run(use="spinal-cord-injury-pain", procedure=None, order=iv("0.42", "mg/kg/h"))
    assert a.verdict is Verdict.MAY_CONSIDER
    assert messages(a, S) == ["applies"]
    statement = next(f for f in a.findings if f.statement.id == S).statement
    assert (statement.grade, statement.certainty) == ("C", "low")
    assert "chronic-dose-range" in ids(a) and "dose-infusion-limit" not in ids(a)


def test_only_for_spinal_cord_injury_pain() -> None:
    assert S not in ids(run(use="crps", procedure=None))
    assert S not in ids(run(use="neuropathic-pain", procedure=None))
    assert S not in ids(run())


def test_a_contraindication_still_wins() -> None:
    from builders import condition

    a = run(use="spinal-cord-injury-pain", procedure=None, conditions=(condition("psychosis"),))
    assert a.verdict is Verdict.CONTRAINDICATED and S in ids(a)
