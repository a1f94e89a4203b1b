"""The CTE groups the FHIR and OMOP readers share (``audit/reader_sql.py``), each on a few rows."""

from __future__ import annotations

from typing import Any

import duckdb

from ketamine_cds._kb import load_knowledge
from ketamine_cds.audit.canonical import COLUMN_NAMES
from ketamine_cds.audit.reader_sql import (
    FIRST_COURSE_CTE,
    admin_conditions_cte,
    admin_procedure_cte,
    canonical_select,
    classified_procedures,
    condition_in_effect,
    knowledge_ctes,
    prior_course_sql,
    together_use_cte,
)

KB = load_knowledge()


def _rows(sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect()
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_knowledge_ctes_give_the_value_sets_procedure_classes_and_uses() -> None:
    base = f"WITH {knowledge_ctes(KB)} "
    assert _rows(
        base + "SELECT pclass, severity FROM pclasses WHERE pclass IN ('mild', 'spine') ORDER BY 1"
    ) == [
        ("mild", 1),
        ("spine", 0),
    ]
    assert _rows(base + "SELECT use_id FROM use_words WHERE words = 'procedural sedation'") == [
        ("procedural-sedation",)
    ]
    assert _rows(base + "SELECT concept FROM vs WHERE system = 'icd10cm' AND code = 'F112'") == [
        ("opioid-dependence",)
    ]


def test_a_condition_is_in_effect_from_its_start_until_its_end_or_its_status_ends_it() -> None:
    in_effect = condition_in_effect("begun", "ended", "over", "given")
    rows = _rows(f"""
        SELECT name, {in_effect} FROM (VALUES
          ('open', TIMESTAMP '2026-01-01', NULL, false),
          ('not yet', TIMESTAMP '2026-03-01', NULL, false),
          ('ended', TIMESTAMP '2026-01-01', TIMESTAMP '2026-01-31', false),
          ('ends later', NULL, TIMESTAMP '2026-03-01', true),
          ('resolved', TIMESTAMP '2026-01-01', NULL, true)
        ) t(name, begun, ended, over), (SELECT TIMESTAMP '2026-02-01' AS given)
        ORDER BY name""")
    assert rows == [
        ("ended", False),
        ("ends later", True),
        ("not yet", False),
        ("open", True),
        ("resolved", False),
    ]


def test_admin_conditions_lists_each_concept_once_in_order() -> None:
    rows = _rows(f"""
        WITH admin_concepts AS (SELECT * FROM (VALUES ('a1', 'sleep-apnea'), ('a1', 'pregnancy'),
                                                      ('a1', 'sleep-apnea'), ('a2', 'psychosis')) v(admin_id, concept)),
        {admin_conditions_cte()}
        SELECT admin_id, conditions FROM admin_conditions ORDER BY 1""")
    assert rows == [("a1", "pregnancy;sleep-apnea"), ("a2", "psychosis")]


def test_the_procedure_of_the_stay_the_most_painful_then_the_nearest() -> None:
    # a1: a mild procedure in its stay and an abdominal one without a stay 2 h away: abdominal (severe first);
    # a2: only a procedure without a stay 30 h away: none; a3: a mild one of another stay: none
    rows = _rows(f"""
        WITH {knowledge_ctes(KB)},
        codes AS (SELECT * FROM (VALUES
          ('p1', 's1', TIMESTAMP '2026-01-01 09:00', 'snomed', '73761001'),
          ('p1', NULL, TIMESTAMP '2026-01-01 12:00', 'snomed', '80146002'),
          ('p2', NULL, TIMESTAMP '2026-01-02 16:00', 'snomed', '80146002'),
          ('p3', 's9', TIMESTAMP '2026-01-01 10:00', 'snomed', '73761001')
        ) v(person, stay, t, short, norm)),
        procs AS ({classified_procedures("codes", ["person", "stay", "t"])}),
        admins AS (SELECT * FROM (VALUES ('a1', 'p1', 's1', TIMESTAMP '2026-01-01 10:00'),
                                         ('a2', 'p2', NULL, TIMESTAMP '2026-01-01 10:00'),
                                         ('a3', 'p3', 's3', TIMESTAMP '2026-01-01 10:00'))
                   v(admin_id, patient_id, stay_id, administered_at)),
        {admin_procedure_cte("admins c", "person", "stay", "p.stay = c.stay_id")}
        SELECT a.admin_id, ap.pclass FROM admins a LEFT JOIN admin_procedure ap USING (admin_id) ORDER BY 1""")
    assert rows == [("a1", "abdominal"), ("a2", None), ("a3", None)]


def test_a_use_some_conditions_name_only_together() -> None:
    rows = _rows(f"""
        WITH {knowledge_ctes(KB)},
        concepts AS (SELECT * FROM (VALUES ('v1', 'spinal-cord-injury'), ('v1', 'chronic-pain'),
                                           ('v2', 'spinal-cord-injury')) v(visit_id, concept)),
        {together_use_cte("together", "visit_id", "concepts")}
        SELECT visit_id, use_id FROM together ORDER BY 1""")
    assert rows == [("v1", "spinal-cord-injury-pain")]


def test_a_prior_course_the_records_answer_first_then_a_course_before() -> None:
    rows = _rows(f"""
        WITH iv_courses AS (SELECT * FROM (VALUES ('p1', TIMESTAMP '2025-06-01'), ('p1', TIMESTAMP '2025-01-01'),
                                                  ('p2', TIMESTAMP '2026-06-01')) v(patient, t)),
        {FIRST_COURSE_CTE}
        SELECT c.admin_id, {prior_course_sql("c")}
        FROM (VALUES ('a1', 'p1', TIMESTAMP '2026-01-01', NULL, NULL), ('a2', 'p1', TIMESTAMP '2026-01-01', false, true),
                     ('a3', 'p2', TIMESTAMP '2026-01-01', NULL, NULL), ('a4', 'p3', TIMESTAMP '2026-01-01', true, false))
          c(admin_id, patient_id, administered_at, yes, no)
        LEFT JOIN first_course fc ON fc.patient = c.patient_id
        ORDER BY 1""")
    assert rows == [("a1", True), ("a2", False), ("a3", None), ("a4", True)]


def test_canonical_select_gives_the_canonical_columns() -> None:
    answer = """answer AS (SELECT 'a1' AS admin_id, 'p1' AS patient_id, TIMESTAMP '2026-01-01' AS administered_at,
        'oral' AS route, NULL AS kind, 20.0 AS dose_value, 'mg' AS dose_unit, NULL AS concentration_mg_per_ml,
        struct_pack(value := 70.0, unit := 'kg') AS weight, NULL AS location, NULL AS reason_use,
        'mild' AS pclass, NULL AS conditions, true AS prior, NULL AS pca_sole_agent)"""
    con = duckdb.connect()
    try:
        select = canonical_select("NULL", "'unknown'", "NULL")
        cursor = con.execute(f"WITH {answer} {select}")
        row = dict(zip([d[0] for d in cursor.description], cursor.fetchone() or (), strict=True))
    finally:
        con.close()
    assert tuple(row) == tuple(COLUMN_NAMES)
    assert (row["indication"], row["prior_iv_ketamine"], row["pca_sole_agent"], row["weight_value"]) == (
        "perioperative",
        True,
        False,
        70.0,
    )
