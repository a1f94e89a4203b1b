"""chronic-weak-evidence: weak or no evidence for immediate relief -> insufficient-evidence."""

import pytest

from builders import ids, run
from ketamine_cds import Verdict

S = "chronic-weak-evidence"
WEAK = [
    "neuropathic-pain",
    "fibromyalgia",
    "cancer-pain",
    "ischemic-pain",
    "migraine",
    "low-back-pain",
    "phantom-limb-pain",
    "postherpetic-neuralgia",
    "spinal-cord-injury-pain",
]


@pytest.mark.parametrize("use", WEAK)
def test_weak_evidence_conditions_are_insufficient_evidence(use: str) -> None:
    a = run(use=use, procedure=None)
    assert a.verdict is Verdict.INSUFFICIENT_EVIDENCE
    assert {S, "chronic-no-long-term", "evidence-2019-review"} <= ids(a)
    finding = next(f for f in a.findings if f.statement.id == S)
    assert finding.statement.certainty is None and finding.statement.evidence == "weak or none"


def test_crps_does_not_fire() -> None:
    assert S not in ids(run(use="crps", procedure=None))
