"""The knowledge base agrees with guideline/REFERENCE.md and every message renders cleanly."""

import re
from dataclasses import dataclass
from fractions import Fraction

import pytest

from builders import facts
from ketamine_cds import Coded, Finding, load_knowledge
from ketamine_cds._render import finding_texts
from shared_data import SHARED

REFERENCE = (SHARED / "guideline" / "REFERENCE.md").read_text()
KB = load_knowledge()


@dataclass(frozen=True)
class ReferenceRow:
    """One statement row of the reference's tables, read by its table's header."""

    grade: str | None
    certainty: str | None
    tags: list[str]
    note: str | None


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _reference_rows() -> dict[str, ReferenceRow]:
    """Every ``| `statement-id` | ...`` row, its grade and tag cells found by the column headers (tables
    differ: the contraindications have a condition and a stance column, the evidence summary no grade)."""
    rows: dict[str, ReferenceRow] = {}
    header: list[str] = []
    for line in REFERENCE.splitlines():
        if not line.startswith("|"):
            header = []
            continue
        cells = _cells(line)
        if not header:
            header = cells
            continue
        m = re.fullmatch(r"`([a-z0-9-]+)`", cells[0])
        if not m:
            continue
        by_column = dict(zip(header, cells, strict=True))
        graded = re.fullmatch(
            r"([ABCDI]) / (high|moderate|low)", by_column.get("grade / certainty", "not stated")
        )
        tag_cell = by_column["tag"]
        note = re.search(r"\((.+)\)\s*$", tag_cell)
        rows[m.group(1)] = ReferenceRow(
            grade=graded.group(1) if graded else None,
            certainty=graded.group(2) if graded else None,
            tags=re.findall(r"\[(seed|V1|V2v|V2|U)\]", tag_cell),
            note=note.group(1) if note else None,
        )
    return rows


ROWS = _reference_rows()


def test_the_reference_tables_are_read() -> None:
    assert len(ROWS) >= 30
    assert ROWS["chronic-weak-evidence"] == ReferenceRow("D", "low", ["seed", "V2"], "1 source for the grade")
    assert ROWS["dose-ceiling"] == ReferenceRow(None, None, ["V2"], "derived")
    assert ROWS["evidence-2019-review"] == ReferenceRow(None, None, ["seed", "V1"], None)


def test_every_reference_statement_is_in_the_knowledge_base_and_nothing_else() -> None:
    assert set(ROWS) == set(KB.statements)


@pytest.mark.parametrize("statement_id", sorted(ROWS))
def test_grade_and_certainty_match_the_reference(statement_id: str) -> None:
    st, row = KB.statements[statement_id], ROWS[statement_id]
    assert (st.grade, st.certainty) == (row.grade, row.certainty)


@pytest.mark.parametrize("statement_id", sorted(ROWS))
def test_verification_tags_match_and_nothing_unverified_is_a_rule(statement_id: str) -> None:
    st, row = KB.statements[statement_id], ROWS[statement_id]
    assert (list(st.tags), st.verification_note) == (row.tags, row.note)
    assert "U" not in row.tags


def _uses_of(heading: str) -> set[str]:
    """The use ids of one bullet of the reference's "Uses" section (a bullet may wrap onto more lines)."""
    bullet = re.search(rf"^- \*\*{heading}\*\*(.*?)(?=^- |^$)", REFERENCE, re.MULTILINE | re.DOTALL)
    assert bullet is not None
    return set(re.findall(r"`([a-z-]+)`", bullet.group(1)))


def test_uses_belong_to_the_guideline_the_reference_gives() -> None:
    by_guideline = {g: {u.id for u in KB.uses.values() if u.guideline == g} for g in ("acute", "chronic")}
    assert by_guideline == {"acute": _uses_of("acute"), "chronic": _uses_of("chronic")}
    assert {u.id for u in KB.uses.values() if u.guideline is None} == {
        "anesthesia",
        "procedural-sedation",
        "depression",
    }


def test_dose_thresholds_are_the_reference_numbers() -> None:
    assert KB.threshold("dose-bolus-limit", "limit_mg_per_kg") == Fraction(35, 100)
    assert KB.threshold("dose-infusion-limit", "limit_mg_per_kg_per_h") == 1
    assert KB.threshold("dose-ceiling", "limit_mg_per_kg_per_h") == 7
    chronic = {
        name: KB.threshold("chronic-dose-range", name)
        for name in (
            "bolus_limit_mg_per_kg",
            "infusion_minimum_mg_per_kg_per_h",
            "infusion_limit_mg_per_kg_per_h",
            "intensive_care_limit_mg_per_kg_per_h",
        )
    }
    assert chronic == {
        "bolus_limit_mg_per_kg": Fraction(35, 100),
        "infusion_minimum_mg_per_kg_per_h": Fraction(1, 2),
        "infusion_limit_mg_per_kg_per_h": 2,
        "intensive_care_limit_mg_per_kg_per_h": 7,
    }
    assert KB.threshold("chronic-dose-minimum", "minimum_total_mg") == 80
    assert KB.threshold("chronic-dose-minimum", "minimum_duration_h") == 2


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


def test_every_statement_that_interrupts_offers_override_reasons_and_no_other_does() -> None:
    """A contraindication the record shows and a dose over its limit interrupt at order-sign, and their cards
    offer coded override reasons (a dose statement's own list; kb.toml's for a relative contraindication)."""
    for st in KB.statements.values():
        interrupts = st.role == "contraindication" or any(k.startswith("exceeds") for k in st.messages)
        assert bool(st.override_reasons) == interrupts, st.id
        assert set(st.override_reasons) <= set(KB.override_reasons.values()), st.id


def test_every_screened_statement_is_a_contraindication_or_caution_screening_known_concepts() -> None:
    assert {s.role for s in KB.screening} == {"contraindication", "caution"}
    assert {s.id for s in KB.screening} == {
        s.id for s in KB.statements.values() if s.role in ("contraindication", "caution")
    }
    for st in KB.screening:
        assert st.screen is not None and st.screen.concept in KB.concepts
        assert st.screen.verify is None or st.screen.verify in KB.concepts


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
    params.update({n: "" for n in names & {"use_note", "why_unknown", "conditions_note"}})
    summary, detail = finding_texts(Finding(st, key, params))
    assert len(summary) < 140
    assert "{" not in summary + detail
    assert facts() is not None
