"""The audit's SQL reading of a Quantity's unit (``fhir_ndjson.unit_key_sql``) is the engine's unit parser's
(``_units.parse_unit``): two spellings name one unit in SQL exactly when the parser reads them as one, and SQL
reads no unit where the parser reads none. The batch audit uses it to find a ``unit`` and a UCUM ``code`` that
name different units, as the live adapter does (``adapters.fhir._read_unit``)."""

from __future__ import annotations

import itertools
from typing import Any

import duckdb
import pytest

from ketamine_cds._errors import UnitError
from ketamine_cds._units import parse_unit
from ketamine_cds.audit.fhir_ndjson import unit_key_sql
from ketamine_cds.audit.sql import lit

SPELLINGS = [
    "mg", "MG", " mg ", "mcg", "ug", "µg", "μg", "g", "kg", "[lb_av]", "[LB_AV]", "lb", "lbs", "mL", "ml", "L",
    "mg/kg", "mg/kg/h", "mg/kg/hr", "mg/h/kg", "mg/(kg.h)", "mg/kg.h", "mg / kg / h", "mg/kg/hour", "mcg/kg/min",
    "ug/kg/min", "mg/(kg.min)", "mg/h", "mg/hr", "mg/min", "mg/s", "mg/sec", "mg/d", "mg/day", "mg/kg/d", "mL/h",
    "ml/hr", "g/kg", "mg/", "", "/h", "mg/kg/kg", "mg/h/min", "furlong", "kilogram", "milligram", "mg/wk",
]  # fmt: skip


def _engine_key(text: str) -> Any:
    try:
        unit = parse_unit(text)
    except UnitError:
        return None
    return unit.amount, unit.factor, unit.per_kg, unit.per_hours


@pytest.fixture(scope="module")
def sql_keys() -> dict[str, Any]:
    con = duckdb.connect()
    try:
        return {t: con.execute(f"SELECT {unit_key_sql(lit(t))}").fetchone()[0] for t in SPELLINGS}  # type: ignore[index]
    finally:
        con.close()


def test_sql_reads_a_unit_where_the_engine_reads_one(sql_keys: dict[str, Any]) -> None:
    assert {t for t, key in sql_keys.items() if key is None} == {
        t for t in SPELLINGS if _engine_key(t) is None
    }


def test_two_spellings_are_one_unit_in_sql_exactly_when_they_are_one_to_the_engine(
    sql_keys: dict[str, Any],
) -> None:
    read = [t for t in SPELLINGS if _engine_key(t) is not None]
    for a, b in itertools.combinations(read, 2):
        assert (sql_keys[a] == sql_keys[b]) == (_engine_key(a) == _engine_key(b)), (a, b)
