"""acute-opioid-adjunct: subanesthetic boluses up to 0.35 mg/kg and infusions up to 1 mg/kg/h as adjuncts to
opioids after surgery (B, moderate); shown beside a perioperative dose within the limits, never the
verdict."""

import pytest

from builders import ids, iv, messages, qty, run
from ketamine_cds import Route, Setting, Verdict
from ketamine_cds._facts import checked_dose

S = "acute-opioid-adjunct"


@pytest.mark.parametrize(
    ("dose", "unit", "shown"),
    [
        ("0.35", "mg/kg", True),
        ("0.36", "mg/kg", False),
        ("28", "mg", True),
        ("1", "mg/kg/h", True),
        ("1.01", "mg/kg/h", False),
    ],
)
def test_beside_a_perioperative_dose_within_the_limits(dose: str, unit: str, shown: bool) -> None:
    a = run(order=iv(dose, unit))
    assert (S in ids(a)) is shown
    if shown:
        assert messages(a, S) == ["applies"] and a.verdict is Verdict.CONSIDER
        statement = next(f for f in a.findings if f.statement.id == S).statement
        assert (statement.grade, statement.certainty) == ("B", "moderate")


def test_every_dose_of_the_order_must_be_within() -> None:
    follow = (checked_dose(Route.INTRAVENOUS, qty("1.2", "mg/kg/h"), None, "order"),)
    assert S not in ids(run(order=iv("0.3", "mg/kg", then=follow)))


def test_an_icu_infusion_above_the_acute_range_is_not_called_an_adjunct_dose() -> None:
    assert S not in ids(run(order=iv(3, "mg/kg/h"), setting=Setting.INTENSIVE_CARE))


def test_not_without_an_order_a_weight_or_outside_surgery() -> None:
    assert S not in ids(run())
    assert S not in ids(run(order=iv(20, "mg"), weight_kg=None))
    assert S not in ids(run(use="acute-pain", procedure=None, order=iv(20, "mg")))
    assert S not in ids(run(use="crps", procedure=None, order=iv(20, "mg/h")))


def test_it_never_lifts_a_verdict() -> None:
    from builders import COLONOSCOPY

    assert run(procedure=COLONOSCOPY, order=iv(20, "mg")).verdict is Verdict.NOT_INDICATED
