"""Engine throughput on one core: assessments per second from parsed facts, and from a Synthea-size bundle.

Prints figures; never asserts on timing (exit 0 unless something errors).

    python bench/bench_engine.py            # full run (about a minute)
    python bench/bench_engine.py --quick    # smaller counts, for a smoke check
    python bench/bench_engine.py --profile  # also cProfile ``assess`` over the mix (top functions by tottime)

a. ``assess(facts, kb)`` over a mix of ~200 distinct, realistic ``Facts`` built with the public dataclasses,
   alone and with ``assessment_json`` rendering. Target: >= 20,000 assessments/s from facts.
b. The largest bundle of the Synthea R4 SMART sample plus one ketamine IV bolus ``MedicationRequest``:
   ``parse_json`` + ``facts_from_document`` + ``assess`` end to end, and ``facts_from_document`` alone.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import datetime as dt
import gc
import importlib.util
import io
import json
import platform
import pstats
import random
import sys
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from ketamine_cds import (
    Coded,
    ConditionFact,
    Facts,
    KetamineOrder,
    KnowledgeBase,
    OpioidUse,
    PlannedProcedure,
    Quantity,
    Route,
    Setting,
    assess,
    assessment_json,
    facts_from_document,
    ketamine_order,
    load_knowledge,
    parse_json,
    parse_unit,
)

TODAY = dt.date(2026, 11, 24)
TARGET_PER_S = 20_000
MIX_SIZE = 200
SEED = 20261124
SYNTHEA = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "external-test-data" / "synthea-r4-smart-sample"
)

SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"


# --- a realistic mix of facts -----------------------------------------------------------------------

_SEVERE = (
    PlannedProcedure(Coded("Appendectomy", SNOMED, "80146002"), "abdominal"),
    PlannedProcedure(Coded("Partial colectomy", SNOMED, "43075005"), "abdominal"),
    PlannedProcedure(Coded("Laparoscopic cholecystectomy", SNOMED, "45595009"), "abdominal"),
    PlannedProcedure(Coded("Median sternotomy", SNOMED, "359672006"), "thoracic"),
    PlannedProcedure(Coded("Total knee replacement", SNOMED, "609588000"), "orthopedic-limb"),
    PlannedProcedure(Coded("Total hip replacement", SNOMED, "52734007"), "orthopedic-limb"),
    PlannedProcedure(Coded("Spinal fusion", SNOMED, "55705006"), "spine"),
)
_MILD = (
    PlannedProcedure(Coded("Colonoscopy", SNOMED, "73761001"), "mild"),
    PlannedProcedure(Coded("Vasectomy", SNOMED, "22523008"), "mild"),
)
_UNCLASSIFIED = (PlannedProcedure(Coded("Dental extraction", SNOMED, "55162003"), None),)

# (concept, display, system, code): contraindications, cautions and context conditions
_CONTRA = (
    ("psychosis", "Schizophrenia", SNOMED, "58214004"),
    ("pregnancy", "Normal pregnancy", SNOMED, "72892002"),
    ("cardiovascular-severe", "Hypertensive crisis", ICD10CM, "I16.1"),
    ("liver-disease-severe", "Cirrhosis of liver", SNOMED, "19943007"),
    ("intraocular-pressure", "Glaucoma", SNOMED, "23986001"),
    ("intracranial-pressure", "Raised intracranial pressure", SNOMED, "1259003"),
)
_OTHER = (
    ("cardiovascular-disease", "Essential hypertension", SNOMED, "59621000"),
    ("sleep-apnea", "Obstructive sleep apnea syndrome", SNOMED, "78275009"),
    ("liver-disease-moderate", "Chronic hepatitis", SNOMED, "76783007"),
    ("substance-misuse", "Opioid abuse", SNOMED, "5602001"),
    ("opioid-dependence", "Long term (current) use of opiate analgesic", ICD10CM, "Z79.891"),
)
_CHRONIC_USES = (
    "crps",
    "crps",
    "fibromyalgia",
    "fibromyalgia",
    "neuropathic-pain",
    "low-back-pain",
    "chronic-pain",
)


def _condition(row: tuple[str, str, str, str]) -> ConditionFact:
    concept, display, system, code = row
    return ConditionFact(concept, Coded(display, system, code))


def _qty(value: str, unit: str) -> Quantity:
    return Quantity(Decimal(value), parse_unit(unit))


def _iv(value: str, unit: str, *, concentration: str | None = None, pca: bool = False) -> KetamineOrder:
    return ketamine_order(
        route=Route.INTRAVENOUS,
        dose=_qty(value, unit),
        concentration_mg_per_ml=Fraction(concentration) if concentration is not None else None,
        pca_sole_agent=pca,
        source=Coded("Ketamine hydrochloride 50 MG/ML Injectable Solution", RXNORM, "238082"),
    )


def _acute_order(rng: random.Random) -> KetamineOrder | None:
    """An IV order as written perioperatively or for acute pain, in every unit clinicians use."""
    form = rng.choices(
        (
            "bolus-mg",
            "bolus-mg/kg",
            "inf-mg/h",
            "inf-mcg/kg/min",
            "inf-mg/kg/h",
            "inf-mL/h",
            "no-dose",
            "none",
        ),
        weights=(22, 14, 14, 12, 10, 10, 6, 12),
    )[0]
    pca = rng.random() < 0.04
    if form == "bolus-mg":
        return _iv(rng.choice(("10", "15", "20", "25", "30", "35", "40", "50", "75")), "mg", pca=pca)
    if form == "bolus-mg/kg":
        return _iv(rng.choice(("0.1", "0.15", "0.2", "0.25", "0.3", "0.35", "0.5", "0.75")), "mg/kg")
    if form == "inf-mg/h":
        return _iv(
            rng.choice(("5", "8", "10", "12", "15", "20", "25", "40")), rng.choice(("mg/h", "mg/hr")), pca=pca
        )
    if form == "inf-mcg/kg/min":
        return _iv(rng.choice(("1", "2", "2.5", "3", "4", "5", "8")), rng.choice(("mcg/kg/min", "ug/kg/min")))
    if form == "inf-mg/kg/h":
        return _iv(
            rng.choice(("0.1", "0.12", "0.15", "0.2", "0.25", "0.5", "1")),
            rng.choice(("mg/kg/h", "mg/(kg.h)")),
        )
    if form == "inf-mL/h":
        concentration = rng.choice(("1", "1", "2", "2", "10", None))
        return _iv(rng.choice(("2", "5", "7.5", "10", "15", "20")), "mL/h", concentration=concentration)
    if form == "no-dose":
        return ketamine_order(route=Route.INTRAVENOUS, dose=None)
    return None  # an eligibility question: dose limits only


def _chronic_order(rng: random.Random) -> KetamineOrder | None:
    form = rng.choices(("mg/kg/h", "mg/h", "mcg/kg/min", "none"), weights=(40, 30, 15, 15))[0]
    if form == "mg/kg/h":
        return _iv(rng.choice(("0.25", "0.35", "0.5", "0.6", "1")), "mg/kg/h")
    if form == "mg/h":
        return _iv(rng.choice(("20", "30", "40", "50", "60")), "mg/h")
    if form == "mcg/kg/min":
        return _iv(rng.choice(("5", "8", "10", "12")), "mcg/kg/min")
    return None


def _opioids(rng: random.Random) -> tuple[OpioidUse, ...] | None:
    kind = rng.choices(
        ("none", "oxycodone", "morphine", "fentanyl", "hydromorphone", "combo", "unreadable", "unknown"),
        weights=(55, 12, 8, 5, 4, 5, 5, 6),
    )[0]
    if kind == "unknown":
        return None
    if kind == "none":
        return ()

    def use(ingredient: str, amounts: Sequence[str], unreadable: bool = False) -> OpioidUse:
        days = rng.choice((3, 6, 7, 14, 30, 90, 365))
        amount = None if unreadable else Fraction(rng.choice(amounts))
        start = TODAY - dt.timedelta(days=days) if rng.random() > 0.1 else None
        return OpioidUse(ingredient, amount, start, None, Coded(f"{ingredient} (bench)", RXNORM, None))

    if kind == "oxycodone":
        return (use("oxycodone", ("10", "20", "30", "40", "60")),)
    if kind == "morphine":
        return (use("morphine", ("15", "30", "60", "90", "120")),)
    if kind == "fentanyl":
        return (use("fentanyl", ("12", "25", "50")),)
    if kind == "hydromorphone":
        return (use("hydromorphone", ("4", "8", "16")),)
    if kind == "combo":
        return (
            use("oxycodone", ("10", "20")),
            use("tramadol", ("100", "200")),
            use("codeine", ("60", "120")),
        )
    return (use(rng.choice(("oxycodone", "morphine")), ("0",), unreadable=True),)


def _conditions(rng: random.Random) -> tuple[ConditionFact, ...] | None:
    roll = rng.random()
    if roll < 0.04:
        return None  # conditions could not be read
    picked: list[ConditionFact] = []
    if rng.random() < 0.10:
        picked.append(_condition(rng.choice(_CONTRA)))
    if rng.random() < 0.25:
        picked.extend(_condition(row) for row in rng.sample(_OTHER, rng.choice((1, 1, 2))))
    return tuple(picked)


def _weight(rng: random.Random) -> Fraction | None:
    if rng.random() < 0.15:
        return None
    return Fraction(Decimal(rng.randint(450, 1300)) / 10)


def random_facts(rng: random.Random) -> Facts:
    scenario = rng.choices(
        (
            "periop-severe",
            "periop-mild",
            "periop-unclassified",
            "sickle",
            "acute",
            "chronic",
            "followup",
            "out-of-scope",
            "no-indication",
        ),
        weights=(38, 10, 4, 5, 4, 20, 12, 3, 4),
    )[0]
    conditions = _conditions(rng)
    use: str | None
    procedure = None
    order: KetamineOrder | None
    prior: bool | None = None
    if scenario.startswith("periop"):
        use = "perioperative"
        pool = {"periop-severe": _SEVERE, "periop-mild": _MILD, "periop-unclassified": _UNCLASSIFIED}[
            scenario
        ]
        procedure = rng.choice(pool) if rng.random() > 0.03 else None
        order = _acute_order(rng)
    elif scenario in ("sickle", "acute"):
        use = "sickle-cell-pain" if scenario == "sickle" else "acute-pain"
        if scenario == "sickle" and rng.random() < 0.5:
            crisis = ConditionFact("sickle-cell-crisis", Coded("Sickle cell crisis", SNOMED, "30925003"))
            conditions = (*(conditions or ()), crisis)
        order = _acute_order(rng)
    elif scenario == "chronic":
        use = rng.choice(_CHRONIC_USES)
        order = _chronic_order(rng)
        prior = rng.choice((True, False, None))
    elif scenario == "followup":
        use = rng.choice(("crps", "fibromyalgia", "neuropathic-pain"))
        route = rng.choice((Route.ORAL, Route.INTRANASAL))
        dose = _qty(rng.choice(("0.5", "1")), "mg/kg") if rng.random() < 0.3 else None
        order = ketamine_order(route=route, dose=dose)
        prior = rng.choice((True, True, False, None))
    elif scenario == "out-of-scope":
        use = rng.choice(("depression", "procedural-sedation", "anesthesia"))
        order = _acute_order(rng)
    else:
        use = None
        order = _acute_order(rng)
    setting = rng.choices(
        (Setting.INTENSIVE_CARE, Setting.NON_INTENSIVE_CARE, Setting.UNKNOWN), weights=(2, 5, 3)
    )[0]
    ruled_out = frozenset({"pregnancy"}) if rng.random() < 0.1 else frozenset()
    return Facts(
        as_of=TODAY,
        use=use,
        weight_kg=_weight(rng),
        setting=setting,
        conditions=conditions,
        ruled_out=ruled_out,
        procedure=procedure,
        opioids=_opioids(rng),
        order=order,
        prior_iv_ketamine=prior,
        age_years=rng.randint(18, 90),
        sex=rng.choice(("female", "male")),
    )


def build_mix(size: int = MIX_SIZE, seed: int = SEED) -> list[Facts]:
    """``size`` distinct facts, the same every run."""
    rng = random.Random(seed)
    distinct: dict[Facts, None] = {}
    while len(distinct) < size:
        distinct.setdefault(random_facts(rng), None)
    return list(distinct)


# --- timing -----------------------------------------------------------------------------------------


def best_seconds(run: Callable[[], object], repeat: int) -> float:
    """The best wall time of ``repeat`` runs (GC left on, as in production; collected before each run)."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def _rounds(calls: int, mix: Sequence[Facts]) -> int:
    return max(1, -(-calls // len(mix)))


def time_facts(
    mix: Sequence[Facts], kb: KnowledgeBase, calls: int, render_calls: int, repeat: int
) -> list[tuple[str, int, float]]:
    rounds = _rounds(calls, mix)
    render_rounds = _rounds(render_calls, mix)

    def assess_only() -> None:
        for _ in range(rounds):
            for facts in mix:
                assess(facts, kb)

    def assess_render() -> None:
        for _ in range(render_rounds):
            for facts in mix:
                assessment_json(assess(facts, kb), kb)

    def assess_render_dump() -> None:
        for _ in range(render_rounds):
            for facts in mix:
                json.dumps(assessment_json(assess(facts, kb), kb), ensure_ascii=False)

    return [
        ("assess(facts, kb)", rounds * len(mix), best_seconds(assess_only, repeat)),
        ("assess + assessment_json", render_rounds * len(mix), best_seconds(assess_render, repeat)),
        (
            "assess + assessment_json + json.dumps",
            render_rounds * len(mix),
            best_seconds(assess_render_dump, repeat),
        ),
    ]


def _order_label(order: KetamineOrder | None) -> str:
    if order is None:
        return "no order"
    if order.route is not Route.INTRAVENOUS:
        return order.route.value
    if order.dose is None or order.kind is None:
        return "iv, no dose"
    return f"iv {order.kind.value} {order.dose.unit.text}"


def print_mix(mix: Sequence[Facts], kb: KnowledgeBase) -> None:
    verdicts = collections.Counter(assess(f, kb).verdict.value for f in mix)
    kinds = collections.Counter(_order_label(f.order) for f in mix)
    print(f"mix: {len(mix)} distinct Facts (seed {SEED})")
    print("  verdicts: " + ", ".join(f"{v} {n}" for v, n in verdicts.most_common()))
    print("  orders:   " + ", ".join(f"{k} {n}" for k, n in kinds.most_common()))
    settings = collections.Counter(f.setting.value for f in mix)
    print(
        "  settings: "
        + ", ".join(f"{k} {n}" for k, n in settings.most_common())
        + f"; no weight {sum(f.weight_kg is None for f in mix)}"
        + f"; conditions unknown {sum(f.conditions is None for f in mix)}"
        + f"; opioids recorded {sum(bool(f.opioids) for f in mix)}"
    )


def print_rows(rows: Sequence[tuple[str, int, float]]) -> None:
    print(f"  {'stage':40} {'calls':>8} {'best s':>8} {'per s':>10} {'µs/call':>9}  target")
    for i, (name, calls, seconds) in enumerate(rows):
        rate = calls / seconds
        target = ""
        if i == 0:
            target = f">= {TARGET_PER_S:,}/s: {'met' if rate >= TARGET_PER_S else 'NOT met'}"
        print(f"  {name:40} {calls:>8} {seconds:>8.3f} {rate:>10,.0f} {1e6 / rate:>9.1f}  {target}")


# --- the Synthea bundle -----------------------------------------------------------------------------


def ketamine_entry(patient_ref: str) -> dict[str, Any]:
    """A draft ketamine 20 mg IV bolus order."""
    return {
        "fullUrl": "urn:uuid:6b7d1d3e-bench-4e1b-9c6a-ketamine0001",
        "resource": {
            "resourceType": "MedicationRequest",
            "id": "bench-ketamine-order",
            "status": "draft",
            "intent": "order",
            "medicationCodeableConcept": {
                "coding": [{"system": RXNORM, "code": "238082", "display": "ketamine"}],
                "text": "ketamine",
            },
            "subject": {"reference": patient_ref},
            "authoredOn": TODAY.isoformat(),
            "dosageInstruction": [
                {
                    "text": "ketamine 20 mg IV once",
                    "route": {"coding": [{"system": SNOMED, "code": "47625008", "display": "Intravenous"}]},
                    "doseAndRate": [
                        {"doseQuantity": {"value": 20, "unit": "mg", "system": UCUM, "code": "mg"}}
                    ],
                }
            ],
        },
        "request": {"method": "POST", "url": "MedicationRequest"},
    }


def synthea_bundle() -> tuple[Path, bytes, int]:
    """The largest bundle in the sample with the ketamine order added: (source path, JSON bytes, entries)."""
    files = sorted(SYNTHEA.glob("*.json"), key=lambda p: (p.stat().st_size, p.name))
    if not files:
        raise FileNotFoundError(f"no bundles in {SYNTHEA}")
    path = files[-1]
    bundle = json.loads(path.read_bytes())
    patient = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    bundle["entry"].append(ketamine_entry(patient.get("fullUrl") or f"Patient/{patient['resource']['id']}"))
    return (
        path,
        json.dumps(bundle, indent=4).encode(),
        len(bundle["entry"]),
    )  # indent=4: as the sample is written


def bench_bundle(kb: KnowledgeBase, runs: int, repeat: int) -> tuple[str, float] | None:
    if importlib.util.find_spec("ketamine_cds.adapters.fhir") is None:
        print("b. FHIR bundle: SKIPPED (ketamine_cds.adapters.fhir does not exist yet)")
        return None
    path, raw, entries = synthea_bundle()
    data = parse_json(raw)
    facts = facts_from_document(data, today=TODAY, kb=kb)
    assessment = assess(facts, kb)
    check = assessment.dose_check
    print(f"b. FHIR bundle: {path.name} + ketamine 20 mg IV bolus order")
    print(
        f"  {entries} entries, {len(raw):,} bytes; verdict {assessment.verdict.value}; "
        f"dose check {check.status.value if check else 'none (order not found?)'}; "
        f"weight {f'{float(facts.weight_kg):.1f} kg' if facts.weight_kg is not None else 'none'}; "
        f"conditions {len(facts.conditions) if facts.conditions is not None else None}; "
        f"opioids {len(facts.opioids) if facts.opioids is not None else None}"
    )

    def parse_only() -> None:
        for _ in range(runs):
            parse_json(raw)

    def adapter_only() -> None:
        for _ in range(runs):
            facts_from_document(data, today=TODAY, kb=kb)

    def end_to_end() -> None:
        for _ in range(runs):
            assess(facts_from_document(parse_json(raw), today=TODAY, kb=kb), kb)

    rows = [
        ("parse_json", best_seconds(parse_only, repeat)),
        ("facts_from_document (pre-parsed)", best_seconds(adapter_only, repeat)),
        ("parse_json + facts_from_document + assess", best_seconds(end_to_end, repeat)),
    ]
    print(f"  {'stage':42} {'runs':>5} {'ms/bundle':>10} {'bundles/s':>10} {'MB/s':>7}")
    for name, seconds in rows:
        per = seconds / runs
        print(f"  {name:42} {runs:>5} {per * 1e3:>10.2f} {1 / per:>10.1f} {len(raw) / per / 1e6:>7.1f}")
    per_end = rows[-1][1] / runs
    size = f"{entries} entries, {len(raw) / 1e6:.1f} MB"
    return f"Synthea bundle ({size}) end to end {1 / per_end:.1f}/s ({per_end * 1e3:.0f} ms)", per_end


# --- profile ----------------------------------------------------------------------------------------


def profile(mix: Sequence[Facts], kb: KnowledgeBase, calls: int, top: int = 12) -> None:
    rounds = _rounds(calls, mix)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(rounds):
        for facts in mix:
            assess(facts, kb)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(top)
    print(f"cProfile of assess over the mix ({rounds * len(mix)} calls), top {top} by tottime:")
    lines = out.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    for line in lines[start:]:
        if line.strip():
            print("  " + line.replace(str(Path(__file__).resolve().parents[1]) + "/", ""))


# --- main -------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=200_000, help="assess calls per run (default 200000)")
    parser.add_argument("--render-calls", type=int, default=50_000, help="calls per run with rendering")
    parser.add_argument("--bundle-runs", type=int, default=20, help="bundles per run (default 20)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the best is reported")
    parser.add_argument("--quick", action="store_true", help="a tenth of the counts")
    parser.add_argument("--profile", action="store_true", help="also cProfile assess over the mix")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.render_calls, args.bundle_runs = args.calls // 10, args.render_calls // 10, 3

    kb = load_knowledge()
    mix = build_mix()
    for facts in mix:  # warm up: every code path once, and the knowledge base loaded
        assessment_json(assess(facts, kb), kb)

    print(
        f"bench_engine: Python {platform.python_version()} ({sys.executable}), one process, one thread, "
        f"best of {args.repeat}"
    )
    print("a. from parsed facts")
    print_mix(mix, kb)
    rows = time_facts(mix, kb, args.calls, args.render_calls, args.repeat)
    print_rows(rows)
    print()
    bundle = bench_bundle(kb, args.bundle_runs, args.repeat)
    if args.profile:
        print()
        profile(mix, kb, min(args.calls, 40_000))

    rate = rows[0][1] / rows[0][2]
    render_rate = rows[1][1] / rows[1][2]
    verdict = "met" if rate >= TARGET_PER_S else "NOT met"
    tail = bundle[0] if bundle else "FHIR bundle skipped (no adapter yet)"
    print()
    print(
        f"SUMMARY: {rate:,.0f} assessments/s from facts ({1e6 / rate:.1f} µs; "
        f"target >= {TARGET_PER_S:,}/s {verdict}); {render_rate:,.0f}/s with assessment_json; {tail}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
