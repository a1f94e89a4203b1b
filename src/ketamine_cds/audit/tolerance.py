"""Opioid tolerance in the audit: decided once per patient and day, with the engine's own rule.

The readers extract the opioid prescriptions in SQL (``fhir_ndjson.opioid_prescriptions``,
``omop.opioid_prescriptions``) and read each one as the live service reads it (the FHIR adapter's
``OpioidReader``; for OMOP, the exposure's quantity, strength and days supply). Here, for every patient who has
prescriptions and every day that patient was given ketamine, ``_opioids.opioid_tolerance`` (the rule ``assess``
uses) decides tolerance once, and the answer is joined to the administrations of that day as three canonical
columns (``opioid_tolerance``, ``opioid_unknown_reason``, ``opioid_basis``). A patient without any opioid
prescription gets the rule's answer for no prescription ("not recorded", never "absent"); an input whose
prescriptions cannot be read at all gives "unknown".

History, not now: the live service asks about today and counts a prescription while it is active. The audit
reads prescriptions years later, when one that was taken then is completed or stopped; so it counts every
prescription that was in force (its status says it was issued and taken) between its start and its end. Where a
past prescription's end is not recorded, whether it was still taken on a later day is not known: tolerance is
decided with and without it, and when the two differ it is unknown (``END_NOT_RECORDED``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import duckdb

from .._facts import OpioidUse
from .._kb import KnowledgeBase
from .._opioids import Presence, Tolerance, opioid_tolerance
from .canonical import COLUMN_NAMES
from .duck import insert_rows
from .sql import lit, lit_or_null

END_NOT_RECORDED = "whether a past prescription without an end date was still taken then is not recorded"


@dataclass(frozen=True, slots=True)
class Prescription:
    """An opioid prescription as the engine reads one (``OpioidUse``), and whether its end is known: False for
    a past prescription (completed, stopped) whose end is not recorded, so it may or may not have been taken on
    a later day; ``use.end`` None with ``end_known`` is one still in force (open-ended, as the live service
    reads an active prescription)."""

    use: OpioidUse
    end_known: bool = True


@dataclass(frozen=True)
class Staged:
    """What the tolerance step did, for the summary and the benchmark."""

    patients: int  # patients with at least one opioid prescription (and a ketamine administration)
    prescriptions: int
    moments: int  # patient-days decided by the engine's rule
    seconds: float  # deciding them and joining the answers to the administrations
    reading_seconds: float = 0.0  # extracting and reading the prescriptions (the reader's part)

    def as_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def decide_day(prescriptions: Sequence[Prescription], day: dt.date, kb: KnowledgeBase) -> Tolerance:
    """Tolerance on ``day`` from one patient's prescriptions: ``opioid_tolerance``, and where a past
    prescription's end is not recorded, the same answer with and without it or else unknown."""
    certain = [p.use for p in prescriptions if p.end_known]
    without = opioid_tolerance(certain, day, kb)
    open_ended = [
        p.use for p in prescriptions if not p.end_known and (p.use.start is None or p.use.start <= day)
    ]
    if not open_ended:
        return without
    including = opioid_tolerance([*certain, *open_ended], day, kb)
    if including.state is without.state:
        return without
    names = ", ".join(dict.fromkeys(u.source.display for u in open_ended))
    basis = (
        f"{END_NOT_RECORDED} ({names}): tolerance {including.state.value} if it was, "
        f"{without.state.value} if not"
    )
    return Tolerance(Presence.UNKNOWN, None, basis, END_NOT_RECORDED)


def with_tolerance(
    con: duckdb.DuckDBPyConnection,
    administrations: str,
    prescriptions: Mapping[str, Sequence[Prescription]] | None,
    kb: KnowledgeBase,
    unread_because: str = "",
) -> tuple[str, Staged]:
    """A SELECT of the ``administrations`` table (canonical columns) with the tolerance columns filled.

    ``prescriptions`` by patient id; None when the input's prescriptions cannot be read at all
    (``unread_because`` says why). Creates the temp table ``tolerance_by_day`` on ``con``."""
    started = time.monotonic()
    if prescriptions is None:
        fallback = Tolerance(Presence.UNKNOWN, None, unread_because, unread_because)
    else:  # the rule's answer for a patient with no opioid prescription (the same whatever the day)
        fallback = opioid_tolerance((), dt.date(2000, 1, 1), kb)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE tolerance_patients (patient_id VARCHAR); "
        "CREATE OR REPLACE TEMP TABLE tolerance_by_day (patient_id VARCHAR, day DATE, opioid_tolerance VARCHAR, "
        "opioid_unknown_reason VARCHAR, opioid_basis VARCHAR)"
    )
    moments = 0
    if prescriptions:
        insert_rows(con, "tolerance_patients", [(p,) for p in prescriptions], 1)
        ordered = {patient: sorted(found, key=_order) for patient, found in prescriptions.items()}
        moments = insert_rows(con, "tolerance_by_day", _decided(con, administrations, ordered, kb), 5)
    # a row without a time is a bad row already (its reason says so): its tolerance stays empty
    filled = {
        "opioid_tolerance": f"coalesce(t.opioid_tolerance, {lit(fallback.state.value)})",
        "opioid_unknown_reason": (
            f"CASE WHEN t.patient_id IS NOT NULL THEN t.opioid_unknown_reason "
            f"ELSE {lit_or_null(fallback.unknown_because)} END"
        ),
        "opioid_basis": f"coalesce(t.opioid_basis, {lit(fallback.basis)})",
    }
    columns = [
        f"CASE WHEN a.administered_at IS NOT NULL THEN {filled[c]} END AS {c}" if c in filled else f"a.{c}"
        for c in COLUMN_NAMES
    ]
    select = f"""
      SELECT {", ".join(columns)}
      FROM {administrations} a
      LEFT JOIN tolerance_by_day t ON t.patient_id = a.patient_id AND t.day = CAST(a.administered_at AS DATE)
    """
    count = sum(len(v) for v in prescriptions.values()) if prescriptions else 0
    staged = Staged(len(prescriptions or {}), count, moments, time.monotonic() - started)
    return select, staged


def _decided(
    con: duckdb.DuckDBPyConnection,
    administrations: str,
    prescriptions: Mapping[str, Sequence[Prescription]],
    kb: KnowledgeBase,
) -> Iterator[tuple[str, str, str, str | None, str]]:
    """Each patient-day with prescriptions, decided; fetched in batches (memory stays bounded)."""
    cursor = con.execute(
        f"SELECT DISTINCT a.patient_id, CAST(a.administered_at AS DATE) FROM {administrations} a "
        "SEMI JOIN tolerance_patients p ON p.patient_id = a.patient_id WHERE a.administered_at IS NOT NULL"
    )
    while batch := cursor.fetchmany(50_000):
        for patient, day in batch:
            t = decide_day(prescriptions[patient], day, kb)
            yield patient, day.isoformat(), t.state.value, t.unknown_because, t.basis


def _order(p: Prescription) -> tuple[dt.date, dt.date, str, str, Fraction]:
    """One order for a patient's prescriptions whatever the form listed them in (the basis names them in it)."""
    u = p.use
    return (
        u.start or dt.date.min,
        u.end or dt.date.max,
        u.ingredient,
        u.source.display,
        u.daily_amount or Fraction(-1),
    )
