"""acute-opioid-tolerant-surgery: FDA opioid tolerance (>= 1 week at threshold doses) or dependence."""

import dataclasses
import datetime as dt
from fractions import Fraction

import pytest

from builders import COLONOSCOPY, TODAY, condition, ids, opioid, run
from ketamine_cds import Coded, OpioidUse, Presence, Verdict, load_knowledge
from ketamine_cds._opioids import NOT_READ, TAKEN_AS_NEEDED, opioid_tolerance

S = "acute-opioid-tolerant-surgery"


@pytest.mark.parametrize(
    ("ingredient", "threshold"),
    [
        ("morphine", 60),
        ("oxycodone", 30),
        ("hydromorphone", 8),
        ("oxymorphone", 25),
        ("hydrocodone", 60),
        ("fentanyl", 25),
    ],
)
def test_fda_thresholds_above_at_and_below(ingredient: str, threshold: int) -> None:
    at = run(procedure=COLONOSCOPY, opioids=(opioid(ingredient, threshold),))
    above = run(procedure=COLONOSCOPY, opioids=(opioid(ingredient, threshold + 1),))
    below = run(procedure=COLONOSCOPY, opioids=(opioid(ingredient, f"{threshold - 0.5}"),))
    assert at.opioid.tolerant is Presence.PRESENT and S in ids(at) and at.verdict is Verdict.MAY_CONSIDER
    assert above.opioid.tolerant is Presence.PRESENT
    assert below.opioid.tolerant is Presence.ABSENT and S not in ids(below)
    assert below.verdict is Verdict.NOT_INDICATED


def test_one_week_is_needed_six_days_is_not_enough() -> None:
    assert run(opioids=(opioid("morphine", 60, days=7),)).opioid.tolerant is Presence.PRESENT
    assert run(opioids=(opioid("morphine", 60, days=6),)).opioid.tolerant is Presence.ABSENT


def test_other_opioids_by_60_mme_per_day() -> None:
    # methadone 4.7 MME/mg: 12.77 mg/day is 60.019 MME, 12.76 mg is 59.97
    assert run(opioids=(opioid("methadone", "12.77"),)).opioid.tolerant is Presence.PRESENT
    assert run(opioids=(opioid("methadone", "12.76"),)).opioid.tolerant is Presence.ABSENT
    # tramadol 300 mg/day = 60 MME exactly: at the threshold
    assert run(opioids=(opioid("tramadol", 300),)).opioid.tolerant is Presence.PRESENT


def test_combination_counts_in_mme() -> None:
    combo = (opioid("oxycodone", 20), opioid("hydrocodone", 30))  # 30 + 30 = 60 MME/day
    a = run(procedure=COLONOSCOPY, opioids=combo)
    assert a.opioid.tolerant is Presence.PRESENT
    assert a.opioid.mme_per_day == 60


@pytest.mark.parametrize(
    ("ingredient", "threshold"),
    [
        ("morphine", 60),
        ("oxycodone", 30),
        ("hydromorphone", 8),
        ("oxymorphone", 25),
        ("hydrocodone", 60),
        ("fentanyl", 25),
    ],
)
def test_uses_of_one_opioid_add_up_against_its_threshold(ingredient: str, threshold: int) -> None:
    def two(first: int | str, second: int | str) -> Presence:
        return run(opioids=(opioid(ingredient, first), opioid(ingredient, second))).opioid.tolerant

    assert two(threshold - 5, 5) is Presence.PRESENT
    assert two(threshold - 5, 6) is Presence.PRESENT
    assert two(threshold - 5, "4.5") is Presence.ABSENT


def test_two_oxycodone_prescriptions_at_below_and_above_30_mg_a_day() -> None:
    at = run(procedure=COLONOSCOPY, opioids=(opioid("oxycodone", 15), opioid("oxycodone", 15)))
    assert at.opioid.tolerant is Presence.PRESENT and S in ids(at) and at.verdict is Verdict.MAY_CONSIDER
    assert at.opioid.basis == (
        "oxycodone 15 mg/day for 30 days (22.5 MME/day); oxycodone 15 mg/day for 30 days (22.5 MME/day): "
        "oxycodone 30 mg/day together for 30 days"
    )
    below = run(procedure=COLONOSCOPY, opioids=(opioid("oxycodone", 15), opioid("oxycodone", 14)))
    assert below.opioid.tolerant is Presence.ABSENT and S not in ids(below)
    assert below.verdict is Verdict.NOT_INDICATED
    above = run(procedure=COLONOSCOPY, opioids=(opioid("oxycodone", 20), opioid("oxycodone", 15)))
    assert above.opioid.tolerant is Presence.PRESENT
    assert above.opioid.mme_per_day == Fraction("52.5")  # under 60 MME/day: the oxycodone threshold decides


def test_a_sum_counts_only_for_the_days_both_were_taken() -> None:
    # 20 mg/day for 30 days, and another 15 mg/day for the last 6 or 7 days: 35 mg/day only since then
    six = run(opioids=(opioid("oxycodone", 20), opioid("oxycodone", 15, days=6)))
    assert six.opioid.tolerant is Presence.ABSENT
    seven = run(opioids=(opioid("oxycodone", 20), opioid("oxycodone", 15, days=7)))
    assert seven.opioid.tolerant is Presence.PRESENT
    assert seven.opioid.basis.endswith(": oxycodone 35 mg/day together for 7 days")
    ended = dataclasses.replace(opioid("oxycodone", 15, days=60), end=TODAY - dt.timedelta(days=1))
    assert run(opioids=(opioid("oxycodone", 20), ended)).opioid.tolerant is Presence.ABSENT


def test_one_opioid_in_several_uses_is_not_a_combination() -> None:
    # oxymorphone 10 + 10 mg/day is 60 MME/day, but 20 mg/day is under its own 25 mg/day threshold, as for
    # a single order of 20 mg/day; 60 MME/day is the rule for combinations of different opioids
    two = run(opioids=(opioid("oxymorphone", 10), opioid("oxymorphone", 10)))
    single = run(opioids=(opioid("oxymorphone", 20),))
    assert two.opioid.tolerant is Presence.ABSENT and single.opioid.tolerant is Presence.ABSENT
    mixed = run(opioids=(opioid("oxymorphone", 10), opioid("morphine", 30)))  # 30 + 30 MME/day
    assert mixed.opioid.tolerant is Presence.PRESENT


def test_an_unreadable_use_of_the_same_opioid_leaves_the_sum_unknown() -> None:
    unreadable = OpioidUse("oxycodone", None, TODAY - dt.timedelta(days=30), None, Coded("oxycodone ?"))
    assert run(opioids=(opioid("oxycodone", 20), unreadable)).opioid.tolerant is Presence.UNKNOWN
    assert run(opioids=(opioid("oxycodone", 30), unreadable)).opioid.tolerant is Presence.PRESENT


def test_ended_prescription_does_not_count() -> None:
    ended = dataclasses.replace(opioid("morphine", 90), end=TODAY - dt.timedelta(days=1))
    assert run(opioids=(ended,)).opioid.tolerant is Presence.NOT_RECORDED


def test_recorded_opioid_dependence_counts() -> None:
    a = run(procedure=COLONOSCOPY, conditions=(condition("opioid-dependence", "Opioid dependence"),))
    assert S in ids(a)
    assert a.opioid.dependent is Presence.PRESENT


def test_unreadable_dose_is_unknown_not_absent() -> None:
    unreadable = OpioidUse("oxycodone", None, TODAY - dt.timedelta(days=30), None, Coded("oxycodone ?"))
    a = run(procedure=COLONOSCOPY, opioids=(unreadable,))
    assert a.opioid.tolerant is Presence.UNKNOWN
    assert S not in ids(a)
    assert "opioid-use" in {m.datum for m in a.missing}


def as_needed(ingredient: str, days: int = 30) -> OpioidUse:
    return OpioidUse(
        ingredient, None, TODAY - dt.timedelta(days=days), None, Coded(ingredient), as_needed=True
    )


def test_an_opioid_taken_as_needed_is_unknown_use_not_tolerance() -> None:
    a = run(procedure=COLONOSCOPY, opioids=(as_needed("oxycodone"),))
    assert a.opioid.tolerant is Presence.UNKNOWN and S not in ids(a)
    assert a.opioid.basis == (
        "an opioid is taken as needed, so the amount taken is not known: oxycodone as needed for 30 days"
    )
    assert "opioid-use" in {m.datum for m in a.missing}


def test_a_scheduled_opioid_beside_an_as_needed_one_is_judged_as_before() -> None:
    at = run(procedure=COLONOSCOPY, opioids=(as_needed("oxycodone"), opioid("oxycodone", 30)))
    assert at.opioid.tolerant is Presence.PRESENT and S in ids(at)
    assert at.opioid.basis == "oxycodone 30 mg/day for 30 days (45 MME/day)"
    below = run(procedure=COLONOSCOPY, opioids=(as_needed("oxycodone"), opioid("oxycodone", 29)))
    assert below.opioid.tolerant is Presence.UNKNOWN  # unknown, never absent: the as-needed doses may add up


def test_an_opioid_taken_as_needed_cannot_carry_a_daily_amount() -> None:
    with pytest.raises(ValueError, match="as needed"):
        OpioidUse("oxycodone", Fraction(30), TODAY, None, Coded("oxycodone"), as_needed=True)


def test_unknown_opioid_record_cannot_add_support_outside_surgery_and_sickle_cell() -> None:
    a = run(opioids=None, use="acute-pain", procedure=None)
    assert a.opioid.tolerant is Presence.UNKNOWN
    assert a.verdict is Verdict.INSUFFICIENT_EVIDENCE  # no sickle cell: no statement could support


@pytest.mark.parametrize(
    ("daily", "tolerant", "mme_text"),
    [("299.98", Presence.ABSENT, "59.996 MME/day"), ("300", Presence.PRESENT, "(60 MME/day)")],
)
def test_an_mme_just_under_the_threshold_never_reads_as_the_threshold(
    daily: str, tolerant: Presence, mme_text: str
) -> None:
    status = run(opioids=(opioid("tramadol", daily),)).opioid  # tramadol: 0.2 MME per mg, no own threshold
    assert status.tolerant is tolerant and mme_text in status.basis


def test_an_unreadable_opioid_dose_is_worded_plainly() -> None:
    use = OpioidUse("oxycodone", None, TODAY - dt.timedelta(days=30), None, Coded("oxycodone"))
    status = run(opioids=(use,)).opioid
    assert status.tolerant is Presence.UNKNOWN and "oxycodone dose not readable for 30 days" in status.basis


def test_a_threshold_dose_taken_under_a_week_is_not_called_below_the_threshold() -> None:
    status = run(opioids=(opioid("oxycodone", 100, days=3),)).opioid
    assert status.tolerant is Presence.ABSENT
    assert "not at a tolerance dose for 7 days or longer" in status.basis and "below" not in status.basis


def test_a_tolerance_already_decided_is_taken_as_it_is() -> None:
    """The batch audit decides tolerance once per patient and day (``opioid_tolerance``) and hands it over:
    the verdict is the one the opioid uses themselves give, and an unknown one never counts as absent."""
    kb = load_knowledge()

    for uses in ((opioid("oxycodone", 30),), (opioid("oxycodone", 20),), (), None):
        decided = opioid_tolerance(uses, TODAY, kb)
        direct = run(procedure=COLONOSCOPY, opioids=uses)
        handed = run(procedure=COLONOSCOPY, opioids=None, opioid_tolerance=decided)
        assert (handed.verdict, ids(handed), handed.opioid) == (direct.verdict, ids(direct), direct.opioid)
    assert opioid_tolerance(None, TODAY, kb).unknown_because == NOT_READ
    as_needed = OpioidUse("oxycodone", None, TODAY - dt.timedelta(days=30), None, Coded("oxycodone"), True)
    unknown = opioid_tolerance((as_needed,), TODAY, kb)
    assert (unknown.state, unknown.unknown_because) == (Presence.UNKNOWN, TAKEN_AS_NEEDED)
    assert unknown.basis.startswith(TAKEN_AS_NEEDED + ": oxycodone as needed for 30 days")
    stated = run(procedure=COLONOSCOPY, opioids=None, opioid_tolerance=unknown)
    assert stated.opioid.tolerant is Presence.UNKNOWN and S not in ids(stated)
