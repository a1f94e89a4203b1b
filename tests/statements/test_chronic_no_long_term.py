"""chronic-no-long-term: apart from CRPS, no evidence for intermediate- or long-term relief (never the
verdict)."""

import pytest

from builders import ids, messages, run
from ketamine_cds import Verdict

S = "chronic-no-long-term"


def test_unspecified_chronic_pain_needs_the_condition() -> None:
    a = run(use="chronic-pain", procedure=None)
    assert S in ids(a)
    # which condition it is decides between consider (CRPS) and not-indicated: missing information
    assert a.verdict is Verdict.NEEDS_INFORMATION
    assert [(m.datum, m.decisive) for m in a.missing if m.datum == "indication"] == [("indication", True)]


@pytest.mark.parametrize(("use", "verdict"), [("spinal-cord-injury-pain", Verdict.MAY_CONSIDER)])
def test_it_is_information_and_never_decides_the_verdict(use: str, verdict: Verdict) -> None:
    a = run(use=use, procedure=None)
    assert messages(a, S) == ["applies"] and a.verdict is verdict
    assert next(f for f in a.findings if f.statement.id == S).severity == "info"


def test_not_for_crps_and_not_for_acute_uses() -> None:
    assert S not in ids(run(use="crps", procedure=None))
    assert S not in ids(run())
