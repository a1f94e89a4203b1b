"""Opioid use from MedicationRequests and MedicationStatements: ingredient, daily amount and dates."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from fhir_bundles import EXTERNAL, SNOMED, bundle, concept, ketamine, opioid, patient, quantity, read

from ketamine_cds import OpioidUse, Presence, assess, load_knowledge
from ketamine_cds._opioids import OpioidStatus, mme_per_day
from ketamine_cds.adapters.fhir import facts_from_bundle

MME_TESTS = EXTERNAL / "opioid-mme-r4-tests" / "MMECalculatorTests"
MME_CASES = sorted(p.parent.name for p in MME_TESTS.glob("*/GuidanceResponse-*.json"))


def uses(*resources: dict[str, Any]) -> tuple[OpioidUse, ...]:
    found = read(patient(), *resources).opioids
    assert found is not None
    return found


def one(*resources: dict[str, Any]) -> OpioidUse:
    [use] = uses(*resources)
    return use


# --- the CQF opioid MME calculator's own test cases -----------------------------------------------


def expected_total_mme(case: Path) -> Decimal:
    [response] = case.glob("GuidanceResponse-*.json")
    data = json.loads(response.read_text(), parse_float=Decimal)
    [parameters] = [c for c in data["contained"] if c["resourceType"] == "Parameters"]
    [total] = [p for p in parameters["parameter"] if p["name"] == "TotalMME"]
    value: Decimal = total["valueQuantity"]["value"]
    return value


def case_bundle(case: Path) -> dict[str, Any]:
    resources = [json.loads(p.read_text(), parse_float=Decimal) for p in sorted(case.glob("*.json"))]
    return bundle(*(r for r in resources if r["resourceType"] in ("Patient", "MedicationRequest")))


def test_the_four_mme_cases_are_present() -> None:
    assert MME_CASES == [
        "mmecalc",
        "patient-mme-greater-than-fifty",
        "patient-mme-less-than-fifty",
        "patient-mme-with-timeofday",
    ]


@pytest.mark.parametrize("name", MME_CASES)
def test_mme_matches_the_cqf_calculator(name: str) -> None:
    case = MME_TESTS / name
    kb = load_knowledge()
    facts = facts_from_bundle(case_bundle(case), as_of=dt.date(2020, 12, 1), kb=kb)
    assert facts.opioids
    amounts = [mme_per_day(use, kb) for use in facts.opioids]
    assert None not in amounts
    assert sum(a for a in amounts if a is not None) == Fraction(expected_total_mme(case))


def test_mme_case_details_read_as_written() -> None:
    fentanyl = facts_from_bundle(
        case_bundle(MME_TESTS / "patient-mme-greater-than-fifty"), as_of=dt.date(2020, 7, 1)
    )
    [patch] = fentanyl.opioids or ()
    # one 0.075 MG/HR patch at a time
    assert (patch.ingredient, patch.daily_amount) == ("fentanyl", Fraction(75))
    assert patch.start == dt.date(2020, 6, 25)  # dispenseRequest.validityPeriod.start: no boundsPeriod
    timed = facts_from_bundle(
        case_bundle(MME_TESTS / "patient-mme-with-timeofday"), as_of=dt.date(2020, 10, 1)
    )
    [oxycodone] = timed.opioids or ()
    # 10 mg at 10:00 and at 22:00
    assert (oxycodone.ingredient, oxycodone.daily_amount) == ("oxycodone", Fraction(20))
    assert oxycodone.start == dt.date(2020, 9, 28)  # boundsPeriod.start


# --- ingredient -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("display", "ingredient"),
    [
        ("Acetaminophen 325 MG / oxyCODONE Hydrochloride 5 MG Oral Tablet", "oxycodone"),
        ("Acetaminophen 325 MG / HYDROcodone Bitartrate 7.5 MG Oral Tablet", "hydrocodone"),
        ("HYDROmorphone Hydrochloride 2 MG Oral Tablet", "hydromorphone"),
        ("Morphine Sulfate 15 MG Oral Tablet", "morphine"),
        ("traMADol Hydrochloride 50 MG Oral Tablet", "tramadol"),
        ("Acetaminophen 300 MG / Codeine Phosphate 30 MG Oral Tablet", "codeine"),
        ("Methadone Hydrochloride 10 MG Oral Tablet", "methadone"),
        ("tapentadol 50 MG Oral Tablet", "tapentadol"),
        ("Oxymorphone Hydrochloride 5 MG Oral Tablet", "oxymorphone"),
    ],
)
def test_the_opioid_is_read_from_the_product_name(display: str, ingredient: str) -> None:
    assert one(opioid(display, code="0")).ingredient == ingredient


def test_the_opioid_is_read_from_an_ingredient_code() -> None:
    request = opioid("MORPHINE ER 20 MG CAPSULE", code="7052")
    assert one(request).ingredient == "morphine"


@pytest.mark.parametrize(
    "display", ["Remifentanil 1 MG Injection", "Acetaminophen 325 MG Oral Tablet", "Naloxone 4 MG"]
)
def test_other_drugs_are_not_opioid_use(display: str) -> None:
    assert uses(opioid(display, code="0")) == ()


def test_the_ketamine_order_is_not_an_opioid() -> None:
    assert uses(ketamine(status="active")) == ()


# --- daily amount ---------------------------------------------------------------------------------

PERCOCET = "Acetaminophen 325 MG / oxyCODONE Hydrochloride 5 MG Oral Tablet"


def test_tablets_times_the_opioid_strength_of_a_combination_product() -> None:
    # Synthea writes one tablet every 6 hours as a bare doseQuantity {value: 1}
    request = opioid(PERCOCET, dose={"value": 1}, frequency=1, period=6, period_unit="h")
    assert one(request).daily_amount == 20  # 4 x 5 mg oxycodone, not the 325 mg acetaminophen


@pytest.mark.parametrize("unit", ["tablet", "{tbl}", "TAB", "tablets", "1"])
def test_tablet_units_are_counts(unit: str) -> None:
    assert one(opioid(PERCOCET, dose=quantity(2, unit), frequency=3)).daily_amount == 30


def test_a_dose_in_mg_is_taken_as_written() -> None:
    request = opioid(
        "oxycodone hydrochloride 60 MG 12 HR Extended Release Oral Tablet",
        dose=quantity(10, "mg", code="mg"),
        period=12,
        period_unit="h",
    )
    assert one(request).daily_amount == 20


def test_a_dose_in_mcg_is_converted_to_mg() -> None:
    request = opioid("HYDROmorphone 1 MG/ML Injection", dose=quantity(500, "mcg", code="ug"), frequency=4)
    assert one(request).daily_amount == 2


def test_a_liquid_dose_in_ml_uses_the_strength_per_ml() -> None:
    request = opioid("Morphine Sulfate 2 MG/ML Oral Solution", dose=quantity(5, "mL", code="mL"), frequency=2)
    assert one(request).daily_amount == 20


@pytest.mark.parametrize(
    ("frequency", "period", "unit", "per_day"),
    [
        (1, 1, "d", 1),
        (2, 1, "d", 2),
        (1, 8, "h", 3),
        (1, 2, "d", Fraction(1, 2)),
        (1, 1, "wk", Fraction(1, 7)),
        (1, "0.5", "d", 2),
    ],
)
def test_doses_per_day_from_the_timing(frequency: int, period: Any, unit: str, per_day: Fraction) -> None:
    request = opioid(
        "Morphine Sulfate 10 MG Oral Tablet",
        dose={"value": 1},
        frequency=frequency,
        period=Decimal(str(period)),
        period_unit=unit,
    )
    assert one(request).daily_amount == 10 * per_day


def test_a_timing_code_is_read_when_there_is_no_repeat() -> None:
    request = opioid("Morphine Sulfate 10 MG Oral Tablet", dose={"value": 1})
    request["dosageInstruction"][0]["timing"] = {
        "code": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation", "code": "TID"}]
        }
    }
    assert one(request).daily_amount == 30


def test_split_doses_given_together_are_summed() -> None:
    request = opioid("Morphine Sulfate 10 MG Oral Tablet", dose={"value": 1})
    evening = json.loads(json.dumps(request["dosageInstruction"][0]))
    evening["doseAndRate"][0]["doseQuantity"] = {"value": 2}
    request["dosageInstruction"].append(evening)
    assert one(request).daily_amount == 30


def test_a_taper_in_sequence_is_unreadable() -> None:
    request = opioid("Morphine Sulfate 10 MG Oral Tablet", dose={"value": 1})
    later = json.loads(json.dumps(request["dosageInstruction"][0]))
    request["dosageInstruction"][0]["sequence"], later["sequence"] = 1, 2
    request["dosageInstruction"].append(later)
    assert one(request).daily_amount is None


@pytest.mark.parametrize(
    "change",
    [
        {"dose": None},  # no dose
        {"period_unit": "mo"},  # a month is not a fixed number of days
        {"dose": quantity(1, "puff", code="{puff}")},
        {"dose": quantity("0.1", "mg/kg", code="mg/kg")},
    ],
)
def test_an_unreadable_dosage_is_unknown_not_guessed(change: dict[str, Any]) -> None:
    kwargs: dict[str, Any] = {"dose": {"value": 1}, **change}
    assert one(opioid("Morphine Sulfate 10 MG Oral Tablet", **kwargs)).daily_amount is None


def test_tablets_of_a_product_without_strength_are_unknown() -> None:
    assert one(opioid("Acetaminophen/Hydrocodone", dose={"value": 1})).daily_amount is None


# --- as needed (PRN) -----------------------------------------------------------------------------

OXYCODONE_5 = "oxycodone hydrochloride 5 MG Oral Tablet"


def every_4_hours(**dosage: Any) -> dict[str, Any]:
    """One oxycodone 5 mg tablet every 4 hours (30 mg/day if taken at every time allowed), from 2026-10-01."""
    request = opioid(OXYCODONE_5, dose={"value": 1}, period=4, period_unit="h")
    request["dosageInstruction"][0].update(dosage)
    return request


def tolerance(*resources: dict[str, Any]) -> OpioidStatus:
    return assess(read(patient(), *resources)).opioid


@pytest.mark.parametrize(
    "as_needed",
    [
        {"asNeededBoolean": True},
        {"asNeededCodeableConcept": {"text": "pain"}},
        {"asNeededCodeableConcept": concept(SNOMED, "22253000", "Pain")},
    ],
)
def test_an_opioid_taken_as_needed_has_no_known_daily_amount(as_needed: dict[str, Any]) -> None:
    # the regular timing is the most that may be taken, not what is taken: as needed wins
    use = one(every_4_hours(**as_needed))
    assert (use.ingredient, use.daily_amount, use.as_needed) == ("oxycodone", None, True)
    assert use.start == dt.date(2026, 10, 1)


def test_as_needed_false_is_a_scheduled_dose() -> None:
    use = one(every_4_hours(asNeededBoolean=False))
    assert (use.daily_amount, use.as_needed) == (Fraction(30), False)
    assert one(every_4_hours()).daily_amount == 30


def test_an_as_needed_part_of_doses_given_together_makes_the_whole_unknown() -> None:
    request = every_4_hours()
    extra = json.loads(json.dumps(request["dosageInstruction"][0]))
    extra["asNeededBoolean"] = True
    request["dosageInstruction"].append(extra)
    assert (one(request).daily_amount, one(request).as_needed) == (None, True)


def test_a_statement_taken_as_needed_has_no_known_daily_amount() -> None:
    taken = statement("active", effectiveDateTime="2026-10-01")
    taken["dosage"][0]["asNeededBoolean"] = True
    use = one(taken)
    assert (use.daily_amount, use.as_needed) == (None, True)


def test_an_opioid_taken_as_needed_is_unknown_use_not_tolerance() -> None:
    prn = tolerance(every_4_hours(asNeededBoolean=True))
    assert prn.tolerant is Presence.UNKNOWN and prn.mme_per_day is None
    assert prn.basis == (
        "an opioid is taken as needed, so the amount taken is not known: oxycodone as needed for 54 days"
    )
    scheduled = tolerance(every_4_hours())
    assert scheduled.tolerant is Presence.PRESENT
    assert scheduled.basis == "oxycodone 30 mg/day for 54 days (45 MME/day)"


def test_a_scheduled_opioid_beside_an_as_needed_one_still_counts() -> None:
    prn = every_4_hours(asNeededBoolean=True)
    at = tolerance(prn, opioid(OXYCODONE_5, id="o2", dose={"value": 2}, frequency=3))  # 30 mg/day
    assert at.tolerant is Presence.PRESENT and at.basis == "oxycodone 30 mg/day for 54 days (45 MME/day)"
    below = tolerance(prn, opioid(OXYCODONE_5, id="o2", dose={"value": 1}, frequency=4))  # 20 mg/day
    assert below.tolerant is Presence.UNKNOWN  # what is taken as needed could make up the rest
    assert below.basis.endswith(
        "oxycodone as needed for 54 days; oxycodone 20 mg/day for 54 days (30 MME/day)"
    )


# --- several prescriptions of one opioid -----------------------------------------------------------


def test_two_oxycodone_prescriptions_are_added_up() -> None:
    four_a_day = opioid(OXYCODONE_5, dose={"value": 1}, frequency=4)  # 20 mg/day
    three_a_day = opioid(OXYCODONE_5, id="o2", dose={"value": 1}, frequency=3)  # 15 mg/day
    both = tolerance(four_a_day, three_a_day)
    assert both.tolerant is Presence.PRESENT and both.mme_per_day == Fraction("52.5")
    assert both.basis == (
        "oxycodone 20 mg/day for 54 days (30 MME/day); oxycodone 15 mg/day for 54 days (22.5 MME/day): "
        "oxycodone 35 mg/day together for 54 days"
    )


@pytest.mark.parametrize(
    ("second_mg", "tolerant"), [(16, Presence.PRESENT), (15, Presence.PRESENT), (14, Presence.ABSENT)]
)
def test_two_oxycodone_prescriptions_against_30_mg_a_day(second_mg: int, tolerant: Presence) -> None:
    first = opioid(OXYCODONE_5, dose=quantity(15, "mg", code="mg"))
    second = opioid(OXYCODONE_5, id="o2", dose=quantity(second_mg, "mg", code="mg"))
    assert tolerance(first, second).tolerant is tolerant


FENTANYL_PATCH = "72 HR Fentanyl 0.025 MG/HR Transdermal System"


def test_transdermal_fentanyl_is_mcg_per_hour_times_patches() -> None:
    one_patch = opioid(FENTANYL_PATCH, dose=quantity(1, "patch", code="{patch}"), period=3)
    two_patches = opioid(FENTANYL_PATCH, dose=quantity(2, "patch", code="{patch}"), period=3)
    assert one(one_patch).daily_amount == 25  # the 72-hour change interval does not matter
    assert one(two_patches).daily_amount == 50


def test_transdermal_fentanyl_written_as_a_rate() -> None:
    request = opioid("fentanyl patch", dose=quantity(50, "mcg/h", code="ug/h"), period=3)
    assert one(request).daily_amount == 50


def test_a_transdermal_route_marks_the_patch() -> None:
    request = opioid(
        "Fentanyl 12 MCG/HR",
        dose={"value": 1},
        route={"coding": [{"system": SNOMED, "code": "45890007", "display": "Transdermal route"}]},
    )
    assert one(request).daily_amount == 12


def test_patches_add_up_but_not_with_other_fentanyl() -> None:
    def patch(mcg_per_h: int, id: str) -> dict[str, Any]:
        return opioid("fentanyl patch", id=id, dose=quantity(mcg_per_h, "mcg/h", code="ug/h"), period=3)

    assert tolerance(patch(12, "o1"), patch(13, "o2")).tolerant is Presence.PRESENT  # 25 mcg/h
    assert tolerance(patch(12, "o1"), patch(12, "o2")).tolerant is Presence.ABSENT  # 24 mcg/h, 57.6 MME/day
    injection = opioid(
        "Fentanyl Citrate 0.05 MG/ML Injectable Solution",
        id="o3",
        dose=quantity(2, "mL", code="mL"),
        frequency=4,
    )
    assert tolerance(patch(12, "o1"), injection).tolerant is Presence.UNKNOWN  # not a dose in mcg/h


def test_fentanyl_that_is_not_transdermal_is_unknown() -> None:
    request = opioid(
        "Fentanyl Citrate 0.05 MG/ML Injectable Solution", dose=quantity(2, "mL", code="mL"), frequency=4
    )
    use = one(request)
    assert use.ingredient == "fentanyl" and use.daily_amount is None


# --- which records and dates ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "status", ["stopped", "completed", "cancelled", "draft", "on-hold", "entered-in-error"]
)
def test_only_active_prescriptions_count(status: str) -> None:
    assert uses(opioid(PERCOCET, dose={"value": 1}, status=status)) == ()


def test_start_and_end_from_the_bounds_period() -> None:
    use = one(opioid(PERCOCET, dose={"value": 1}, start="2026-10-01", end="2026-12-31"))
    assert (use.start, use.end) == (dt.date(2026, 10, 1), dt.date(2026, 12, 31))


def test_start_falls_back_to_the_date_written() -> None:
    use = one(opioid(PERCOCET, dose={"value": 1}, start=None))
    assert (use.start, use.end) == (dt.date(2026, 9, 30), None)


def statement(status: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationStatement",
        "id": "ms1",
        "status": status,
        "medicationCodeableConcept": {"text": "Oxycodone Hydrochloride 10 MG Oral Tablet"},
        "subject": {"reference": "Patient/p1"},
        "dosage": [
            {
                "timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}},
                "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet"}}],
            }
        ],
        **extra,
    }


def test_an_active_medication_statement_is_opioid_use() -> None:
    use = one(statement("active", effectivePeriod={"start": "2026-08-01", "end": "2026-12-01"}))
    assert (use.ingredient, use.daily_amount) == ("oxycodone", Fraction(20))
    assert (use.start, use.end) == (dt.date(2026, 8, 1), dt.date(2026, 12, 1))


def test_a_statement_dated_by_effective_date_time() -> None:
    assert one(statement("active", effectiveDateTime="2026-07-04T10:00:00Z")).start == dt.date(2026, 7, 4)


# FHIR R4: only an active statement is "still being taken"; completed is "no longer being taken", intended
# "may be taken at some time in the future", on-hold "temporarily halted"
@pytest.mark.parametrize(
    "status", ["completed", "intended", "stopped", "not-taken", "entered-in-error", "on-hold", "unknown"]
)
@pytest.mark.parametrize(
    "dates",
    [
        {"effectiveDateTime": "2020-03-01"},
        {"effectivePeriod": {"start": "2026-08-01", "end": "2026-11-01"}},
        {"effectivePeriod": {"start": "2026-08-01", "end": "2026-12-01"}},
    ],
)
def test_other_statements_are_not_opioid_use(status: str, dates: dict[str, Any]) -> None:
    assert uses(statement(status, **dates)) == ()


def forty_mg_a_day(status: str, **dates: Any) -> dict[str, Any]:
    """Oxycodone 10 mg four times a day (40 mg/day, over the 30 mg/day threshold) as a MedicationStatement."""
    taken = statement(status, **dates)
    taken["dosage"][0]["timing"]["repeat"]["frequency"] = 4
    return taken


def test_a_completed_statement_is_not_current_use() -> None:
    since_2020 = {"effectiveDateTime": "2020-03-01"}
    completed = tolerance(forty_mg_a_day("completed", **since_2020))
    assert completed.tolerant is Presence.NOT_RECORDED
    assert completed.basis == "no current opioid prescription in the record"
    active = tolerance(forty_mg_a_day("active", **since_2020))
    assert active.tolerant is Presence.PRESENT
    assert active.basis == "oxycodone 40 mg/day for 2459 days (60 MME/day)"


@pytest.mark.parametrize(
    ("end", "tolerant"),
    [
        ("2026-11-23", Presence.NOT_RECORDED),  # ended yesterday: no longer taken
        ("2026-11-24", Presence.PRESENT),  # taken until today
        ("2026-12-31", Presence.PRESENT),
    ],
)
def test_a_statement_counts_until_its_period_ends(end: str, tolerant: Presence) -> None:
    period = {"effectivePeriod": {"start": "2026-08-01", "end": end}}
    assert tolerance(forty_mg_a_day("active", **period)).tolerant is tolerant
    assert tolerance(forty_mg_a_day("completed", **period)).tolerant is Presence.NOT_RECORDED


def test_the_source_is_the_product_as_recorded() -> None:
    use = one(opioid(PERCOCET, code="1049621", dose={"value": 1}))
    assert (use.source.display, use.source.code) == (PERCOCET, "1049621")
