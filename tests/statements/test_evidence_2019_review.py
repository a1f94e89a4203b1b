"""evidence-2019-review: context for chronic IV use; never decides the verdict by itself."""

from builders import ids, oral, run

S = "evidence-2019-review"


def test_chronic_iv_uses_carry_the_review_as_information() -> None:
    for use in ("crps", "fibromyalgia", "chronic-pain"):
        a = run(use=use, procedure=None)
        finding = next(f for f in a.findings if f.statement.id == S)
        assert finding.severity == "info" and finding.statement.role == "context"


def test_acute_and_follow_up_uses_do_not_carry_it() -> None:
    assert S not in ids(run())
    assert S not in ids(run(use="crps", procedure=None, order=oral(), prior_iv_ketamine=True))
