"""Site protocols: a hospital's own caps, locations, hidden statements and defaults on top of the
guideline."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from builders import TODAY, condition, facts, iv, messages
from ketamine_cds import DoseStatus, Setting, Verdict, WeightBasis, assess, assessment_json, load_knowledge
from ketamine_cds._render import finding_texts, text_report
from ketamine_cds._site import Site, SiteError, load_site, site_from_toml

KB = load_knowledge()
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "site" / "example-hospital.toml"
SPINE = {"procedure": None}


def site(**sections: Any) -> Site:
    data = {"site": {"name": "Test Hospital", "version": "1"}, **sections}
    return site_from_toml(data, KB, digest="sha256:test")


def refused(**sections: Any) -> SiteError:
    with pytest.raises(SiteError) as caught:
        site(**sections)
    return caught.value


def spine(**changes: Any) -> Any:
    from builders import APPENDECTOMY

    return facts(**{"procedure": APPENDECTOMY, **changes})


# --- the held-out checks of the issue ---------------------------------------------------------------------


def test_a_25_mg_bolus_for_80_kg_is_within_the_guideline_and_over_the_example_sites_20_mg() -> None:
    order = iv(25, "mg")
    assert assess(spine(order=order)).verdict is Verdict.CONSIDER  # 0.3125 mg/kg
    example = load_site(EXAMPLE, KB)
    a = assess(spine(order=order), site=example)
    assert a.verdict is Verdict.DOSE_EXCEEDS_LIMIT
    check = assessment_json(a)["dose_check"]
    assert (check["limit_source"], check["limit_amount"], check["guideline_limit_per_kg"]) == (
        "site",
        20,
        0.35,
    )
    finding = next(f for f in a.findings if f.statement.id == "dose-bolus-limit")
    summary, detail = finding_texts(finding)
    assert summary == "Bolus 25 mg (0.31 mg/kg) is over the site protocol's 20 mg limit: max 20 mg"
    assert "Site protocol Example Hospital acute pain service (2026-12-01)" in detail
    assert "the guideline's own is 0.35 mg/kg, 28 mg for this weight" in detail


def test_raising_the_bolus_cap_to_05_mg_per_kg_without_allowing_it_is_refused(tmp_path: Path) -> None:
    error = refused(dose={"dose-bolus-limit": {"max_mg_per_kg": "0.5"}})
    assert error.field == "dose.dose-bolus-limit.max_mg_per_kg" and "allow_above_guideline" in error.message
    path = tmp_path / "loose.toml"
    path.write_text('[site]\nname = "X"\nversion = "1"\n[dose.dose-bolus-limit]\nmax_mg_per_kg = "0.5"\n')
    case = tmp_path / "case.json"
    case.write_text(json.dumps({"indication": "crps", "patient": {"conditions": []}}))
    done = subprocess.run(
        [sys.executable, "-m", "ketamine_cds", "assess", str(case), "--site", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "dose.dose-bolus-limit.max_mg_per_kg" in done.stderr


# --- caps -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dose", "status"), [("24", DoseStatus.WITHIN), ("24.01", DoseStatus.EXCEEDS), ("25", DoseStatus.EXCEEDS)]
)
def test_a_tighter_per_kg_cap_applies_at_and_above_it(dose: str, status: DoseStatus) -> None:
    tight = site(dose={"dose-bolus-limit": {"max_mg_per_kg": "0.3"}})  # 24 mg for 80 kg
    a = assess(spine(order=iv(dose, "mg")), site=tight)
    assert a.dose_check is not None and a.dose_check.status is status
    assert a.dose_check.limit_source == "site" and a.dose_check.limit_per_kg == Fraction(3, 10)


def test_a_looser_cap_allowed_by_the_site_applies_and_every_finding_says_so() -> None:
    loose = site(dose={"dose-bolus-limit": {"max_mg_per_kg": "0.5", "allow_above_guideline": True}})
    a = assess(spine(order=iv("0.45", "mg/kg")), site=loose)
    assert a.verdict is Verdict.CONSIDER and a.dose_check is not None
    assert a.dose_check.limit_source == "site" and a.dose_check.guideline_limit_per_kg == Fraction(35, 100)
    detail = finding_texts(next(f for f in a.findings if f.statement.id == "dose-bolus-limit"))[1]
    assert "above the guideline's own (0.35 mg/kg" in detail and "allow_above_guideline" in detail
    assert assess(spine(order=iv("0.45", "mg/kg"))).verdict is Verdict.DOSE_EXCEEDS_LIMIT


@pytest.mark.parametrize(
    ("kg", "dose", "status", "source"),
    [
        (40, "14", DoseStatus.WITHIN, "guideline"),  # 0.35 x 40 = 14 mg, under the 20 mg cap: the guideline's
        (40, "14.01", DoseStatus.EXCEEDS, "guideline"),
        (80, "20", DoseStatus.WITHIN, "site"),  # 0.35 x 80 = 28 mg: the 20 mg cap is the tighter
        (80, "20.01", DoseStatus.EXCEEDS, "site"),
        (80, "0.25", DoseStatus.WITHIN, "site"),  # 0.25 mg/kg is 20 mg for 80 kg: at the cap
        (80, "0.26", DoseStatus.EXCEEDS, "site"),  # per kg, over the cap in mg for this weight
    ],
)
def test_an_absolute_cap_below_and_above_the_per_kg_limit_for_light_and_heavy_patients(
    kg: int, dose: str, status: DoseStatus, source: str
) -> None:
    capped = site(dose={"dose-bolus-limit": {"max_mg": "20"}})
    unit = "mg/kg" if Fraction(dose) < 1 else "mg"
    a = assess(spine(order=iv(dose, unit), weight_kg=Fraction(kg)), site=capped)
    assert a.dose_check is not None and (a.dose_check.status, a.dose_check.limit_source) == (status, source)


def test_an_absolute_cap_checks_a_dose_in_mg_even_without_a_weight() -> None:
    capped = site(dose={"dose-bolus-limit": {"max_mg": "20"}})
    over = assess(spine(order=iv(25, "mg"), weight_kg=None), site=capped)
    assert over.verdict is Verdict.DOSE_EXCEEDS_LIMIT and over.dose_check is not None
    assert over.dose_check.status is DoseStatus.EXCEEDS
    under = assess(spine(order=iv(15, "mg"), weight_kg=None), site=capped)
    assert under.dose_check is not None and under.dose_check.status is DoseStatus.NO_WEIGHT
    assert under.verdict is Verdict.NEEDS_INFORMATION  # the per-kg limit is still unchecked


def test_infusion_caps_and_the_eligibility_limits_show_the_sites_beside_the_guidelines() -> None:
    example = load_site(EXAMPLE, KB)
    a = assess(spine(setting=Setting.NON_INTENSIVE_CARE), site=example)
    limits = assessment_json(a)["dose_limits"]
    assert (limits["max_bolus_mg"], limits["max_infusion_mg_per_h"]) == (
        20,
        40,
    )  # 0.3 x 80 = 24; 0.5 x 80 = 40
    assert (limits["bolus_limit_source"], limits["infusion_limit_source"]) == ("site", "site")
    assert (
        limits["guideline_bolus_limit_mg_per_kg"],
        limits["guideline_infusion_limit_mg_per_kg_per_h"],
    ) == (
        0.35,
        1.0,
    )
    assert assessment_json(a)["site"] == {
        "name": "Example Hospital acute pain service",
        "version": "2026-12-01",
        "digest": example.digest,
    }
    assert "Site protocol: Example Hospital acute pain service" in text_report(a)


def test_the_knowledge_base_digest_covers_the_site_file() -> None:
    plain = assess(spine())
    with_site = assess(spine(), site=load_site(EXAMPLE, KB))
    other = assess(spine(), site=site())
    digests = {plain.knowledge_base_digest, with_site.knowledge_base_digest, other.knowledge_base_digest}
    assert len(digests) == 3 and plain.knowledge_base_digest == KB.digest


# --- other sections ---------------------------------------------------------------------------------------


def test_a_hidden_information_statement_is_not_shown_and_changes_nothing() -> None:
    hiding = site(statements={"pretest-none-routine": {"hide": True}})
    shown = assess(facts(use="crps", procedure=None))
    hidden = assess(facts(use="crps", procedure=None), site=hiding)
    assert (
        "pretest-none-routine" in shown.statement_ids and "pretest-none-routine" not in hidden.statement_ids
    )
    assert hidden.verdict is shown.verdict


@pytest.mark.parametrize("statement", ["contra-pregnancy", "dose-bolus-limit", "caution-substance-misuse"])
def test_a_statement_that_can_change_the_verdict_or_warns_cannot_be_hidden(statement: str) -> None:
    error = refused(statements={statement: {"hide": True}})
    assert error.field == f"statements.{statement}.hide"


def test_the_sites_weight_age_replaces_the_product_default() -> None:
    measured = TODAY - dt.timedelta(days=20)
    order = dict(order=iv(20, "mg"), weight_basis=WeightBasis.MEASURED, weight_measured=measured)
    assert "weight-old" not in messages(assess(spine(**order)), "dose-bolus-limit")  # 20 days: under 30
    strict = site(weight={"max_age_days": 14})
    assert "weight-old" in messages(assess(spine(**order), site=strict), "dose-bolus-limit")


@pytest.mark.parametrize(
    ("sections", "key"),
    [
        ({"sitee": {}}, "sitee"),
        ({"dose": {"dose-bolus-limit": {"max_mg_per_kilo": "0.3"}}}, "dose.dose-bolus-limit.max_mg_per_kilo"),
        ({"dose": {"dose-nonsense": {"max_mg": "20"}}}, "dose.dose-nonsense"),
        ({"dose": {"acute-painful-surgery": {"max_mg": "20"}}}, "dose.acute-painful-surgery"),
        ({"dose": {"dose-bolus-limit": {"max_mg": "twenty"}}}, "dose.dose-bolus-limit.max_mg"),
        ({"dose": {"dose-bolus-limit": {"max_mg": "0"}}}, "dose.dose-bolus-limit.max_mg"),
        ({"dose": {"dose-bolus-limit": {"max_mg": "-5"}}}, "dose.dose-bolus-limit.max_mg"),
        ({"dose": {"dose-bolus-limit": {"max_mg_per_h": "50"}}}, "dose.dose-bolus-limit.max_mg_per_h"),
        (
            {"dose": {"dose-infusion-limit": {"max_mg_per_kg_per_h": "1.5"}}},
            "dose.dose-infusion-limit.max_mg_per_kg_per_h",
        ),
        ({"statements": {"no-such-statement": {"hide": True}}}, "statements.no-such-statement"),
        ({"statements": {"pretest-ecg": {"hide": "yes"}}}, "statements.pretest-ecg.hide"),
        ({"override-reasons": [{"code": "Has Spaces", "display": "x"}]}, "override-reasons[0].code"),
        ({"weight": {"max_age_days": 0}}, "weight.max_age_days"),
        ({"display": {"bolus_step_mg": "-1"}}, "display.bolus_step_mg"),
        (
            {"intensive-monitoring": {"locations": [{"system": "x"}]}},
            "intensive-monitoring.locations[0].code",
        ),
    ],
)
def test_a_wrong_key_or_value_is_refused_naming_the_key(sections: dict[str, Any], key: str) -> None:
    assert refused(**sections).field == key


def test_name_and_version_are_required() -> None:
    with pytest.raises(SiteError) as caught:
        site_from_toml({"site": {"name": "X"}}, KB, digest="d")
    assert caught.value.field == "site.version"


def test_the_chronic_range_and_the_ceiling_can_be_tightened_too() -> None:
    tight = site(
        dose={
            "chronic-dose-range": {"max_mg_per_kg_per_h": "1.5"},
            "dose-ceiling": {"max_mg_per_kg_per_h": "5"},
        }
    )
    crps = assess(facts(use="crps", procedure=None, order=iv("1.6", "mg/kg/h")), site=tight)
    assert crps.verdict is Verdict.DOSE_EXCEEDS_LIMIT
    icu = assess(spine(order=iv(6, "mg/kg/h"), setting=Setting.INTENSIVE_CARE), site=tight)
    assert icu.dose_check is not None and (icu.dose_check.statement, icu.dose_check.limit_source) == (
        "dose-ceiling",
        "site",
    )


def test_a_contraindication_is_untouched_by_a_site() -> None:
    a = assess(spine(conditions=(condition("pregnancy"),)), site=load_site(EXAMPLE, KB))
    assert a.verdict is Verdict.CONTRAINDICATED


# --- the doors: FHIR, the command line, the batch audit ----------------------------------------------------


def _stay(location: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": {"resourceType": "Patient", "id": "p1"}},
            {
                "resource": {
                    "resourceType": "Encounter",
                    "id": "e1",
                    "status": "in-progress",
                    "class": {"code": "IMP"},
                    "location": [{"location": {"reference": "Location/u1"}, "status": "active"}],
                }
            },
            {"resource": {"resourceType": "Location", "id": "u1", **location}},
        ],
    }


@pytest.mark.parametrize(
    "location",
    [
        {"identifier": [{"system": "https://hospital.example.org/location", "value": "4W-STEPDOWN"}]},
        {"type": [{"coding": [{"system": "https://hospital.example.org/location", "code": "4W-STEPDOWN"}]}]},
        {"name": "step-down  4 WEST"},  # by name, ignoring case and spaces
    ],
    ids=["identifier", "type code", "name"],
)
def test_a_location_the_site_counts_as_intensive_monitoring(location: dict[str, Any]) -> None:
    from ketamine_cds.adapters.fhir import facts_from_bundle

    bundle = _stay(location)
    assert facts_from_bundle(bundle, as_of=TODAY).setting is not Setting.INTENSIVE_CARE
    example = load_site(EXAMPLE, KB)
    assert facts_from_bundle(bundle, as_of=TODAY, site=example).setting is Setting.INTENSIVE_CARE


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ketamine_cds", *args], capture_output=True, text=True, check=False
    )


def test_limits_with_a_site_prints_the_sites_and_the_guidelines() -> None:
    done = _cli("limits", "--weight", "80kg", "--setting", "non-intensive-care", "--site", str(EXAMPLE))
    assert done.returncode == 0, done.stderr
    assert (
        "IV bolus     max 20 mg (0.3 mg/kg, in every setting); site protocol, the guideline's is 0.35 mg/kg"
        in (done.stdout.replace("max 20 mg; site", "max 20 mg; site"))
        or "site protocol, the guideline's is 0.35 mg/kg" in done.stdout
    )
    data = json.loads(
        _cli(
            "limits", "--weight", "80kg", "--setting", "non-intensive-care", "--site", str(EXAMPLE), "--json"
        ).stdout
    )
    assert (data["max_bolus_mg"], data["bolus_limit_source"], data["guideline_bolus_limit_mg_per_kg"]) == (
        20,
        "site",
        0.35,
    )


def test_the_site_can_come_from_the_environment(tmp_path: Path) -> None:
    import os

    case = tmp_path / "case.json"
    case.write_text(
        json.dumps(
            {
                "indication": "perioperative",
                "procedure": {"class": "spine"},
                "patient": {"weight": {"value": 80, "unit": "kg"}, "conditions": []},
                "order": {"route": "intravenous", "dose": {"value": 25, "unit": "mg"}},
            }
        )
    )
    env = {**os.environ, "KETAMINE_CDS_SITE": str(EXAMPLE)}
    done = subprocess.run(
        [sys.executable, "-m", "ketamine_cds", "assess", str(case), "--json"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    result = json.loads(done.stdout)
    assert result["verdict"] == "dose-exceeds-limit" and result["dose_check"]["limit_source"] == "site"
    plain = json.loads(_cli("assess", str(case), "--json").stdout)
    assert plain["verdict"] == "consider" and plain["site"] is None


def test_the_audit_checks_against_the_site_and_keeps_the_guidelines_verdict_beside(tmp_path: Path) -> None:
    import duckdb

    from ketamine_cds.audit.canonical import facts_from_row
    from ketamine_cds.audit.decide import decide
    from ketamine_cds.audit.run import run_audit

    rows = tmp_path / "rows.csv"
    header = "admin_id,patient_id,administered_at,route,kind,dose_value,dose_unit,weight_value,weight_unit,"
    header += "setting,indication,procedure_class,conditions"
    lines = [header]
    for i, (dose, unit, kg) in enumerate(
        [
            (25, "mg", 80),
            (20, "mg", 80),
            (20.01, "mg", 80),
            (14, "mg", 40),
            (0.25, "mg/kg", 80),
            (0.3, "mg/kg", 80),
        ]
    ):
        lines.append(
            f"A{i},P{i},2025-01-01 10:00:00,intravenous,bolus,{dose},{unit},{kg},kg,non-intensive-care,"
            "perioperative,spine,"
        )
    rows.write_text("\n".join(lines) + "\n")
    example = load_site(EXAMPLE, KB)
    summary = run_audit(rows, tmp_path / "out", site=example)
    assert summary["site"]["name"] == "Example Hospital acute pain service"
    con = duckdb.connect()
    try:
        found = con.execute(
            f"SELECT admin_id, verdict, guideline_verdict, limit_source, dose_status FROM "
            f"read_parquet('{tmp_path / 'out' / 'findings.parquet'}') ORDER BY admin_id"
        ).fetchall()
        source = con.execute(
            f"SELECT * FROM read_csv('{rows}', all_varchar = true) ORDER BY admin_id"
        ).fetchall()
        columns = [d[0] for d in con.description or []]
    finally:
        con.close()
    assert [(r[0], r[1], r[2]) for r in found] == [
        (
            "A0",
            "dose-exceeds-limit",
            "consider",
        ),  # 25 mg: over the site's 20 mg, within the guideline's 28 mg
        ("A1", "consider", "consider"),
        ("A2", "dose-exceeds-limit", "consider"),
        ("A3", "dose-exceeds-limit", "consider"),  # 14 mg for 40 kg: 0.35 mg/kg, over the site's 0.3 mg/kg
        ("A4", "consider", "consider"),
        ("A5", "dose-exceeds-limit", "consider"),  # 0.3 mg/kg for 80 kg is 24 mg: over the 20 mg cap
    ]
    assert summary["differs_from_guideline"] == 4
    for row in source:  # the audit's answer is the engine's, row by row, site and all
        canonical: dict[str, Any] = dict(zip(columns, row, strict=True))
        canonical["dose_value"] = float(canonical["dose_value"])
        canonical["weight_value"] = float(canonical["weight_value"])
        canonical["administered_at"] = dt.datetime(2025, 1, 1, 10)
        live = decide(canonical, KB, example)
        check = assess(facts_from_row(canonical, KB), KB, example).dose_check
        assert check is not None
        audited = next(r for r in found if r[0] == canonical["admin_id"])
        assert (live.verdict, live.guideline_verdict, check.limit_source, live.dose_status) == audited[1:]


@pytest.mark.parametrize("written", ["0_3", "2_0", "\uff10.3"])
def test_a_cap_written_with_a_digit_separator_or_other_digits_is_refused(written: str) -> None:
    # Decimal("0_3") is 3 and Decimal("2_0") is 20: a pharmacist's slip must not become a cap
    error = refused(dose={"dose-bolus-limit": {"max_mg": written}})
    assert error.field == "dose.dose-bolus-limit.max_mg" and "plain number" in error.message
