"""Real-world bundles (Synthea, SMART bulk export, Inferno US Core): read as they are and with an order.

The expected weight is computed here independently of the adapter: the latest final 29463-7 Observation.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from fhir_bundles import TODAY, pairs

from external_bundles import BULK_BUNDLES, INFERNO, NAMES, SYNTHEA, bundle_named, load, with_ketamine_bolus
from ketamine_cds import DoseKind, Facts, Route, Setting, load_knowledge
from ketamine_cds.adapters.fhir import facts_from_bundle, facts_from_resources


def resources(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for entry in document.get("entry", []):
        if "resource" in entry:
            yield entry["resource"]


def moment(text: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def expected_weight_kg(document: dict[str, Any], as_of: dt.date) -> Fraction | None:
    """Independent reading: latest final/amended/corrected LOINC 29463-7 with a value, on or before as_of."""
    dated: list[tuple[dt.datetime, Decimal]] = []
    for r in resources(document):
        if r["resourceType"] != "Observation":
            continue
        codes = {(c.get("system"), c.get("code")) for c in r["code"].get("coding", [])}
        if ("http://loinc.org", "29463-7") not in codes:
            continue
        if r.get("status") not in ("final", "amended", "corrected") or "valueQuantity" not in r:
            continue
        when = r.get("effectiveDateTime") or r.get("effectivePeriod", {}).get("start") or r.get("issued")
        assert when, "every weight in these data sets is dated"
        assert r["valueQuantity"]["code"] == "kg"
        if dt.date.fromisoformat(when[:10]) <= as_of:
            dated.append((moment(when), r["valueQuantity"]["value"]))
    return Fraction(max(dated)[1]) if dated else None


def assert_sensible(facts: Facts) -> None:
    kb = load_knowledge()
    assert facts.conditions is not None and all(c.concept in kb.concepts for c in facts.conditions)
    assert facts.opioids is not None and all(u.ingredient in kb.opioids for u in facts.opioids)
    assert facts.use is None or facts.use in kb.uses
    assert facts.age_years is None or 0 <= facts.age_years <= 130


def test_the_external_data_is_there() -> None:
    assert len(SYNTHEA) == 25 and len(INFERNO) == 4 and len(BULK_BUNDLES) >= 10


@pytest.mark.parametrize("name", NAMES)
def test_read_as_an_eligibility_question(name: str) -> None:
    document = bundle_named(name)
    facts = facts_from_bundle(document, as_of=TODAY)
    assert facts.order is None
    assert facts.weight_kg == expected_weight_kg(document, TODAY)
    assert_sensible(facts)


@pytest.mark.parametrize("name", NAMES)
def test_read_with_a_ketamine_iv_bolus_added(name: str) -> None:
    document = with_ketamine_bolus(bundle_named(name))
    facts = facts_from_bundle(document, as_of=TODAY)
    assert facts.order is not None
    assert facts.order.route is Route.INTRAVENOUS and facts.order.kind is DoseKind.BOLUS
    assert (
        facts.order.dose is not None and facts.order.dose.value == 20 and facts.order.dose.unit.text == "mg"
    )
    assert facts.weight_kg == expected_weight_kg(document, TODAY)
    assert facts.prior_iv_ketamine is None  # none of these records holds ketamine: not found, not ruled out
    assert_sensible(facts)


def test_the_bulk_export_has_no_weights_and_none_is_guessed() -> None:
    assert all(facts_from_bundle(b, as_of=TODAY).weight_kg is None for b in BULK_BUNDLES.values())


def test_synthea_weights_follow_the_assessment_date() -> None:
    """A child's weight at an earlier date is the weight of that date, not the latest one."""
    document = load(SYNTHEA[0])
    earlier = dt.date(2015, 1, 1)
    assert facts_from_bundle(document, as_of=earlier).weight_kg == expected_weight_kg(document, earlier)


def test_an_active_synthea_opioid_is_read_with_its_daily_dose() -> None:
    [chet] = [p for p in SYNTHEA if p.name.startswith("Chet_Thompson")]
    [use] = facts_from_bundle(load(chet), as_of=TODAY).opioids or ()
    assert use.ingredient == "oxycodone"
    assert use.daily_amount == 20  # Acetaminophen 325 MG / oxyCODONE 5 MG, 1 tablet every 6 hours


def test_the_inferno_inpatient_encounter_is_on_a_hospital_ward() -> None:
    [quality] = [p for p in INFERNO if p.name.startswith("us_quality_core")]
    facts = facts_from_bundle(load(quality), as_of=TODAY)
    assert facts.setting is Setting.NON_INTENSIVE_CARE  # in-progress inpatient stay at a Location typed HOSP


def test_the_invalid_inferno_bundle_is_still_readable() -> None:
    [invalid] = [p for p in INFERNO if p.name == "uscore_bundle_patient_355.json"]
    facts = facts_from_bundle(load(invalid), as_of=TODAY)
    assert facts.weight_kg == Fraction("99.3")  # the latest weight is the one with an effectivePeriod


@pytest.mark.parametrize("name", NAMES)
def test_resources_read_as_their_bundle_reads(name: str) -> None:
    document = with_ketamine_bolus(bundle_named(name))
    assert facts_from_resources(pairs(document), as_of=TODAY) == facts_from_bundle(document, as_of=TODAY)
