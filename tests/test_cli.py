"""The ketamine-cds command, run as a real process: exit codes, one-line errors, the contract's JSON."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
CASES = ROOT / "examples" / "cases"


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ketamine_cds", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assess_json(document: dict[str, Any]) -> dict[str, Any]:
    done = cli("assess", "-", "--json", stdin=json.dumps(document))
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


EXPECTED = {
    "appendectomy-bolus.json": "consider",
    "bolus-over-limit.json": "dose-exceeds-limit",
    "colonoscopy.json": "not-indicated",
    "crps-infusion.json": "consider",
    "infusion-ml-per-hour.json": "consider",
    "no-weight.json": "needs-information",
    "oral-follow-up.json": "may-consider",
    "pregnancy.json": "contraindicated",
    "sedation.json": "out-of-scope",
}


def test_every_example_is_listed() -> None:
    assert {p.name for p in CASES.glob("*.json")} == set(EXPECTED)


@pytest.mark.parametrize(("name", "verdict"), sorted(EXPECTED.items()))
def test_examples_give_their_verdicts_as_contract_json(name: str, verdict: str) -> None:
    done = cli("assess", str(CASES / name), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["verdict"] == verdict
    for finding in result["findings"]:
        assert set(finding) >= {"statement", "severity", "summary", "detail", "grade", "certainty", "source"}
        assert finding["severity"] in {"info", "warning", "critical"}
        assert len(finding["summary"]) < 140
        assert finding["grade"] in {"A", "B", "C", "D", "I", None}
        assert finding["certainty"] in {"high", "moderate", "low", None}
        assert finding["source"]["url"].startswith("https://doi.org/")
    assert set(result["dose_limits"]) >= {"weight_kg", "max_bolus_mg", "max_infusion_mg_per_h"}
    assert result["knowledge_base"]["version"]


def test_readable_report_puts_the_verdict_first_with_numbers() -> None:
    done = cli("assess", str(CASES / "bolus-over-limit.json"))
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert lines[0] == "Verdict: DOSE-EXCEEDS-LIMIT"
    assert "max 24.44 mg" in done.stdout  # 154 lb = 69.85 kg x 0.35 = 24.4475, rounded down
    assert "dose-bolus-limit: grade C, certainty moderate" in done.stdout


def test_json_numbers_are_rounded_for_display_and_maxima_rounded_down() -> None:
    result = assess_json(
        {"patient": {"weight": {"value": 71.3, "unit": "kg"}, "conditions": []}, "indication": "crps"}
    )
    assert result["dose_limits"] == {
        **result["dose_limits"],
        "weight_kg": 71.3,
        "max_bolus_mg": 24.95,  # 24.955: 24.96 mg would be over the limit
        "max_infusion_mg_per_h": 142.6,  # CRPS: the chronic pain range, 2 mg/kg/h outside intensive care
        "guideline": "chronic",
    }


def test_the_order_is_restated_as_ordered_and_json_numbers_stay_rounded() -> None:
    case = json.loads((CASES / "appendectomy-bolus.json").read_text())
    case["order"]["dose"] = {"value": 0.005, "unit": "g"}
    result = assess_json(case)
    assert result["dose_check"]["ordered"] == "0.005 g"  # was "0 g"
    [dose] = [f["summary"] for f in result["findings"] if f["statement"] == "dose-bolus-limit"]
    assert dose == "Bolus 0.005 g (0.06 mg/kg) is within the 0.35 mg/kg limit"
    case["order"]["dose"] = {"value": 28.19, "unit": "mg"}  # 0.352375 mg/kg for 80 kg
    result = assess_json(case)
    assert result["verdict_reason"] == "Bolus 28.19 mg (0.352 mg/kg) is over the 0.35 mg/kg limit: max 28 mg"
    # a JSON number has at most 2 decimals (the contract); over the limit it is rounded up, never onto 0.35
    assert result["dose_check"]["per_kg"] == 0.36
    done = cli("assess", "-", stdin=json.dumps(case))
    assert "  Ordered bolus: 28.19 mg (0.352 mg/kg) -> exceeds the limit" in done.stdout


BAD = [
    ("not json", "{nope", "not JSON"),
    ("not a bundle", '{"resourceType": "Patient"}', "resourceType"),
    ("negative weight", '{"patient": {"weight": {"value": -70, "unit": "kg"}}}', "patient.weight"),
    ("zero weight", '{"patient": {"weight": {"value": 0, "unit": "kg"}}}', "patient.weight"),
    ("NaN weight", '{"patient": {"weight": {"value": NaN, "unit": "kg"}}}', "patient.weight"),
    ("absurd weight", '{"patient": {"weight": {"value": 600, "unit": "kg"}}}', "patient.weight"),
    ("weight in mg", '{"patient": {"weight": {"value": 70, "unit": "mg"}}}', "patient.weight"),
    ("tiny weight in g", '{"patient": {"weight": {"value": 70, "unit": "g"}}}', "patient.weight"),
    ("weight in a rate", '{"patient": {"weight": {"value": 60, "unit": "mg/h"}}}', "patient.weight"),
    (
        "unknown unit",
        '{"order": {"route": "intravenous", "dose": {"value": 5, "unit": "mg/furlong"}}}',
        "order.dose.unit",
    ),
    (
        "mass as a rate",
        '{"order": {"route": "intravenous", "kind": "infusion", "dose": {"value": 5, "unit": "mg"}}}',
        "order.dose.unit",
    ),
    ("missing route", '{"order": {"dose": {"value": 5, "unit": "mg"}}}', "order.route"),
    ("negative dose", '{"order": {"route": "iv", "dose": {"value": -5, "unit": "mg"}}}', "order.dose.value"),
    ("typo", '{"patient": {"wieght": {"value": 70, "unit": "kg"}}}', "patient.wieght"),
    ("unknown indication", '{"indication": "hangover"}', "indication"),
    ("a list", "[]", "expected a JSON object"),
]


@pytest.mark.parametrize(("label", "text", "field"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_exits_2_with_one_line_naming_the_field(label: str, text: str, field: str) -> None:
    done = cli("assess", "-", "--json", stdin=text)
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1
    assert field in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_file_is_a_clear_error() -> None:
    done = cli("assess", "/nonexistent/case.json")
    assert done.returncode == 2 and "cannot read input" in done.stderr


def test_statements_lists_every_statement_with_grade_and_source() -> None:
    done = cli("statements", "--json")
    data = json.loads(done.stdout)
    assert len(data["statements"]) == 30
    bolus = next(s for s in data["statements"] if s["id"] == "dose-bolus-limit")
    assert (bolus["grade"], bolus["certainty"], bolus["thresholds"], bolus["verification"]) == (
        "C",
        "moderate",
        {"limit_mg_per_kg": "0.35"},
        ["seed", "V2v"],
    )
    text = cli("statements").stdout
    assert "not stated" in text
    assert "chronic-dose-range  [grade C; certainty low; V2 (2 sources)]" in text
    assert "chronic-weak-evidence  [grade D; certainty low; seed V2 (1 source for the grade)]" in text


@pytest.mark.parametrize(
    ("weight", "bolus", "infusion"),
    [
        ("80kg", 28, 80),
        ("80 kg", 28, 80),
        ("176lb", 27.94, 79.83),
        ("43000g", 15.05, 43),
        ("200g", 0.07, 0.2),
    ],
)
def test_limits_for_a_weight(weight: str, bolus: float, infusion: float) -> None:
    done = cli("limits", "--weight", weight, "--json")
    assert done.returncode == 0
    data = json.loads(done.stdout)
    assert (data["max_bolus_mg"], data["max_infusion_mg_per_h"]) == (bolus, infusion)


def test_limits_in_intensive_care_stop_at_the_highest_rate_the_guidelines_describe() -> None:
    data = json.loads(cli("limits", "--weight", "80kg", "--setting", "intensive-care", "--json").stdout)
    assert (data["max_infusion_mg_per_h"], data["infusion_statement"], data["max_bolus_mg"]) == (
        560,
        "dose-ceiling",
        28,
    )


def test_limits_for_a_chronic_use_give_the_chronic_range() -> None:
    data = json.loads(cli("limits", "--weight", "80kg", "--use", "crps", "--json").stdout)
    assert (data["max_infusion_mg_per_h"], data["infusion_minimum_mg_per_kg_per_h"]) == (160, 0.5)
    text = cli("limits", "--weight", "80kg", "--use", "crps", "--setting", "non-intensive-care").stdout
    assert "chronic pain range" in text and "range used from 0.5 mg/kg/h" in text
    done = cli("limits", "--weight", "80kg", "--use", "hangover")
    assert done.returncode == 2 and "--use" in done.stderr


@pytest.mark.parametrize(
    "weight", ["-80kg", "0kg", "600kg", "70g", "70mg", "0.19kg", "80", "eighty kg", "80 furlongs"]
)
def test_limits_rejects_impossible_weights(weight: str) -> None:
    done = cli("limits", "--weight", weight)
    assert done.returncode == 2 and "--weight" in done.stderr


@pytest.mark.parametrize(
    "text",
    [
        '{"order": {"route": "iv", "dose": {"value": 1e99999999, "unit": "mg"}}}',
        '{"order": {"route": "iv", "dose": {"value": "1e99999999", "unit": "mg"}}}',
        '{"patient": {"weight": {"value": 1e-99999999, "unit": "kg"}}}',
        '{"resourceType": "Bundle", "type": "collection", "entry": [{"resource": '
        '{"resourceType": "Observation", "status": "final", '
        '"code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]}, '
        '"valueQuantity": {"value": 7e88888888, "unit": "kg"}}}]}',
    ],
)
def test_enormous_exponents_are_refused_at_once_not_computed(text: str) -> None:
    done = cli("assess", "-", stdin=text)
    assert done.returncode == 2 and "out of range" in done.stderr


def test_an_unpaired_surrogate_escape_is_not_text_and_exits_2() -> None:
    done = cli("assess", "-", "--json", stdin='{"indication": "perioperative", "note": "x\\ud800"}')
    assert done.returncode == 2 and "surrogate" in done.stderr and "Traceback" not in done.stderr
    paired = cli(
        "assess",
        "-",
        "--json",
        stdin='{"indication": "perioperative", "procedure": {"display": "\\ud83d\\ude00"}}',
    )
    assert "surrogate" not in paired.stderr


# --- from a review of the case document, the CLI and the page ------------------------------------------

MALFORMED = [
    ('{"indication": ["crps"]}', "indication"),
    ('{"procedure": {"class": ["spine"]}}', "procedure.class"),
    ('{"patient": {"conditions": [{"concept": ["x"]}]}}', "patient.conditions[0].concept"),
    ('{"patient": {"conditions": [{"system": "snomed", "code": 5}]}}', "patient.conditions[0].code"),
    ('{"indication": "perioperative", "procedure": {"system": 5, "code": "1"}}', "procedure.system"),
    ('{"patient": {"conditions": [{"code": "F20.9"}]}}', "patient.conditions[0]"),
    ('{"patient": {"conditions": [{"display": "schizophrenia"}]}}', "patient.conditions[0]"),
    ('{"case_version": 2}', "case_version"),
    ('{"as_of": "2026-11-24xyz"}', "as_of"),
    ('{"order": {"route": "iv", "display": {"a": 1}}}', "order.display"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
]


@pytest.mark.parametrize(("text", "field"), MALFORMED, ids=[m[1] + str(i) for i, m in enumerate(MALFORMED)])
def test_malformed_case_documents_exit_2_not_an_internal_error(text: str, field: str) -> None:
    done = cli("assess", "-", "--json", stdin=text)
    assert done.returncode == 2, done.stderr
    assert field in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_weight_beyond_any_float_is_refused_by_limits() -> None:
    done = cli("limits", "--weight", "1" + "0" * 400 + "kg")
    assert done.returncode == 2 and "--weight" in done.stderr and "Traceback" not in done.stderr


def test_a_stated_pregnancy_counts_when_the_conditions_are_unknown() -> None:
    patient = {"weight": {"value": 80, "unit": "kg"}, "pregnant": True, "opioids": []}
    result = assess_json({"patient": patient, "indication": "crps"})
    assert result["verdict"] == "contraindicated"
    screening = {s["statement"]: s["status"] for s in result["screening"]}
    assert screening["contra-pregnancy"] == "present" and screening["contra-psychosis"] == "unknown"
    ruled_out = assess_json({"patient": {**patient, "pregnant": False}, "indication": "crps"})
    screening = {s["statement"]: s["status"] for s in ruled_out["screening"]}
    assert screening["contra-pregnancy"] == "absent" and screening["contra-psychosis"] == "unknown"
    assert ruled_out["verdict"] == "needs-information"


@pytest.mark.parametrize(
    ("mg", "amount", "status"), [("21.875", 21.87, "within"), ("21.876", 21.88, "exceeds")]
)
def test_json_dose_numbers_stay_on_their_side_of_the_maximum(mg: str, amount: float, status: str) -> None:
    document = {
        "patient": {"weight": {"value": 62.5, "unit": "kg"}, "conditions": [], "opioids": []},
        "indication": "perioperative",
        "procedure": {"class": "abdominal"},
        "setting": "non-intensive-care",
        "order": {"route": "intravenous", "dose": {"value": float(mg), "unit": "mg"}},
    }
    check = assess_json(document)["dose_check"]
    assert (check["amount"], check["limit_amount"], check["status"]) == (amount, 21.87, status)


def test_an_integral_age_written_with_a_decimal_point_is_read() -> None:
    result = assess_json({"patient": {"age_years": 30.0, "conditions": []}, "indication": "crps"})
    assert result["verdict"]


# --- odd input that would change a dose answer without a word (issue 20) --------------------------------

DIGIT_SEPARATORS = [
    ('{"patient": {"weight": {"value": "7_0", "unit": "kg"}}}', "patient.weight.value"),
    ('{"order": {"route": "iv", "dose": {"value": "0_3", "unit": "mg/kg"}}}', "order.dose.value"),
    (
        '{"order": {"route": "iv", "dose": {"value": 2, "unit": "mL"}, '
        '"concentration": {"value": "1_0", "unit": "mg/mL"}}}',
        "order.concentration.value",
    ),
    ('{"patient": {"weight": {"value": "\u0667\u0660", "unit": "kg"}}}', "patient.weight.value"),  # ٧٠
    ('{"patient": {"weight": {"value": "\uff17\uff10", "unit": "kg"}}}', "patient.weight.value"),  # ７０
]


@pytest.mark.parametrize(("text", "field"), DIGIT_SEPARATORS)
def test_a_number_with_a_digit_separator_or_other_digits_is_refused_naming_the_field(
    text: str, field: str
) -> None:
    # Python's Decimal("7_0") is 70 and Decimal("٧٠") is 70 too: a slip of the keyboard, never a dose
    done = cli("assess", "-", "--json", stdin=text)
    assert done.returncode == 2, done.stdout
    assert field in done.stderr and "plain number" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["limits", "--weight", "7_0kg"], "--weight"),
        (["limits", "--weight", "\uff17\uff10kg"], "--weight"),
        (["synth", "--rows", "1_0", "--out", "never-written"], "--rows"),
        (["synth", "--rows", "10", "--seed", "1_0", "--out", "never-written"], "--seed"),
        (["audit", "no-such-input", "--out", "never-written", "--threads", "1_0"], "--threads"),
        (["test-token", "--keys", "never-written", "--aud", "https://x", "--minutes", "1_0"], "--minutes"),
    ],
)
def test_a_command_line_number_with_a_digit_separator_is_refused_naming_the_flag(
    args: list[str], flag: str, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ketamine_cds", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 2 and flag in done.stderr, done.stderr
    assert not (tmp_path / "never-written").exists()


TWO_ORDERS = (
    '{"indication": "perioperative", "patient": {"weight": {"value": 70, "unit": "kg"}, "conditions": []}, '
    '"order": {"route": "intravenous", "dose": {"value": 5, "unit": "mg/kg"}}, '
    '"order": {"route": "intravenous", "dose": {"value": 0.3, "unit": "mg/kg"}}}'
)
TWO_VALUES = json.dumps(
    {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "resource": {
                    "resourceType": "MedicationRequest",
                    "id": "k1",
                    "status": "draft",
                    "intent": "order",
                    "medicationCodeableConcept": {"text": "ketamine"},
                    "dosageInstruction": [
                        {
                            "route": {"text": "IV"},
                            "doseAndRate": [{"doseQuantity": {"value": 2000, "unit": "mg"}}],
                        }
                    ],
                }
            }
        ],
    }
).replace('"value": 2000', '"value": 2000, "value": 20')


@pytest.mark.parametrize(("text", "key"), [(TWO_ORDERS, "order"), (TWO_VALUES, "value")])
def test_a_key_written_twice_in_one_object_is_refused_not_the_last_one_read(text: str, key: str) -> None:
    # json.loads keeps the last of two keys: a 5 mg/kg order would be read as the 0.3 mg/kg written after it
    done = cli("assess", "-", "--json", stdin=text)
    assert done.returncode == 2, done.stdout
    assert f"'{key}'" in done.stderr and "twice" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


# --- the command line for a newcomer (issue 17) ------------------------------------------------------------


def test_version_names_the_program_and_the_knowledge_base() -> None:
    from importlib.metadata import version

    from ketamine_cds import load_knowledge

    done = cli("--version")
    assert done.returncode == 0
    assert (
        done.stdout == f"ketamine-cds {version('ketamine-cds')} (knowledge base {load_knowledge().version})\n"
    )


COMMANDS = ["assess", "serve", "report", "audit", "synth", "statements", "limits", "test-token"]


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_is_plain_text_without_restructuredtext_markup(command: str) -> None:
    done = cli(*([command] if command else []), "--help")
    assert done.returncode == 0 and "usage: ketamine-cds" in done.stdout
    assert "``" not in done.stdout and ":data:" not in done.stdout and ":func:" not in done.stdout


@pytest.mark.parametrize(
    ("args", "stdin", "hint"),
    [
        (["limits", "--weight", "80,5kg"], None, "'80.5kg', not '80,5kg'"),
        (["limits", "--weight", "80,5 kg"], None, "decimal point, not a comma"),
        (["assess", "-"], '{"patient": {"weight": {"value": "80,5", "unit": "kg"}}}', "'80.5', not '80,5'"),
        (
            ["assess", "-"],
            '{"order": {"route": "iv", "dose": {"value": "4,000", "unit": "mg"}}}',
            "'4.000' or '4000'",
        ),
    ],
)
def test_a_decimal_comma_is_refused_with_a_hint_to_use_a_point(
    args: list[str], stdin: str | None, hint: str
) -> None:
    done = cli(*args, stdin=stdin)
    assert done.returncode == 2 and done.stdout == ""
    assert hint in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_test_token_is_signed_by_a_key_its_trust_list_trusts(tmp_path: Path) -> None:
    import jwt

    aud = "http://127.0.0.1:8000/cds-services/ketamine-order-sign"
    done = cli("test-token", "--keys", str(tmp_path / "keys"), "--aud", aud)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    trust = json.loads((tmp_path / "keys" / "trust-list.json").read_text())
    (issuer,) = trust["issuers"]
    (key,) = issuer["jwks"]["keys"]
    assert key["kty"] == "EC" and key["crv"] == "P-384" and "d" not in key  # public only
    header = jwt.get_unverified_header(token)
    assert (header["alg"], header["kid"]) == ("ES384", key["kid"])
    public = jwt.PyJWK(key).key
    claims = jwt.decode(token, public, algorithms=["ES384"], audience=aud, issuer=issuer["iss"])
    assert claims["exp"] - claims["iat"] == 300 and claims["jti"]
    again = cli("test-token", "--keys", str(tmp_path / "keys"), "--aud", aud).stdout.strip()
    assert jwt.get_unverified_header(again)["kid"] == key["kid"]  # the same key, made once
    assert (tmp_path / "keys" / "test-key.pem").stat().st_mode & 0o077 == 0
    bad = cli("test-token", "--keys", str(tmp_path / "keys"), "--aud", "ketamine-order-sign")
    assert bad.returncode == 2 and "--aud" in bad.stderr
