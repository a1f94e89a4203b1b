"""Many draft orders in one call: the work grows with the number of drafts, not with its square (the
application in this process, so that the reads of each drug can be counted)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import InProcessClient, in_process
from fhir_stub import (
    hook_request,
    ketamine,
    ketamine_solution,
    patient,
    planned_procedure,
    prefetch_for,
    quantity,
    weight,
)

import ketamine_cds.adapters.fhir as fhir_adapter

SIGN = "/cds-services/ketamine-order-sign"


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[InProcessClient]:
    with in_process(tmp_path) as client:
        yield client


def _counting(monkeypatch: pytest.MonkeyPatch, name: str, calls: Counter[str] | None = None) -> Counter[str]:
    calls = Counter() if calls is None else calls
    real: Callable[..., Any] = getattr(fhir_adapter, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[name] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(fhir_adapter, name, counted)
    return calls


def _prefetch(client: InProcessClient) -> dict[str, Any]:
    """Every template of order-sign satisfied, as an EHR would (a search that finds nothing: null)."""
    services = client.get("/cds-services").json()["services"]
    templates = next(s for s in services if s["hook"] == "order-sign")["prefetch"]
    record = [patient(), weight(70), planned_procedure()]
    prefetch: dict[str, Any] = prefetch_for(templates, record, {"patientId": "p1"})
    return prefetch


@pytest.mark.parametrize("by_reference", [False, True], ids=["coded", "by its Medication"])
def test_each_drug_of_many_drafts_is_read_a_bounded_number_of_times(
    app_client: InProcessClient, monkeypatch: pytest.MonkeyPatch, by_reference: bool
) -> None:
    n = 90  # with its Medications, 180 drafts: within the 200 a call may hold
    orders = []
    for i in range(n):
        if by_reference:
            orders.append(
                ketamine(oid=f"k{i}", dose=quantity(10, "mg"), medication={"reference": f"Medication/m{i}"})
            )
        else:
            orders.append(ketamine(oid=f"k{i}", dose=quantity(10, "mg")))
    medications = [ketamine_solution(10, mid=f"m{i}") for i in range(n)] if by_reference else []
    body = hook_request("order-sign", orders + medications, prefetch=_prefetch(app_client))
    calls = _counting(monkeypatch, "_read_drug")
    _counting(monkeypatch, "_entry_resource", calls)
    response = app_client.post(SIGN, json=body)
    assert response.status_code == 200, response.text
    assert len(response.json()["cards"]) == 0  # 10 mg for 70 kg: within the limit, silent at signing
    # each draft (and its drug) is read a few times at most (to tell ketamine, then in the one record of the
    # call), never once per draft and order (n * n = 8,100)
    assert calls["_read_drug"] <= 3 * n, calls
    assert calls["_entry_resource"] <= 6 * n, calls


def test_many_drafts_are_each_checked_as_one_draft_alone_is(app_client: InProcessClient) -> None:
    doses = [quantity(10, "mg"), quantity(2, "mg/kg"), quantity(40, "mg")] * 20
    orders = [ketamine(oid=f"k{i}", dose=dose) for i, dose in enumerate(doses)]
    together = app_client.post(
        SIGN, json=hook_request("order-sign", orders, prefetch=_prefetch(app_client))
    ).json()
    alone = [
        app_client.post(SIGN, json=hook_request("order-sign", [o], prefetch=_prefetch(app_client))).json()[
            "cards"
        ]
        for o in orders[:3]
    ]
    summaries = [c["summary"] for c in together["cards"]]
    expected = [c["summary"] for cards in alone for c in cards] * 20
    assert sorted(summaries) == sorted(expected)
