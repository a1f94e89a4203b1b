"""A FHIR R4 Bundle (parsed JSON) -> ``Facts``, following CONTRACT.md "FHIR R4 input conventions".

The reader works on plain JSON (dicts and lists; numbers as int, float or ``Decimal``) without a FHIR
library, so the command line starts fast; ``validate_r4`` is the strict check and imports fhir.resources
only when called.
Every error is an ``InputError`` whose ``field`` names the resource and element, e.g.
``Observation/w1.valueQuantity.unit`` (``entry[3]`` when the resource has no id).

What the record does not say stays unknown: no weight gives ``weight_kg=None``, an unreadable opioid dose
gives ``daily_amount=None`` (so does an opioid taken as needed: how much is taken is not in the order), a
setting that cannot be told gives ``Setting.UNKNOWN``. Nothing is guessed.
"""

from __future__ import annotations

import datetime as dt
import functools
import operator
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation, localcontext
from fractions import Fraction
from functools import lru_cache
from typing import Any, Concatenate, ParamSpec, TypeVar

from .._errors import ImpossibleValueError, InputError, NotFHIRError, UnitError
from .._facts import (
    Coded,
    ConditionFact,
    DoseKind,
    Facts,
    KetamineOrder,
    OpioidUse,
    OrderDose,
    PlannedProcedure,
    Route,
    Setting,
    WeightBasis,
    checked_dose,
    checked_weight,
    ketamine_order,
)
from .._kb import KnowledgeBase, load_knowledge, short_system
from .._site import Site
from .._units import (
    Quantity,
    Unit,
    bounded,
    concentration_mg_per_ml,
    duration_in_hours,
    format_exact,
    parse_unit,
    weight_in_kg,
)
from .fhir_words import (
    FINAL_OBSERVATION,
    HEDGED_INTENSIVE_CARE,
    IGNORED_CLINICAL_STATUS,
    IGNORED_VERIFICATION_STATUS,
    INFUSION_WORDS,
    INTENSIVE_CARE_ROLE_CODES,
    INTENSIVE_CARE_WORDS,
    NON_INTENSIVE_CLASSES,
    NOT_GIVEN_ADMINISTRATION_STATUSES,
    ROLE_CODE_SYSTEMS,
    ROUTE_CODES,
    ROUTE_WORDS,
    word_pattern,
)

# dict first: parsed JSON is always a dict, and the exact-type check is far cheaper than the Mapping ABC's
_OBJECT = (dict, Mapping)

Json = Mapping[str, Any]

__all__ = [
    "R4_RESOURCE_TYPES",
    "OpioidReader",
    "facts_from_bundle",
    "facts_from_resources",
    "is_ketamine_order",
    "is_ketamine_request",
    "matchable",
    "order_dose_positions",
    "validate_r4",
]

# The 146 resource types of FHIR R4 (4.0.1), from the discriminator of the official R4 JSON Schema
# (shared/external-test-data/fhir-r4-json-schema/fhir.schema.json). DSTU2/STU3-only types such as
# MedicationOrder are not here, so a Bundle using them is not R4.
# fmt: off
R4_RESOURCE_TYPES = frozenset({
    "Account", "ActivityDefinition", "AdverseEvent", "AllergyIntolerance", "Appointment",
    "AppointmentResponse", "AuditEvent", "Basic", "Binary", "BiologicallyDerivedProduct", "BodyStructure",
    "Bundle", "CapabilityStatement", "CarePlan", "CareTeam", "CatalogEntry", "ChargeItem",
    "ChargeItemDefinition", "Claim", "ClaimResponse", "ClinicalImpression", "CodeSystem", "Communication",
    "CommunicationRequest", "CompartmentDefinition", "Composition", "ConceptMap", "Condition", "Consent",
    "Contract", "Coverage", "CoverageEligibilityRequest", "CoverageEligibilityResponse", "DetectedIssue",
    "Device", "DeviceDefinition", "DeviceMetric", "DeviceRequest", "DeviceUseStatement", "DiagnosticReport",
    "DocumentManifest", "DocumentReference", "EffectEvidenceSynthesis", "Encounter", "Endpoint",
    "EnrollmentRequest", "EnrollmentResponse", "EpisodeOfCare", "EventDefinition", "Evidence",
    "EvidenceVariable", "ExampleScenario", "ExplanationOfBenefit", "FamilyMemberHistory", "Flag", "Goal",
    "GraphDefinition", "Group", "GuidanceResponse", "HealthcareService", "ImagingStudy", "Immunization",
    "ImmunizationEvaluation", "ImmunizationRecommendation", "ImplementationGuide", "InsurancePlan",
    "Invoice", "Library", "Linkage", "List", "Location", "Measure", "MeasureReport", "Media", "Medication",
    "MedicationAdministration", "MedicationDispense", "MedicationKnowledge", "MedicationRequest",
    "MedicationStatement", "MedicinalProduct", "MedicinalProductAuthorization",
    "MedicinalProductContraindication", "MedicinalProductIndication", "MedicinalProductIngredient",
    "MedicinalProductInteraction", "MedicinalProductManufactured", "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical", "MedicinalProductUndesirableEffect", "MessageDefinition",
    "MessageHeader", "MolecularSequence", "NamingSystem", "NutritionOrder", "Observation",
    "ObservationDefinition", "OperationDefinition", "OperationOutcome", "Organization",
    "OrganizationAffiliation", "Parameters", "Patient", "PaymentNotice", "PaymentReconciliation", "Person",
    "PlanDefinition", "Practitioner", "PractitionerRole", "Procedure", "Provenance", "Questionnaire",
    "QuestionnaireResponse", "RelatedPerson", "RequestGroup", "ResearchDefinition",
    "ResearchElementDefinition", "ResearchStudy", "ResearchSubject", "RiskAssessment",
    "RiskEvidenceSynthesis", "Schedule", "SearchParameter", "ServiceRequest", "Slot", "Specimen",
    "SpecimenDefinition", "StructureDefinition", "StructureMap", "Subscription", "Substance",
    "SubstanceNucleicAcid", "SubstancePolymer", "SubstanceProtein", "SubstanceReferenceInformation",
    "SubstanceSourceMaterial", "SubstanceSpecification", "SupplyDelivery", "SupplyRequest", "Task",
    "TerminologyCapabilities", "TestReport", "TestScript", "ValueSet", "VerificationResult",
    "VisionPrescription"
})
# fmt: on

BODY_WEIGHT = "29463-7"  # LOINC Body weight
# The pregnancy status codes are knowledge (kb.toml [pregnancy_status]): this reader takes them from the
# knowledge base it is given; these names are the bundled knowledge base's, for the audit's FHIR reader.
PREGNANCY_STATUS = load_knowledge().pregnancy_status.observation  # LOINC Pregnancy status
PREGNANT = load_knowledge().pregnancy_status.pregnant  # SNOMED CT Pregnant
NOT_PREGNANT = load_knowledge().pregnancy_status.not_pregnant  # SNOMED CT Not pregnant (finding)
SURGICAL_PROCEDURE = "387713003"  # SNOMED Surgical procedure: the US Core ServiceRequest category for surgery
TRANSDERMAL_ROUTE = "45890007"  # SNOMED Transdermal route

_ORDER_STATUSES = frozenset({"draft", "active"})
_CURRENT_ENCOUNTER_STATUSES = frozenset({"in-progress", "arrived", "triaged", "onleave"})
_NOT_GIVEN_REQUEST_STATUSES = frozenset({"entered-in-error", "draft", "cancelled"})
# A prior IV course may be recorded as "a completed or active MedicationRequest" (REFERENCE, Chronic pain):
# one stopped, on hold or of unknown status may never have run.
COURSE_REQUEST_STATUSES = frozenset({"active", "completed"})
# FHIR R4 MedicationStatement.status: only "active" is "still being taken". "completed" is no longer taken,
# "intended" may be taken in the future, "on-hold" is halted for now; none of them is current opioid use.
_OPIOID_STATEMENT_STATUSES = frozenset({"active"})
_PLANNED_PROCEDURE_STATUSES = frozenset({"preparation", "in-progress"})
_ORDER_INTENTS = frozenset(
    {"order", "original-order", "reflex-order", "filler-order", "instance-order", "plan"}
)
_CLOSED_REQUEST_STATUSES = frozenset({"revoked", "completed", "entered-in-error"})


_PERIOD_HOURS: Mapping[str, Fraction] = {
    "s": Fraction(1, 3600),
    "min": Fraction(1, 60),
    "h": Fraction(1),
    "d": Fraction(24),
    "wk": Fraction(168),
}
# HL7 v3 GTSAbbreviation timing codes, read only when timing.repeat says nothing: doses per day.
_TIMING_CODES: Mapping[str, Fraction] = {
    "QD": Fraction(1),
    "AM": Fraction(1),
    "PM": Fraction(1),
    "BED": Fraction(1),
    "BID": Fraction(2),
    "TID": Fraction(3),
    "QID": Fraction(4),
    "QOD": Fraction(1, 2),
    "Q1H": Fraction(24),
    "Q2H": Fraction(12),
    "Q3H": Fraction(8),
    "Q4H": Fraction(6),
    "Q6H": Fraction(4),
    "Q8H": Fraction(3),
}
_COUNT_UNITS = frozenset(
    {
        "1",
        "tablet",
        "tab",
        "tbl",
        "capsule",
        "cap",
        "patch",
        "patches",
        "each",
        "ea",
        "pill",
        "dose",
        "system",
    }
)
_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")
# ASCII digits only (as the audit's RE2 reads them): Decimal() would also read other scripts' digits
_STRENGTH = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(mg|mcg|ug|µg)\b(?:\s*/\s*(ml|hr|h)\b)?", re.IGNORECASE)
_MG_PER_ML = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*mg\s*/\s*ml\b", re.IGNORECASE)
_TRANSDERMAL_WORDS = re.compile(r"\b(?:transdermal|patch(?:es)?)\b", re.IGNORECASE)


# ----------------------------------------------------------------------------------------------------
# Public functions


def facts_from_bundle(
    bundle: Mapping[str, Any],
    *,
    as_of: dt.date,
    kb: KnowledgeBase | None = None,
    order_id: str | None = None,
    site: Site | None = None,
) -> Facts:
    """Read one patient's FHIR R4 Bundle (any Bundle type) as the facts of one clinical question.

    ``order_id`` picks the ketamine MedicationRequest to assess when the Bundle holds several; without it,
    more than one draft or active ketamine order is an error. A Bundle without one is an eligibility question.
    """
    return _facts(_Record.of_bundle(bundle), as_of, kb or load_knowledge(), order_id, site)


def facts_from_resources(
    resources: Iterable[tuple[str | None, Mapping[str, Any]]],
    *,
    as_of: dt.date,
    kb: KnowledgeBase | None = None,
    order_id: str | None = None,
    site: Site | None = None,
) -> Facts:
    """``facts_from_bundle`` of the Bundle these (fullUrl, resource) pairs would make, without making it
    (what a CDS Hooks service holds after prefetch). A resource without an id is named ``entry[i]``, i its
    position."""
    items = ((i, full_url, resource) for i, (full_url, resource) in enumerate(resources))
    return _facts(_Record.of_items(items), as_of, kb or load_knowledge(), order_id, site)


def facts_for_orders(
    resources: Iterable[tuple[str | None, Mapping[str, Any]]],
    order_ids: Sequence[str],
    *,
    as_of: dt.date,
    kb: KnowledgeBase | None = None,
    site: Site | None = None,
) -> list[Facts | Exception]:
    """``facts_from_resources`` for each of several ketamine orders of one record (a CDS Hooks call with many
    draft orders), in order: the Facts, or the error that order's reading raised (one order that cannot be
    read does not stop the others). The record is indexed, and what every order reads alike (the patient,
    weight, conditions, opioids, the drugs of every request...) read, once: the work grows with the record,
    not with the number of orders times the record."""
    kb = kb or load_knowledge()
    try:
        record = _Record.of_items((i, full_url, r) for i, (full_url, r) in enumerate(resources))
    except Exception as exc:  # the record itself cannot be read: no order can be
        return [exc for _ in order_ids]
    results: list[Facts | Exception] = []
    for order_id in order_ids:
        try:
            results.append(_facts(record, as_of, kb, order_id, site))
        except Exception as exc:
            results.append(exc)
    return results


def _facts(
    record: _Record, as_of: dt.date, kb: KnowledgeBase, order_id: str | None, site: Site | None = None
) -> Facts:
    patient = _the_patient(record)
    ketamine = _ketamine_requests(record, kb)
    chosen = _chosen_order(ketamine, order_id, record)
    pregnancy = _pregnancy_status(record, as_of, kb)
    conditions = _conditions(record, kb, pregnancy)
    procedure = _planned_procedure(record, kb)
    use, use_source = _indication(chosen.request, record, kb) if chosen else (None, None)
    if use is None and procedure is not None:
        use = "perioperative"
    body_weight = _weight(record, as_of)
    measured = body_weight.measured
    return Facts(
        as_of=as_of,
        use=use,
        use_source=use_source,
        weight_kg=body_weight.kg,
        weight_basis=WeightBasis.MEASURED if measured is not None else WeightBasis.UNDATED,
        weight_measured=measured,
        weight_problem=body_weight.problem,
        setting=_setting(record, chosen.request if chosen else None, site),
        conditions=conditions,
        ruled_out=_ruled_out(pregnancy, conditions, kb),
        procedure=procedure,
        opioids=_opioids(record, kb),
        order=_ketamine_order(chosen, kb) if chosen else None,
        prior_iv_ketamine=_prior_iv_ketamine(record, kb, ketamine, chosen),
        age_years=_age_years(patient, as_of) if patient else None,
        sex=_sex(patient) if patient else None,
    )


def is_ketamine_order(
    request: Mapping[str, Any],
    medications: Sequence[tuple[str | None, Mapping[str, Any]]] = (),
    *,
    kb: KnowledgeBase | None = None,
) -> bool:
    """Whether a MedicationRequest is a draft or active order for ketamine, as ``facts_from_bundle`` would
    read it: by its RxNorm code or its name, through the Medication it references (contained, or among
    ``medications``: (fullUrl, resource) pairs). Raises ``NotFHIRError`` when the resources cannot be read."""
    resource, record = _request_with_medications(request, medications)
    if resource.status not in _ORDER_STATUSES or _do_not_perform(resource):
        return False
    return _is_ketamine(_drug(resource, record), kb or load_knowledge())


def is_ketamine_request(
    request: Mapping[str, Any],
    medications: Sequence[tuple[str | None, Mapping[str, Any]]] = (),
    *,
    kb: KnowledgeBase | None = None,
) -> bool:
    """Whether a MedicationRequest is for ketamine, whatever its status (``is_ketamine_order`` also wants
    a draft or active one that is not "do not perform"): a CDS Hooks draft that is on hold, completed or of
    unknown status is still a ketamine order the service must say it did not check."""
    resource, record = _request_with_medications(request, medications)
    return not _do_not_perform(resource) and _is_ketamine(_drug(resource, record), kb or load_knowledge())


def _request_with_medications(
    request: Mapping[str, Any], medications: Sequence[tuple[str | None, Mapping[str, Any]]]
) -> tuple[_Resource, _Record]:
    """One MedicationRequest read with the Medications it may reference, as a record of its own."""
    items = [(0, None, request), *((i, u, r) for i, (u, r) in enumerate(medications, start=1))]
    record = _Record.of_items(items)
    order = record.all("MedicationRequest")
    if len(order) != 1 or order[0].data is not request:
        raise NotFHIRError("", "expected one MedicationRequest")
    return order[0], record


def validate_r4(bundle: Mapping[str, Any]) -> None:
    """Check the Bundle strictly against the FHIR model (fhir.resources); raise ``NotFHIRError`` naming the
    first invalid field. Imports fhir.resources and pydantic on first use only (they are slow to import)."""
    _Record.of_bundle(bundle)  # resource types first: the FHIR model cannot name an unknown type
    from fhir.resources.R4B.bundle import Bundle
    from pydantic import ValidationError

    try:
        Bundle.model_validate(dict(bundle))
    except ValidationError as exc:
        first = exc.errors()[0]
        raise NotFHIRError(_validation_path(bundle, first["loc"]), _one_line(first["msg"])) from None
    except (ValueError, TypeError, KeyError) as exc:
        raise NotFHIRError("Bundle", _one_line(str(exc)) or type(exc).__name__) from None


# ----------------------------------------------------------------------------------------------------
# The record: resources by type and by reference


@dataclass(frozen=True, slots=True)
class _Resource:
    """One resource and the name it goes by in messages (``Observation/w1``, ``entry[3]``, ``X/1#med``)."""

    data: Json
    label: str
    type: str  # resourceType and status: read once, asked for often
    status: str | None

    def at(self, path: str) -> str:
        return f"{self.label}.{path}"

    def contained(self, local_id: str) -> _Resource | None:
        for item in _list(self.data, "contained"):
            if isinstance(item, _OBJECT) and item.get("id") == local_id:
                label = f"{self.label}#{local_id}"
                return _Resource(item, label, _text(item, "resourceType") or "", _text(item, "status"))
        return None


@dataclass(frozen=True, slots=True)
class _Record:
    by_type: Mapping[str, list[_Resource]]
    by_reference: Mapping[str, _Resource]
    drugs: dict[int, _Drug] = field(default_factory=dict)  # by id() of the resource: read once per record
    # what every order of the record reads alike, read once (``_per_record``): name -> (arguments, value)
    shared: dict[str, tuple[tuple[Any, ...], Any]] = field(default_factory=dict)

    @classmethod
    def of_bundle(cls, bundle: Any) -> _Record:
        if not isinstance(bundle, _OBJECT):
            raise NotFHIRError("", "expected a JSON object holding a FHIR R4 Bundle")
        if bundle.get("resourceType") != "Bundle":
            raise NotFHIRError(
                "resourceType", f"expected a FHIR R4 Bundle, got {bundle.get('resourceType')!r}"
            )
        entries = bundle.get("entry", [])
        if not isinstance(entries, list):
            raise NotFHIRError("entry", "must be a list of entries")
        return cls.of_items(_entry_items(entries))

    @classmethod
    def of_items(cls, items: Iterable[tuple[int, Any, Any]]) -> _Record:
        """From (entry index, fullUrl, resource) of the entries that hold a resource: indexed by type and by
        every name a reference may use (the fullUrl, ``Type/id``)."""
        by_type: dict[str, list[_Resource]] = {}
        by_reference: dict[str, _Resource] = {}
        for index, full_url, data in items:
            resource, local_id = _entry_resource(data, index)
            by_type.setdefault(resource.type, []).append(resource)
            if isinstance(full_url, str) and (full_url := full_url.strip()):
                by_reference.setdefault(full_url, resource)
            if local_id:
                by_reference.setdefault(resource.label, resource)
        return cls(by_type, by_reference)

    def all(self, resource_type: str) -> list[_Resource]:
        return self.by_type.get(resource_type, [])

    def resolve(self, reference: Any, within: _Resource | None = None) -> _Resource | None:
        """The resource a Reference names: ``#id`` (contained), a fullUrl, ``Type/id`` or an absolute URL."""
        target = _text(reference, "reference")
        if not target:
            return None
        if target.startswith("#"):
            return within.contained(target[1:]) if within is not None else None
        found = self.by_reference.get(target)
        if found is None and "/" in target:
            parts = target.split("/")
            if "_history" in parts:
                parts = parts[: parts.index("_history")]
            found = self.by_reference.get("/".join(parts[-2:]))
        return found


_R = TypeVar("_R")
_P = ParamSpec("_P")


def _per_record(read: Callable[Concatenate[_Record, _P], _R]) -> Callable[Concatenate[_Record, _P], _R]:
    """A reading of the whole record that does not depend on the order being assessed, made once per record
    and set of arguments (the same objects: a record read for several orders with one date and knowledge
    base). An error is not kept: each order that asks raises it again."""
    name = read.__name__

    @functools.wraps(read)
    def once(record: _Record, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        if kwargs:  # not used: every reading is called with positional arguments
            return read(record, *args, **kwargs)
        kept = record.shared.get(name)
        if kept is not None and len(kept[0]) == len(args) and all(map(operator.is_, kept[0], args)):
            value: _R = kept[1]
            return value
        value = read(record, *args, **kwargs)
        record.shared[name] = (tuple(args), value)
        return value

    return once


def _entry_items(entries: list[Any]) -> Iterator[tuple[int, Any, Any]]:
    for index, entry in enumerate(entries):
        if not isinstance(entry, _OBJECT):
            raise NotFHIRError(f"entry[{index}]", "must be a JSON object")
        resource = entry.get("resource")
        if resource is not None:
            yield index, entry.get("fullUrl"), resource


def _entry_resource(resource: Any, index: int) -> tuple[_Resource, str | None]:
    """The resource, and its id (None when it has none)."""
    where = f"entry[{index}].resource"
    if not isinstance(resource, _OBJECT):
        raise NotFHIRError(where, "must be a JSON object")
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        raise NotFHIRError(f"{where}.resourceType", "missing: every resource needs a resourceType")
    if resource_type not in R4_RESOURCE_TYPES:
        raise NotFHIRError(f"{where}.resourceType", f"{resource_type!r} is not a FHIR R4 resource type")
    local_id = _text(resource, "id")
    label = f"{resource_type}/{local_id}" if local_id else f"entry[{index}]"
    return _Resource(resource, label, resource_type, _text(resource, "status")), local_id


# ----------------------------------------------------------------------------------------------------
# Patient, weight, conditions


@_per_record
def _the_patient(record: _Record) -> _Resource | None:
    patients = record.all("Patient")
    if len(patients) > 1:
        raise InputError(
            patients[1].label,
            f"the Bundle holds {len(patients)} Patient resources; assess one patient at a time",
        )
    return patients[0] if patients else None


def _age_years(patient: _Resource, as_of: dt.date) -> int | None:
    written = _text(patient.data, "birthDate")
    if written is None:
        return None
    born = _date(written, patient.at("birthDate"))
    if born > as_of:
        raise ImpossibleValueError(
            patient.at("birthDate"), f"a birth date after the assessment date ({as_of})"
        )
    return as_of.year - born.year - ((as_of.month, as_of.day) < (born.month, born.day))


def _sex(patient: _Resource) -> str | None:
    gender = _text(patient.data, "gender")
    if gender is not None and gender not in ("female", "male", "other", "unknown"):
        raise InputError(patient.at("gender"), f"must be female, male, other or unknown, not {gender!r}")
    return gender


@dataclass(frozen=True, slots=True)
class BodyWeight:
    """The body weight in effect: in kg, checked, with the date it was taken (None when the Observation gives
    no time); or, when the record's latest weight cannot be used, none and why (``problem``)."""

    kg: Fraction | None
    measured: dt.date | None = None
    problem: str | None = None


@_per_record
def _weight(record: _Record, as_of: dt.date) -> BodyWeight:
    """The latest final body weight (LOINC 29463-7) taken on or before ``as_of``.

    Odd input is said, never resolved silently (``weight_problem``): the latest weight given only as a bound
    (``comparator``, "< 30 kg") is not a weight to work a dose out from, and an older one is not used in its
    place; two or more latest weights (taken at the same time) that disagree beyond the precision they are
    written with are not used either, whatever the order of the entries. Weights that agree as written (70 kg
    and 154.3 lb) are one weighing: the lower is used."""
    latest = _latest_observations(record, BODY_WEIGHT, "valueQuantity", as_of)
    if not latest:
        return BodyWeight(None)
    for observation in sorted(latest, key=lambda o: o.label):
        quantity = _mapping(observation.data, "valueQuantity")
        if quantity.get("comparator") is not None:
            return BodyWeight(
                None,
                problem=f"the latest body weight ({observation.label}) is recorded only as a bound "
                f"({_bound_text(quantity)}), not as a weight a dose can be worked out from",
            )
    readings = sorted((_weight_reading(o), o.label) for o in latest)
    (lowest, _, _, _), _ = readings[0]
    if max(low for (_, low, _, _), _ in readings) > min(high for (_, _, high, _), _ in readings):
        values = " and ".join(text for (_, _, _, text), _ in readings)
        labels = ", ".join(label for _, label in readings)
        count = {2: "two", 3: "three"}.get(len(readings), str(len(readings)))
        return BodyWeight(
            None,
            problem=f"{count} body weights taken at the same time disagree: {values} ({labels}; "
            f"{min(_observation_time_text(o) for o in latest)})",
        )
    dated, moment = _observation_time(latest[0], as_of) or (False, None)
    return BodyWeight(lowest, moment.date() if dated and moment is not None else None)


def _weight_reading(observation: _Resource) -> tuple[Fraction, Fraction, Fraction, str]:
    """(kg, lowest kg, highest kg, as written) of a body weight: the range is what the written value may have
    been rounded from (70 kg: 69.5 to 70.5; 154.3 lb: 154.25 to 154.35 lb). The batch audit reads the same
    (``audit.fhir_ndjson._weight_in_effect``), checked by the conformance fixtures."""
    quantity = _mapping(observation.data, "valueQuantity")
    value_field = observation.at("valueQuantity.value")
    value = _weight_value(quantity, value_field)
    unit_field = observation.at("valueQuantity.unit")
    found = _read_unit(quantity, unit_field)
    texts = _unit_texts(quantity)
    if found is None and not texts:
        raise UnitError(unit_field, "the body weight has no unit (kg, g, [lb_av])")
    unit_text = found[0] if found is not None else texts[0]
    kg = checked_weight(weight_in_kg(value, unit_text, unit_field), value_field)
    written = format_exact(value)  # 70.0 is written 70: a weight in whole kg (the batch audit reads it so)
    decimals = len(written.partition(".")[2])
    margin = weight_in_kg(Decimal(5).scaleb(-decimals - 1), unit_text, unit_field)
    return kg, kg - margin, kg + margin, f"{written} {unit_text}"


def _bound_text(quantity: Json) -> str:
    comparator = quantity.get("comparator")
    value = quantity.get("value")
    shown = format_exact(value) if isinstance(value, Decimal) else str(value)
    return f"{comparator if isinstance(comparator, str) else '?'} {shown} {_unit_label(quantity)}".strip()


def _observation_time_text(observation: _Resource) -> str:
    data, period = observation.data, _mapping(observation.data, "effectivePeriod")
    for _path, in_period, key in _OBSERVATION_TIMES:
        written = _text(period if in_period else data, key)
        if written:
            return f"taken {written}"
    return "no date recorded"


def _weight_value(quantity: Json, field: str) -> Decimal:
    value = _number(quantity.get("value"), field)
    if value is None:
        raise ImpossibleValueError(field, "the body weight has no value")
    if not value.is_finite():
        raise ImpossibleValueError(field, f"a body weight must be a finite number, not {value}")
    return value


def _latest_observation(record: _Record, loinc: str, value_key: str, as_of: dt.date) -> _Resource | None:
    """The latest final Observation with this LOINC code and a value, not after ``as_of`` (of several taken
    at that same time, the last in the record)."""
    latest = _latest_observations(record, loinc, value_key, as_of)
    return latest[-1] if latest else None


def _latest_observations(record: _Record, loinc: str, value_key: str, as_of: dt.date) -> list[_Resource]:
    """The final Observations with this LOINC code and a value, not after ``as_of``, taken at the latest time
    (several when they share it), in record order.

    Observations without any time rank below every dated one (used only when nothing dated exists)."""
    best: list[_Resource] = []
    best_key: tuple[bool, dt.datetime] | None = None
    for observation in record.all("Observation"):
        if observation.status not in FINAL_OBSERVATION or not _has_value(observation.data, value_key):
            continue
        if not _has_code(_mapping(observation.data, "code"), "loinc", loinc):
            continue
        key = _observation_time(observation, as_of)
        if key is None:
            continue
        if best_key is None or key > best_key:
            best, best_key = [observation], key
        elif key == best_key:
            best.append(observation)
    return best


def _has_value(observation: Json, value_key: str) -> bool:
    """A valueQuantity with a value, or a valueCodeableConcept with a coding or text."""
    value = _mapping(observation, value_key)
    return value.get("value") is not None if value_key == "valueQuantity" else bool(value)


_OBSERVATION_TIMES = (  # (path, in effectivePeriod, key), in order of preference
    ("effectiveDateTime", False, "effectiveDateTime"),
    ("effectiveInstant", False, "effectiveInstant"),
    ("effectivePeriod.start", True, "start"),
    ("effectivePeriod.end", True, "end"),
    ("issued", False, "issued"),
)


def _observation_time(observation: _Resource, as_of: dt.date) -> tuple[bool, dt.datetime] | None:
    """(dated, moment) for ranking; None when taken after ``as_of``."""
    data = observation.data
    period = _mapping(data, "effectivePeriod")
    for path, where, key in _OBSERVATION_TIMES:
        written = _text(period if where else data, key)
        if written:
            field = observation.at(path)
            if _date(written, field) > as_of:
                return None
            return True, _moment(written, field)
    return False, dt.datetime.min.replace(tzinfo=dt.UTC)


@_per_record
def _conditions(
    record: _Record, kb: KnowledgeBase, pregnancy: tuple[str, Coded] | None
) -> tuple[ConditionFact, ...]:
    found: list[ConditionFact] = []
    for condition in record.all("Condition"):
        if _condition_counts(condition.data):
            found.extend(_classified(_mapping(condition.data, "code"), kb))
    if pregnancy is not None and pregnancy[0] == kb.pregnancy_status.pregnant:
        found.append(ConditionFact("pregnancy", pregnancy[1]))
    return tuple(dict.fromkeys(found))


def _condition_counts(condition: Json) -> bool:
    clinical = _codes(_mapping(condition, "clinicalStatus"))
    return not (clinical & IGNORED_CLINICAL_STATUS or _refuted(condition))


def _refuted(condition: Json) -> bool:
    return bool(_codes(_mapping(condition, "verificationStatus")) & IGNORED_VERIFICATION_STATUS)


def _classified(concept: Json, kb: KnowledgeBase) -> list[ConditionFact]:
    facts: list[ConditionFact] = []
    for system, code, display in _codings(concept):
        coded = Coded(display or _text(concept, "text") or code, system, code)
        facts.extend(
            ConditionFact(c, coded) for c in kb.value_sets.concepts(system, code) if c in kb.concepts
        )
    return facts


@_per_record
def _pregnancy_status(record: _Record, as_of: dt.date, kb: KnowledgeBase) -> tuple[str, Coded] | None:
    """The SNOMED answer of the latest pregnancy-status Observation (LOINC 82810-3), with its source."""
    codes = kb.pregnancy_status
    observation = _latest_observation(record, codes.observation, "valueCodeableConcept", as_of)
    if observation is None:
        return None
    answer = _mapping(observation.data, "valueCodeableConcept")
    for system, code, display in _codings(answer):
        if short_system(system) == "snomed" and code in (codes.pregnant, codes.not_pregnant):
            return code, Coded(display or _text(answer, "text") or code, system, code)
    return None


def _ruled_out(
    status: tuple[str, Coded] | None, conditions: tuple[ConditionFact, ...], kb: KnowledgeBase
) -> frozenset[str]:
    """A latest pregnancy status of "not pregnant" rules pregnancy out, unless a pregnancy is recorded."""
    not_pregnant = kb.pregnancy_status.not_pregnant
    if status is None or status[0] != not_pregnant or any(c.concept == "pregnancy" for c in conditions):
        return frozenset()
    return frozenset({"pregnancy"})


# ----------------------------------------------------------------------------------------------------
# Drugs: what a MedicationRequest, MedicationStatement or MedicationAdministration names


@dataclass(frozen=True, slots=True)
class _Drug:
    concept: Json  # the code as recorded: medicationCodeableConcept, or the Medication's code
    medication: _Resource | None  # the referenced or contained Medication, if any
    names: tuple[str, ...]  # every text and display naming the drug, the product's own first
    codings: tuple[tuple[str | None, str, str | None], ...]  # (system, code, display)


def _drug(resource: _Resource, record: _Record) -> _Drug:
    """The product a request, statement or administration names (its Medication when it references one)."""
    drug = record.drugs.get(id(resource.data))
    if drug is None:
        drug = record.drugs[id(resource.data)] = _read_drug(resource, record)
    return drug


def _read_drug(resource: _Resource, record: _Record) -> _Drug:
    concept = _mapping(resource.data, "medicationCodeableConcept")
    medication: _Resource | None = None
    concepts: list[Json] = [concept]
    if not concept:
        reference = _mapping(resource.data, "medicationReference")
        found = record.resolve(reference, within=resource)
        if found is not None and found.type == "Medication":
            medication = found
            concept = _mapping(found.data, "code")
            items = (_mapping(i, "itemCodeableConcept") for i in _list(found.data, "ingredient"))
            concepts = [concept, *items]
        if not _codings(concept) and not _text(concept, "text") and _text(reference, "display"):
            concept = {"text": _text(reference, "display")}
            concepts[0] = concept
    names = tuple(n for c in concepts for n in _names(c))
    codings = tuple(coding for c in concepts for coding in _codings(c))
    return _Drug(concept, medication, names, codings)


def _drug_source(drug: _Drug, default: str) -> Coded:
    """The product as recorded: its text, and its RxNorm coding (else its first coding)."""
    product = _codings(drug.concept)
    codings = [c for c in product if short_system(c[0]) == "rxnorm"] or product
    display = drug.names[0] if drug.names else default
    if codings:
        return Coded(display, codings[0][0], codings[0][1])
    return Coded(display)


@lru_cache(maxsize=4096)
def matchable(name: str) -> str:
    """A drug's name as words are looked for in it: Unicode NFKC (full-width "ｋｅｔａｍｉｎｅ" is
    "ketamine") without format characters (category Cf: a soft hyphen, zero-width spaces and joiners, a
    byte-order mark), which are invisible where the name is shown and would otherwise split the word."""
    joined = "".join(ch for ch in name if unicodedata.category(ch) != "Cf")
    return "".join(ch for ch in unicodedata.normalize("NFKC", joined) if unicodedata.category(ch) != "Cf")


def _is_ketamine(drug: _Drug, kb: KnowledgeBase) -> bool:
    if any(short_system(s) == "rxnorm" and c in kb.ketamine_rxnorm for s, c, _ in drug.codings):
        return True
    pattern = word_pattern(kb.ketamine_words)
    return any(pattern.search(matchable(name)) for name in drug.names)


# ----------------------------------------------------------------------------------------------------
# The ketamine order


@dataclass(frozen=True, slots=True)
class _Request:
    request: _Resource
    drug: _Drug


@_per_record
def _ketamine_requests(record: _Record, kb: KnowledgeBase) -> list[_Request]:
    requests = (_Request(r, _drug(r, record)) for r in record.all("MedicationRequest"))
    return [r for r in requests if _is_ketamine(r.drug, kb)]


def _chosen_order(requests: list[_Request], order_id: str | None, record: _Record) -> _Request | None:
    """The order to assess: the one named, else the draft (an active ketamine request beside a draft being
    signed is history, e.g. the infusion running now), else the one active request."""
    orders = _open_ketamine_orders(record, requests)
    if order_id is not None:
        order = _orders_by_id(record, orders).get(order_id)
        if order is not None:
            return order
        raise InputError(
            f"MedicationRequest/{order_id}", "no draft or active ketamine MedicationRequest has this id"
        )
    drafts = [o for o in orders if o.request.status == "draft"]
    candidates = drafts or orders
    if len(candidates) > 1:
        labels = ", ".join(o.request.label for o in candidates)
        which = "draft" if drafts else "active"
        raise InputError(
            candidates[1].request.label,
            f"{len(candidates)} {which} ketamine orders ({labels}); assess one ketamine order at a time",
        )
    return candidates[0] if candidates else None


@_per_record
def _open_ketamine_orders(record: _Record, requests: list[_Request]) -> list[_Request]:
    return [r for r in requests if r.request.status in _ORDER_STATUSES and not _do_not_perform(r.request)]


@_per_record
def _orders_by_id(record: _Record, orders: list[_Request]) -> dict[Any, _Request]:
    """The orders by their id, the first of each id (as a scan of them in order would find it)."""
    index: dict[Any, _Request] = {}
    for order in orders:
        rid = order.request.data.get("id")
        if isinstance(rid, str):
            index.setdefault(rid, order)
    return index


@dataclass(frozen=True, slots=True)
class _Dose:
    quantity: Quantity
    kind: DoseKind
    value_field: str
    unit_field: str
    duration_h: Fraction | None = None  # an infusion's: timing.repeat.duration or boundsDuration
    total: Quantity | None = None  # an infusion's: the doseQuantity beside its rate


def _ketamine_order(chosen: _Request, kb: KnowledgeBase) -> KetamineOrder:
    """The order with every dose it gives: each doseAndRate of each dosage instruction (a loading bolus
    and then an infusion are two doses), all by the one route the order names."""
    request = chosen.request
    route = _order_route(request)
    positions = order_dose_positions(request.data)
    doses = [_order_dose(request, i, j) for i, j in positions]
    concentration = None
    if any(d.quantity.unit.amount == "volume" for d in doses):
        concentration = _concentration(chosen.drug, kb)
    checked = [_checked_dose(route, dose) for dose in doses]
    first = checked[0] if checked else None
    return ketamine_order(
        route=route,
        dose=first.dose if first else None,
        kind=first.kind if first else None,
        concentration_mg_per_ml=concentration,
        pca_sole_agent=route is Route.INTRAVENOUS and is_pca_sole_agent(request.data, chosen.drug, kb),
        source=_drug_source(chosen.drug, "ketamine"),
        field=request.label,
        then=tuple(checked[1:]),
        dose_unreadable=_unreadable_dose(request, {i for i, _ in positions}),
        duration_h=first.duration_h if first else None,
        total=first.total if first else None,
    )


# The words that name patient-controlled analgesia in a dosage's method (also read by the batch audit).
PCA_WORDS = r"(?i)\b(?:pca|patient[- ]controlled analgesia)\b"
_PCA = re.compile(PCA_WORDS)


def is_pca_sole_agent(order: Json, drug: _Drug, kb: KnowledgeBase) -> bool:
    """IV patient-controlled analgesia with ketamine as the only analgesic: a dosage method that names PCA,
    and a product whose every ingredient is ketamine (a ketamine-with-opioid PCA is not ketamine alone)."""
    methods = (_mapping(d, "method") for d in _list(order, "dosageInstruction") if isinstance(d, _OBJECT))
    if not any(_PCA.search(matchable(name)) for method in methods for name in _names(method)):
        return False
    if drug.medication is None:
        return True
    pattern = word_pattern(kb.ketamine_words)
    for item in _list(drug.medication.data, "ingredient"):
        concept = _mapping(item, "itemCodeableConcept")
        rxnorm = {c for s, c, _ in _codings(concept) if short_system(s) == "rxnorm"}
        if not (rxnorm & kb.ketamine_rxnorm or any(pattern.search(matchable(n)) for n in _names(concept))):
            return False
    return True


def _checked_dose(route: Route, dose: _Dose) -> OrderDose:
    try:
        field = dose.value_field.rsplit(".", 1)[0]
        return checked_dose(route, dose.quantity, dose.kind, field, dose.duration_h, dose.total)
    except InputError as exc:
        field = dose.value_field if exc.field.endswith(".value") else dose.unit_field
        raise type(exc)(field, exc.message) from None


_DOSE_KEYS = ("rateQuantity", "rateRatio", "rateRange", "doseQuantity", "doseRange")


def order_dose_positions(order: Any) -> list[tuple[int, int]]:
    """Where a MedicationRequest's doses are: (dosageInstruction, doseAndRate) indexes of every entry that
    gives a dose or a rate, in the sequence the reader checks them (a suggestion updates the same entry)."""
    positions = []
    for i, dosage in enumerate(_list(order, "dosageInstruction")):
        for j, entry in enumerate(_list(dosage, "doseAndRate")):
            if isinstance(entry, _OBJECT) and any(key in entry for key in _DOSE_KEYS):
                positions.append((i, j))
    return positions


def _unreadable_dose(request: _Resource, with_dose: set[int]) -> str | None:
    """Why a dose the order writes down is not checked: a dosage instruction (not among ``with_dose``) with
    words but no dose."""
    for i, dosage in enumerate(_list(request.data, "dosageInstruction")):
        if i in with_dose or not isinstance(dosage, _OBJECT):
            continue
        text = _text(dosage, "text")
        if text or _list(dosage, "doseAndRate"):
            words = f' ("{_short_text(text)}")' if text else ""
            return (
                f"dosage instruction {i + 1} of the ketamine order has no coded dose or rate{words}: "
                "a dose written that way is not checked against the limits"
            )
    return None


def _short_text(text: str, room: int = 60) -> str:
    return text if len(text) <= room else text[: room - 1].rstrip() + "…"


def _order_route(request: _Resource) -> Route:
    """The one route of the order: every dosage instruction that names a route must name the same one."""
    found: list[tuple[Route, str]] = []
    for i, dosage in enumerate(_list(request.data, "dosageInstruction")):
        concept = _mapping(dosage, "route")
        if _codings(concept) or _text(concept, "text"):
            field = request.at(f"dosageInstruction[{i}].route")
            found.append((_route(concept, field), field))
    if not found:
        raise InputError(
            request.at("dosageInstruction[0].route"),
            "the ketamine order has no route (intravenous, oral or intranasal)",
        )
    route = found[0][0]
    for other, field in found[1:]:
        if other is not route:
            raise InputError(
                field,
                f"the order's dosage instructions give two routes ({route.value}, {other.value}); "
                "assess one route at a time",
            )
    return route


def _route(concept: Json, field: str) -> Route:
    routes = _routes(concept)
    if len(routes) == 1:
        return next(iter(routes))
    named = ", ".join(_names(concept)) or ", ".join(code for _, code, _ in _codings(concept))
    if routes:
        raise InputError(field, f"the route {named!r} names more than one route")
    raise InputError(field, f"route {named!r} is not covered: only intravenous, oral and intranasal ketamine")


def _routes(concept: Json) -> set[Route]:
    """The routes a route CodeableConcept names: SNOMED codes first, else words in its text and displays."""
    codings = _codings(concept)
    snomed = [code for system, code, _ in codings if short_system(system) == "snomed"]
    if snomed:
        return {ROUTE_CODES[code] for code in snomed if code in ROUTE_CODES}
    names = _names(concept)
    return {route for pattern, route in ROUTE_WORDS for name in names if pattern.search(name)}


def _order_dose(request: _Resource, i: int, j: int) -> _Dose:
    """One doseAndRate entry: a rate is an infusion (with how long it runs and what it delivers, where the
    order says), else a dose is a bolus."""
    dosage = _list(request.data, "dosageInstruction")[i]
    dose = _rate_or_dose(request, i, j)
    if dose.kind is not DoseKind.INFUSION:
        return dose
    dose_and_rate = _list(dosage, "doseAndRate")[j]
    field = request.at(f"dosageInstruction[{i}]")
    total = None
    if "doseQuantity" in dose_and_rate:
        total = _quantity(dose_and_rate["doseQuantity"], f"{field}.doseAndRate[{j}].doseQuantity")
    duration = _timing_duration(_mapping(_mapping(dosage, "timing"), "repeat"), f"{field}.timing.repeat")
    return _Dose(dose.quantity, dose.kind, dose.value_field, dose.unit_field, duration, total)


def _timing_duration(repeat: Json, field: str) -> Fraction | None:
    """How long each administration lasts (``duration`` with ``durationUnit``), else the whole course's
    ``boundsDuration``: for an infusion, how long it runs."""
    if repeat.get("duration") is not None:
        value = _number(repeat.get("duration"), f"{field}.duration")
        unit = _text(repeat, "durationUnit") or ""
        return duration_in_hours(value or Decimal(0), unit, f"{field}.durationUnit")
    bounds = _mapping(repeat, "boundsDuration")
    if bounds.get("value") is not None:
        value = _number(bounds.get("value"), f"{field}.boundsDuration.value")
        unit = _text(bounds, "code") or _text(bounds, "unit") or ""
        return duration_in_hours(value or Decimal(0), unit, f"{field}.boundsDuration")
    return None


def _rate_or_dose(request: _Resource, i: int, j: int) -> _Dose:
    """A rate (quantity, ratio, or the high end of a range) is an infusion, else a dose (quantity, or the
    high end of a range) is a bolus. When both are written, the rate is the order: the dose is then what the
    infusion delivers, not a bolus."""
    dose_and_rate = _list(_list(request.data, "dosageInstruction")[i], "doseAndRate")[j]
    field = request.at(f"dosageInstruction[{i}].doseAndRate[{j}]")
    if "rateQuantity" in dose_and_rate:
        return _quantity_dose(dose_and_rate["rateQuantity"], DoseKind.INFUSION, f"{field}.rateQuantity")
    if "rateRatio" in dose_and_rate:
        return _ratio_dose(_mapping(dose_and_rate, "rateRatio"), f"{field}.rateRatio")
    if "rateRange" in dose_and_rate:
        high = _mapping(dose_and_rate, "rateRange").get("high")
        return _quantity_dose(high, DoseKind.INFUSION, f"{field}.rateRange.high")
    if "doseQuantity" in dose_and_rate:
        return _quantity_dose(dose_and_rate["doseQuantity"], DoseKind.BOLUS, f"{field}.doseQuantity")
    high = _mapping(dose_and_rate, "doseRange").get("high")
    return _quantity_dose(high, DoseKind.BOLUS, f"{field}.doseRange.high")


def _quantity_dose(raw: Any, kind: DoseKind, field: str) -> _Dose:
    return _Dose(_quantity(raw, field), kind, f"{field}.value", f"{field}.unit")


def _ratio_dose(ratio: Json, field: str) -> _Dose:
    """A rate written as a Ratio (20 mg / 1 h, 100 mg / 60 min) as one Quantity per hour (20, 100 mg/h)."""
    numerator = _quantity(ratio.get("numerator"), f"{field}.numerator")
    denominator = _mapping(ratio, "denominator")
    den_field = f"{field}.denominator"
    if numerator.unit.is_rate:
        raise UnitError(
            f"{field}.numerator.unit", f"the numerator must be an amount, not {numerator.unit.text!r}"
        )
    per_hours = _time_unit_hours(denominator, den_field)
    den_value = _number(denominator.get("value"), f"{den_field}.value")
    if den_value is None or not den_value.is_finite() or den_value <= 0:
        raise ImpossibleValueError(
            f"{den_field}.value", f"the time must be a positive number, not {den_value}"
        )
    hourly = (
        Fraction(numerator.value) / (Fraction(den_value) * per_hours) if numerator.value.is_finite() else None
    )
    value = _decimal_of(hourly) if hourly is not None else numerator.value
    unit = parse_unit(f"{numerator.unit.text}/h")
    return _Dose(
        Quantity(value, unit), DoseKind.INFUSION, f"{field}.numerator.value", f"{field}.numerator.unit"
    )


def _time_unit_hours(quantity: Json, field: str) -> Fraction:
    """A time unit in hours: its ``code``, else its ``unit``; the two naming different times is refused."""
    _no_comparator(quantity, field)
    found: list[tuple[str, Fraction]] = []
    for text in _unit_texts(quantity):
        try:
            per_hours = parse_unit(f"mg/{text}").per_hours
        except UnitError:
            continue
        if per_hours is not None:
            found.append((text, per_hours))
    if len(found) == 2 and found[0][1] != found[1][1]:
        raise UnitError(
            f"{field}.unit",
            f"the unit {found[1][0]!r} and the UCUM code {found[0][0]!r} name different times: which one was "
            "meant cannot be told",
        )
    if found:
        return found[0][1]
    raise UnitError(f"{field}.unit", f"a rate needs a time here (h, min), not {_unit_label(quantity)!r}")


def _concentration(drug: _Drug, kb: KnowledgeBase) -> Fraction | None:
    """mg per mL of the ordered product: its Medication's ingredient strength, else "NN MG/ML" in its name."""
    if drug.medication is not None:
        strength = _ingredient_strength(drug.medication, kb)
        if strength is not None:
            return strength
    for name in drug.names:
        match = _MG_PER_ML.search(name)
        if match:
            return Fraction(Decimal(match.group(1)))
    return None


def _ingredient_strength(medication: _Resource, kb: KnowledgeBase) -> Fraction | None:
    ingredients = [
        (i, item)
        for i, item in enumerate(_list(medication.data, "ingredient"))
        if isinstance(item, _OBJECT) and _mapping(item, "strength")
    ]
    if len(ingredients) > 1:
        pattern = word_pattern(kb.ketamine_words)
        ingredients = [
            (i, item)
            for i, item in ingredients
            if any(pattern.search(matchable(n)) for n in _names(_mapping(item, "itemCodeableConcept")))
        ]
    if len(ingredients) != 1:
        return None
    index, ingredient = ingredients[0]
    field = medication.at(f"ingredient[{index}].strength")
    strength = _mapping(ingredient, "strength")
    numerator = _quantity(strength.get("numerator"), f"{field}.numerator")
    denominator = _quantity(strength.get("denominator"), f"{field}.denominator")
    try:
        return concentration_mg_per_ml(numerator, denominator)
    except UnitError as exc:
        raise type(exc)(field, exc.message) from None


def _indication(request: _Resource, record: _Record, kb: KnowledgeBase) -> tuple[str | None, Coded | None]:
    """The intended use named by the order's reasonCode (or a reasonReference to a Condition)."""
    use_of_concept = {use.concept: use.id for use in kb.uses.values() if use.concept}
    reasons = [r for r in _list(request.data, "reasonCode") if isinstance(r, _OBJECT)]
    for reference in _list(request.data, "reasonReference"):
        condition = record.resolve(reference, within=request)
        if condition is not None and condition.type == "Condition" and not _refuted(condition.data):
            reasons.append(_mapping(condition.data, "code"))
    classified = [fact for reason in reasons for fact in _classified(reason, kb)]
    named = {fact.concept for fact in classified}
    for use in kb.uses.values():  # a use some conditions name only together (spinal cord injury pain)
        if use.concepts_together and named.issuperset(use.concepts_together):
            first = next(f for f in classified if f.concept == use.concepts_together[0])
            return use.id, first.source
    for fact in classified:
        if fact.concept in use_of_concept:
            return use_of_concept[fact.concept], fact.source
    return None, None


# ----------------------------------------------------------------------------------------------------
# Planned surgery


@_per_record
def _planned_procedure(record: _Record, kb: KnowledgeBase) -> PlannedProcedure | None:
    """The planned surgery: a Procedure in preparation or in progress, or an open ServiceRequest for surgery.

    A ServiceRequest counts when its code is a classified procedure or its category is surgical:
    ServiceRequests also order laboratory tests, imaging and social services, which are not surgery."""
    candidates: list[PlannedProcedure] = []
    for procedure in record.all("Procedure"):
        if procedure.status in _PLANNED_PROCEDURE_STATUSES:
            candidates.append(_procedure_of(_mapping(procedure.data, "code"), kb))
    for request in record.all("ServiceRequest"):
        if not _open_order(request):
            continue
        planned = _procedure_of(_mapping(request.data, "code"), kb)
        if planned.procedure_class is not None or _is_surgical_category(request):
            candidates.append(planned)
    if not candidates:
        return None
    return min(candidates, key=lambda p: _procedure_rank(p, kb))


def _open_order(request: _Resource) -> bool:
    return (
        _text(request.data, "intent") in _ORDER_INTENTS
        and request.status not in _CLOSED_REQUEST_STATUSES
        and not _do_not_perform(request)
    )


def _do_not_perform(request: _Resource) -> bool:
    return request.data.get("doNotPerform") is True


def _is_surgical_category(request: _Resource) -> bool:
    categories = (c for c in _list(request.data, "category") if isinstance(c, _OBJECT))
    return any(_has_code(c, "snomed", SURGICAL_PROCEDURE) for c in categories)


def _procedure_of(concept: Json, kb: KnowledgeBase) -> PlannedProcedure:
    codings = _codings(concept)
    for system, code, display in codings:
        for c in kb.value_sets.concepts(system, code):
            if c.startswith("procedure:") and c.split(":", 1)[1] in kb.procedure_classes:
                return PlannedProcedure(
                    Coded(display or _text(concept, "text") or code, system, code), c.split(":", 1)[1]
                )
    if codings:
        system, code, display = codings[0]
        return PlannedProcedure(Coded(display or _text(concept, "text") or code, system, code), None)
    return PlannedProcedure(Coded(_text(concept, "text") or "procedure"), None)


def _procedure_rank(procedure: PlannedProcedure, kb: KnowledgeBase) -> int:
    if procedure.procedure_class is None:
        return 2
    return 0 if kb.procedure_classes[procedure.procedure_class].pain == "severe" else 1


# ----------------------------------------------------------------------------------------------------
# Opioids


@_per_record
def _opioids(record: _Record, kb: KnowledgeBase) -> tuple[OpioidUse, ...]:
    uses: list[OpioidUse | None] = []
    for request in record.all("MedicationRequest"):
        if request.status == "active":
            uses.append(_opioid_use(request, "dosageInstruction", record, kb))
    for statement in record.all("MedicationStatement"):
        if statement.status in _OPIOID_STATEMENT_STATUSES:
            uses.append(_opioid_use(statement, "dosage", record, kb))
    return tuple(use for use in uses if use is not None)


class OpioidReader:
    """Opioid MedicationRequests and MedicationStatements read one at a time, as ``facts_from_bundle`` reads
    them (the drug, its ingredient, the daily amount, as needed, start and end), whatever their status.

    For the batch audit, which reads history: a prescription completed since was taken then, so which status
    counts is the caller's to decide. ``medications`` are the Medication resources references may name
    ((fullUrl, resource) pairs, as ``facts_from_resources`` takes them)."""

    def __init__(
        self, medications: Iterable[tuple[str | None, Mapping[str, Any]]], kb: KnowledgeBase | None = None
    ) -> None:
        self._kb = kb or load_knowledge()
        self._record = _Record.of_items((i, u, r) for i, (u, r) in enumerate(medications))

    def use(self, resource: Mapping[str, Any]) -> OpioidUse | None:
        """The opioid use a request or statement records (None when it is not for an opioid); raises
        ``InputError`` as ``facts_from_bundle`` would (a date that is not a FHIR date, say)."""
        read, _ = _entry_resource(resource, 0)
        key = "dosage" if read.type == "MedicationStatement" else "dosageInstruction"
        try:
            return _opioid_use(read, key, self._record, self._kb)
        finally:
            self._record.drugs.pop(id(resource), None)  # read once: nothing kept per resource

    def ingredient(self, resource: Mapping[str, Any]) -> str | None:
        """The opioid a request or statement is for (None when it is not for one), even when its dosage or
        dates cannot be read."""
        read, _ = _entry_resource(resource, 0)
        try:
            return _opioid_ingredient(_drug(read, self._record), self._kb)
        finally:
            self._record.drugs.pop(id(resource), None)


def _opioid_use(resource: _Resource, dosage_key: str, record: _Record, kb: KnowledgeBase) -> OpioidUse | None:
    """The opioid a prescription or statement is for, with its daily amount and dates; None if no opioid."""
    drug = _drug(resource, record)
    ingredient = _opioid_ingredient(drug, kb)
    if ingredient is None:
        return None
    dosages = [d for d in _list(resource.data, dosage_key) if isinstance(d, _OBJECT)]
    as_needed = _as_needed(dosages)
    if as_needed:
        amount = None
    elif kb.opioids[ingredient].unit == "ug/h":
        amount = _patch_mcg_per_h(drug, dosages) if _is_transdermal(drug, dosages) else None
    else:
        amount = _mg_per_day(drug, dosages, ingredient)
    start, end = _opioid_dates(resource, dosages)
    return OpioidUse(ingredient, amount, start, end, _drug_source(drug, ingredient), as_needed=as_needed)


def _opioid_ingredient(drug: _Drug, kb: KnowledgeBase) -> str | None:
    """The opioid a product contains: by RxNorm ingredient code, else by name (first named in its text)."""
    for system, code, _ in drug.codings:
        if short_system(system) == "rxnorm":
            ingredient = next((o.ingredient for o in kb.opioids.values() if o.rxnorm == code), None)
            if ingredient is not None:
                return ingredient
    any_opioid = word_pattern(tuple(kb.opioids))  # whole words: the leftmost match is the first named
    for name in dict.fromkeys(drug.names):
        found = any_opioid.search(matchable(name))
        if found:
            return found.group(0).lower()
    return None


def _as_needed(dosages: list[Json]) -> bool:
    """Taken as needed (PRN): ``asNeededBoolean`` true or an ``asNeededCodeableConcept`` (the reason to take
    it) on any of the dosages. Its timing, however regular ("every 4 hours"), is then the most that may be
    taken, not what is taken: as needed wins over the timing."""
    return any(
        d.get("asNeededBoolean") is True or isinstance(d.get("asNeededCodeableConcept"), _OBJECT)
        for d in dosages
    )


def _is_transdermal(drug: _Drug, dosages: list[Json]) -> bool:
    routes = [_mapping(d, "route") for d in dosages]
    if any(_has_code(r, "snomed", TRANSDERMAL_ROUTE) for r in routes):
        return True
    names = [*drug.names, *(n for r in routes for n in _names(r))]
    return any(_TRANSDERMAL_WORDS.search(n) for n in names)


def _patch_mcg_per_h(drug: _Drug, dosages: list[Json]) -> Fraction | None:
    """Transdermal fentanyl in mcg/h: the patch strength (0.075 MG/HR -> 75) times the patches worn."""
    if len(dosages) != 1:
        return None
    raw = _first(dosages[0], "doseAndRate").get("doseQuantity")
    if not isinstance(raw, _OBJECT):
        return None
    dose = _readable_dose(raw)
    if dose is None:
        return None
    value, unit = dose
    if unit is not None:  # the dose written as a rate: 25 mcg/h
        if unit.amount == "mass" and unit.per_hours is not None and not unit.per_kg:
            return value * unit.factor * 1000 / unit.per_hours
        return None
    strength = _strength(drug, "fentanyl", per="hr")
    return value * strength * 1000 if strength is not None else None


def _mg_per_day(drug: _Drug, dosages: list[Json], ingredient: str) -> Fraction | None:
    """mg/day over the dosage instructions given together (the same sequence); None when any is unreadable."""
    if not dosages or len({d.get("sequence") for d in dosages}) > 1:
        return None
    total = Fraction(0)
    for dosage in dosages:
        per_dose = _mg_per_dose(drug, dosage, ingredient)
        per_day = _doses_per_day(_mapping(dosage, "timing"))
        if per_dose is None or per_day is None:
            return None
        total += per_dose * per_day
    return total


def _mg_per_dose(drug: _Drug, dosage: Json, ingredient: str) -> Fraction | None:
    raw = _first(dosage, "doseAndRate").get("doseQuantity")
    if not isinstance(raw, _OBJECT):
        return None
    dose = _readable_dose(raw)
    if dose is None:
        return None
    value, unit = dose
    if unit is None:  # a count of tablets or capsules
        strength = _strength(drug, ingredient, per=None)
        return value * strength if strength is not None else None
    if unit.per_kg or unit.is_rate:
        return None
    if unit.amount == "mass":
        return value * unit.factor
    concentration = _strength(drug, ingredient, per="ml")
    return value * unit.factor * concentration if concentration is not None else None


def _readable_dose(quantity: Json) -> tuple[Fraction, Unit | None] | None:
    """A dose as (value, unit); unit None for a count (tablets, capsules, patches, no unit)."""
    try:
        value = _number(quantity.get("value"), "dose")
        _read_unit(quantity, "dose")  # a unit and a code that disagree: the dose cannot be read
    except InputError:
        return None
    if value is None or not value.is_finite() or value <= 0 or quantity.get("comparator") is not None:
        return None
    texts = _unit_texts(quantity)
    if not texts:
        return Fraction(value), None
    for text in texts:
        if _is_count_unit(text):
            return Fraction(value), None
        try:
            return Fraction(value), parse_unit(text)
        except UnitError:
            continue
    return None


def _is_count_unit(text: str) -> bool:
    word = text.strip().strip("{}").lower()
    return word in _COUNT_UNITS or (len(word) > 3 and word.endswith("s") and word[:-1] in _COUNT_UNITS)


def _strength(drug: _Drug, ingredient: str, per: str | None) -> Fraction | None:
    """The ingredient's strength in mg (per unit, per mL or per hour) from the product name.

    In a combination ("Acetaminophen 325 MG / oxyCODONE Hydrochloride 5 MG Oral Tablet") only the opioid's
    segment is read, and only the first strength after its name."""
    return strength_in_names(drug.names, ingredient, per)


@lru_cache(maxsize=1024)  # product names are a small vocabulary: the same few come back in every record
def strength_in_names(names: tuple[str, ...], ingredient: str, per: str | None) -> Fraction | None:
    pattern = word_pattern((ingredient,))
    for name in names:
        for segment in name.split(" / "):
            found = pattern.search(segment)
            if not found:
                continue
            match = _STRENGTH.search(segment, found.end())
            if match is None:
                continue
            denominator = (match.group(3) or "").lower() or None
            if (denominator == "h" and per == "hr") or denominator == per:
                factor = Fraction(1) if match.group(2).lower() == "mg" else Fraction(1, 1000)
                return Fraction(Decimal(match.group(1))) * factor
    return None


def _doses_per_day(timing: Json) -> Fraction | None:
    repeat = _mapping(timing, "repeat")
    period = _safe_number(repeat.get("period"))
    if period is not None:
        hours = _PERIOD_HOURS.get(_text(repeat, "periodUnit") or "")
        frequency = _safe_number(repeat.get("frequency"))
        if hours is None or period <= 0 or (frequency is not None and frequency <= 0):
            return None
        return Fraction(frequency if frequency is not None else 1) * 24 / (Fraction(period) * hours)
    times = _list(repeat, "timeOfDay")
    if times:
        return Fraction(len(times))
    for system, code, _ in _codings(_mapping(timing, "code")):
        if (system is None or system.endswith("GTSAbbreviation")) and code.upper() in _TIMING_CODES:
            return _TIMING_CODES[code.upper()]
    return None


def _opioid_dates(resource: _Resource, dosages: list[Json]) -> tuple[dt.date | None, dt.date | None]:
    """start: the dosage's boundsPeriod, else the prescription's validity, else when it was written (for a
    statement, when it took effect); end: the boundsPeriod or effectivePeriod end only."""
    bounds_path = "dosage[0]" if "dosage" in resource.data else "dosageInstruction[0]"
    bounds = _mapping(_mapping(_mapping(dosages[0], "timing") if dosages else {}, "repeat"), "boundsPeriod")
    validity = _mapping(_mapping(resource.data, "dispenseRequest"), "validityPeriod")
    effective = _mapping(resource.data, "effectivePeriod")
    starts = (
        (f"{bounds_path}.timing.repeat.boundsPeriod.start", _text(bounds, "start")),
        ("dispenseRequest.validityPeriod.start", _text(validity, "start")),
        ("authoredOn", _text(resource.data, "authoredOn")),
        ("effectivePeriod.start", _text(effective, "start")),
        ("effectiveDateTime", _text(resource.data, "effectiveDateTime")),
    )
    ends = (
        (f"{bounds_path}.timing.repeat.boundsPeriod.end", _text(bounds, "end")),
        ("effectivePeriod.end", _text(effective, "end")),
    )
    start = next((_date(text, resource.at(path)) for path, text in starts if text), None)
    end = next((_date(text, resource.at(path)) for path, text in ends if text), None)
    return start, end


# ----------------------------------------------------------------------------------------------------
# Setting and prior ketamine


def _setting(record: _Record, order: _Resource | None, site: Site | None = None) -> Setting:
    encounter = _current_encounter(record, order)
    if encounter is None:
        return Setting.UNKNOWN
    locations = _current_locations(encounter, record)
    kinds = [_is_intensive_care(location, site) for location in locations]
    if any(kind is True for kind in kinds):
        return Setting.INTENSIVE_CARE
    if kinds and all(kind is False for kind in kinds):
        return Setting.NON_INTENSIVE_CARE
    if _text(_mapping(encounter.data, "class"), "code") in NON_INTENSIVE_CLASSES:
        return Setting.NON_INTENSIVE_CARE
    return Setting.UNKNOWN


def _current_encounter(record: _Record, order: _Resource | None) -> _Resource | None:
    """The Encounter going on now: the order's own, else the one Encounter in progress (or arrived, triaged,
    on leave). A finished, cancelled, entered-in-error or planned Encounter says nothing about where the
    patient is now, so it gives no setting, even when the order names it."""
    if order is not None:
        found = record.resolve(_mapping(order.data, "encounter"), within=order)
        if found is not None and found.type == "Encounter":
            return found if found.status in _CURRENT_ENCOUNTER_STATUSES else None
    return _the_encounter_now(record)


@_per_record
def _the_encounter_now(record: _Record) -> _Resource | None:
    """The one Encounter going on now, when the record holds exactly one."""
    current = [e for e in record.all("Encounter") if e.status in _CURRENT_ENCOUNTER_STATUSES]
    return current[0] if len(current) == 1 else None


def _current_locations(encounter: _Resource, record: _Record) -> list[_Resource | None]:
    """The Encounter's current locations (None where a reference cannot be resolved): the active entries,
    else those without a status; never planned, reserved or completed ones."""
    entries = [e for e in _list(encounter.data, "location") if isinstance(e, _OBJECT)]
    active = [e for e in entries if e.get("status") == "active"]
    chosen = active or [e for e in entries if e.get("status") is None]
    return [record.resolve(_mapping(e, "location"), within=encounter) for e in chosen]


def _is_intensive_care(location: _Resource | None, site: Site | None = None) -> bool | None:
    """True for a Location typed ICU (or below it), or one a site's protocol counts as intensive monitoring
    (by an identifier or type code, or by name); False for one typed otherwise; None when unknown."""
    if location is None or location.type != "Location":
        return None
    if site is not None and _site_monitoring(location, site):
        return True
    types = [t for t in _list(location.data, "type") if isinstance(t, _OBJECT)]
    codings = [c for t in types for c in _codings(t)]
    role_codes = [c for s, c, _ in codings if s in ROLE_CODE_SYSTEMS]
    if role_codes:  # a coded v3 RoleCode type decides; words beside it do not override it
        return any(c in INTENSIVE_CARE_ROLE_CODES for c in role_codes)
    names = [n for t in types for n in _names(t)]
    if any(INTENSIVE_CARE_WORDS.search(n) and not HEDGED_INTENSIVE_CARE.search(n) for n in names):
        return True
    return False if codings or names else None


def _site_monitoring(location: _Resource, site: Site) -> bool:
    data = location.data
    identifiers = [i for i in _list(data, "identifier") if isinstance(i, _OBJECT)]
    codes = [(_text(i, "system"), _text(i, "value") or "") for i in identifiers]
    codes += [(s, c) for t in _list(data, "type") for s, c, _ in _codings(t)]
    names = [n for n in (_text(data, "name"), *[a for a in _list(data, "alias") if isinstance(a, str)]) if n]
    return site.is_monitoring_location(codes, names)


def _prior_iv_ketamine(
    record: _Record, kb: KnowledgeBase, requests: list[_Request], chosen: _Request | None
) -> bool | None:
    """True when the record shows an earlier IV ketamine infusion (a course: a rate, or an administration
    over time; a single IV bolus is not one): another ketamine MedicationRequest, completed or active, a
    MedicationAdministration, or a MedicationStatement being or having been taken. Otherwise None, never
    False: a course not found in the record is not ruled out by it (a record has no way to say "never had IV
    ketamine"), so follow-up use then needs the answer."""
    courses = _course_requests(record, requests)
    if any(chosen is None or request.request is not chosen.request for request in courses):
        return True
    return _course_given_or_taken(record, kb)


@_per_record
def _course_requests(record: _Record, requests: list[_Request]) -> list[_Request]:
    """The ketamine requests that are an IV infusion course, given or going on (the order being assessed may
    be among them: it is not its own history)."""
    courses = []
    for request in requests:
        if request.request.status not in COURSE_REQUEST_STATUSES:
            continue
        dosages = [d for d in _list(request.request.data, "dosageInstruction") if isinstance(d, _OBJECT)]
        if _iv_infusion(dosages, request.request.data):
            courses.append(request)
    return courses


@_per_record
def _course_given_or_taken(record: _Record, kb: KnowledgeBase) -> bool | None:
    """True when an administration or a statement shows an IV ketamine infusion course; None otherwise."""
    for given in record.all("MedicationAdministration"):
        if given.status in NOT_GIVEN_ADMINISTRATION_STATUSES or not _is_ketamine(_drug(given, record), kb):
            continue
        if _iv_infusion_given(given):
            return True
    for statement in record.all("MedicationStatement"):
        if statement.status not in _TAKEN_STATEMENT_STATUSES or not _is_ketamine(
            _drug(statement, record), kb
        ):
            continue
        dosages = [d for d in _list(statement.data, "dosage") if isinstance(d, _OBJECT)]
        if _iv_infusion(dosages, statement.data):
            return True
    return None


_TAKEN_STATEMENT_STATUSES = frozenset({"active", "completed"})


def _iv_infusion(dosages: list[Json], resource: Json) -> bool:
    """Dosages (of a request or a statement) for an IV infusion: by the IV route, with a rate, or named an
    infusion in words where no dose is coded."""
    if not dosages or not all(_routes(_mapping(d, "route")) == {Route.INTRAVENOUS} for d in dosages):
        return False
    entries = [e for d in dosages for e in _list(d, "doseAndRate") if isinstance(e, _OBJECT)]
    if any(key in e for e in entries for key in ("rateQuantity", "rateRatio", "rateRange")):
        return True
    if any(key in e for e in entries for key in ("doseQuantity", "doseRange")):
        return False  # an amount alone: a bolus
    notes = [_text(n, "text") or "" for n in _list(resource, "note") if isinstance(n, _OBJECT)]
    texts = [_text(d, "text") or "" for d in dosages] + notes
    return any(INFUSION_WORDS.search(t) for t in texts)


def _iv_infusion_given(given: _Resource) -> bool:
    """An IV administration that ran over time: a rate, or an effective period with an end after its start."""
    dosage = _mapping(given.data, "dosage")
    if _routes(_mapping(dosage, "route")) != {Route.INTRAVENOUS}:
        return False
    if "rateQuantity" in dosage or "rateRatio" in dosage:
        return True
    period = _mapping(given.data, "effectivePeriod")
    start, end = _text(period, "start"), _text(period, "end")
    if not start or not end:
        return False
    try:
        return _moment(end, given.at("effectivePeriod.end")) > _moment(
            start, given.at("effectivePeriod.start")
        )
    except InputError:
        return False


# ----------------------------------------------------------------------------------------------------
# JSON helpers


def _text(data: Any, key: str) -> str | None:
    value = data.get(key) if isinstance(data, _OBJECT) else None
    return (value.strip() or None) if isinstance(value, str) else None


def _mapping(data: Any, key: str) -> Json:
    value = data.get(key) if isinstance(data, _OBJECT) else None
    return value if isinstance(value, _OBJECT) else {}


def _list(data: Any, key: str) -> list[Any]:
    value = data.get(key) if isinstance(data, _OBJECT) else None
    return value if isinstance(value, list) else []


def _first(data: Any, key: str) -> Json:
    items = _list(data, key)
    head = items[0] if items else None
    return head if isinstance(head, _OBJECT) else {}


def _codings(concept: Json) -> list[tuple[str | None, str, str | None]]:
    """(system, code, display) of every coding that has a code."""
    found: list[tuple[str | None, str, str | None]] = []
    for coding in _list(concept, "coding"):
        if isinstance(coding, _OBJECT):  # _text inlined: this runs for every coding, several times
            code, system, display = coding.get("code"), coding.get("system"), coding.get("display")
            code = code.strip() if isinstance(code, str) else None
            if code:
                system = (system.strip() or None) if isinstance(system, str) else None
                display = (display.strip() or None) if isinstance(display, str) else None
                found.append((system, code, display))
    return found


def _names(concept: Json) -> list[str]:
    """The concept's text, then its codings' displays."""
    names = [_text(concept, "text")] + [_text(c, "display") for c in _list(concept, "coding")]
    return [n for n in names if n]


def _codes(concept: Json) -> set[str]:
    return {code for _, code, _ in _codings(concept)}


def _has_code(concept: Json, short: str, code: str) -> bool:
    return any(c == code and short_system(s) == short for s, c, _ in _codings(concept))


def _number(value: Any, field: str) -> Decimal | None:
    """A JSON number as an exact Decimal (floats through their shortest repr); None when absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise InputError(field, f"must be a number, not {value!r}")
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:  # pragma: no cover - str() of an int or float is always a valid Decimal
        raise InputError(field, f"must be a number, not {value!r}") from None
    return bounded(number, field)


def _safe_number(value: Any) -> Decimal | None:
    try:
        number = _number(value, "")
    except InputError:
        return None
    return number if number is not None and number.is_finite() else None


def _decimal_of(value: Fraction) -> Decimal:
    """A Fraction as a Decimal: exact when it terminates (20/1, 100/60 h -> 100), else to 50 digits."""
    with localcontext() as ctx:
        ctx.prec = 50
        return Decimal(value.numerator) / Decimal(value.denominator)


def _unit_texts(quantity: Json) -> list[str]:
    """The unit as written: the UCUM ``code`` first, then the human ``unit``."""
    return [t for t in (_text(quantity, "code"), _text(quantity, "unit")) if t]


def _unit_label(quantity: Json) -> str:
    texts = _unit_texts(quantity)
    return texts[0] if texts else ""


def _quantity(raw: Any, field: str) -> Quantity:
    """An amount or a rate, exactly. Refused: a bound (``comparator``: "< 20 mg" is no dose to check), and a
    ``unit`` and UCUM ``code`` that name different units (which one was meant cannot be told)."""
    if not isinstance(raw, _OBJECT):
        raise InputError(field, "must be a Quantity with a value and a unit")
    _no_comparator(raw, field)
    value = _number(raw.get("value"), f"{field}.value")
    if value is None:
        raise InputError(f"{field}.value", "the quantity has no value")
    texts = _unit_texts(raw)
    if not texts:
        raise UnitError(f"{field}.unit", "the quantity has no unit")
    found = _read_unit(raw, f"{field}.unit")
    if found is None:
        raise UnitError(f"{field}.unit", f"unknown unit {texts[0]!r}")
    return Quantity(value, found[1])


def _no_comparator(raw: Json, field: str) -> None:
    if raw.get("comparator") is not None:
        raise InputError(
            f"{field}.comparator",
            f"the quantity is only a bound ({_bound_text(raw)}), not an amount: it cannot be checked",
        )


def _read_unit(quantity: Json, field: str) -> tuple[str, Unit] | None:
    """The unit a Quantity is in, as (text, unit): its UCUM ``code``, else its ``unit``; None when neither is
    a unit this reader knows. When both are units it knows and they differ ("unit": "mg", "code": "ug"),
    which one was meant cannot be told: ``UnitError`` naming both. A ``unit`` in words ("milligram") is not
    compared: FHIR gives it for people to read."""
    code, unit = _text(quantity, "code"), _text(quantity, "unit")
    found: list[tuple[str, Unit]] = []
    for text in (code, unit):
        if text:
            try:
                found.append((text, parse_unit(text)))
            except UnitError:
                continue
    if len(found) == 2 and _unit_key(found[0][1]) != _unit_key(found[1][1]):
        raise UnitError(
            field,
            f"the unit {unit!r} and the UCUM code {code!r} name different units: which one was meant cannot "
            "be told",
        )
    return found[0] if found else None


def _unit_key(unit: Unit) -> tuple[object, ...]:
    return unit.amount, unit.factor, unit.per_kg, unit.per_hours


def _date(written: str, field: str) -> dt.date:
    """The calendar date a FHIR date or dateTime was written on (a partial date is its first day)."""
    match = _DATE.match(written)
    try:
        if match is None:
            raise ValueError(written)
        year, month, day = (int(g) if g else 1 for g in match.groups())
        return dt.date(year, month, day)
    except ValueError:
        raise InputError(field, f"not a FHIR date or dateTime: {written!r}") from None


def _moment(written: str, field: str) -> dt.datetime:
    """A FHIR dateTime as an aware UTC datetime, for ordering; a date alone is its midnight UTC."""
    if len(written) <= 10:
        day = _date(written, field)
        return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    try:
        moment = dt.datetime.fromisoformat(written)
    except ValueError:
        raise InputError(field, f"not a FHIR dateTime: {written!r}") from None
    return moment.astimezone(dt.UTC) if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _validation_path(bundle: Json, location: tuple[int | str, ...]) -> str:
    """A pydantic error location as a path: ('entry', 3, 'resource', 'code') -> Observation/x.code."""
    parts = list(location)
    prefix = "Bundle"
    entries = _list(bundle, "entry")
    if len(parts) >= 3 and parts[0] == "entry" and isinstance(parts[1], int) and parts[2] == "resource":
        resource = _mapping(entries[parts[1]] if parts[1] < len(entries) else {}, "resource")
        local_id, resource_type = _text(resource, "id"), _text(resource, "resourceType")
        prefix = f"{resource_type}/{local_id}" if local_id and resource_type else f"entry[{parts[1]}]"
        parts = parts[3:]
    path = prefix
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += "." + ("resourceType" if part == "resource_type" else str(part))
    return path


def _one_line(message: str) -> str:
    return " ".join(message.split())
