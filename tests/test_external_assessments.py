"""Every external patient through reader, engine and both renderers, as-is and with an order."""

import json

import pytest

from builders import TODAY
from external_bundles import NAMES, bundle_named, with_ketamine_bolus
from ketamine_cds import Verdict, assess, assessment_json, text_report
from ketamine_cds._cli import main
from ketamine_cds._render import SUMMARY_MAX
from ketamine_cds.adapters.fhir import facts_from_bundle


def _check_contract(result: dict[str, object]) -> None:
    assert result["verdict"] in {v.value for v in Verdict}
    findings = result["findings"]
    assert isinstance(findings, list)
    for finding in findings:
        assert len(finding["summary"]) <= SUMMARY_MAX and finding["statement"] and finding["source"]["url"]
    json.dumps(result)  # plain JSON numbers only


@pytest.mark.parametrize("name", NAMES)
def test_eligibility_question_for_every_external_patient(name: str) -> None:
    assessment = assess(facts_from_bundle(bundle_named(name), as_of=TODAY))
    result = assessment_json(assessment)
    _check_contract(result)
    assert assessment.dose_check is None
    assert text_report(assessment).startswith("Verdict: ")


@pytest.mark.parametrize("name", NAMES)
def test_ketamine_order_for_every_external_patient(name: str) -> None:
    assessment = assess(facts_from_bundle(with_ketamine_bolus(bundle_named(name)), as_of=TODAY))
    _check_contract(assessment_json(assessment))
    assert assessment.dose_check is not None
    if assessment.dose_limits.weight_kg is None:
        assert assessment.dose_check.status.value == "cannot-check-no-weight"
        assert assessment.verdict in {
            Verdict.NEEDS_INFORMATION,
            Verdict.CONTRAINDICATED,
            Verdict.INSUFFICIENT_EVIDENCE,
        }
    else:
        over = assessment.dose_limits.weight_kg * 35 / 100 < 20
        assert (assessment.dose_check.status.value == "exceeds") is over


def test_the_command_assesses_a_synthea_file(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(with_ketamine_bolus(bundle_named(NAMES[0])), default=float))
    assert main(["assess", str(path), "--json", "--as-of", TODAY.isoformat()]) == 0
    _check_contract(json.loads(capsys.readouterr().out))
