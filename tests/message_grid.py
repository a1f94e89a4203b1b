"""A grid of questions that reaches every message of every statement (``assessments``), with the conditions
named every way a record or a case names them (``CONDITIONS``): the wording tests render each message with the
values the grid gives it, and the statement registry test checks that each message is produced by its
statement's rule."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from fractions import Fraction

from builders import TODAY, facts, iv, nasal, opioid, oral, qty
from ketamine_cds import (
    Assessment,
    Coded,
    ConditionFact,
    PlannedProcedure,
    Setting,
    WeightBasis,
    assess,
    ketamine_order,
    load_knowledge,
)
from ketamine_cds._facts import Route
from ketamine_cds._site import site_from_toml
from ketamine_cds.adapters.case import facts_from_case

KB = load_knowledge()
SNOMED = "http://snomed.info/sct"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"


def _stated(document: dict[str, object]) -> Coded:
    """A condition as a case document (and the web form, which makes one) states it."""
    found = facts_from_case({"patient": document}, today=TODAY)
    return (*(found.conditions or ()), *found.stated)[0].source


CONDITIONS: dict[str, tuple[Coded, ...]] = {
    "named code": (Coded("Schizophrenia", SNOMED, "58214004"),),
    "code without its name": (Coded("F20.9", ICD, "F20.9"),),
    "empty name": (Coded("", SNOMED, "58214004"),),
    "stated pregnancy": (_stated({"pregnant": True}),),
    **{f"stated {c}": (_stated({"conditions": [c]}),) for c in KB.concepts},
    "two": (Coded("Heart failure", SNOMED, "84114007"), Coded("I10", ICD, "I10")),
}


def _orders() -> list[object]:
    """IV doses in every unit a clinician writes, a four-digit one among them, oral and intranasal doses."""
    ten = Fraction(10)
    infusion = ketamine_order(
        route=Route.INTRAVENOUS,
        dose=qty("0.3", "mg/kg/h"),
        duration_h=Fraction(4),
    )
    return [
        None,
        iv(20, "mg"),
        iv("0.5", "mg/kg"),
        iv("28.19", "mg"),
        iv(3, "mL", concentration_mg_per_ml=ten),
        iv(30000, "mcg"),
        iv(4000, "mg/h"),
        iv(4000, "mg"),
        iv("16.67", "mcg/kg/min"),
        iv(5, "mL/h", concentration_mg_per_ml=ten),
        iv(5, "mL/h"),
        iv("1.5", "mg/kg/h"),
        iv(1000, "mcg/kg/h"),
        iv("3", "mg/kg/h"),
        iv(2, "mL"),
        infusion,
        oral(),
        nasal(),
        ketamine_order(route=Route.ORAL, dose=qty(50, "mg")),
        ketamine_order(route=Route.INTRANASAL, dose=qty(25, "mg")),
    ]


WEIGHTS: list[dict[str, object]] = [
    {"weight_kg": Fraction(80)},
    {"weight_kg": None},
    {"weight_kg": Fraction("61.425")},
    {
        "weight_kg": Fraction(70),
        "weight_basis": WeightBasis.MEASURED,
        "weight_measured": TODAY.replace(year=2025),
    },
    {"weight_kg": Fraction(70), "weight_basis": WeightBasis.UNDATED},
    {  # a weight the record holds but that cannot be used (issue 20)
        "weight_kg": None,
        "weight_problem": "two body weights taken at the same time disagree: 7 kg and 70 kg (Observation/a, "
        "Observation/b; taken 2026-11-20T08:00:00Z)",
    },
    {
        "weight_kg": None,
        "weight_problem": "the latest body weight (Observation/w1) is recorded only as a bound (< 30 kg), "
        "not as a weight a dose can be worked out from",
    },
]
USES = [
    "perioperative",
    "sickle-cell-pain",
    "crps",
    "fibromyalgia",
    "spinal-cord-injury-pain",
    "chronic-pain",
    None,
    "anesthesia",
]


def assessments() -> Iterator[Assessment]:
    """A grid of questions that reaches every message of every statement."""
    for use, setting, weight, order in itertools.product(USES, Setting, WEIGHTS, _orders()):
        yield assess(facts(use=use, setting=setting, order=order, **weight))
    # every condition in the record, named every way, with the uses whose statements read it
    for concept, (label, conditions) in itertools.product(KB.concepts, CONDITIONS.items()):
        if label == "empty name" or (label.startswith("stated ") and label != f"stated {concept}"):
            continue  # every adapter names a coded condition by its code at least
        record = tuple(ConditionFact(concept, c) for c in conditions)
        for use in ("perioperative", "crps", "sickle-cell-pain"):
            yield assess(facts(use=use, conditions=record, order=iv(20, "mg")))
        yield assess(facts(use="crps", conditions=record, order=None))
    for pclass in KB.procedure_classes:
        yield assess(facts(procedure=PlannedProcedure(Coded("Colonoscopy", SNOMED, "73761001"), pclass)))
    for daily in (40, 10):  # opioid-tolerant, and not
        for use in ("perioperative", "sickle-cell-pain"):
            yield assess(facts(use=use, opioids=(opioid("oxycodone", daily, days=30),)))
    yield assess(facts(order=ketamine_order(route=Route.INTRAVENOUS, dose=qty(5, "mg"), pca_sole_agent=True)))
    for prior in (True, False, None):
        for order in (oral(), nasal(), ketamine_order(route=Route.ORAL, dose=qty(50, "mg"))):
            yield assess(facts(use="crps", order=order, prior_iv_ketamine=prior))
    yield assess(facts(conditions=None, use="crps"))
    # a site's caps in mg on every dose statement, for doses per kg without a weight
    for use, setting, order in itertools.product(
        ("perioperative", "crps"), Setting, (iv("0.3", "mg/kg"), iv("0.3", "mg/kg/h"), iv("3", "mg/kg/h"))
    ):
        yield assess(facts(use=use, setting=setting, order=order, weight_kg=None), KB, CAPPED)


CAPPED = site_from_toml(
    {
        "site": {"name": "Capped", "version": "1"},
        "dose": {
            "dose-bolus-limit": {"max_mg": "20"},
            "dose-infusion-limit": {"max_mg_per_h": "50"},
            "dose-ceiling": {"max_mg_per_h": "400"},
            "chronic-dose-range": {"max_mg_per_h": "60"},
        },
    },
    KB,
    digest="test",
)
