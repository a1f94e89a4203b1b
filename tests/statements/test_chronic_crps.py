"""chronic-crps: moderate evidence (grade B) of relief up to 12 weeks -> consider."""

from fractions import Fraction

from builders import ids, iv, messages, run
from ketamine_cds import Setting, Verdict

S = "chronic-crps"


def test_crps_infusion_is_consider_with_grade_b_moderate() -> None:
    a = run(use="crps", procedure=None, order=iv(22, "mg/h"))
    assert a.verdict is Verdict.CONSIDER
    statement = next(f for f in a.findings if f.statement.id == S).statement
    assert (statement.grade, statement.certainty) == ("B", "moderate")


def test_a_routine_crps_infusion_in_an_infusion_clinic_is_not_held_to_the_acute_limit() -> None:
    # the defect that started revision 2: 1.5 mg/kg/h for CRPS got a critical acute-limit card
    a = run(use="crps", procedure=None, order=iv("1.5", "mg/kg/h"), setting=Setting.NON_INTENSIVE_CARE)
    assert a.verdict is Verdict.CONSIDER
    assert not {"dose-infusion-limit", "dose-bolus-limit", "dose-ceiling"} & ids(a)
    assert messages(a, "chronic-dose-range") == ["within"]
    assert a.dose_limits.max_infusion_mg_per_h == Fraction(160)  # 2 mg/kg/h for 80 kg


def test_crps_carries_the_2019_review_but_not_the_no_long_term_statement() -> None:
    a = run(use="crps", procedure=None)
    assert {"chronic-crps", "evidence-2019-review"} <= ids(a)
    assert "chronic-no-long-term" not in ids(a)


def test_trial_regimen_035_mg_per_kg_per_h_is_below_the_usual_range_but_still_consider() -> None:
    a = run(use="crps", procedure=None, order=iv("0.35", "mg/kg/h"))
    assert a.verdict is Verdict.CONSIDER
    assert messages(a, "chronic-dose-range") == ["below-range"]


def test_other_chronic_conditions_do_not_fire() -> None:
    assert S not in ids(run(use="fibromyalgia", procedure=None))
