"""The conformance fixtures (``fhir_conformance.py``) through both FHIR readers: the live service's adapter
(``facts_from_bundle``) and the batch audit's (``fhir_ndjson`` read into canonical rows)."""

from __future__ import annotations

import json
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import duckdb
import pytest
from fhir_conformance import AS_OF, FIXTURES, Fixture, as_bundle, as_export

from ketamine_cds import Facts, assess, load_knowledge
from ketamine_cds._errors import InputError
from ketamine_cds._opioids import opioid_tolerance
from ketamine_cds.adapters.fhir import facts_from_bundle
from ketamine_cds.audit.canonical import facts_from_row
from ketamine_cds.audit.run import canonical_parquet

KB = load_knowledge()


def facts_of(facts: Facts) -> dict[str, Any]:
    """The facts the reading rules decide, in one comparable shape."""
    order = facts.order
    tolerance = facts.opioid_tolerance or opioid_tolerance(facts.opioids, facts.as_of, KB)
    return {
        "weight_kg": facts.weight_kg,
        "weight_problem": facts.weight_problem,
        "conditions": sorted({c.concept for c in facts.conditions or ()}),
        "use": facts.use,
        "procedure_class": facts.procedure.procedure_class if facts.procedure else None,
        "setting": facts.setting.value,
        "route": order.route.value if order else None,
        "kind": order.kind.value if order and order.kind else None,
        "dose": (Fraction(order.dose.value), order.dose.unit.text) if order and order.dose else None,
        "concentration": order.concentration_mg_per_ml if order else None,
        "pca_sole_agent": order.pca_sole_agent if order else None,
        "prior_iv_ketamine": facts.prior_iv_ketamine,
        "opioid_tolerance": tolerance.state.value,
    }


def _exact(value: Any) -> Any:
    if isinstance(value, Decimal | int) and not isinstance(value, bool):
        return Fraction(value)
    if isinstance(value, tuple):
        return tuple(_exact(v) for v in value)
    return value


def live(fx: Fixture) -> Facts:
    return facts_from_bundle(
        json.loads(json.dumps(as_bundle(fx), default=_number), parse_float=Decimal), as_of=AS_OF
    )


def audited(fx: Fixture, folder: Path) -> Facts:
    export = folder / "export"
    export.mkdir(parents=True)
    by_type: dict[str, list[str]] = {}
    for resource in as_export(fx):
        by_type.setdefault(resource["resourceType"], []).append(json.dumps(resource, default=_number))
    for kind, lines in by_type.items():
        (export / f"{kind}.ndjson").write_text("\n".join(lines) + "\n")
    canonical = canonical_parquet(export, "fhir", folder / "out").path
    con = duckdb.connect()
    try:
        cursor = con.execute(f"SELECT * FROM read_parquet('{canonical}') WHERE admin_id = 'given'")
        names = [d[0] for d in cursor.description]
        [row] = cursor.fetchall()
    finally:
        con.close()
    return facts_from_row(dict(zip(names, row, strict=True)), KB)


def _number(value: Any) -> Any:
    if isinstance(value, Decimal):  # written as a JSON number, exactly as given
        return float(value) if value == Decimal(repr(float(value))) else str(value)
    raise TypeError(type(value))


REFUSED = "refused"  # a ``differs`` value: the live service refuses the record (an input error)


@pytest.mark.parametrize("fx", FIXTURES, ids=[f.rule for f in FIXTURES])
def test_both_readers_give_the_facts_of_the_rule(fx: Fixture, tmp_path: Path) -> None:
    if (
        fx.refused
    ):  # both refuse the record, saying the same thing: the service an error, the audit the row's reason
        with pytest.raises(InputError) as service_error:
            live(fx)
        with pytest.raises(InputError) as audit_error:
            audited(fx, tmp_path)
        assert fx.refused in str(service_error.value) and fx.refused in str(audit_error.value)
        return
    audit = facts_of(audited(fx, tmp_path))
    if any(service == REFUSED for service, _, _ in fx.differs.values()):
        with pytest.raises(InputError):
            live(fx)
        assert all(audit[name] == value for name, (_, value, _) in fx.differs.items())
        return
    service = facts_of(live(fx))
    for name, want in fx.expected.items():
        assert (_exact(service[name]), _exact(audit[name])) == (_exact(want), _exact(want)), name
    for name, (service_value, audit_value, why) in fx.differs.items():
        assert why and (service[name], audit[name]) == (service_value, audit_value), name
        service.pop(name)
        audit.pop(name)
    assert {k: _exact(v) for k, v in audit.items()} == {k: _exact(v) for k, v in service.items()}


@pytest.mark.parametrize("fx", [f for f in FIXTURES if not f.differs and not f.refused], ids=lambda f: f.rule)
def test_both_readers_give_the_same_verdict(fx: Fixture, tmp_path: Path) -> None:
    service, audit = assess(live(fx), KB), assess(audited(fx, tmp_path), KB)
    assert (audit.verdict, audit.statement_ids) == (service.verdict, service.statement_ids)


def test_every_rule_of_the_issue_has_a_fixture() -> None:
    rules = " ".join(f.rule for f in FIXTURES)
    for rule in (
        "weight in effect",
        "active conditions",
        "pregnancy",
        "route words",
        "rates",
        "ratios",
        "concentration",
        "indication",
        "procedure class",
        "current encounter and ICU",
        "prior IV course",
        "PCA",
        "opioids",
    ):
        assert rule in rules, rule
