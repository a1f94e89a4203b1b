"""OMOP as sites run it: drugs, strengths, conditions and procedures found through the vocabulary tables (by
vocabulary and code, never by a concept id), on a small vocabulary built here with site-local ids unlike any
real ones; and the same tables without the vocabulary read from source values, as before."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest

from ketamine_cds.audit.duck import run_duckdb
from ketamine_cds.audit.omop import has_vocabulary
from ketamine_cds.audit.run import canonical_parquet

BASE = 2_100_000_000  # above 2,000,000,000: the range OMOP leaves to sites, never a standard concept
K0, KA, KB_, OX, OX5, MO, MS30 = (BASE + n for n in (1, 2, 3, 10, 11, 20, 21))
SICKLE, LOCAL_SICKLE, APPENDECTOMY, WEIGHT, MG, ML, KG = (BASE + n for n in (30, 31, 40, 50, 60, 61, 62))

VOCABULARY = {
    "concept": (
        "concept_id,concept_name,domain_id,vocabulary_id,concept_class_id,standard_concept,concept_code",
        f"{K0},ketamine,Drug,RxNorm,Ingredient,S,6130",
        f"{KA},Anaesthetic product A 500 MG in 10 ML Injectable Solution,Drug,RxNorm,Quant Clinical Drug,S,999000001",
        f"{KB_},Anaesthetic product B,Drug,RxNorm,Clinical Drug,S,999000002",
        f"{OX},oxycodone,Drug,RxNorm,Ingredient,S,7804",
        f"{OX5},oxycodone hydrochloride 5 MG Oral Tablet,Drug,RxNorm,Clinical Drug,S,1049621",
        f"{MO},morphine,Drug,RxNorm,Ingredient,S,7052",
        f"{MS30},Extended release tablet M30,Drug,RxNorm,Clinical Drug,S,999000003",
        f"{SICKLE},Sickle cell crisis,Condition,SNOMED,Clinical Finding,S,30925003",
        f"{LOCAL_SICKLE},Local sickle cell code,Condition,Local,Local,,SC-1",
        f"{APPENDECTOMY},Appendectomy,Procedure,SNOMED,Procedure,S,80146002",
        f"{WEIGHT},Body weight,Measurement,LOINC,Clinical Observation,S,29463-7",
        f"{MG},milligram,Unit,UCUM,Unit,S,mg",
        f"{ML},milliliter,Unit,UCUM,Unit,S,mL",
        f"{KG},kilogram,Unit,UCUM,Unit,S,kg",
    ),
    "concept_ancestor": (
        "ancestor_concept_id,descendant_concept_id,min_levels_of_separation,max_levels_of_separation",
        *(
            f"{a},{d},{int(a != d)},{int(a != d)}"
            for a, d in ((K0, K0), (K0, KA), (K0, KB_), (OX, OX), (OX, OX5), (MO, MO), (MO, MS30))
        ),
    ),
    "concept_relationship": (
        "concept_id_1,concept_id_2,relationship_id,valid_start_date,valid_end_date,invalid_reason",
        f"{LOCAL_SICKLE},{SICKLE},Maps to,1970-01-01,2099-12-31,",
        f"{SICKLE},{LOCAL_SICKLE},Mapped from,1970-01-01,2099-12-31,",
    ),
    "drug_strength": (
        "drug_concept_id,ingredient_concept_id,amount_value,amount_unit_concept_id,numerator_value,"
        "numerator_unit_concept_id,denominator_value,denominator_unit_concept_id,invalid_reason",
        f"{KA},{K0},,,500,{MG},10,{ML},",
        f"{OX5},{OX},5,{MG},,,,,",
        f"{MS30},{MO},30,{MG},,,,,",
    ),
}
CDM = {
    "person": ("person_id,year_of_birth", "1,1970", "2,1980", "3,1990"),
    "drug_exposure": (
        "drug_exposure_id,person_id,drug_concept_id,drug_source_value,drug_exposure_start_datetime,"
        "drug_exposure_start_date,drug_exposure_end_date,days_supply,quantity,dose_unit_source_value,"
        "route_source_value,sig,visit_occurrence_id",
        # person 1: 0.4 mL of product A (50 mg/mL in drug_strength alone) before an appendectomy; oxycodone
        # 2 tablets 3 times a day (180 over 30 days: 30 mg/day, the FDA threshold) since 2025-05-10
        f"1,1,{KA},KETAMINE INJ,2025-06-01 10:00:00,2025-06-01,,,0.4,mL,IV,,10",
        f"2,1,{OX5},oxycodone 5 mg tablet,,2025-05-10,2025-06-08,30,180,,PO,2 tablets 3 times a day,",
        # person 2: 20 mg; oxycodone 90 tablets over 30 days (15 mg/day), its name without a strength
        f"3,2,{KB_},ketamine,2025-06-01 10:00:00,2025-06-01,,,20,mg,IV,,20",
        f"4,2,{OX5},oxycodone hcl,,2025-05-10,2025-06-08,30,90,,PO,,",
        # person 3: sickle cell crisis (a local code that maps to SNOMED); morphine 30 mg twice a day for 90 days
        f"5,3,{KB_},ketamine,2025-06-01 10:00:00,2025-06-01,,,0.3,mg/kg,IV,,30",
        f"6,3,{MS30},MS CONTIN 30,,2025-04-01,2025-06-29,90,180,,PO,,",
    ),
    "measurement": (
        "measurement_id,person_id,measurement_concept_id,measurement_source_value,measurement_datetime,"
        "value_as_number,unit_concept_id,unit_source_value,visit_occurrence_id",
        f"1,1,{WEIGHT},,2025-05-31 08:00:00,70,{KG},,10",
        "2,2,0,29463-7,2025-05-31 08:00:00,80,,kg,20",
    ),
    "procedure_occurrence": (
        "person_id,procedure_concept_id,procedure_source_value,procedure_datetime,visit_occurrence_id",
        f"1,{APPENDECTOMY},APPY-LOCAL,2025-06-01 08:00:00,10",
        "2,0,80146002,2025-06-01 08:00:00,20",
    ),
    "condition_occurrence": (
        "person_id,condition_concept_id,condition_source_concept_id,condition_source_value,condition_start_date,"
        "visit_occurrence_id",
        f"3,0,{LOCAL_SICKLE},SC-LOCAL,2025-05-31,30",
    ),
    "visit_occurrence": ("visit_occurrence_id,person_id,visit_concept_id", "10,1,0", "20,2,0", "30,3,0"),
}


def _write(folder: Path, tables: dict[str, tuple[str, ...]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in tables.items():
        (folder / f"{name}.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, dict[str, Any]]]:
    """The findings and canonical rows of the set with its vocabulary and without it."""
    root = tmp_path_factory.mktemp("omop-vocabulary")
    with_vocabulary, without = root / "with", root / "without"
    _write(with_vocabulary, {**CDM, **VOCABULARY})
    shutil.copytree(with_vocabulary, without)
    for name in VOCABULARY:
        (without / f"{name}.csv").unlink()
    assert has_vocabulary(with_vocabulary) and not has_vocabulary(without)
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for label, folder in (("with", with_vocabulary), ("without", without)):
        canonical = canonical_parquet(folder, "omop", root / f"out-{label}").path
        run = run_duckdb(f"SELECT * FROM read_parquet('{canonical}')", root / f"audit-{label}")
        con = duckdb.connect()
        try:
            cursor = con.execute(
                f"SELECT c.*, f.verdict, f.statements, f.problem FROM read_parquet('{canonical}') c "
                f"JOIN read_parquet('{run.findings}') f USING (admin_id)"
            )
            names = [d[0] for d in cursor.description]
            found[label] = {r[0]: dict(zip(names, r, strict=True)) for r in cursor.fetchall()}
        finally:
            con.close()
    return found


def test_with_the_vocabulary(audited: dict[str, dict[str, dict[str, Any]]]) -> None:
    rows = audited["with"]
    assert set(rows) == {"1", "3", "5"}  # the three ketamine exposures, not the opioids
    one = rows["1"]
    # product A is ketamine by its ingredient (its name does not say so), 50 mg/mL by drug_strength
    assert (one["concentration_mg_per_ml"], one["weight_value"], one["weight_unit"]) == (50, 70, "kg")
    assert (one["indication"], one["procedure_class"]) == (
        "perioperative",
        "abdominal",
    )  # by standard concept
    assert one["opioid_tolerance"] == "present"  # 5 mg (drug_strength) x 180 / 30 days: 30 mg/day
    assert one["opioid_basis"] == "oxycodone 30 mg/day for 22 days (45 MME/day)"
    assert one["verdict"] == "consider" and "acute-opioid-tolerant-surgery" in one["statements"]
    three = rows["3"]
    assert (three["opioid_tolerance"], three["verdict"]) == ("absent", "consider")  # 15 mg/day: below 30
    assert "acute-opioid-tolerant-surgery" not in three["statements"]
    five = rows["5"]
    # a local condition code that "Maps to" SNOMED sickle cell crisis; morphine 60 mg/day for 61 days
    assert (five["indication"], five["conditions"]) == ("sickle-cell-pain", "sickle-cell-crisis")
    assert (five["opioid_tolerance"], five["verdict"]) == ("present", "may-consider")
    assert "acute-sickle-cell" in five["statements"]


def test_without_the_vocabulary_source_values_are_read(audited: dict[str, dict[str, dict[str, Any]]]) -> None:
    rows = audited["without"]
    assert set(rows) == {"1", "3", "5"}  # ketamine named in every drug_source_value
    one = rows["1"]
    # no strength in "KETAMINE INJ", no weight source value, no procedure code: each is missing, not guessed
    assert (one["concentration_mg_per_ml"], one["weight_value"], one["indication"]) == (None, None, None)
    assert one["verdict"] == "needs-information"
    assert one["opioid_tolerance"] == "present"  # "oxycodone 5 mg tablet": the strength from the name
    three = rows["3"]
    assert (three["opioid_tolerance"], three["opioid_unknown_reason"]) == (
        "unknown",
        "an opioid prescription's dose or start date could not be read",  # "oxycodone hcl": no strength
    )
    assert three["verdict"] == "consider"
    five = rows["5"]
    # "MS CONTIN 30" names no opioid the knowledge base knows; "SC-LOCAL" is no code
    assert (five["opioid_tolerance"], five["indication"], five["conditions"]) == ("not-recorded", None, None)
    assert five["verdict"] == "needs-information"
