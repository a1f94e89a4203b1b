"""The reference's verdict order, each rung against the next, and the engine's purity."""

import dataclasses
from fractions import Fraction

from builders import COLONOSCOPY, condition, facts, iv, opioid, oral, run
from ketamine_cds import Route, Verdict, assess, ketamine_order


def test_out_of_scope_beats_contraindication() -> None:
    assert run(use="anesthesia", conditions=(condition("psychosis"),)).verdict is Verdict.OUT_OF_SCOPE


def test_contraindication_beats_dose_over_limit() -> None:
    assert run(conditions=(condition("pregnancy"),), order=iv(1, "mg/kg")).verdict is Verdict.CONTRAINDICATED


def test_dose_over_limit_beats_not_indicated() -> None:
    assert run(procedure=COLONOSCOPY, order=iv(1, "mg/kg")).verdict is Verdict.DOSE_EXCEEDS_LIMIT


def test_not_indicated_beats_insufficient_evidence() -> None:
    order = iv("0.1", "mg/kg", pca_sole_agent=True)
    assert run(procedure=COLONOSCOPY, order=order).verdict is Verdict.NOT_INDICATED


def test_not_indicated_beats_needs_information() -> None:
    assert run(use="fibromyalgia", procedure=None, weight_kg=None, order=iv(20, "mg")).verdict is (
        Verdict.NOT_INDICATED
    )


def test_insufficient_evidence_beats_needs_information() -> None:
    order = iv(20, "mg", pca_sole_agent=True)
    assert run(weight_kg=None, order=order).verdict is Verdict.INSUFFICIENT_EVIDENCE


def test_needs_information_beats_consider() -> None:
    assert run(weight_kg=None, order=iv(20, "mg")).verdict is Verdict.NEEDS_INFORMATION


def test_consider_beats_may_consider() -> None:
    assert run(opioids=(opioid("morphine", 90),)).verdict is Verdict.CONSIDER


def test_missing_indication_needs_information_but_dose_is_still_checked() -> None:
    a = run(use=None, procedure=None, order=iv(40, "mg"))
    assert a.verdict is Verdict.DOSE_EXCEEDS_LIMIT
    assert run(use=None, procedure=None, order=iv(20, "mg")).verdict is Verdict.NEEDS_INFORMATION


def test_every_finding_cites_a_statement_and_the_decisive_one_is_among_them() -> None:
    a = run(conditions=(condition("psychosis"),), order=iv(40, "mg"))
    assert a.decisive is not None and a.decisive.statement.id == "contra-psychosis"
    assert all(f.statement.id for f in a.findings)


def test_the_engine_is_pure() -> None:
    f = facts(order=iv(20, "mg"), opioids=(opioid("oxycodone", 30),), weight_kg=Fraction("71.4"))
    assert assess(f) == assess(dataclasses.replace(f))


def test_out_of_scope_gives_no_dose_limits_in_mg() -> None:
    a = run(use="procedural-sedation", order=iv("1.5", "mg/kg"))
    assert a.dose_limits.max_bolus_mg is None and a.dose_check is None


def test_follow_up_order_has_no_iv_dose_findings() -> None:
    a = run(use="crps", procedure=None, order=oral(), prior_iv_ketamine=True)
    assert not {"dose-bolus-limit", "dose-infusion-limit"} & set(a.statement_ids)


def test_a_dose_that_could_not_be_read_needs_information_and_keeps_the_limits() -> None:
    unread = "dosage instruction 1 of the ketamine order has no coded dose or rate"
    a = run(order=ketamine_order(route=Route.INTRAVENOUS, dose=None, dose_unreadable=unread))
    assert a.verdict is Verdict.NEEDS_INFORMATION
    assert [(m.datum, m.reason, m.decisive) for m in a.missing] == [("dose", unread, True)]
    assert a.dose_checks == () and a.dose_limits.max_bolus_mg == 28


def test_a_contraindication_still_beats_an_unreadable_dose() -> None:
    order = ketamine_order(route=Route.INTRAVENOUS, dose=None, dose_unreadable="text only")
    a = run(order=order, conditions=(condition("psychosis"),))
    assert a.verdict is Verdict.CONTRAINDICATED
