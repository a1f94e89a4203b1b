"""acute-sickle-cell: sickle cell pain in opioid-tolerant or -dependent patients (grade C, low)."""

from builders import condition, ids, opioid, run
from ketamine_cds import Verdict

S = "acute-sickle-cell"


def test_tolerant_patient_with_sickle_cell_pain_may_consider() -> None:
    a = run(use="sickle-cell-pain", procedure=None, opioids=(opioid("hydromorphone", 8),))
    assert S in ids(a)
    assert a.verdict is Verdict.MAY_CONSIDER
    assert next(f for f in a.findings if f.statement.id == S).statement.grade == "C"


def test_crisis_recorded_as_condition_with_acute_pain_use() -> None:
    a = run(
        use="acute-pain",
        procedure=None,
        conditions=(condition("sickle-cell-crisis"),),
        opioids=(opioid("morphine", 90),),
    )
    assert S in ids(a)


def test_not_tolerant_is_not_supported() -> None:
    a = run(use="sickle-cell-pain", procedure=None, opioids=(opioid("hydromorphone", "7.5"),))
    assert S not in ids(a)
    assert a.verdict is Verdict.INSUFFICIENT_EVIDENCE


def test_unknown_opioid_history_needs_information() -> None:
    a = run(use="sickle-cell-pain", procedure=None, opioids=None)
    assert S not in ids(a)
    assert a.verdict is Verdict.NEEDS_INFORMATION


def test_sickle_cell_condition_does_not_fire_for_surgery() -> None:
    a = run(conditions=(condition("sickle-cell-crisis"),), opioids=(opioid("morphine", 90),))
    assert S not in ids(a)
