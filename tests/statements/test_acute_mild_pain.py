"""acute-mild-pain: procedures with only mild pain gain nothing from ketamine."""

from builders import COLONOSCOPY, condition, ids, opioid, run
from ketamine_cds import Verdict
from ketamine_cds._render import finding_summary

S = "acute-mild-pain"


def test_mild_procedure_is_not_indicated() -> None:
    a = run(procedure=COLONOSCOPY)
    assert a.verdict is Verdict.NOT_INDICATED
    assert S in ids(a)
    assert next(f for f in a.findings if f.statement.id == S).severity == "warning"


def test_support_from_opioid_tolerance_overrides_not_indicated() -> None:
    a = run(procedure=COLONOSCOPY, opioids=(opioid("oxycodone", 30),))
    assert S in ids(a)
    assert a.verdict is Verdict.MAY_CONSIDER


def test_support_from_sleep_apnea_overrides_not_indicated() -> None:
    a = run(procedure=COLONOSCOPY, conditions=(condition("sleep-apnea"),))
    assert a.verdict is Verdict.MAY_CONSIDER


def test_severe_procedure_does_not_fire() -> None:
    assert S not in ids(run())


def test_contraindication_outranks_not_indicated() -> None:
    assert run(procedure=COLONOSCOPY, conditions=(condition("psychosis"),)).verdict is Verdict.CONTRAINDICATED


def test_the_mild_pain_finding_does_not_say_not_indicated_when_other_support_wins() -> None:
    a = run(procedure=COLONOSCOPY, conditions=(condition("sleep-apnea"),))
    assert a.verdict is Verdict.MAY_CONSIDER
    finding = next(f for f in a.findings if f.statement.id == S)
    assert "Not indicated" not in finding_summary(finding)
