"""contra-intracranial-pressure: the record shows Cerebral edema -> contraindicated."""

from builders import condition, ids, iv, nasal, run
from ketamine_cds import Presence, Verdict

S = "contra-intracranial-pressure"


def test_present_condition_contraindicates_and_is_critical() -> None:
    a = run(conditions=(condition("intracranial-pressure", "Cerebral edema"),))
    assert a.verdict is Verdict.CONTRAINDICATED
    finding = next(f for f in a.findings if f.statement.id == S)
    assert finding.severity == "critical"
    assert "Cerebral edema" in finding.params["condition"][0].display  # type: ignore[index]


def test_contraindication_outranks_a_dose_over_the_limit_and_follow_up_routes() -> None:
    assert (
        run(conditions=(condition("intracranial-pressure"),), order=iv(60, "mg")).verdict
        is Verdict.CONTRAINDICATED
    )
    assert (
        run(conditions=(condition("intracranial-pressure"),), use="crps", order=nasal()).verdict
        is Verdict.CONTRAINDICATED
    )


def test_absent_from_record_is_reported_as_not_found_not_ruled_out() -> None:
    a = run(conditions=())
    assert S not in ids(a)
    status = next(s.status for s in a.screening if s.statement == S)
    assert status is Presence.NOT_RECORDED


def test_unreadable_record_is_unknown_and_needs_information() -> None:
    a = run(conditions=None)
    assert next(s.status for s in a.screening if s.statement == S) is Presence.UNKNOWN
    assert a.verdict is Verdict.NEEDS_INFORMATION


def test_out_of_scope_use_still_shows_the_contraindication() -> None:
    a = run(use="procedural-sedation", conditions=(condition("intracranial-pressure"),))
    assert a.verdict is Verdict.OUT_OF_SCOPE
    assert S in ids(a)


def test_grade_c_for_the_low_dose_option_is_reported() -> None:
    a = run(conditions=(condition("intracranial-pressure"),))
    assert next(f for f in a.findings if f.statement.id == S).statement.grade == "C"
