"""acute-sleep-apnea: ketamine may be considered as an opioid-limiting adjunct (grade C, low)."""

from builders import condition, ids, run
from ketamine_cds import Verdict

S = "acute-sleep-apnea"


def test_sleep_apnea_in_acute_pain_may_consider() -> None:
    a = run(
        use="acute-pain", procedure=None, conditions=(condition("sleep-apnea", "Obstructive sleep apnea"),)
    )
    assert S in ids(a)
    assert a.verdict is Verdict.MAY_CONSIDER


def test_stronger_support_wins_over_sleep_apnea() -> None:
    a = run(conditions=(condition("sleep-apnea"),))
    assert S in ids(a)
    assert a.verdict is Verdict.CONSIDER


def test_no_sleep_apnea_does_not_fire() -> None:
    assert S not in ids(run(use="acute-pain", procedure=None))


def test_chronic_use_does_not_fire() -> None:
    assert S not in ids(run(use="crps", conditions=(condition("sleep-apnea"),)))
