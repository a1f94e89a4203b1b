"""ketamine-cds: clinical decision support for ketamine in acute and chronic pain.

The public API is small: read an input into ``Facts``, ``assess`` them, render the ``Assessment``.

    >>> import datetime, ketamine_cds
    >>> facts = ketamine_cds.facts_from_document({"indication": "crps", "patient": {"conditions": []}},
    ...                                           today=datetime.date(2026, 11, 24))
    >>> ketamine_cds.assess(facts).verdict.value
    'consider'
"""

from ._assessment import Assessment, DoseCheck, DoseLimits, DoseStatus, Finding, MissingDatum, Verdict
from ._engine import assess
from ._errors import (
    DuplicateKeyError,
    ImpossibleValueError,
    InputError,
    InvalidCaseError,
    NotFHIRError,
    NotJSONError,
    UnitError,
    WrongDimensionError,
)
from ._facts import (
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
    ketamine_order,
)
from ._inputs import facts_from_document, parse_json
from ._kb import KnowledgeBase, Statement, load_knowledge
from ._opioids import Presence
from ._render import assessment_json, text_report
from ._units import Quantity, parse_unit

__all__ = [
    "Assessment",
    "Coded",
    "ConditionFact",
    "DoseCheck",
    "DoseKind",
    "DoseLimits",
    "DoseStatus",
    "DuplicateKeyError",
    "Facts",
    "Finding",
    "ImpossibleValueError",
    "InputError",
    "InvalidCaseError",
    "KetamineOrder",
    "KnowledgeBase",
    "MissingDatum",
    "NotFHIRError",
    "NotJSONError",
    "OpioidUse",
    "OrderDose",
    "PlannedProcedure",
    "Presence",
    "Quantity",
    "Route",
    "Setting",
    "Statement",
    "UnitError",
    "Verdict",
    "WeightBasis",
    "WrongDimensionError",
    "assess",
    "assessment_json",
    "facts_from_document",
    "ketamine_order",
    "load_knowledge",
    "parse_json",
    "parse_unit",
    "text_report",
]
