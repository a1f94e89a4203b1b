"""The knowledge base agrees with guideline/REFERENCE.md and every message renders cleanly."""

import re
from fractions import Fraction

import pytest

from builders import facts
from ketamine_cds import Coded, Finding, load_knowledge
from ketamine_cds._render import finding_texts
from shared_data import SHARED

REFERENCE = (SHARED / "guideline" / "REFERENCE.md").read_text()
KB = load_knowledge()


def _reference_rows() -> dict[str, list[str]]:
    rows = {}
    for line in REFERENCE.splitlines():
        m = re.match(r"^\| `([a-z0-9-]+)` \|(.*)\|\s*$", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in m.group(2).split("|")]
    return rows


ROWS = _reference_rows()


def test_every_reference_statement_is_in_the_knowledge_base_and_nothing_else() -> None:
    assert set(ROWS) == set(KB.statements)


@pytest.mark.parametrize("statement_id", sorted(ROWS))
def test_grade_and_certainty_match_the_reference(statement_id: str) -> None:
    st = KB.statements[statement_id]
    cells = " ".join(ROWS[statement_id])
    grade_cell = re.search(r"\b([ABCDI]) / (high|moderate|low)\b", cells)
    if grade_cell:
        assert (st.grade, st.certainty) == (grade_cell.group(1), grade_cell.group(2))
    elif re.search(r"\(grade ([ABCDI])\)", cells):
        assert st.grade == re.search(r"\(grade ([ABCDI])\)", cells).group(1)  # type: ignore[union-attr]
    else:
        assert st.grade is None
        certainty = re.search(
            r"\| (high|moderate|low) certainty \|", "| " + " | ".join(ROWS[statement_id]) + " |"
        )
        assert st.certainty == (certainty.group(1) if certainty else None)


@pytest.mark.parametrize("statement_id", sorted(ROWS))
def test_verification_tags_match_and_nothing_unverified_is_a_rule(statement_id: str) -> None:
    tags = re.findall(r"\[(seed|V1|V2|U)\]", " ".join(ROWS[statement_id]))
    assert list(KB.statements[statement_id].tags) == tags
    assert "U" not in tags


def test_dose_thresholds_are_the_reference_numbers() -> None:
    assert KB.threshold("dose-bolus-limit", "limit_mg_per_kg") == Fraction(35, 100)
    assert KB.threshold("dose-infusion-limit", "limit_mg_per_kg_per_h") == 1


def test_mme_factors_are_cdc_2022() -> None:
    expected = {
        "codeine": "0.15",
        "fentanyl": "2.4",
        "hydrocodone": "1",
        "hydromorphone": "5",
        "methadone": "4.7",
        "morphine": "1",
        "oxycodone": "1.5",
        "oxymorphone": "3",
        "tapentadol": "0.4",
        "tramadol": "0.2",
    }
    assert {k: v.mme_factor for k, v in KB.opioids.items()} == {k: Fraction(v) for k, v in expected.items()}


def test_every_code_records_where_it_was_checked() -> None:
    for code in KB.value_sets.codes:
        assert code.checked in {"v", "~", "?", "synthea"} and code.where
        if code.where == "REFERENCE.md":
            assert code.code.rstrip("-") in REFERENCE, code


def test_icd10_hierarchy_matches_descendants_but_not_neighbours() -> None:
    vs = KB.value_sets
    assert "opioid-dependence" in vs.concepts("http://hl7.org/fhir/sid/icd-10-cm", "F11.20")
    assert "opioid-dependence" not in vs.concepts("icd10cm", "F11.10")
    assert "psychosis" in vs.concepts("icd10cm", "F20.9")
    assert vs.concepts("icd10cm", "F290") == ()
    assert "crps" in vs.concepts("icd10cm", "G90.512")


LONG = Coded(
    "Laparoscopic-assisted total proctocolectomy with ileal pouch-anal anastomosis and diverting loop "
    "ileostomy, robotic",
    "http://snomed.info/sct",
    "123456789012345",
)


@pytest.mark.parametrize(
    ("statement_id", "key"), [(s.id, k) for s in KB.statements.values() for k in s.messages]
)
def test_every_message_fills_in_and_keeps_summary_under_140(statement_id: str, key: str) -> None:
    st = KB.statements[statement_id]
    names = set(re.findall(r"{(\w+)}", st.messages[key].summary + st.messages[key].detail))
    params: dict[str, object] = {n: (Fraction(123456, 100), "mg/kg/h") for n in names}
    params.update({n: LONG for n in names & {"procedure", "condition"}})
    params.update(
        {n: "x" * 60 for n in names & {"basis", "status", "indication", "procedure_class", "prior_course"}}
    )
    summary, detail = finding_texts(Finding(st, key, params))
    assert len(summary) < 140
    assert "{" not in summary + detail
    assert facts() is not None
