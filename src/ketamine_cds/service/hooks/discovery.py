"""CDS Hooks discovery: the three services of a knowledge base (order-select, order-sign, patient-view), their
prefetch templates and the discovery document."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..._kb import KnowledgeBase
from .. import prefetch as pf

Json = dict[str, Any]


SELECT_ID, SIGN_ID, VIEW_ID = "ketamine-order-select", "ketamine-order-sign", "ketamine-patient-view"
SERVICE_IDS = [SELECT_ID, SIGN_ID, VIEW_ID]
ORDER_HOOKS = ("order-select", "order-sign")


@dataclass(frozen=True)
class CdsService:
    id: str
    hook: str
    title: str
    description: str
    prefetch: Mapping[str, str]


_BUILT: dict[int, tuple[KnowledgeBase, dict[str, CdsService]]] = {}


def services(kb: KnowledgeBase) -> dict[str, CdsService]:
    """The services of this knowledge base, built once (every hook call looks its service up here)."""
    built = _BUILT.get(id(kb))
    if built is None or built[0] is not kb:
        if len(_BUILT) >= 8:  # an app holds one knowledge base; tests make many apps
            _BUILT.clear()
        built = _BUILT[id(kb)] = (kb, _build_services(kb))
    return built[1]


def _build_services(kb: KnowledgeBase) -> dict[str, CdsService]:
    bolus = kb.threshold("dose-bolus-limit", "limit_mg_per_kg")
    infusion = kb.threshold("dose-infusion-limit", "limit_mg_per_kg_per_h")
    limits = (
        f"IV bolus {float(bolus):g} mg/kg; IV infusion {float(infusion):g} mg/kg/h outside intensive care"
    )
    order_prefetch = pf.templates(kb)
    services = (
        CdsService(
            SELECT_ID,
            "order-select",
            "Ketamine for pain: guideline check while ordering",
            f"When a ketamine order is selected, shows what the {kb.guideline} say for this patient: the "
            "supporting statements with their grade and certainty, cautions, contraindications found in the "
            f"record, missing information, and the dose limits for the patient's weight ({limits}).",
            order_prefetch,
        ),
        CdsService(
            SIGN_ID,
            "order-sign",
            "Ketamine for pain: contraindication and dose-limit check at signing",
            "When a ketamine order is signed, interrupts only for a contraindication the record shows or an "
            f"IV dose over the limit of the {kb.guideline} ({limits}), with a suggestion that changes the "
            "dose to the limit and coded override reasons.",
            order_prefetch,
        ),
        CdsService(
            VIEW_ID,
            "patient-view",
            "Ketamine for pain: running infusion and new contraindications when a chart is opened",
            "When the chart of a patient with an active ketamine order is opened, shows whether the running "
            f"dose is within the limits of the {kb.guideline} for the current weight and setting ({limits}), "
            "contraindications recorded since it was ordered, and, after a recent IV infusion course for "
            "chronic pain, the follow-up the guideline supports. Information and warnings only; nothing when "
            "the record holds no active or recent ketamine order.",
            pf.patient_view_templates(kb),
        ),
    )
    return {s.id: s for s in services}


USAGE_REQUIREMENTS = (
    "Call ketamine-order-sign on order-sign: it is the safety check (contraindications and dose limits); "
    "ketamine-order-select adds the supporting evidence and cautions while ordering; ketamine-patient-view "
    "checks a running ketamine infusion when a chart is opened (information and warnings only). Draft orders "
    "must be FHIR R4 MedicationRequests (ketamine by RxNorm code or name, route and doses in "
    "dosageInstruction). Every prefetch template is in the subset CDS Hooks recommends; a key whose search "
    "finds nothing may be null or an empty Bundle. What is not prefetched, and the Medication and Location "
    "that orders and the encounter reference, is read from fhirServer: with fhirAuthorization over https, "
    "or without a token from a FHIR server the service's operator lists. Data that cannot be had is named "
    "in a card and the check is made without it; the service answers 412 only when the patient (at "
    "patient-view, the ketamine orders) cannot be read at all. Calls need a signed JWT (Authorization: "
    "Bearer) from a CDS Client on the service's trust list. Decision support for clinicians, not a "
    "substitute for their judgement."
)


def discovery_document(kb: KnowledgeBase) -> Json:
    return {
        "services": [
            {
                "hook": s.hook,
                "title": s.title,
                "description": s.description,
                "id": s.id,
                "prefetch": dict(s.prefetch),
                "usageRequirements": USAGE_REQUIREMENTS,
            }
            for s in services(kb).values()
        ]
    }
