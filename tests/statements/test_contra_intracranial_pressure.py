"""contra-intracranial-pressure: the record shows Cerebral edema -> contraindicated."""

from builders import condition, run
from contra_checks import ContraindicationChecks

S = "contra-intracranial-pressure"


class TestContraIntracranialPressure(ContraindicationChecks):
    statement = S
    concept = "intracranial-pressure"
    display = "Cerebral edema"


def test_grade_c_for_the_low_dose_option_is_reported() -> None:
    a = run(conditions=(condition("intracranial-pressure"),))
    assert next(f for f in a.findings if f.statement.id == S).statement.grade == "C"
