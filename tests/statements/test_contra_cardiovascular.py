"""contra-cardiovascular: severe or poorly controlled disease contraindicates; control unknown -> verify."""

import pytest

from builders import condition, ids, messages, run
from ketamine_cds import Coded, ConditionFact, Presence, Verdict, load_knowledge

S = "contra-cardiovascular"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"


def coded(system: str, code: str, display: str) -> tuple[ConditionFact, ...]:
    """A recorded condition, classified by the knowledge base's value sets as every adapter classifies it."""
    concepts = load_knowledge().value_sets.concepts(system, code)
    return tuple(ConditionFact(c, Coded(display, system, code)) for c in concepts)


def test_severe_or_uncontrolled_disease_contraindicates() -> None:
    a = run(conditions=(condition("cardiovascular-severe", "Hypertensive crisis"),))
    assert a.verdict is Verdict.CONTRAINDICATED
    assert messages(a, S) == ["present"]


@pytest.mark.parametrize(
    ("system", "code", "display"),
    [(ICD10CM, "I20.0", "Unstable angina"), (SNOMED, "4557003", "Preinfarction syndrome")],
)
def test_unstable_angina_contraindicates(system: str, code: str, display: str) -> None:
    # the statement's own example, poorly controlled by definition (as a hypertensive crisis, I16, is)
    a = run(conditions=coded(system, code, display))
    assert a.verdict is Verdict.CONTRAINDICATED
    assert messages(a, S) == ["present"]
    assert next(s.status for s in a.screening if s.statement == S) is Presence.PRESENT


@pytest.mark.parametrize(
    ("system", "code", "display"),
    [(ICD10CM, "I20.9", "Angina pectoris, unspecified"), (SNOMED, "194828000", "Angina")],
)
def test_angina_not_recorded_as_unstable_is_not_this_contraindication(
    system: str, code: str, display: str
) -> None:
    assert coded(system, code, display) == ()  # in neither value set: not severe, and not a control to verify
    a = run(conditions=coded(system, code, display))
    assert a.verdict is Verdict.CONSIDER
    assert S not in ids(a)


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
