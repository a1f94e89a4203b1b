"""A Spark task's work (``bucket.py``) without Spark: an export cut into buckets by the routing rule and audited
bucket by bucket gives the findings of the whole export audited at once, row for row, however it is cut; and
the routing rule puts each record where the reader needs it.

(The same on a real cluster: ``test_spark.py``.) Needs pyarrow (``pip install 'ketamine-cds[spark]'``).
"""

from __future__ import annotations

import importlib.util
import json
import math
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pytest

from ketamine_cds import load_knowledge
from ketamine_cds.audit.duck import run_duckdb
from ketamine_cds.audit.forms import Form
from ketamine_cds.audit.run import canonical_parquet
from ketamine_cds.audit.synth import write_all

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("pyarrow") is None, reason="needs pyarrow (pip install 'ketamine-cds[spark]')"
)
if importlib.util.find_spec("pyarrow") is not None:
    import pyarrow as pa
    import pyarrow.compute as pc

    from ketamine_cds.audit import bucket
    from ketamine_cds.audit.fhir_ndjson import (
        bucket_key_sql,
        may_hold_drugs,
        prescription_lines_sql,
        types_named,
    )


def _routed(folder: Path) -> list[tuple[str, bytes, str | None]]:
    """Every line of every NDJSON file with its bucket key (``fhir_ndjson.bucket_key_sql``)."""
    files, admin, lines = [], [], []
    for path in sorted(folder.rglob("*.ndjson")):
        name = path.relative_to(folder).as_posix()
        for line in path.read_bytes().splitlines():
            files.append(name)
            admin.append("MedicationAdministration" in types_named(path.name))
            lines.append(line)
    con = duckdb.connect()
    try:
        con.register(
            "lines", pa.table({"file": files, "admin_file": admin, "line": pa.array(lines, pa.binary())})
        )
        return [(f, bytes(b), k) for f, b, k in con.execute(bucket_key_sql("lines")).fetchall()]
    finally:
        con.close()


def _audit_in_buckets(folder: Path, count: int, out: Path) -> tuple[Path, int, int, Any]:
    """What ``run_spark`` does with a FHIR export, in this process: route, bucket, audit each bucket, merge
    the classes, decide them, write the findings."""
    kb = load_knowledge()
    routed = _routed(folder)
    drugs = [line for name, line, _ in routed if may_hold_drugs(Path(name).name)]
    con = duckdb.connect()
    try:
        con.register("lines", pa.table({"line": pa.array(drugs, pa.binary())}))
        (held,) = con.execute(prescription_lines_sql("lines")).fetchone() or (0,)
    finally:
        con.close()
    job = bucket.Job("fhir", kb, None, holds_prescriptions=held > 0)
    rows: list[tuple[int, str, bytes]] = []
    for name, line, key in routed:
        targets = range(count) if key is None else [zlib.crc32(key.encode()) % count]
        rows.extend((b, name, line) for b in targets)
    rows.sort(key=lambda r: zlib.crc32(r[2]))  # the buckets interleaved, in batches of 97 rows: one task
    batches = [
        pa.record_batch(
            {
                "file": [n for _, n, _ in rows[i : i + 97]],
                "line": pa.array([x for _, _, x in rows[i : i + 97]], pa.binary()),
                "bucket": [b for b, _, _ in rows[i : i + 97]],
            }
        )
        for i in range(0, len(rows), 97)
    ]
    measured = pa.Table.from_batches(list(bucket.audit_buckets(job, iter(batches))))
    facts = [f for f in measured.column("bucket_facts").to_pylist() if f is not None]
    representatives = measured.filter(pc.is_valid(measured.column("class_rows")))
    merged = pa.Table.from_batches(list(bucket.merge_classes(job, iter(representatives.to_batches()))))
    out.mkdir(parents=True, exist_ok=True)
    decided, counts = bucket.decide_merged(merged, kb, None, out)
    rows_only = measured.filter(pc.is_null(measured.column("bucket_facts")))
    findings = pa.Table.from_batches(
        list(
            bucket.write_findings(
                job,
                decided,
                iter(rows_only.select(list(bucket.FINDINGS_INPUT)).to_batches()),
            )
        )
    )
    target = out / "findings.parquet"
    con = duckdb.connect()
    try:
        con.register("findings", findings)
        con.execute(f"COPY findings TO '{target}' (FORMAT parquet)")
    finally:
        con.close()
    return target, counts.classes, counts.rows, bucket.facts_of(facts)


def _sorted_rows(parquet: Path) -> tuple[list[str], list[tuple[Any, ...]]]:
    con = duckdb.connect()
    try:
        cursor = con.execute(f"SELECT * FROM read_parquet('{parquet}') ORDER BY admin_id, problem")
        return [d[0] for d in cursor.description], cursor.fetchall()
    finally:
        con.close()


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return type(a) is type(b) and a == b


def _whole(folder: Path, form: Form, out: Path) -> tuple[Path, int, int, Any]:
    canonical = canonical_parquet(folder, form, out)
    run = run_duckdb(f"SELECT * FROM read_parquet('{canonical.path}')", out)
    return run.findings, run.classes, run.rows, canonical.tolerance


def _odd_lines(folder: Path) -> None:
    """Records that test the routing: an administration without a subject, twice in two files; one whose line
    is not JSON; a resource about no patient (an Encounter without a subject) cited by an administration."""
    given: dict[str, Any] = {
        "resourceType": "MedicationAdministration",
        "id": "no-subject",
        "status": "completed",
        "medicationCodeableConcept": {"text": "ketamine 10 mg/mL"},
        "effectiveDateTime": "2025-01-02T10:00:00Z",
        "dosage": {"route": {"text": "IV"}, "dose": {"value": 20, "unit": "mg"}},
    }
    cited = {**given, "id": "cites-encounter", "subject": {"reference": "Patient/P-odd"}}
    cited["context"] = {"reference": "Encounter/E-nobody"}
    encounter = {
        "resourceType": "Encounter",
        "id": "E-nobody",
        "status": "finished",
        "class": {"code": "EMER"},
    }
    (folder / "MedicationAdministration.odd-1.ndjson").write_text(
        json.dumps(given) + "\n" + json.dumps(cited) + "\n{\n"
    )
    (folder / "MedicationAdministration.odd-2.ndjson").write_text(json.dumps(given) + "\n")
    (folder / "Encounter.odd.ndjson").write_text(json.dumps(encounter) + "\n")


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = write_all(400, tmp_path_factory.mktemp("synth"), seed=13)["fhir"]
    _odd_lines(folder)
    return folder


@pytest.mark.parametrize("count", [1, 3, 7])
def test_an_export_audited_bucket_by_bucket_gives_the_whole_exports_findings(
    export: Path, tmp_path: Path, count: int
) -> None:
    whole, classes, rows, tolerance = _whole(export, "fhir", tmp_path / "whole")
    cut, cut_classes, cut_rows, cut_tolerance = _audit_in_buckets(export, count, tmp_path / "cut")
    names, expected = _sorted_rows(whole)
    cut_names, actual = _sorted_rows(cut)
    assert cut_names == names and len(actual) == len(expected) == rows == cut_rows
    different = [
        (want[0], name, a, b)
        for want, got in zip(expected, actual, strict=True)
        for name, a, b in zip(names, want, got, strict=True)
        if not _equal(a, b)
    ]
    assert different[:10] == []
    assert cut_classes == classes
    assert (cut_tolerance.patients, cut_tolerance.prescriptions, cut_tolerance.moments) == (
        tolerance.patients,
        tolerance.prescriptions,
        tolerance.moments,
    )
    problems = {r[0]: r[names.index("problem")] for r in actual}
    assert "no subject" in (problems["no-subject"] or "")  # once, though in two files
    assert sum(1 for r in actual if r[0] == "no-subject") == 1


def _keys(lines: Sequence[tuple[str, dict[str, Any] | str]]) -> list[str | None]:
    con = duckdb.connect()
    try:
        files = [f for f, _ in lines]
        texts = [(json.dumps(x) if isinstance(x, dict) else x).encode() for _, x in lines]
        admin = ["MedicationAdministration" in types_named(f) for f in files]
        con.register(
            "lines", pa.table({"file": files, "admin_file": admin, "line": pa.array(texts, pa.binary())})
        )
        return [k for _, _, k in con.execute(bucket_key_sql("lines")).fetchall()]
    finally:
        con.close()


def test_the_routing_rule() -> None:
    """By the patient a resource is about; a resource about no patient to every bucket (None); an
    administration, or a bad line of an administrations file, to exactly one."""
    subject = {"subject": {"reference": "Patient/p1"}}
    keys = _keys(
        [
            (
                "MedicationAdministration.ndjson",
                {"resourceType": "MedicationAdministration", "id": "a", **subject},
            ),
            ("Observation.ndjson", {"resourceType": "Observation", "id": "o", **subject}),
            ("Patient.ndjson", {"resourceType": "Patient", "id": "p1"}),
            ("x/Condition.ndjson", {"resourceType": "Condition", "subject": {"reference": "urn:uuid:p1"}}),
            ("Location.ndjson", {"resourceType": "Location", "id": "l"}),
            ("Encounter.ndjson", {"resourceType": "Encounter", "id": "e"}),
            ("MedicationAdministration.ndjson", {"resourceType": "MedicationAdministration", "id": "b"}),
            ("MedicationAdministration.ndjson", "{not json"),
            ("log.ndjson", "{not json"),
            ("Group.ndjson", {"resourceType": "Group", "subject": {"reference": "Group/g"}}),
        ]
    )
    assert keys[:4] == ["p1", "p1", "p1", "p1"]
    assert keys[4:6] == [None, None]
    assert keys[6] == "id:b" and keys[7] is not None and keys[7].startswith("line:")
    assert keys[8:] == [None, None]
    assert _keys(
        [
            (
                "\ufeffMedicationAdministration.ndjson",
                "\ufeff" + json.dumps({"resourceType": "Patient", "id": "q"}),
            )
        ]
    ) == ["q"]


def test_a_bucket_per_task_of_a_flat_table_and_its_facts() -> None:
    """The facts of buckets add up; a flat table's buckets have no tolerance step."""
    step = {"patients": 2, "prescriptions": 3, "moments": 4, "seconds": 0.5, "reading_seconds": 0.25}
    facts = [json.dumps({"tolerance": step}), json.dumps({"tolerance": step})]
    total = bucket.facts_of(facts)
    assert total is not None and (total.patients, total.prescriptions, total.moments) == (4, 6, 8)
    assert bucket.facts_of([json.dumps({"tolerance": None})]) is None


def test_duckdbs_hash_is_the_same_in_every_process() -> None:
    """Each task hashes its own bucket's rows into class keys: DuckDB's hash has no seed, so one class gets one
    key in every process (of one DuckDB version: its hash may change between versions)."""
    import os
    import subprocess
    import sys

    query = "SELECT hash('ketamine', 0.35, NULL::VARCHAR, [1.5, NULL], TIMESTAMP '2025-01-02 03:04:05', true)"
    here = duckdb.connect().execute(query).fetchone()
    code = f"import duckdb; print(duckdb.connect().execute({query!r}).fetchone()[0])"
    there = [
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
        ).stdout
        for env in ({**os.environ, "PYTHONHASHSEED": "1"}, {**os.environ, "PYTHONHASHSEED": "2"})
    ]
    assert here is not None and there == [f"{here[0]}\n"] * 2
