"""The three input forms: which one a folder holds, and each form read by its DuckDB reader into canonical rows.

The same functions read a whole input on one machine (``run.py``) and one bucket of it in a Spark task
(``bucket.py``), so both engines read every form with one set of rules.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from .._errors import InputError
from .._kb import KnowledgeBase
from .._site import Site

if TYPE_CHECKING:
    from .tolerance import Prescription, Staged

Form = Literal["flat", "fhir", "omop"]
FORMS: tuple[Form, ...] = ("flat", "fhir", "omop")


def hidden(name: str) -> bool:
    """A file no form reads (``name`` relative to the input): one in whose path a name starts with ``.`` or
    ``_``, a hidden file or a writer's marker (``_SUCCESS``), as Spark and Hadoop leave them out."""
    return any(part.startswith((".", "_")) for part in PurePosixPath(name).parts)


def form_of(entries: Iterable[str], is_dir: bool) -> Form:
    """FHIR Bulk NDJSON (``*.ndjson``), OMOP CDM tables (person, drug_exposure, ...), or the flat table, from the
    names of a folder's entries (files and folders directly in it)."""
    if is_dir:
        names = [name for name in entries if not hidden(name)]
        if any(PurePosixPath(name).suffix == ".ndjson" for name in names):
            return "fhir"
        if {"person", "drug_exposure"} <= {name.split(".")[0].lower() for name in names}:
            return "omop"
    return "flat"


def check_column_mappings(columns: Mapping[str, str] | None, form: Form) -> None:
    """``--column`` maps a flat table's columns: given with another form, it is refused."""
    if columns and form != "flat":
        raise InputError("--column", f"maps the columns of a flat table, and the input is {form}")


def source_sql(
    path: Path, form: Form, site: Site | None = None, columns: Mapping[str, str] | None = None
) -> str:
    """The form's reader: a SELECT yielding canonical rows (opioid tolerance not yet decided for FHIR, OMOP);
    ``columns``: a flat table's column mappings (``flat.resolve_columns``)."""
    if form == "flat":
        from .flat import flat_source

        return flat_source(path, columns)
    if form == "fhir":
        from .fhir_ndjson import fhir_source

        result: str = fhir_source(path, site=site)
        return result
    from .omop import omop_source

    omop: str = omop_source(path, site=site)
    return omop


def read_canonical(
    con: Any,
    path: Path,
    form: Form,
    kb: KnowledgeBase,
    site: Site | None = None,
    holds_prescriptions: bool | None = None,
) -> tuple[str, Staged]:
    """A FHIR or OMOP input read by its reader into the temp table ``administrations``, with opioid tolerance
    decided once per patient and day (``tolerance.py``): returns the SELECT of its canonical rows and what the
    tolerance step did.

    ``holds_prescriptions``: whether the whole FHIR export holds a MedicationRequest or MedicationStatement,
    when ``path`` is one bucket of it (None: this folder says)."""
    from .tolerance import with_tolerance

    con.execute(f"CREATE OR REPLACE TEMP TABLE administrations AS {source_sql(path, form, site)}")
    reading = time.monotonic()
    prescriptions, unread = _prescriptions(con, path, form, kb, holds_prescriptions)
    reading = time.monotonic() - reading
    select, staged = with_tolerance(con, "administrations", prescriptions, kb, unread)
    return select, dataclasses.replace(staged, reading_seconds=reading)


def _prescriptions(
    con: Any, path: Path, form: Form, kb: KnowledgeBase, holds: bool | None
) -> tuple[Mapping[str, Sequence[Prescription]] | None, str]:
    if form == "fhir":
        from .fhir_ndjson import opioid_prescriptions

        return opioid_prescriptions(con, path, "administrations", kb, holds)
    from .omop import opioid_prescriptions as omop_prescriptions

    return omop_prescriptions(con, path, "administrations", kb)
