"""Generated ketamine orders and records against the service (in this process): whatever the dose, unit,
route or weight, the answer is 200 with valid cards (a card saying the order was not checked when it cannot
be read), never a 5xx. Schemathesis (test_schemathesis.py) fuzzes the request shapes; this fuzzes what
reaches the engine."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import InProcessClient, in_process
from fhir_stub import (
    IV,
    SNOMED,
    Case,
    Json,
    check_card,
    concept,
    condition,
    encounter,
    ketamine,
    ketamine_solution,
    patient,
    planned_procedure,
    templates_in,
    weight,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

GOOD_UNITS = ["mg", "mg/kg", "mcg", "mcg/kg/min", "mg/kg/h", "mg/h", "mL/h", "mL", "mg/min", "mg/kg/d", "g"]
BAD_UNITS = ["furlongs", "", "kg", "mg/mL", "h"]
GOOD_ROUTES: list[Json] = [
    IV,
    concept(SNOMED, "26643006", "Oral route"),
    concept(SNOMED, "46713006", "Nasal"),
]
BAD_ROUTES: list[Json | None] = [
    concept(SNOMED, "78421000", "Intramuscular route"),
    {"text": "IV push"},
    None,
    {},
]
CONDITIONS = [
    ("58214004", "Schizophrenia"),
    ("38341003", "Hypertensive disorder"),
    ("77386006", "Pregnant"),
    ("78275009", "Obstructive sleep apnea"),
    ("19943007", "Cirrhosis of liver"),
    ("1234", "Unknown"),
]


def mostly(draw: st.DrawFn, good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
    """A valid value nine times in ten, so that most examples reach the engine's rules."""
    return draw(good) if draw(st.integers(min_value=0, max_value=9)) else draw(bad)


GOOD_NUMBERS = st.one_of(
    st.decimals(min_value="0.01", max_value=200, places=2), st.integers(min_value=1, max_value=150)
)
BAD_NUMBERS = st.one_of(
    st.integers(min_value=-10, max_value=10_000), st.sampled_from(["0.35", "1e3", "abc", None, 0])
)


def _plain(value: Any) -> Any:
    return float(value) if value is not None and not isinstance(value, int | str) else value


@st.composite
def cases(draw: st.DrawFn) -> Case:
    unit = mostly(draw, st.sampled_from(GOOD_UNITS), st.sampled_from(BAD_UNITS))
    quantity: Json = {"value": _plain(mostly(draw, GOOD_NUMBERS, BAD_NUMBERS)), "unit": unit}
    as_rate = "/h" in unit or "/min" in unit or "/d" in unit
    if not draw(st.integers(min_value=0, max_value=9)):
        as_rate = not as_rate  # a mass as a rate or the other way round
    order = ketamine(
        dose=None if as_rate else quantity,
        rate=quantity if as_rate else None,
        medication={"reference": "#ket10"} if draw(st.booleans()) else None,
        contained=[ketamine_solution(draw(st.sampled_from([10, 50, 100])))],
    )
    route = mostly(draw, st.sampled_from(GOOD_ROUTES), st.sampled_from(BAD_ROUTES))
    if route is None:
        del order["dosageInstruction"][0]["route"]
    else:
        order["dosageInstruction"][0]["route"] = route
    record: list[Json] = [patient()]
    if draw(st.integers(min_value=0, max_value=4)):
        kg = mostly(draw, st.decimals(min_value=2, max_value=250, places=1), BAD_NUMBERS)
        record.append({**weight(1), "valueQuantity": {"value": _plain(kg), "unit": "kg"}})
    for i, (code, display) in enumerate(draw(st.lists(st.sampled_from(CONDITIONS), max_size=3))):
        record.append(condition(code, display, cid=f"c{i}"))
    if draw(st.booleans()):
        record.append(planned_procedure())
    icu = draw(st.sampled_from([None, True, False]))
    if icu is not None:
        record += encounter(icu)
    return Case(record, [order], encounter_id="e1" if icu is not None else None)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessClient]:
    with in_process(tmp_path_factory.mktemp("fuzz")) as c:
        yield c


@pytest.fixture(scope="module")
def templates(client: InProcessClient) -> dict[str, str]:
    return templates_in(client.get("/cds-services").json())


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=cases(), hook=st.sampled_from(["order-sign", "order-select"]))
def test_any_ketamine_order_gets_200_and_valid_cards(
    client: InProcessClient, templates: dict[str, str], case: Case, hook: str
) -> None:
    body: Any = case.request(hook, templates)
    response = client.post(f"/cds-services/ketamine-{hook}", json=body)
    assert response.status_code == 200, response.text
    for card in response.json()["cards"]:
        check_card(card, client.base_url)
        if hook == "order-sign":
            assert card["indicator"] in ("critical", "warning")
