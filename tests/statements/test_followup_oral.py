"""followup-oral: low-certainty support after infusions, with the abuse-potential caution."""

from builders import condition, ids, messages, oral, run
from ketamine_cds import Verdict

S = "followup-oral"


def test_oral_after_iv_course_may_consider_with_abuse_warning() -> None:
    a = run(use="crps", procedure=None, order=oral(), prior_iv_ketamine=True)
    assert a.verdict is Verdict.MAY_CONSIDER
    assert messages(a, S) == ["applies", "abuse"]
    assert {f.severity for f in a.findings if f.statement.id == S} == {"info", "warning"}
    assert "chronic-crps" not in ids(a)  # the IV infusion evidence is not this order's


def test_no_prior_course_in_record_is_not_supported() -> None:
    a = run(use="crps", procedure=None, order=oral(), prior_iv_ketamine=False)
    assert messages(a, S) == ["no-prior-course", "abuse"]
    assert a.verdict is Verdict.INSUFFICIENT_EVIDENCE


def test_unknown_prior_course_needs_information() -> None:
    a = run(use="crps", procedure=None, order=oral(), prior_iv_ketamine=None)
    assert a.verdict is Verdict.NEEDS_INFORMATION


def test_abuse_caution_does_not_change_a_contraindication() -> None:
    a = run(
        use="crps", procedure=None, order=oral(), prior_iv_ketamine=True, conditions=(condition("pregnancy"),)
    )
    assert a.verdict is Verdict.CONTRAINDICATED


def test_depression_is_out_of_scope_even_by_mouth() -> None:
    a = run(use="depression", procedure=None, order=oral(), prior_iv_ketamine=True)
    assert a.verdict is Verdict.OUT_OF_SCOPE
    assert S not in ids(a)
