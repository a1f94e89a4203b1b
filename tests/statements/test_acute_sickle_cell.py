"""acute-sickle-cell: sickle cell pain in opioid-tolerant or -dependent patients (grade C, low)."""

import pytest

from builders import condition, ids, messages, opioid, run
from ketamine_cds import OpioidUse, Verdict

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


def test_just_below_the_tolerance_threshold_is_not_supported_and_says_why() -> None:
    a = run(use="sickle-cell-pain", procedure=None, opioids=(opioid("hydromorphone", "7.5"),))
    assert messages(a, S) == ["not-tolerant"]
    assert a.verdict is Verdict.INSUFFICIENT_EVIDENCE


def test_a_tolerance_dose_for_six_days_is_not_yet_tolerance() -> None:
    a = run(use="sickle-cell-pain", procedure=None, opioids=(opioid("hydromorphone", 8, days=6),))
    assert messages(a, S) == ["not-tolerant"]


@pytest.mark.parametrize(
    "opioids",
    [None, ()],
    ids=["opioid records not available", "no current opioid in the record: not the same as ruled out"],
)
def test_tolerance_neither_shown_nor_ruled_out_needs_information(
    opioids: tuple[OpioidUse, ...] | None,
) -> None:
    a = run(use="sickle-cell-pain", procedure=None, opioids=opioids)
    assert S not in ids(a)
    assert a.verdict is Verdict.NEEDS_INFORMATION
    missing = [m for m in a.missing if m.statement == S]
    assert [(m.datum, m.decisive) for m in missing] == [("opioid-use", True)]


def test_recorded_opioid_dependence_is_enough_without_prescriptions() -> None:
    a = run(use="sickle-cell-pain", procedure=None, conditions=(condition("opioid-dependence"),))
    assert messages(a, S) == ["applies"]
    assert a.verdict is Verdict.MAY_CONSIDER


def test_sickle_cell_condition_does_not_fire_for_surgery() -> None:
    a = run(conditions=(condition("sickle-cell-crisis"),), opioids=(opioid("morphine", 90),))
    assert S not in ids(a)
