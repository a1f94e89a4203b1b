"""acute-painful-surgery: consider IV ketamine for abdominal, thoracic, orthopedic limb and spine surgery."""

import pytest

from builders import APPENDECTOMY, ids, run
from ketamine_cds import Coded, PlannedProcedure, Verdict

S = "acute-painful-surgery"


@pytest.mark.parametrize("pclass", ["abdominal", "thoracic", "orthopedic-limb", "spine"])
def test_severe_pain_surgery_is_consider_with_grade_b(pclass: str) -> None:
    procedure = PlannedProcedure(Coded("planned surgery"), pclass)
    a = run(procedure=procedure)
    assert a.verdict is Verdict.CONSIDER
    finding = next(f for f in a.findings if f.statement.id == S)
    assert (finding.severity, finding.statement.grade, finding.statement.certainty) == (
        "info",
        "B",
        "moderate",
    )


def test_mild_procedure_does_not_fire() -> None:
    assert S not in ids(run(procedure=PlannedProcedure(Coded("Colonoscopy"), "mild")))


def test_chronic_use_does_not_fire() -> None:
    assert S not in ids(run(use="crps", procedure=APPENDECTOMY))


def test_unclassified_procedure_needs_information() -> None:
    a = run(procedure=PlannedProcedure(Coded("Excision of lingual torus"), None))
    assert S not in ids(a)
    assert a.verdict is Verdict.NEEDS_INFORMATION
    assert [m.datum for m in a.missing if m.decisive] == ["procedure-class"]


def test_no_planned_procedure_needs_information() -> None:
    a = run(procedure=None)
    assert a.verdict is Verdict.NEEDS_INFORMATION
    assert "procedure" in {m.datum for m in a.missing}
