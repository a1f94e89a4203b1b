"""The CDS Hooks service: discovery, both hooks on hand-made cases, audit trail, feedback; in this process,
but for the tests whose process matters (its log, concurrent calls, a database that fails, PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import InProcessClient, Server, in_process
from fhir_stub import (
    Case,
    Json,
    condition,
    encounter,
    hook_request,
    ketamine,
    ketamine_solution,
    oxycodone_order,
    patient,
    planned_procedure,
    quantity,
    templates_in,
    weight,
)

from ketamine_cds.service.store import pseudonym

SIGN = "/cds-services/ketamine-order-sign"
SELECT = "/cds-services/ketamine-order-select"
GUIDELINE = "ASRA/AAPM/ASA 2018 ketamine guideline"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hooks")


@pytest.fixture(scope="module")
def client(data_dir: Path) -> Iterator[InProcessClient]:
    """The service in this process: the tests whose process matters use ``dev_server`` or a ``Server``."""
    with in_process(data_dir) as c:
        yield c


@pytest.fixture(scope="module")
def templates(client: InProcessClient) -> dict[str, str]:
    return templates_in(client.get("/cds-services").json())


def call(
    client: InProcessClient | httpx.Client, case: Case, hook: str, templates: dict[str, str], **extra: Any
) -> list[Json]:
    path = SIGN if hook == "order-sign" else SELECT
    response = client.post(path, json=case.request(hook, templates, **extra))
    assert response.status_code == 200, response.text
    cards: list[Json] = response.json()["cards"]
    return cards


def surgery_case(order: Json, *extra: Json, kg: float | str = 70, icu: bool | None = None) -> Case:
    record = [patient(), weight(kg), planned_procedure(), *extra]
    if icu is not None:
        record += encounter(intensive_care=icu)
    return Case(record, [order], encounter_id="e1" if icu is not None else None)


def statements(cards: list[Json]) -> list[str]:
    return [c["source"]["topic"]["code"] for c in cards]


# --- discovery ---------------------------------------------------------------------------------------


def test_discovery_lists_the_three_services_with_prefetch(client: InProcessClient) -> None:
    response = client.get("/cds-services")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    services = {s["id"]: s for s in response.json()["services"]}
    assert set(services) == {"ketamine-order-select", "ketamine-order-sign", "ketamine-patient-view"}
    assert services["ketamine-order-select"]["hook"] == "order-select"
    assert services["ketamine-order-sign"]["hook"] == "order-sign"
    assert services["ketamine-patient-view"]["hook"] == "patient-view"
    for service in services.values():
        assert service["title"] and service["description"] and service["usageRequirements"]
        prefetch = service["prefetch"]
        assert prefetch["patient"] == "Patient/{{context.patientId}}"
        assert "29463-7" in prefetch["weights"] and "82810-3" in prefetch["pregnancyStatus"]
        assert prefetch["conditions"].startswith("Condition?patient={{context.patientId}}")
        assert "status=preparation,in-progress" in prefetch["procedures"]
        assert prefetch["encounter"] == "Encounter/{{context.encounterId}}"  # an instance read
    for order_hook in ("ketamine-order-select", "ketamine-order-sign"):
        prefetch = services[order_hook]["prefetch"]
        assert "status=active" in prefetch["medicationRequests"]
        assert prefetch["medicationStatements"].startswith("MedicationStatement?")
        assert prefetch["medicationStatements"].endswith("status=active")  # only what is being taken
    view = services["ketamine-patient-view"]["prefetch"]
    assert "medicationRequests" not in view and view["ketamineRequests"].startswith("MedicationRequest?")


# --- order-sign: only contraindications and doses over the limit -------------------------------------


def test_bolus_over_limit_per_kg_gets_one_critical_card_with_suggestion(
    client: InProcessClient, templates: dict[str, str]
) -> None:
    case = surgery_case(ketamine(dose=quantity("0.5", "mg/kg")))
    cards = call(client, case, "order-sign", templates)
    assert statements(cards) == ["dose-bolus-limit"]
    card = cards[0]
    assert card["indicator"] == "critical"
    assert card["summary"] == "Bolus 0.5 mg/kg (35 mg) is over the 0.35 mg/kg limit: max 24.5 mg"
    assert "**0.5 mg/kg**" in card["detail"] and "70 kg" in card["detail"] and "24.5 mg" in card["detail"]
    assert card["source"]["label"] == f"{GUIDELINE} (grade C, moderate certainty)"
    assert card["source"]["url"] == "https://doi.org/10.1097/AAP.0000000000000806"
    assert card["selectionBehavior"] == "at-most-one"
    (suggestion,) = card["suggestions"]
    (action,) = suggestion["actions"]
    assert action["type"] == "update"
    dose = action["resource"]["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]
    assert dose == {"value": 0.35, "unit": "mg/kg", "system": "http://unitsofmeasure.org", "code": "mg/kg"}
    codes = [r["code"] for r in card["overrideReasons"]]
    assert "weight-not-current" in codes and all(r["display"] for r in card["overrideReasons"])
    # the reasons clinicians give (issue 17); intensive care is none for a bolus: its limit holds there too
    assert {"anesthesia-care-monitoring", "previously-tolerated", "specialist-recommendation"} <= set(codes)
    assert "intensive-care-monitoring" not in codes
    displays = {r["code"]: r["display"] for r in card["overrideReasons"]}
    assert displays["anesthesia-care-monitoring"] == "Given under anesthesia care with continuous monitoring"


def test_bolus_over_limit_in_mg_is_brought_down_to_the_max_for_the_weight_rounded_down(
    client: InProcessClient, templates: dict[str, str]
) -> None:
    case = surgery_case(ketamine(dose=quantity(30, "mg")), kg="69.85")
    (card,) = call(client, case, "order-sign", templates)
    assert card["summary"].startswith("Bolus 30 mg (0.43 mg/kg) is over the 0.35 mg/kg limit")
    dose = card["suggestions"][0]["actions"][0]["resource"]["dosageInstruction"][0]["doseAndRate"][0]
    # 0.35 mg/kg x 69.85 kg = 24.4475 mg: rounded down to a dose one can draw up (0.5 mg steps), within the
    # limit; the exact maximum stays in the label and the detail
    assert dose["doseQuantity"]["value"] == 24 and dose["doseQuantity"]["unit"] == "mg"
    assert card["suggestions"][0]["label"] == (
        "Change the bolus to 24 mg for 69.85 kg; the limit is 24.44 mg, rounded down to a step of 0.5 mg"
    )
    assert "24.44 mg" in card["detail"]


def test_bolus_within_limit_gives_no_card_at_signing_and_an_info_card_at_selection(
    client: InProcessClient, templates: dict[str, str]
) -> None:
    case = surgery_case(ketamine(dose=quantity(20, "mg")))
    assert call(client, case, "order-sign", templates) == []
    cards = call(client, case, "order-select", templates)
    by_statement = {c["source"]["topic"]["code"]: c for c in cards}
    assert by_statement["dose-bolus-limit"]["indicator"] == "info"
    assert by_statement["dose-bolus-limit"]["summary"].startswith("Bolus 20 mg (0.29 mg/kg) is within")
    assert by_statement["acute-painful-surgery"]["indicator"] == "info"
    assert "suggestions" not in by_statement["dose-bolus-limit"]


def test_infusion_in_ml_per_hour_over_the_limit_outside_icu(
    client: InProcessClient, templates: dict[str, str]
) -> None:
    order = ketamine(
        rate=quantity(8, "mL/h"), medication={"reference": "#ket10"}, contained=[ketamine_solution(10)]
    )
    case = surgery_case(order, kg="62.5", icu=False)
    (card,) = call(client, case, "order-sign", templates)
    assert card["source"]["topic"]["code"] == "dose-infusion-limit"
    assert card["indicator"] == "critical"
    assert "8 mL/h" in card["summary"] and "1.28 mg/kg/h" in card["summary"]
    rate = card["suggestions"][0]["actions"][0]["resource"]["dosageInstruction"][0]["doseAndRate"][0]
    # ordered in mL/h, suggested in mL/h (the pump's unit): 62.5 mg/h of 10 mg/mL is 6.25 mL/h, down to 6.2
    assert rate == {
        "rateQuantity": {"value": 6.2, "unit": "mL/h", "system": "http://unitsofmeasure.org", "code": "mL/h"}
    }
    assert card["suggestions"][0]["label"] == (
        "Change the infusion rate to 6.2 mL/h for 62.5 kg; the limit is 62.5 mg/h, rounded down to a step of "
        "0.1 mL/h"
    )
    reasons = {r["code"]: r["display"] for r in card["overrideReasons"]}
    assert reasons["prior-ketamine-exposure"].startswith(
        "Prior ketamine exposure or other individual factors"
    )
    assert all(r["system"].endswith("/CodeSystem/override-reason") for r in card["overrideReasons"])


def test_infusion_per_kg_over_the_limit_is_suggested_at_1_mg_per_kg_per_hour(
    client: InProcessClient, templates: dict[str, str]
) -> None:
    case = surgery_case(ketamine(rate=quantity(2, "mg/kg/h")), icu=False)
    (card,) = call(client, case, "order-sign", templates)
    resource = card["suggestions"][0]["actions"][0]["resource"]
    assert resource["dosageInstruction"][0]["doseAndRate"][0]["rateQuantity"]["value"] == 1
    assert resource["dosageInstruction"][0]["doseAndRate"][0]["rateQuantity"]["unit"] == "mg/kg/h"


def test_infusion_in_ml_per_hour_within_the_limit_is_silent_at_signing(
    client: InProcessClient, templates: dict[str, str]
) -> None:
    order = ketamine(
        rate=quantity(5, "mL/h"), medication={"reference": "#ket10"}, contained=[ketamine_solution(10)]
    )
    case = surgery_case(order, kg="62.5", icu=False)
    assert call(client, case, "order-sign", templates) == []
    select = call(client, case, "order-select", templates)
    infusion = next(c for c in select if c["source"]["topic"]["code"] == "dose-infusion-limit")
    assert infusion["summary"] == "Infusion 5 mL/h (0.8 mg/kg/h) is within the 1 mg/kg/h limit"


def test_infusion_over_1_mg_per_kg_per_hour_in_intensive_care_is_not_flagged(
    client: InProcessClient, templates: dict[str, str]
) -> None:
    case = surgery_case(ketamine(rate=quantity(2, "mg/kg/h")), icu=True)
    assert call(client, case, "order-sign", templates) == []


def test_infusion_over_the_limit_with_the_setting_unknown_interrupts_unless_in_intensive_care(
    client: InProcessClient, templates: dict[str, str]
) -> None:
    # an unknown setting is never read as intensive care: the outside-ICU limit applies (the cautious side)
    case = surgery_case(ketamine(rate=quantity(2, "mg/kg/h")), icu=None)
    (card,) = call(client, case, "order-sign", templates)
    assert card["indicator"] == "critical"
    assert "unless in intensive care" in card["summary"]
    resource = card["suggestions"][0]["actions"][0]["resource"]
    assert resource["dosageInstruction"][0]["doseAndRate"][0]["rateQuantity"]["value"] == 1
    assert "intensive-care-monitoring" in {r["code"] for r in card["overrideReasons"]}


def test_a_finished_icu_stay_does_not_switch_the_infusion_limit_off(
    client: InProcessClient, templates: dict[str, str]
) -> None:
    case = surgery_case(ketamine(rate=quantity(5, "mg/kg/h")), icu=True)
    for resource in case.record:
        if resource.get("resourceType") == "Encounter":
            resource["status"] = "finished"
    (card,) = call(client, case, "order-sign", templates)
    assert card["indicator"] == "critical" and "5 mg/kg/h" in card["summary"]


def test_an_icu_infusion_above_every_rate_the_guidelines_describe_interrupts(
    client: InProcessClient, templates: dict[str, str]
) -> None:
    case = surgery_case(ketamine(rate=quantity(4000, "mg/h")), icu=True)
    (card,) = call(client, case, "order-sign", templates)
    assert card["indicator"] == "critical" and card["source"]["topic"]["code"] == "dose-ceiling"
    # 7 mg/kg/h is the highest rate either guideline mentions (refractory chronic pain), not one it recommends
    # for this patient: no "change the rate to 490 mg/h" offered as the recommended fix
    assert "suggestions" not in card and card["overrideReasons"]


def test_a_chronic_infusion_is_checked_against_the_chronic_range_not_the_acute_limit(
    client: InProcessClient, templates: dict[str, str]
) -> None:
    crps = {"coding": [{"system": "http://snomed.info/sct", "code": "128200000", "display": "CRPS"}]}
    routine = ketamine(rate=quantity("1.5", "mg/kg/h"))
    routine["reasonCode"] = [crps]
    assert call(client, surgery_case(routine, icu=False), "order-sign", templates) == []
    over = ketamine(rate=quantity("2.5", "mg/kg/h"))
    over["reasonCode"] = [crps]
    (card,) = call(client, surgery_case(over, icu=False), "order-sign", templates)
    assert card["source"]["topic"]["code"] == "chronic-dose-range"


def test_infusion_within_the_limit_with_the_setting_unknown_is_silent_at_signing(
    client: InProcessClient, templates: dict[str, str]
) -> None:
    assert (
        call(
            client, surgery_case(ketamine(rate=quantity("0.5", "mg/kg/h")), icu=None), "order-sign", templates
        )
        == []
    )


def test_contraindication_gets_a_critical_card_without_a_dose_suggestion(
    client: InProcessClient, templates: dict[str, str]
) -> None:
    case = surgery_case(ketamine(dose=quantity(20, "mg")), condition("58214004", "Schizophrenia"))
    (card,) = call(client, case, "order-sign", templates)
    assert card["source"]["topic"]["code"] == "contra-psychosis"
    assert card["indicator"] == "critical"
    assert card["summary"] == "Relative contraindication: Schizophrenia"
    assert card["source"]["label"] == f"{GUIDELINE} (grade B, low certainty)"
    assert "suggestions" not in card and "selectionBehavior" not in card
    assert {r["code"] for r in card["overrideReasons"]} == {
        "condition-not-current",
        "benefit-outweighs-risk",
        "anesthesia-care-monitoring",
        "intensive-care-monitoring",
        "previously-tolerated",
        "specialist-recommendation",
    }


def test_supportive_evidence_shows_at_selection_and_stays_silent_at_signing(
    client: InProcessClient, templates: dict[str, str]
) -> None:
    record = [patient(), weight(80), planned_procedure(), condition("78275009", "Obstructive sleep apnea")]
    case = Case(record, [ketamine(dose=quantity("0.2", "mg/kg"))])
    assert call(client, case, "order-sign", templates) == []
    select = call(client, case, "order-select", templates)
    found = {c["source"]["topic"]["code"]: c for c in select}
    assert {"acute-painful-surgery", "acute-sleep-apnea", "dose-bolus-limit"} <= set(found)
    assert found["acute-painful-surgery"]["source"]["label"] == f"{GUIDELINE} (grade B, moderate certainty)"
    assert found["acute-sleep-apnea"]["source"]["label"] == f"{GUIDELINE} (grade C, low certainty)"
    assert all(c["indicator"] == "info" for c in found.values())


def test_caution_is_a_warning_card_at_selection_only(
    client: InProcessClient, templates: dict[str, str]
) -> None:
    case = surgery_case(ketamine(dose=quantity(10, "mg")), condition("38341003", "Hypertensive disorder"))
    assert call(client, case, "order-sign", templates) == []
    select = call(client, case, "order-select", templates)
    verify = next(c for c in select if c["source"]["topic"]["code"] == "contra-cardiovascular")
    assert verify["indicator"] == "warning"
    assert verify["summary"].startswith("Verify how well it is controlled")


def test_order_for_another_drug_gets_no_cards(client: InProcessClient, templates: dict[str, str]) -> None:
    case = Case([patient(), weight(70)], [oxycodone_order()])
    assert call(client, case, "order-sign", templates) == []
    assert call(client, case, "order-select", templates) == []


def test_order_select_looks_only_at_the_selected_orders(
    client: InProcessClient, templates: dict[str, str]
) -> None:
    case = Case([patient(), weight(70)], [ketamine(dose=quantity(1, "mg/kg")), oxycodone_order()])
    assert call(client, case, "order-select", templates, selections=["MedicationRequest/o1"]) == []
    cards = call(client, case, "order-select", templates, selections=["MedicationRequest/k1"])
    assert "dose-bolus-limit" in statements(cards)


def test_each_ketamine_order_is_checked(client: InProcessClient, templates: dict[str, str]) -> None:
    orders = [ketamine(oid="k1", dose=quantity(1, "mg/kg")), ketamine(oid="k2", rate=quantity(3, "mg/kg/h"))]
    case = Case([patient(), weight(70), planned_procedure(), *encounter(False)], orders, encounter_id="e1")
    cards = call(client, case, "order-sign", templates)
    assert sorted(statements(cards)) == ["dose-bolus-limit", "dose-infusion-limit"]
    ids = {c["suggestions"][0]["actions"][0]["resource"]["id"] for c in cards}
    assert ids == {"k1", "k2"}


def test_accepting_the_suggestion_gives_an_order_within_the_limit(
    client: InProcessClient, templates: dict[str, str]
) -> None:
    case = surgery_case(ketamine(dose=quantity(40, "mg")), kg="69.85")
    (card,) = call(client, case, "order-sign", templates)
    updated = card["suggestions"][0]["actions"][0]["resource"]
    assert call(client, surgery_case(updated, kg="69.85"), "order-sign", templates) == []


def test_suggestion_keeps_the_rest_of_the_order(client: InProcessClient, templates: dict[str, str]) -> None:
    order = ketamine(dose=quantity(50, "mg"))
    order["note"] = [{"text": "give slowly over 5 minutes"}]
    (card,) = call(client, surgery_case(order), "order-sign", templates)
    updated = card["suggestions"][0]["actions"][0]["resource"]
    assert updated["note"] == order["note"] and updated["id"] == "k1"
    assert updated["medicationCodeableConcept"] == order["medicationCodeableConcept"]
    assert updated["dosageInstruction"][0]["route"] == order["dosageInstruction"][0]["route"]


def test_an_infusion_after_a_loading_bolus_is_checked_and_its_own_entry_suggested(
    client: InProcessClient, templates: dict[str, str]
) -> None:
    order = ketamine(dose=quantity("0.3", "mg/kg"))
    order["dosageInstruction"].append(
        {
            "sequence": 2,
            "route": order["dosageInstruction"][0]["route"],
            "doseAndRate": [{"rateQuantity": quantity(3, "mg/kg/h")}],
        }
    )
    (card,) = call(client, surgery_case(order, icu=False), "order-sign", templates)
    assert statements([card]) == ["dose-infusion-limit"] and card["indicator"] == "critical"
    updated = card["suggestions"][0]["actions"][0]["resource"]
    assert updated["dosageInstruction"][0] == order["dosageInstruction"][0]  # the bolus stays as ordered
    assert updated["dosageInstruction"][1]["doseAndRate"][0]["rateQuantity"]["value"] == 1
    assert call(client, surgery_case(updated, icu=False), "order-sign", templates) == []


# --- input the engine cannot read: a warning card, never a 500 ---------------------------------------


@pytest.mark.parametrize(
    ("record_weight", "dose", "reason"),
    [
        (70, {"value": 10, "unit": "furlongs"}, "furlongs"),
        (900, quantity(10, "mg"), "500 kg"),
        (70, {"value": -5, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}, "positive"),
    ],
)
def test_unreadable_input_gets_one_warning_card(
    client: InProcessClient, templates: dict[str, str], record_weight: int, dose: Json, reason: str
) -> None:
    case = surgery_case(ketamine(dose=dose), kg=record_weight)
    for hook in ("order-sign", "order-select"):
        (card,) = call(client, case, hook, templates)
        assert card["indicator"] == "warning"
        assert card["summary"].startswith("Ketamine order not checked: ")
        assert len(card["summary"]) < 140
        assert reason in card["detail"] and "**not** checked" in card["detail"]


def test_ketamine_order_without_a_route_is_reported_not_checked(
    client: InProcessClient, templates: dict[str, str]
) -> None:
    order = ketamine(dose=quantity(10, "mg"))
    del order["dosageInstruction"][0]["route"]
    (card,) = call(client, surgery_case(order), "order-sign", templates)
    assert card["indicator"] == "warning" and "route" in card["summary"]


# --- malformed requests -----------------------------------------------------------------------------


def test_unknown_service_is_404(client: InProcessClient) -> None:
    response = client.post("/cds-services/no-such-service", json=hook_request("order-sign", []))
    assert response.status_code == 404
    assert "no-such-service" in response.json()["error"]
    assert client.post("/cds-services/no-such-service/feedback", json={"feedback": []}).status_code == 404


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not JSON"),
        (b"", "empty"),
        (b"[]", "JSON object"),
        pytest.param(b"[" * 100_000, "nested", id="deeply-nested"),
        (json.dumps({"hook": "order-sign", "hookInstance": "x"}).encode(), "context"),
        (
            json.dumps({"hook": "patient-view", "hookInstance": "x", "context": {}}).encode(),
            "order-sign hook",
        ),
        (
            json.dumps({"hook": "order-sign", "hookInstance": "x", "context": {"patientId": "p1"}}).encode(),
            "draftOrders",
        ),
        (
            json.dumps(
                {
                    "hook": "order-sign",
                    "hookInstance": "x",
                    "context": {"patientId": "p1", "draftOrders": [1]},
                }
            ).encode(),
            "draftOrders",
        ),
        (
            json.dumps(
                {
                    "hook": "order-sign",
                    "hookInstance": "x",
                    "fhirAuthorization": {"access_token": "t"},
                    "context": {"patientId": "p1", "draftOrders": {"resourceType": "Bundle"}},
                }
            ).encode(),
            "token_type",
        ),
    ],
)
def test_malformed_request_is_400_with_a_clear_message(
    client: InProcessClient, body: bytes, message: str
) -> None:
    response = client.post(SIGN, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_malformed_prefetch_value_is_400(client: InProcessClient, templates: dict[str, str]) -> None:
    body = surgery_case(ketamine(dose=quantity(10, "mg"))).request("order-sign", templates)
    body["prefetch"]["conditions"] = ["not", "a", "resource"]
    response = client.post(SIGN, json=body)
    assert response.status_code == 400 and "prefetch.conditions" in response.json()["error"]


def test_order_select_requires_selections(client: InProcessClient) -> None:
    body = hook_request("order-select", [ketamine()])
    del body["context"]["selections"]
    assert client.post(SELECT, json=body).status_code == 400


def test_null_prefetch_means_no_data_not_missing(client: InProcessClient, templates: dict[str, str]) -> None:
    body = hook_request(
        "order-sign", [ketamine(dose=quantity("0.5", "mg/kg"))], prefetch={key: None for key in templates}
    )
    response = client.post(SIGN, json=body)
    assert response.status_code == 200
    assert statements(response.json()["cards"]) == ["dose-bolus-limit"]  # per kg: checked without a weight


def test_a_bolus_over_the_limit_at_any_weight_interrupts_without_a_weight(
    client: InProcessClient, templates: dict[str, str]
) -> None:
    """4,000 mg cannot be within 0.35 mg/kg for any weight up to 500 kg: the missing weight does not soften
    it to a warning; the card interrupts with its override reasons and suggests no dose (none without a
    weight)."""
    body = hook_request(
        "order-sign", [ketamine(dose=quantity(4000, "mg"))], prefetch={key: None for key in templates}
    )
    response = client.post(SIGN, json=body)
    assert response.status_code == 200
    (card,) = [c for c in response.json()["cards"] if c["indicator"] == "critical"]
    assert card["summary"].startswith("4,000 mg is over the 0.35 mg/kg limit at any body weight")
    assert card["overrideReasons"] and "suggestions" not in card


# --- audit trail and logs ---------------------------------------------------------------------------


def _db(where: Server | Path) -> sqlite3.Connection:
    data_dir = where.data_dir if isinstance(where, Server) else where
    return sqlite3.connect(data_dir / "ketamine-cds.sqlite3")


def test_every_assessment_is_recorded_with_its_cards(
    data_dir: Path, client: InProcessClient, templates: dict[str, str]
) -> None:
    pid = "patient-audit-7"
    record = [
        patient(pid),
        weight(70, pid),
        planned_procedure(pid=pid),
        condition("58214004", "Schizophrenia", pid),
    ]
    case = Case(record, [ketamine(pid=pid, dose=quantity(1, "mg/kg"))], pid=pid)
    body = case.request("order-sign", templates)
    response = client.post(SIGN, json=body)
    cards = response.json()["cards"]
    secret = (data_dir / "pseudonym.key").read_text().strip().encode()
    with _db(data_dir) as db:
        rows = db.execute(
            "SELECT id, service, hook, hook_instance, kb_version, verdict, statements, patient, latency_ms "
            "FROM assessments WHERE hook_instance = ?",
            (body["hookInstance"],),
        ).fetchall()
        assert len(rows) == 1
        aid, service, hook, _, kb_version, verdict, stmts, patient_key, latency = rows[0]
        stored_cards = db.execute(
            "SELECT uuid, statement, indicator FROM cards WHERE assessment_id = ?", (aid,)
        ).fetchall()
    assert (service, hook, verdict) == ("ketamine-order-sign", "order-sign", "contraindicated")
    assert {"contra-psychosis", "dose-bolus-limit", "acute-painful-surgery"} <= set(json.loads(stmts))
    assert kb_version and latency > 0
    assert patient_key == pseudonym(secret, "patient-audit-7") and "patient-audit-7" not in patient_key
    assert sorted(stored_cards) == sorted(
        (c["uuid"], c["source"]["topic"]["code"], c["indicator"]) for c in cards
    )


def test_input_errors_are_recorded_too(
    data_dir: Path, client: InProcessClient, templates: dict[str, str]
) -> None:
    body = surgery_case(ketamine(dose={"value": 1, "unit": "furlongs"})).request("order-sign", templates)
    (card,) = client.post(SIGN, json=body).json()["cards"]
    with _db(data_dir) as db:
        (verdict, aid) = db.execute(
            "SELECT verdict, id FROM assessments WHERE hook_instance = ?", (body["hookInstance"],)
        ).fetchone()
        stored = db.execute("SELECT uuid, statement FROM cards WHERE assessment_id = ?", (aid,)).fetchall()
    assert verdict == "input-error" and stored == [(card["uuid"], "input-error")]


def test_no_patient_data_in_the_logs(dev_server: Server, templates: dict[str, str]) -> None:
    """The log of a real server process (its output)."""
    pid = "pid-should-not-be-logged"
    record = [patient(pid), weight(70, pid), condition("58214004", "Schizophrenia", pid)]
    case = Case(record, [ketamine(pid=pid, dose={"value": 1, "unit": "furlongs"})], pid=pid)
    with httpx.Client(base_url=dev_server.url, timeout=30) as client:
        client.post(SIGN, json=case.request("order-sign", templates))
        surgery = surgery_case(ketamine(dose=quantity(1, "mg/kg")))
        client.post(SIGN, json=surgery.request("order-sign", templates))
    log = dev_server.log_text()
    assert "ketamine-order-sign" in log  # the service does log its calls
    for secret in ("pid-should-not-be-logged", "Schizophrenia", "Testpatient", "furlongs", "1970-05-01"):
        assert secret not in log


def test_a_large_record_is_assessed_as_a_small_one(
    client: InProcessClient, templates: dict[str, str]
) -> None:
    # over LOOP_ENTRIES entries the assessment runs in the thread pool: the same engine, the same cards
    order = ketamine(dose=quantity(1, "mg/kg"))
    history = [condition("38341003", "Hypertension", cid=f"old-{i}") for i in range(450)]
    small = call(client, surgery_case(order), "order-sign", templates)
    large = call(client, surgery_case(order, *history), "order-sign", templates)
    assert [(c["summary"], c["indicator"]) for c in large] == [(c["summary"], c["indicator"]) for c in small]
    assert statements(large) == ["dose-bolus-limit"]


@pytest.mark.server
def test_cards_are_withheld_when_the_audit_trail_cannot_be_written(
    tmp_path: Path, templates: dict[str, str]
) -> None:
    server = Server(tmp_path, {"KETAMINE_CDS_ALLOW_UNAUTHENTICATED": "1"}).start()
    try:
        body = surgery_case(ketamine(dose=quantity(1, "mg/kg"))).request("order-sign", templates)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.post(SIGN, json=body).status_code == 200
            with _db(server) as db:  # the database refuses audit rows from now on
                db.execute(
                    "CREATE TRIGGER refuse BEFORE INSERT ON assessments BEGIN SELECT RAISE(ABORT, 'no'); END"
                )
            refused = client.post(SIGN, json={**body, "hookInstance": str(uuid.uuid4())})
            with _db(server) as db:
                db.execute("DROP TRIGGER refuse")
            again = client.post(SIGN, json={**body, "hookInstance": str(uuid.uuid4())})
    finally:
        server.stop()
    assert refused.status_code == 503 and "cards" not in refused.json()
    assert "audit trail" in refused.json()["error"]
    assert again.status_code == 200 and again.json()["cards"]


def test_concurrent_calls_are_each_recorded_before_their_answer(
    dev_server: Server, templates: dict[str, str]
) -> None:
    bodies = [
        surgery_case(ketamine(dose=quantity(1, "mg/kg"))).request("order-sign", templates) for _ in range(24)
    ]

    def sign(body: Json) -> tuple[str, bool]:
        with httpx.Client(base_url=dev_server.url, timeout=30) as c:
            response = c.post(SIGN, json=body)
        assert response.status_code == 200
        uuids = [card["uuid"] for card in response.json()["cards"]]
        with _db(dev_server) as db:  # recorded by the time the answer arrived
            stored = db.execute(
                "SELECT c.uuid FROM cards c JOIN assessments a ON a.id = c.assessment_id "
                "WHERE a.hook_instance = ?",
                (body["hookInstance"],),
            ).fetchall()
        return body["hookInstance"], bool(uuids) and sorted(u for (u,) in stored) == sorted(uuids)

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(sign, bodies))
    assert all(ok for _, ok in results)
    assert len({instance for instance, _ in results}) == 24


# --- feedback ---------------------------------------------------------------------------------------


def test_feedback_is_stored_durably(
    data_dir: Path, client: InProcessClient, templates: dict[str, str]
) -> None:
    (card,) = call(
        client, surgery_case(ketamine(rate=quantity(2, "mg/kg/h")), icu=False), "order-sign", templates
    )
    reason = card["overrideReasons"][0]
    accepted_card = call(client, surgery_case(ketamine(dose=quantity(2, "mg/kg"))), "order-sign", templates)[
        0
    ]
    now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    body = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "outcomeTimestamp": now,
                "overrideReason": {
                    "reason": reason,
                    "userComment": "had ketamine last week, tolerated 1.5 mg/kg/h",
                },
            },
            {
                "card": accepted_card["uuid"],
                "outcome": "accepted",
                "outcomeTimestamp": now,
                "acceptedSuggestions": [{"id": accepted_card["suggestions"][0]["uuid"]}],
            },
        ]
    }
    response = client.post(SIGN + "/feedback", json=body)
    assert response.status_code == 200, response.text
    with _db(data_dir) as db:
        rows = db.execute(
            "SELECT card, outcome, outcome_timestamp, override_code, override_system, override_display, "
            "user_comment, accepted_suggestions, service FROM feedback WHERE card IN (?, ?) ORDER BY outcome",
            (card["uuid"], accepted_card["uuid"]),
        ).fetchall()
    assert rows == [
        (
            accepted_card["uuid"],
            "accepted",
            now,
            None,
            None,
            None,
            None,
            json.dumps([accepted_card["suggestions"][0]["uuid"]]),
            "ketamine-order-sign",
        ),
        (
            card["uuid"],
            "overridden",
            now,
            reason["code"],
            reason["system"],
            reason["display"],
            "had ketamine last week, tolerated 1.5 mg/kg/h",
            "[]",
            "ketamine-order-sign",
        ),
    ]


@pytest.mark.parametrize(
    "item",
    [
        {"outcome": "accepted"},
        {"card": "", "outcome": "accepted"},
        {"card": "c", "outcome": "maybe"},
        {"card": "c", "outcome": "overridden", "outcomeTimestamp": "yesterday"},
        {"card": "c", "outcome": "overridden", "overrideReason": {"reason": {"code": "x"}}},
        {"card": "c", "outcome": "overridden", "overrideReason": {"userComment": 5}},
        {"card": "c", "outcome": "accepted", "overrideReason": {"userComment": "no"}},
        {"card": "c", "outcome": "accepted", "acceptedSuggestions": [{"uuid": "s"}]},
        {"card": "c", "outcome": "accepted", "acceptedSuggestions": "s"},
        "not an object",
    ],
)
def test_malformed_feedback_is_400_and_not_stored(data_dir: Path, client: InProcessClient, item: Any) -> None:
    marker = str(uuid.uuid4())
    body = {"feedback": [{"card": marker, "outcome": "accepted"}, item]}
    response = client.post(SIGN + "/feedback", json=body)
    assert response.status_code == 400 and response.json()["error"]
    with _db(data_dir) as db:
        assert db.execute("SELECT count(*) FROM feedback WHERE card = ?", (marker,)).fetchone() == (0,)


def test_feedback_body_must_hold_a_feedback_array(client: InProcessClient) -> None:
    assert client.post(SIGN + "/feedback", json={"feedbacks": []}).status_code == 400
    assert client.post(SIGN + "/feedback", content=b"nope").status_code == 400


def test_cors_preflight_and_headers(client: InProcessClient) -> None:
    preflight = client.options(
        SIGN,
        headers={
            "Origin": "https://ehr.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    assert client.get("/cds-services").headers["access-control-allow-origin"] == "*"
    assert client.post(SIGN, content=b"{").headers["access-control-allow-origin"] == "*"
    assert client.post("/cds-services/nope", content=b"{}").headers["access-control-allow-origin"] == "*"


def test_a_browser_may_read_the_headers_that_matter_and_send_those_the_service_reads(
    client: InProcessClient,
) -> None:
    """A browser shows a script only the response headers it is told it may: the authentication challenge,
    Retry-After and the development warning are exposed, on answers and errors alike; a preflight allows
    every request header the service reads, in any case and order."""
    preflight = client.options(
        SIGN + "/feedback",
        headers={
            "Origin": "https://sandbox.cds-hooks.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,accept,Authorization",
        },
    )
    allowed = {h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "accept"} <= allowed
    for response in (
        client.get("/cds-services"),
        client.post(SIGN, content=b"{"),
        client.post(SIGN + "/feedback", json={"feedback": []}),
        preflight,
    ):
        exposed = {h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")}
        assert {"www-authenticate", "retry-after", "x-ketamine-cds-warning"} <= exposed


def test_card_links_open_the_statement_page(client: InProcessClient, templates: dict[str, str]) -> None:
    case = surgery_case(ketamine(dose=quantity(1, "mg/kg")), condition("58214004", "Schizophrenia"))
    cards = call(client, case, "order-select", templates)
    links = {link["url"] for card in cards for link in card["links"]}
    assert len(links) >= 3
    for url in links:
        assert url.startswith(client.base_url + "/"), url  # absolute, to the service's own pages
        page = client.get(url.removeprefix(client.base_url))
        assert page.status_code == 200, url
        assert url.rsplit("/", 1)[1] in page.text


@pytest.mark.server
def test_cors_headers_also_on_authentication_errors(tmp_path: Path) -> None:
    server = Server(tmp_path).start()  # authentication required: no trust list, so every call is refused
    try:
        response = httpx.post(server.url + SIGN, json=hook_request("order-sign", []), timeout=10)
        assert response.status_code == 401
        assert response.headers["access-control-allow-origin"] == "*"
    finally:
        server.stop()


@pytest.mark.parametrize("depth", [300, 900, 5000])
def test_deeply_nested_input_is_never_a_server_error(
    client: InProcessClient, templates: dict[str, str], depth: int
) -> None:
    body = hook_request(
        "order-sign", [ketamine(dose=quantity("0.5", "mg/kg"))], prefetch={k: None for k in templates}
    )
    text = json.dumps(body)
    nested = '{"a":' * depth + "1" + "}" * depth
    text = text.replace('"authoredOn": "2026-11-24"', f'"authoredOn": "2026-11-24", "extension": {nested}')
    response = client.post(SIGN, content=text.encode(), headers={"Content-Type": "application/json"})
    assert response.status_code in (200, 400)
    if response.status_code == 200:
        assert statements(response.json()["cards"]) == ["dose-bolus-limit"]


def test_ketamine_named_only_by_a_referenced_medication_is_found(
    client: InProcessClient, templates: dict[str, str]
) -> None:
    medication = ketamine_solution(10, mid="med-ket")
    order = ketamine(rate=quantity(8, "mL/h"), medication={"reference": "Medication/med-ket"})
    case = Case(
        [patient(), weight("62.5"), planned_procedure(), *encounter(False)], [order], encounter_id="e1"
    )
    body = case.request("order-sign", templates)
    body["context"]["draftOrders"]["entry"].append({"resource": medication})
    (card,) = client.post(SIGN, json=body).json()["cards"]
    assert card["summary"].startswith("Infusion 8 mL/h (1.28 mg/kg/h) is over the 1 mg/kg/h limit")


def test_an_unreadable_medication_does_not_make_other_drugs_ketamine(
    client: InProcessClient, templates: dict[str, str]
) -> None:
    case = Case([patient(), weight(70)], [oxycodone_order()])
    body = case.request("order-sign", templates)
    body["prefetch"]["medicationRequests"] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"resource": {"resourceType": "Medication", "id": "m1", "contained": "not a list"}},
            {"resource": {"resourceType": "NotAResource", "id": "x"}},
        ],
    }
    assert client.post(SIGN, json=body).json() == {"cards": []}


# --- the same service on PostgreSQL -----------------------------------------------------------------


@pytest.mark.server
def test_on_postgresql_hook_calls_are_audited_before_the_answer_and_feedback_is_kept(
    tmp_path: Path, postgres_database: str, templates: dict[str, str]
) -> None:
    import psycopg

    env = {"KETAMINE_CDS_ALLOW_UNAUTHENTICATED": "1", "KETAMINE_CDS_DATABASE_URL": postgres_database}
    server = Server(tmp_path, env).start()
    bodies = [
        surgery_case(ketamine(dose=quantity(1, "mg/kg"))).request("order-sign", templates) for _ in range(12)
    ]
    try:

        def sign(body: Json) -> tuple[str, list[str]]:
            with httpx.Client(base_url=server.url, timeout=30) as c:
                response = c.post(SIGN, json=body)
            assert response.status_code == 200, response.text
            return body["hookInstance"], [card["uuid"] for card in response.json()["cards"]]

        with ThreadPoolExecutor(max_workers=6) as pool:  # concurrent: the writer thread groups commits
            answered = list(pool.map(sign, bodies))
        first_card = answered[0][1][0]
        now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
        feedback = {"feedback": [{"card": first_card, "outcome": "accepted", "outcomeTimestamp": now}]}
        with httpx.Client(base_url=server.url, timeout=30) as c:
            assert c.post(SIGN + "/feedback", json=feedback).status_code == 200
    finally:
        server.stop()
    with psycopg.connect(postgres_database) as db:
        for instance, uuids in answered:
            stored = db.execute(
                "SELECT c.uuid FROM cards c JOIN assessments a ON a.id = c.assessment_id "
                "WHERE a.hook_instance = %s",
                (instance,),
            ).fetchall()
            assert uuids and sorted(u for (u,) in stored) == sorted(uuids)
        outcome = db.execute("SELECT outcome FROM feedback WHERE card = %s", (first_card,)).fetchall()
    assert outcome == [("accepted",)]


# --- review findings: input that must be refused or reported, never a 500 or a silent pass -----------


def test_an_unpaired_surrogate_is_400_and_nothing_is_recorded(
    data_dir: Path, client: InProcessClient, templates: dict[str, str]
) -> None:
    instance = str(uuid.uuid4())
    case = surgery_case(ketamine(dose=quantity(10, "mg")), condition("58214004", "Schizo\ud800phrenia"))
    text = json.dumps(case.request("order-sign", templates, hookInstance=instance))  # ASCII, "\ud800" escaped
    response = client.post(SIGN, content=text, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "surrogate" in response.json()["error"]
    hook = json.dumps(case.request("order-sign", templates)).replace('"order-sign"', '"x\\ud800"', 1)
    assert client.post(SIGN, content=hook, headers={"Content-Type": "application/json"}).status_code == 400
    with _db(data_dir) as db:
        assert db.execute(
            "SELECT count(*) FROM assessments WHERE hook_instance = ?", (instance,)
        ).fetchone() == (0,)


def test_a_key_written_twice_in_one_object_is_400_and_nothing_is_recorded(
    data_dir: Path, client: InProcessClient, templates: dict[str, str]
) -> None:
    # json.loads keeps the last of two keys: 2000 mg would be checked as the 20 mg written after it
    instance = str(uuid.uuid4())
    case = surgery_case(ketamine(dose=quantity(2000, "mg")))
    text = json.dumps(case.request("order-sign", templates, hookInstance=instance))
    assert text.count('"value": 2000') == 1
    response = client.post(
        SIGN,
        content=text.replace('"value": 2000', '"value": 2000, "value": 20'),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    body = response.json()
    assert "'value'" in body["error"] and "twice" in body["error"] and body["code"] == "duplicate-key"
    with _db(data_dir) as db:
        assert db.execute(
            "SELECT count(*) FROM assessments WHERE hook_instance = ?", (instance,)
        ).fetchone() == (0,)


def test_two_weights_taken_at_one_time_that_disagree_warn_at_signing_instead_of_checking_either(
    client: InProcessClient, templates: dict[str, str]
) -> None:
    # 7 kg and 70 kg at the same moment: today the order of the entries decides which one the dose is checked
    # against (20 mg is within the limit for 70 kg and three times over it for 7 kg)
    when = dt.date.today().isoformat() + "T08:00:00Z"
    case = surgery_case(
        ketamine(dose=quantity(20, "mg")),
        weight(7, oid="light", when=when),
        weight(70, oid="heavy", when=when),
    )
    cards = call(client, case, "order-sign", templates)
    assert all(c["indicator"] != "critical" for c in cards)
    [said] = [c for c in cards if c["summary"].startswith("Body weight not used")]
    assert said["indicator"] == "warning" and "7 kg and 70 kg" in said["summary"]
    assert "Observation/heavy" in said["detail"] and "Observation/light" in said["detail"]
    assert any("no usable body weight" in c["summary"] for c in cards)


@pytest.mark.parametrize(
    "status", ["on-hold", "completed", "cancelled", "stopped", "unknown", "entered-in-error"]
)
def test_a_ketamine_draft_that_is_not_draft_or_active_is_said_not_checked(
    data_dir: Path, client: InProcessClient, templates: dict[str, str], status: str
) -> None:
    # today: {"cards": []}, as if checked (500 mg is over the limit for 70 kg)
    instance = str(uuid.uuid4())
    case = surgery_case(ketamine(dose=quantity(500, "mg"), status=status))
    for hook in ("order-sign", "order-select"):
        extra = {"selections": ["MedicationRequest/k1"]} if hook == "order-select" else {}
        [card] = call(client, case, hook, templates, hookInstance=instance, **extra)
        assert card["indicator"] == "warning" and "overrideReasons" not in card
        assert (
            card["summary"].startswith("Ketamine order not checked") and f"status {status}" in card["summary"]
        )
    with _db(data_dir) as db:
        assert db.execute(
            "SELECT verdict FROM assessments WHERE hook_instance = ?", (instance,)
        ).fetchall() == [("not-checked",), ("not-checked",)]


@pytest.mark.parametrize(
    "name", ["Ketamin 50 mg/ml Injektionsl\u00f6sung", "Keta\u00admine 50 mg/mL", "Keta\u200bmine 50 mg/mL"]
)
def test_ketamine_named_in_another_language_or_with_format_characters_is_checked(
    client: InProcessClient, templates: dict[str, str], name: str
) -> None:
    order = ketamine(dose=quantity(500, "mg"))
    order["medicationCodeableConcept"] = {"text": name}
    cards = call(client, surgery_case(order), "order-sign", templates)
    assert [c["indicator"] for c in cards] == ["critical"] and statements(cards) == ["dose-bolus-limit"]


def test_a_nul_in_a_stored_string_is_400(client: InProcessClient, templates: dict[str, str]) -> None:
    case = surgery_case(ketamine(dose=quantity(10, "mg")))
    response = client.post(SIGN, json=case.request("order-sign", templates, hookInstance="abc\x00def"))
    assert response.status_code == 400 and "hookInstance" in response.json()["error"]
    item = {"card": str(uuid.uuid4()), "outcome": "overridden", "overrideReason": {"userComment": "a\x00b"}}
    response = client.post(SIGN + "/feedback", json={"feedback": [item]})
    assert response.status_code == 400 and "userComment" in response.json()["error"]


def test_two_draft_orders_with_one_id_are_400(client: InProcessClient, templates: dict[str, str]) -> None:
    case = Case(
        [patient(), weight(70), planned_procedure()],
        [ketamine(dose=quantity(10, "mg")), ketamine(dose=quantity(500, "mg"))],  # both "k1"
    )
    response = client.post(SIGN, json=case.request("order-sign", templates))
    assert response.status_code == 400 and "'k1'" in response.json()["error"]


def test_a_draft_without_an_id_gets_its_card_but_no_update_it_cannot_address(
    client: InProcessClient, templates: dict[str, str]
) -> None:
    order = ketamine(dose=quantity(500, "mg"))
    del order["id"]
    (card,) = call(client, surgery_case(order), "order-sign", templates)
    assert card["indicator"] == "critical" and "suggestions" not in card


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-11-24",
        "2026-11-24T10:00:00",
        "yesterday",
        "2026-11-24T11:00:00+01:00",  # the same moment, but not written in UTC as the specification asks
        "2026-11-24T10:00Z",  # RFC 3339 has seconds
        "2026-13-24T10:00:00Z",
    ],
)
def test_an_outcome_timestamp_must_be_a_utc_date_and_time(client: InProcessClient, stamp: str) -> None:
    item = {"card": str(uuid.uuid4()), "outcome": "accepted", "outcomeTimestamp": stamp}
    response = client.post(SIGN + "/feedback", json={"feedback": [item]})
    assert response.status_code == 400 and "outcomeTimestamp" in response.json()["error"]
    assert "UTC" in response.json()["error"]
    for utc in ("2026-11-24T10:00:00Z", "2026-11-24T10:00:00.123Z", "2026-11-24T10:00:00+00:00"):
        item["outcomeTimestamp"] = utc
        assert client.post(SIGN + "/feedback", json={"feedback": [item]}).status_code == 200


def test_an_absolute_dose_without_a_weight_warns_at_signing(
    client: InProcessClient, templates: dict[str, str]
) -> None:
    case = Case([patient(), planned_procedure()], [ketamine(dose=quantity(50, "mg"))])
    (card,) = call(client, case, "order-sign", templates)
    assert card["indicator"] == "warning" and "no body weight" in card["summary"]
    assert "overrideReasons" not in card


def test_a_dose_given_only_in_words_warns_at_signing_with_the_limits(
    client: InProcessClient, templates: dict[str, str]
) -> None:
    order = ketamine()
    order["dosageInstruction"][0]["text"] = "ketamine 1 mg/kg IV push now"
    cards = call(client, surgery_case(order), "order-sign", templates)
    (card,) = [c for c in cards if c["summary"].startswith("Ketamine dose not checked")]
    assert card["indicator"] == "warning"
    assert "1 mg/kg IV push now" in card["detail"] and "max 24.5 mg for 70 kg" in card["detail"]


def test_a_child_gets_a_note_at_selection_that_the_reference_has_no_statement_for_children(
    client: InProcessClient, templates: dict[str, str]
) -> None:
    case = surgery_case(ketamine(dose=quantity(10, "mg")), kg=30)
    case.record[0]["birthDate"] = (dt.date.today() - dt.timedelta(days=365 * 10)).isoformat()
    selected = call(client, case, "order-select", templates)
    notes = [c for c in selected if "no statement for children" in c["summary"]]
    assert [c["indicator"] for c in notes] == ["info"]
    assert call(client, case, "order-sign", templates) == []  # information: never at signing
