"""The reference's verdict order, each rung against the next, and the engine's purity."""

import dataclasses
from fractions import Fraction

from builders import COLONOSCOPY, condition, facts, iv, opioid, oral, run
from ketamine_cds import (
    Assessment,
    DoseCheck,
    DoseStatus,
    KnowledgeBase,
    Route,
    Verdict,
    assess,
    ketamine_order,
    load_knowledge,
)
from ketamine_cds._site import site_from_toml


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


def _bolus_limit_changed(kb: KnowledgeBase, limit: str) -> KnowledgeBase:
    statement = kb.statements["dose-bolus-limit"]
    changed = dataclasses.replace(statement, thresholds={**statement.thresholds, "limit_mg_per_kg": limit})
    return dataclasses.replace(kb, statements={**kb.statements, "dose-bolus-limit": changed})


def test_what_the_engine_keeps_from_a_knowledge_base_is_that_knowledge_bases_own() -> None:
    """The engine works out thresholds and dose policies once per knowledge base: another one, even made from
    it by ``replace`` after it was used, gets its own numbers, and the first keeps its own."""
    kb = load_knowledge()
    f = facts(order=iv("0.4", "mg/kg"), weight_kg=Fraction(80))
    assert _checked(assess(f, kb)).status is DoseStatus.EXCEEDS  # 0.35 mg/kg, worked out and kept
    looser = _bolus_limit_changed(kb, "0.5")
    assert looser.threshold("dose-bolus-limit", "limit_mg_per_kg") == Fraction("0.5")
    check = _checked(assess(f, looser))
    assert check.status is DoseStatus.WITHIN and check.per_kg_limit == Fraction("0.5")
    assert _checked(assess(f, kb)).per_kg_limit == Fraction("0.35")


def test_a_site_read_again_with_other_caps_gets_its_own_limits() -> None:
    """Dose policies are kept per site object: a site file edited and read again is never answered with the
    policy of the one read before (even should the new one take the old one's place in memory)."""
    kb = load_knowledge()
    f = facts(order=iv(25, "mg"), weight_kg=Fraction(80))  # 0.3125 mg/kg
    exceeds, within = DoseStatus.EXCEEDS, DoseStatus.WITHIN
    for cap, status in (("0.3", exceeds), ("0.35", within), ("0.3", exceeds), ("0.35", within)):
        site = site_from_toml(
            {"site": {"name": "H", "version": cap}, "dose": {"dose-bolus-limit": {"max_mg_per_kg": cap}}},
            kb,
            digest="sha256:" + cap,
        )
        assert _checked(assess(f, kb, site)).status is status, cap
        del site


def _checked(assessment: Assessment) -> DoseCheck:
    assert assessment.dose_check is not None
    return assessment.dose_check
