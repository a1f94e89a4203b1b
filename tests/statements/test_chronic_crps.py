"""chronic-crps: moderate-certainty evidence of relief up to 12 weeks -> consider."""

from builders import ids, iv, run
from ketamine_cds import Verdict

S = "chronic-crps"


def test_crps_infusion_is_consider_with_moderate_certainty_and_no_invented_grade() -> None:
    a = run(use="crps", procedure=None, order=iv(22, "mg/h"))
    assert a.verdict is Verdict.CONSIDER
    finding = next(f for f in a.findings if f.statement.id == S)
    assert finding.statement.certainty == "moderate"
    assert finding.statement.grade is None  # the reference states no grade


def test_crps_carries_the_2019_review_but_not_the_no_long_term_statement() -> None:
    a = run(use="crps", procedure=None)
    assert {"chronic-crps", "evidence-2019-review"} <= ids(a)
    assert "chronic-no-long-term" not in ids(a)


def test_trial_regimen_035_mg_per_kg_per_h_is_within_the_infusion_limit() -> None:
    assert run(use="crps", procedure=None, order=iv("0.35", "mg/kg/h")).verdict is Verdict.CONSIDER


def test_other_chronic_conditions_do_not_fire() -> None:
    assert S not in ids(run(use="fibromyalgia", procedure=None))
