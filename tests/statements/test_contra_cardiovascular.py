"""contra-cardiovascular: severe or poorly controlled disease contraindicates; control unknown -> verify."""

from builders import condition, ids, messages, run
from ketamine_cds import Presence, Verdict

S = "contra-cardiovascular"


def test_severe_or_uncontrolled_disease_contraindicates() -> None:
    a = run(conditions=(condition("cardiovascular-severe", "Hypertensive crisis"),))
    assert a.verdict is Verdict.CONTRAINDICATED
    assert messages(a, S) == ["present"]


def test_disease_with_unknown_control_is_a_warning_to_verify_not_a_contraindication() -> None:
    a = run(conditions=(condition("cardiovascular-disease", "Heart failure"),))
    assert a.verdict is Verdict.CONSIDER
    assert messages(a, S) == ["verify"]
    assert next(f for f in a.findings if f.statement.id == S).severity == "warning"
    assert next(s.status for s in a.screening if s.statement == S) is Presence.UNKNOWN


def test_severe_wins_over_verify_when_both_are_recorded() -> None:
    a = run(conditions=(condition("cardiovascular-disease"), condition("cardiovascular-severe")))
    assert messages(a, S) == ["present"]


def test_no_cardiovascular_record_does_not_fire() -> None:
    assert S not in ids(run())
