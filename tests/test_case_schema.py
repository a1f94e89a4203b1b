"""The published JSON Schema of the case document agrees with the adapter and the knowledge base."""

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from ketamine_cds import load_knowledge

SCHEMA: dict[str, Any] = json.loads(
    (resources.files("ketamine_cds") / "schemas" / "case.schema.json").read_text()
)
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((ROOT / "examples" / "cases").glob("*.json")), ids=lambda p: p.name)
def test_examples_validate(path: Path) -> None:
    jsonschema.validate(json.loads(path.read_text()), SCHEMA)


def test_schema_enums_follow_the_knowledge_base() -> None:
    kb = load_knowledge()
    props = SCHEMA["properties"]
    assert set(props["indication"]["enum"]) == set(kb.uses)
    assert set(props["procedure"]["properties"]["class"]["enum"]) == set(kb.procedure_classes)
    opioid_item = props["patient"]["properties"]["opioids"]["items"]
    assert set(opioid_item["properties"]["ingredient"]["enum"]) == set(kb.opioids)


def test_schema_rejects_a_misspelt_field_like_the_adapter() -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"patient": {"wieght": {"value": 1, "unit": "kg"}}}, SCHEMA)
