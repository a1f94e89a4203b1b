"""followup-intranasal: moderate-certainty support for breakthrough pain after IV infusions."""

from builders import ids, messages, nasal, run
from ketamine_cds import Verdict

S = "followup-intranasal"


def test_intranasal_after_iv_course_is_consider() -> None:
    a = run(use="crps", procedure=None, order=nasal(), prior_iv_ketamine=True)
    assert a.verdict is Verdict.CONSIDER
    assert next(f for f in a.findings if f.statement.id == S).statement.certainty == "moderate"


def test_without_prior_course_is_not_supported() -> None:
    a = run(use="fibromyalgia", procedure=None, order=nasal(), prior_iv_ketamine=False)
    assert messages(a, S) == ["no-prior-course"]
    assert a.verdict is Verdict.INSUFFICIENT_EVIDENCE


def test_esketamine_for_depression_is_out_of_scope() -> None:
    a = run(use="depression", procedure=None, order=nasal())
    assert a.verdict is Verdict.OUT_OF_SCOPE and S not in ids(a)


def test_iv_orders_do_not_fire() -> None:
    assert S not in ids(run(use="crps", procedure=None))
