"""Loads the knowledge base (``knowledge/``) into typed, immutable objects.

Statements, sources, uses, concepts, value sets and opioid tables are data; nothing here decides.
"""

from __future__ import annotations

import csv
import hashlib
import tomllib
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from functools import cache
from importlib import resources
from typing import Any, Literal

Role = Literal[
    "support-strong",
    "support-weak",
    "against",
    "insufficient",
    "contraindication",
    "caution",
    "dose-limit",
    "context",
]
Severity = Literal["info", "warning", "critical"]

SYSTEMS: Mapping[str, str] = {
    "snomed": "http://snomed.info/sct",
    "icd10cm": "http://hl7.org/fhir/sid/icd-10-cm",
    "rxnorm": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "loinc": "http://loinc.org",
}
SYSTEM_LABELS: Mapping[str, str] = {
    "snomed": "SNOMED CT",
    "icd10cm": "ICD-10-CM",
    "rxnorm": "RxNorm",
    "loinc": "LOINC",
}
SYSTEM_ALIASES: Mapping[str, str] = {
    **{url: short for short, url in SYSTEMS.items()},
    "http://snomed.info/sct/": "snomed",
    "urn:oid:2.16.840.1.113883.6.96": "snomed",
    "urn:oid:2.16.840.1.113883.6.90": "icd10cm",
    "http://hl7.org/fhir/sid/icd-10": "icd10cm",
    "urn:oid:2.16.840.1.113883.6.88": "rxnorm",
    "urn:oid:2.16.840.1.113883.6.1": "loinc",
    "snomed-ct": "snomed",
    "sct": "snomed",
    "icd-10-cm": "icd10cm",
    "icd10": "icd10cm",
}


def short_system(system: str | None) -> str | None:
    """``http://snomed.info/sct`` -> ``snomed``; None for a system we do not use."""
    if not system:
        return None
    key = system.strip()
    if key in SYSTEMS:
        return key
    return SYSTEM_ALIASES.get(key) or SYSTEM_ALIASES.get(key.lower())


@dataclass(frozen=True, slots=True)
class Source:
    key: str
    label: str
    url: str


@dataclass(frozen=True, slots=True)
class Message:
    severity: Severity
    summary: str
    detail: str


@dataclass(frozen=True, slots=True)
class OverrideReason:
    """A coded reason an interrupting card can be overridden with: the service's own code system (kb.toml
    ``[override_reasons]``); a code, once published, keeps its meaning, its display may be reworded."""

    code: str
    display: str


@dataclass(frozen=True, slots=True)
class Screen:
    """What in the record makes a contraindication or caution apply (a statement file's ``[screen]``):
    ``concept`` present; ``verify``, where given, a concept that asks the clinician to verify instead (the
    condition is recorded, its severity or control is not)."""

    concept: str
    verify: str | None = None


@dataclass(frozen=True, slots=True)
class PregnancyStatus:
    """The pregnancy status observation a record may hold (kb.toml ``[pregnancy_status]``)."""

    observation: str  # LOINC
    pregnant: str  # SNOMED CT answer: a pregnancy
    not_pregnant: str  # SNOMED CT answer: rules pregnancy out unless one is recorded


@dataclass(frozen=True, slots=True)
class Statement:
    id: str
    title: str
    text: str
    grade: str | None  # None where the reference does not state one
    certainty: str | None
    evidence: str | None
    tags: tuple[str, ...]
    sources: tuple[Source, ...]
    role: Role
    thresholds: Mapping[str, Any]
    messages: Mapping[str, Message]
    overridable: bool = False
    verification_note: str | None = None  # the reference's note beside the tags, e.g. "2 sources"
    stance: str | None = None  # for contraindications and cautions: "avoid", ...
    concepts: tuple[str, ...] = ()  # record concepts that make the statement apply (pretest-*)
    screen: Screen | None = None  # contraindications and cautions: the concept the record is screened for
    # an interrupting card's override reasons (a dose over its limit, a contraindication the record shows)
    override_reasons: tuple[OverrideReason, ...] = ()

    @property
    def source(self) -> Source:
        return self.sources[0]

    @property
    def grade_text(self) -> str:
        return self.grade or "not stated"

    @property
    def grade_phrase(self) -> str:
        """ "grade B, low certainty", "grade C", "grade and certainty not stated": for a finding's wording."""
        if self.grade is None and self.certainty is None:
            return "grade and certainty not stated"
        grade = f"grade {self.grade}" if self.grade else "grade not stated"
        return f"{grade}, {self.certainty} certainty" if self.certainty else grade

    @property
    def certainty_text(self) -> str:
        if self.certainty:
            return self.certainty
        return self.evidence or "not stated"


Guideline = Literal["acute", "chronic"]


@dataclass(frozen=True, slots=True)
class Use:
    id: str
    label: str
    kind: Literal["perioperative", "acute", "chronic", "out-of-scope"]
    statement: str | None = None
    concept: str | None = None
    concepts_together: tuple[str, ...] = ()  # named by these conditions together only (all of them)

    @property
    def guideline(self) -> Guideline | None:
        """The guideline the use belongs to (its dose statements apply); None when out of scope."""
        if self.kind == "out-of-scope":
            return None
        return "chronic" if self.kind == "chronic" else "acute"


@dataclass(frozen=True, slots=True)
class Concept:
    id: str
    label: str  # as the web form offers it
    statement: str | None = None
    name: str | None = None  # as a finding names it, where the label says more than the condition

    @property
    def finding_name(self) -> str:
        return self.name or self.label


@dataclass(frozen=True, slots=True)
class ProcedureClass:
    id: str
    label: str
    pain: Literal["severe", "mild"]


@dataclass(frozen=True, slots=True)
class Opioid:
    ingredient: str
    rxnorm: str
    mme_factor: Fraction
    tolerance_threshold: Fraction | None
    unit: Literal["mg/d", "ug/h"]


@dataclass(frozen=True, slots=True)
class Code:
    concept: str
    system: str
    code: str
    match: Literal["exact", "prefix"]
    display: str
    checked: str
    where: str


def _norm_code(system: str, code: str) -> str:
    code = code.strip()
    return code.replace(".", "").upper() if system == "icd10cm" else code


@dataclass(frozen=True, eq=False)
class ValueSets:
    """Codes per concept, with ICD-10-CM matched by hierarchy (a prefix covers its descendants)."""

    codes: tuple[Code, ...]
    _exact: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict, repr=False)
    _prefix: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict, repr=False)
    _memo: dict[tuple[str | None, str], tuple[str, ...]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        exact: dict[tuple[str, str], list[str]] = {}
        prefix: dict[tuple[str, str], list[str]] = {}
        for c in self.codes:
            target = exact if c.match == "exact" else prefix
            target.setdefault((c.system, _norm_code(c.system, c.code)), []).append(c.concept)
        self._exact.update({k: tuple(v) for k, v in exact.items()})
        self._prefix.update({k: tuple(v) for k, v in prefix.items()})

    def concepts(self, system: str | None, code: str) -> tuple[str, ...]:
        """The concepts a coding belongs to; ``system`` may be a URL or a short name."""
        key = (system, code)
        found = self._memo.get(key)
        if found is None:
            if len(self._memo) > 65_536:
                self._memo.clear()
            found = self._memo[key] = self._lookup(system, code)
        return found

    def _lookup(self, system: str | None, code: str) -> tuple[str, ...]:
        short = short_system(system)
        if short is None or not code:
            return ()
        norm = _norm_code(short, code)
        found = list(self._exact.get((short, norm), ()))
        if self._prefix:
            for end in range(1, len(norm) + 1):
                found.extend(self._prefix.get((short, norm[:end]), ()))
        return tuple(dict.fromkeys(found))

    def for_concept(self, concept: str) -> tuple[Code, ...]:
        return tuple(c for c in self.codes if c.concept == concept)


@dataclass(frozen=True)
class KnowledgeBase:
    version: str
    digest: str
    guideline: str
    statements: Mapping[str, Statement]
    uses: Mapping[str, Use]
    concepts: Mapping[str, Concept]
    procedure_classes: Mapping[str, ProcedureClass]
    opioids: Mapping[str, Opioid]
    tolerance_days: int
    equianalgesic_mme_per_day: Fraction
    ketamine_rxnorm: frozenset[str]
    ketamine_words: tuple[str, ...]
    value_sets: ValueSets
    pregnancy_status: PregnancyStatus
    override_reasons: Mapping[str, OverrideReason]  # the service's code system of override reasons, by code
    # the statements the record is screened for, in the order screened: contraindications, then cautions
    screening: tuple[Statement, ...]
    weight_max_age_days: int = 30
    adult_age_years: int = 18
    notes: Mapping[str, Message] = field(default_factory=dict)  # summary holds the text, detail is empty
    # the strengths of the ketamine products, mg per mL (the page's table of maxima in mL)
    ketamine_concentrations: tuple[Fraction, ...] = ()
    # measurable steps for a suggested dose: bolus_mg, bolus_ml, infusion_mg_per_h, infusion_ml_per_h
    dose_steps: Mapping[str, Fraction] = field(default_factory=dict)
    # what is worked out from this knowledge base once and kept with it (its thresholds as fractions, the
    # dose policies, the screen): never shared with another knowledge base, one made by ``replace`` included
    memo: dict[Hashable, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def statement(self, statement_id: str) -> Statement:
        return self.statements[statement_id]

    def threshold(self, statement_id: str, name: str) -> Fraction:
        key = ("threshold", statement_id, name)
        value = self.memo.get(key)
        if value is None:
            value = self.memo[key] = Fraction(Decimal(self.statements[statement_id].thresholds[name]))
        assert isinstance(value, Fraction)
        return value


def _stated(value: str) -> str | None:
    return None if value == "not stated" else value


_STATEMENT_KEYS = frozenset(
    {
        "id", "title", "text", "grade", "certainty", "evidence", "tags", "verification_note", "sources",
        "role", "thresholds", "messages", "overridable", "stance", "concepts", "include_messages",
        "screen", "override_reasons",
    }
)  # fmt: skip


def _messages(raw: Mapping[str, Any]) -> dict[str, Message]:
    return {
        key: Message(
            severity=m["severity"], summary=m["summary"].strip(), detail=" ".join(m["detail"].split())
        )
        for key, m in raw.items()
    }


def _override_reasons(raw: Mapping[str, Any]) -> dict[str, OverrideReason]:
    return {code: OverrideReason(code, display) for code, display in raw["codes"].items()}


def _statement(
    data: Mapping[str, Any],
    sources: Mapping[str, Source],
    shared: Mapping[str, Message],
    reasons: Mapping[str, Any],
) -> Statement:
    """One statement file; a contraindication without ``override_reasons`` of its own gets the shared
    ``[override_reasons] contraindication`` list."""
    unknown = set(data) - _STATEMENT_KEYS
    if unknown:  # a misspelt key must not silently drop what it holds
        raise ValueError(f"statement {data.get('id')!r}: unknown keys {sorted(unknown)}")
    messages = _messages(data.get("messages", {}))
    messages.update({key: shared[key] for key in data.get("include_messages", ())})
    default = reasons["contraindication"] if data["role"] == "contraindication" else ()
    codes = _override_reasons(reasons)
    screen = data.get("screen")
    return Statement(
        id=data["id"],
        title=data["title"],
        text=data["text"],
        grade=_stated(data["grade"]),
        certainty=_stated(data["certainty"]),
        evidence=data.get("evidence"),
        tags=tuple(data["tags"]),
        sources=tuple(sources[s] for s in data["sources"]),
        role=data["role"],
        thresholds=dict(data.get("thresholds", {})),
        messages=messages,
        overridable=bool(data.get("overridable", False)),
        verification_note=data.get("verification_note"),
        stance=data.get("stance"),
        concepts=tuple(data.get("concepts", ())),
        screen=Screen(screen["concept"], screen.get("verify")) if screen is not None else None,
        override_reasons=tuple(codes[code] for code in data.get("override_reasons", default)),
    )


def _screening(statements: Mapping[str, Statement]) -> tuple[Statement, ...]:
    """The statements with a ``[screen]``: contraindications first, then cautions, each in id order."""
    screened = sorted((s for s in statements.values() if s.screen is not None), key=lambda s: s.id)
    return tuple(sorted(screened, key=lambda s: s.role != "contraindication"))


def _read_codes(text: str) -> tuple[Code, ...]:
    rows = csv.DictReader(text.splitlines())
    return tuple(
        Code(
            concept=r["concept"],
            system=r["system"],
            code=r["code"],
            match=r["match"],  # type: ignore[arg-type]
            display=r["display"],
            checked=r["checked"],
            where=r["where"],
        )
        for r in rows
    )


@cache
def load_knowledge() -> KnowledgeBase:
    """The bundled knowledge base (parsed once per process)."""
    root = resources.files("ketamine_cds") / "knowledge"
    digest = hashlib.sha256()
    kb_bytes = (root / "kb.toml").read_bytes()
    digest.update(kb_bytes)
    kb = tomllib.loads(kb_bytes.decode())
    sources = {k: Source(key=k, label=v["label"], url=v["url"]) for k, v in kb["sources"].items()}
    shared = _messages(kb["messages"])
    statements: dict[str, Statement] = {}
    for entry in sorted((root / "statements").iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".toml"):
            raw = entry.read_bytes()
            digest.update(raw)
            st = _statement(tomllib.loads(raw.decode()), sources, shared, kb["override_reasons"])
            statements[st.id] = st
    codes_text = (root / "valuesets.csv").read_text()
    digest.update(codes_text.encode())
    opioid_cfg = kb["opioid_tolerance"]
    return KnowledgeBase(
        version=kb["version"],
        digest="sha256:" + digest.hexdigest()[:16],
        guideline=kb["guideline"],
        statements=statements,
        uses={
            k: Use(id=k, **{**v, "concepts_together": tuple(v.get("concepts_together", ()))})
            for k, v in kb["uses"].items()
        },
        concepts={k: Concept(id=k, **v) for k, v in kb["concepts"].items()},
        procedure_classes={k: ProcedureClass(id=k, **v) for k, v in kb["procedure_classes"].items()},
        opioids={
            k: Opioid(
                ingredient=k,
                rxnorm=v["rxnorm"],
                mme_factor=Fraction(Decimal(v["mme_factor"])),
                tolerance_threshold=Fraction(Decimal(v["tolerance_threshold"]))
                if "tolerance_threshold" in v
                else None,
                unit=v["unit"],
            )
            for k, v in kb["opioids"].items()
        },
        tolerance_days=int(opioid_cfg["tolerance_days"]),
        equianalgesic_mme_per_day=Fraction(Decimal(opioid_cfg["equianalgesic_mme_per_day"])),
        ketamine_rxnorm=frozenset(kb["ketamine"]["rxnorm"]),
        ketamine_words=tuple(kb["ketamine"]["words"]),
        value_sets=ValueSets(_read_codes(codes_text)),
        pregnancy_status=PregnancyStatus(**kb["pregnancy_status"]),
        override_reasons=_override_reasons(kb["override_reasons"]),
        screening=_screening(statements),
        weight_max_age_days=int(kb["defaults"]["weight_max_age_days"]),
        adult_age_years=int(kb["defaults"]["adult_age_years"]),
        notes={k: Message(v["severity"], v["text"], "") for k, v in kb["notes"].items()},
        ketamine_concentrations=tuple(
            Fraction(Decimal(c)) for c in kb["ketamine"]["concentrations_mg_per_ml"]
        ),
        dose_steps={
            f"{kind}_{unit}": Fraction(Decimal(kb["defaults"][f"{kind}_step_{unit}"]))
            for kind, unit in (
                ("bolus", "mg"),
                ("bolus", "ml"),
                ("infusion", "mg_per_h"),
                ("infusion", "ml_per_h"),
            )
        },
    )
