"""contra-pregnancy: the record shows Pregnancy -> contraindicated."""

from builders import run
from contra_checks import ContraindicationChecks
from ketamine_cds import Presence, Verdict

S = "contra-pregnancy"


class TestContraPregnancy(ContraindicationChecks):
    statement = S
    concept = "pregnancy"
    display = "Pregnancy"


def test_pregnancy_explicitly_ruled_out_is_absent() -> None:
    a = run(ruled_out=frozenset({"pregnancy"}))
    assert next(s.status for s in a.screening if s.statement == S) is Presence.ABSENT
    assert a.verdict is Verdict.CONSIDER
