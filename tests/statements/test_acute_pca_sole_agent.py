"""acute-pca-sole-agent: limited evidence for ketamine as the only analgesic in IV PCA."""

from builders import ids, iv, run
from ketamine_cds import Verdict

S = "acute-pca-sole-agent"


def test_pca_sole_agent_is_insufficient_evidence_even_for_painful_surgery() -> None:
    a = run(order=iv("0.1", "mg/kg", pca_sole_agent=True))
    assert S in ids(a)
    assert a.verdict is Verdict.INSUFFICIENT_EVIDENCE


def test_ordinary_order_does_not_fire() -> None:
    assert S not in ids(run(order=iv("0.1", "mg/kg")))


def test_dose_over_limit_outranks_pca_evidence() -> None:
    assert run(order=iv("0.5", "mg/kg", pca_sole_agent=True)).verdict is Verdict.DOSE_EXCEEDS_LIMIT
