"""Checks every contraindication must pass; each tests/statements/test_contra_*.py subclasses them."""

from __future__ import annotations

from builders import condition, ids, iv, nasal, run
from ketamine_cds import Presence, Verdict


class ContraindicationChecks:
    statement: str
    concept: str
    display: str

    def test_present_condition_contraindicates_and_is_critical(self) -> None:
        a = run(conditions=(condition(self.concept, self.display),))
        assert a.verdict is Verdict.CONTRAINDICATED
        finding = next(f for f in a.findings if f.statement.id == self.statement)
        assert finding.severity == "critical"
        assert self.display in finding.params["condition"][0].display  # type: ignore[index]

    def test_contraindication_outranks_a_dose_over_the_limit_and_follow_up_routes(self) -> None:
        assert (
            run(conditions=(condition(self.concept),), order=iv(60, "mg")).verdict is Verdict.CONTRAINDICATED
        )
        follow_up = run(conditions=(condition(self.concept),), use="crps", order=nasal())
        assert follow_up.verdict is Verdict.CONTRAINDICATED

    def test_absent_from_record_is_reported_as_not_found_not_ruled_out(self) -> None:
        a = run(conditions=())
        assert self.statement not in ids(a)
        assert next(s.status for s in a.screening if s.statement == self.statement) is Presence.NOT_RECORDED

    def test_unreadable_record_is_unknown_and_needs_information(self) -> None:
        a = run(conditions=None)
        assert next(s.status for s in a.screening if s.statement == self.statement) is Presence.UNKNOWN
        assert a.verdict is Verdict.NEEDS_INFORMATION

    def test_out_of_scope_use_still_shows_the_contraindication(self) -> None:
        a = run(use="procedural-sedation", conditions=(condition(self.concept),))
        assert a.verdict is Verdict.OUT_OF_SCOPE
        assert self.statement in ids(a)
