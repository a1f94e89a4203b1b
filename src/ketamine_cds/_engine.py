"""The assessment engine: a pure function from ``Facts`` to an ``Assessment``.

One function per guideline statement (named after it) decides whether the statement applies and adds its
finding; ``_verdict`` then applies the reference's verdict order. The engine reads no files, clock or
network: the knowledge base and ``facts.as_of`` are its only other inputs.
"""

from __future__ import annotations

from fractions import Fraction

from ._assessment import (
    Assessment,
    Clause,
    DoseCheck,
    DoseLimits,
    DoseMath,
    DoseStatus,
    Finding,
    MissingDatum,
    ScreeningResult,
    Verdict,
)
from ._facts import Coded, DoseKind, Facts, OrderDose, Pain, Route, Setting
from ._kb import KnowledgeBase, Use, load_knowledge
from ._opioids import OpioidStatus, Presence, opioid_status
from ._units import amount_per_dose

_BOLUS = "dose-bolus-limit"
_INFUSION = "dose-infusion-limit"
_CONTRA_CONCEPTS = (
    ("contra-cardiovascular", "cardiovascular-severe"),
    ("contra-hepatic", "liver-disease-severe"),
    ("contra-intracranial-pressure", "intracranial-pressure"),
    ("contra-intraocular-pressure", "intraocular-pressure"),
    ("contra-pregnancy", "pregnancy"),
    ("contra-psychosis", "psychosis"),
    ("caution-hepatic-moderate", "liver-disease-moderate"),
    ("caution-substance-misuse", "substance-misuse"),
)


class _Context:
    """Collects findings and missing data while the statement rules run."""

    __slots__ = ("by_concept", "facts", "findings", "flags", "kb", "missing", "support_missing")

    def __init__(self, facts: Facts, kb: KnowledgeBase) -> None:
        self.facts = facts
        self.kb = kb
        self.by_concept: dict[str, list[Coded]] = {}
        for condition in (*(facts.conditions or ()), *facts.stated):
            sources = self.by_concept.setdefault(condition.concept, [])
            if condition.source not in sources:
                sources.append(condition.source)
        self.findings: list[Finding] = []
        self.missing: list[MissingDatum] = []
        self.support_missing: list[MissingDatum] = []  # data that could add support if it were known
        self.flags: set[str] = set()

    def add(self, statement_id: str, message: str, **params: object) -> None:
        statement = self.kb.statements[statement_id]
        self.findings.append(Finding(statement, message, params))
        if message in ("applies", "present"):
            self.flags.add(statement.role)
        elif message == "exceeds":
            self.flags.add("dose-exceeds")

    def need(self, datum: str, reason: str, statement: str | None = None, decisive: bool = True) -> None:
        missing = MissingDatum(datum, reason, statement, decisive)
        if missing not in self.missing:  # two doses of one order may lack the same datum
            self.missing.append(missing)


def assess(facts: Facts, kb: KnowledgeBase | None = None) -> Assessment:
    """Assess one clinical question. Pure: the same facts always give the same assessment."""
    kb = kb or load_knowledge()
    ctx = _Context(facts, kb)
    use = _use(facts, kb)
    route = facts.order.route if facts.order is not None else Route.INTRAVENOUS
    opioid = opioid_status(facts, kb)
    in_scope = use is None or use.kind != "out-of-scope"
    limits = _dose_limits(facts, kb, in_scope)
    screening = _screen(ctx)
    dose_checks: tuple[DoseCheck, ...] = ()
    if use is None and in_scope:
        ctx.need("indication", "the intended use of ketamine (the indication) is not stated")
    if in_scope and route is Route.INTRAVENOUS:
        if use is not None:
            _intravenous_use(ctx, use, opioid)
        dose_checks = _dose(ctx, limits)
    elif in_scope:
        _follow_up(ctx, route)
    verdict = _verdict(ctx, use)
    return Assessment(
        verdict=verdict,
        reason=_reason(verdict, ctx, use),
        decisive=_decisive(verdict, ctx),
        findings=tuple(ctx.findings),
        dose_limits=limits,
        dose_checks=dose_checks,
        missing=tuple(ctx.missing) + tuple(ctx.support_missing),
        screening=screening,
        opioid=opioid,
        use=use.id if use else None,
        route=route,
        setting=facts.setting,
        as_of=facts.as_of,
        knowledge_base_version=kb.version,
        knowledge_base_digest=kb.digest,
    )


def _use(facts: Facts, kb: KnowledgeBase) -> Use | None:
    if facts.use is None:
        return None
    try:
        return kb.uses[facts.use]
    except KeyError:
        raise ValueError(f"unknown use {facts.use!r}; adapters must pass a knowledge-base use id") from None


def _intravenous_use(ctx: _Context, use: Use, opioid: OpioidStatus) -> None:
    if use.kind == "perioperative":
        acute_painful_surgery_or_mild_pain(ctx)
        acute_opioid_tolerant_surgery(ctx, opioid)
    elif use.kind == "acute":
        acute_sickle_cell(ctx, use, opioid)
    elif use.kind == "chronic":
        chronic_evidence(ctx, use)
    if use.kind in ("perioperative", "acute"):
        acute_sleep_apnea(ctx)
        acute_pca_sole_agent(ctx)


# --- acute pain -------------------------------------------------------------------------------------


def acute_painful_surgery_or_mild_pain(ctx: _Context) -> None:
    """acute-painful-surgery and acute-mild-pain: the expected pain of the planned procedure."""
    procedure = ctx.facts.procedure
    if procedure is None:
        ctx.need("procedure", "perioperative use, but no planned procedure is recorded")
        return
    pclass = ctx.kb.procedure_classes.get(procedure.procedure_class) if procedure.procedure_class else None
    pain = Pain(pclass.pain) if pclass is not None else Pain.UNKNOWN
    if pain is Pain.SEVERE and pclass is not None:
        ctx.add("acute-painful-surgery", "applies", procedure=procedure.source, procedure_class=pclass.label)
    elif pain is Pain.MILD:
        ctx.add("acute-mild-pain", "applies", procedure=procedure.source)
    else:
        ctx.need(
            "procedure-class",
            f"the expected postoperative pain of {procedure.source.display} is not in the knowledge base",
        )


def acute_opioid_tolerant_surgery(ctx: _Context, opioid: OpioidStatus) -> None:
    state = opioid.tolerant_or_dependent
    if state is Presence.PRESENT:
        ctx.add("acute-opioid-tolerant-surgery", "applies", status=opioid.label, basis=opioid.basis)
    elif state is Presence.UNKNOWN:
        ctx.support_missing.append(
            MissingDatum("opioid-use", opioid.basis, "acute-opioid-tolerant-surgery", decisive=False)
        )


def acute_sickle_cell(ctx: _Context, use: Use, opioid: OpioidStatus) -> None:
    sickle = use.id == "sickle-cell-pain" or _present(ctx, "sickle-cell-crisis")
    if not sickle:
        return
    state = opioid.tolerant_or_dependent
    if state is Presence.PRESENT:
        ctx.add("acute-sickle-cell", "applies", status=opioid.label, basis=opioid.basis)
    elif state is Presence.UNKNOWN:
        ctx.support_missing.append(
            MissingDatum("opioid-use", opioid.basis, "acute-sickle-cell", decisive=False)
        )


def acute_sleep_apnea(ctx: _Context) -> None:
    sources = _evidence(ctx, "sleep-apnea")
    if sources:
        ctx.add("acute-sleep-apnea", "applies", condition=sources)


def acute_pca_sole_agent(ctx: _Context) -> None:
    order = ctx.facts.order
    if order is not None and order.pca_sole_agent:
        ctx.add("acute-pca-sole-agent", "applies")


# --- chronic pain and follow-up ---------------------------------------------------------------------


def chronic_evidence(ctx: _Context, use: Use) -> None:
    """chronic-crps, chronic-weak-evidence, chronic-no-long-term and evidence-2019-review."""
    if use.statement == "chronic-crps":
        ctx.add("chronic-crps", "applies")
    else:
        if use.statement == "chronic-weak-evidence":
            ctx.add("chronic-weak-evidence", "applies", indication=use.label)
        else:
            ctx.need(
                "indication",
                "the chronic pain condition is not specified (CRPS has moderate-certainty support)",
                decisive=False,
            )
        ctx.add("chronic-no-long-term", "applies", indication=use.label)
    ctx.add("evidence-2019-review", "applies")


def _follow_up(ctx: _Context, route: Route) -> None:
    """followup-oral and followup-intranasal: ketamine by mouth or nose after an IV infusion course."""
    statement = "followup-oral" if route is Route.ORAL else "followup-intranasal"
    prior = ctx.facts.prior_iv_ketamine
    if prior is False:
        ctx.add(statement, "no-prior-course", prior_course="The record shows no prior IV ketamine course.")
    else:
        if prior is None:
            ctx.need(
                "prior-iv-course", "whether the patient has had a course of IV ketamine infusions", statement
            )
        described = "recorded" if prior else "not known"
        ctx.add(statement, "applies", prior_course=described)
    if route is Route.ORAL:
        ctx.add("followup-oral", "abuse")


# --- contraindications and cautions -----------------------------------------------------------------


def _screen(ctx: _Context) -> tuple[ScreeningResult, ...]:
    unread = ctx.facts.conditions is None
    if unread:
        ctx.need(
            "conditions", "the patient's conditions could not be read, so contraindications were not screened"
        )
    results = []
    for statement, concept in _CONTRA_CONCEPTS:
        evidence = _evidence(ctx, concept)
        if evidence:
            ctx.add(statement, "present", condition=evidence)
            results.append(ScreeningResult(statement, concept, Presence.PRESENT, evidence))
        elif statement == "contra-cardiovascular" and (unclear := _evidence(ctx, "cardiovascular-disease")):
            ctx.add(statement, "verify", condition=unclear)
            results.append(ScreeningResult(statement, "cardiovascular-disease", Presence.UNKNOWN, unclear))
        elif concept in ctx.facts.ruled_out:
            results.append(ScreeningResult(statement, concept, Presence.ABSENT))
        else:
            results.append(
                ScreeningResult(statement, concept, Presence.UNKNOWN if unread else Presence.NOT_RECORDED)
            )
    return tuple(results)


def _evidence(ctx: _Context, concept: str) -> tuple[Coded, ...]:
    return tuple(ctx.by_concept.get(concept, ()))


def _present(ctx: _Context, concept: str) -> bool:
    return concept in ctx.by_concept


# --- dose limits ------------------------------------------------------------------------------------


def _dose_limits(facts: Facts, kb: KnowledgeBase, in_scope: bool) -> DoseLimits:
    bolus = kb.threshold(_BOLUS, "limit_mg_per_kg")
    infusion = kb.threshold(_INFUSION, "limit_mg_per_kg_per_h")
    applies = {Setting.INTENSIVE_CARE: False, Setting.NON_INTENSIVE_CARE: True}.get(facts.setting)
    weight = facts.weight_kg if in_scope else None
    return DoseLimits(
        weight_kg=facts.weight_kg,
        max_bolus_mg=bolus * weight if weight is not None else None,
        max_infusion_mg_per_h=infusion * weight if weight is not None and applies is not False else None,
        bolus_limit_mg_per_kg=bolus,
        infusion_limit_mg_per_kg_per_h=infusion,
        infusion_limit_applies=applies,
    )


def _dose(ctx: _Context, limits: DoseLimits) -> tuple[DoseCheck, ...]:
    """dose-bolus-limit and dose-infusion-limit: the limits for this weight, or each dose of the order
    checked. A dose the order writes down but the record does not give in a form that can be read is
    missing information: it is not checked, and that decides the verdict unless something else does."""
    order = ctx.facts.order
    doses = [d for d in order.doses if d.kind is not None] if order is not None else []
    concentration = order.concentration_mg_per_ml if order is not None else None
    checks = tuple(_check_dose(ctx, dose, i, concentration, limits) for i, dose in enumerate(doses))
    if not checks:
        _dose_limit_findings(ctx, limits)
    if order is not None and order.dose_unreadable is not None:
        ctx.need("dose", order.dose_unreadable)
    return checks


def _dose_limit_findings(ctx: _Context, limits: DoseLimits) -> None:
    weight = ctx.facts.weight_kg
    key = "limits" if weight is not None else "limits-no-weight"
    bolus_limit = (limits.bolus_limit_mg_per_kg, "mg/kg")
    ctx.add(_BOLUS, key, weight=(weight, "kg"), max=Clause("", limits.max_bolus_mg, "mg"), limit=bolus_limit)
    infusion_limit = (limits.infusion_limit_mg_per_kg_per_h, "mg/kg/h")
    if limits.infusion_limit_applies is False:
        ctx.add(_INFUSION, "limits-icu", limit=infusion_limit)
    else:
        ctx.add(
            _INFUSION,
            key,
            weight=(weight, "kg"),
            max=Clause("", limits.max_infusion_mg_per_h, "mg/h"),
            limit=infusion_limit,
        )
    if weight is None:
        ctx.need("weight", "no body weight: the maximum dose in mg cannot be worked out", decisive=False)


def _check_dose(
    ctx: _Context, order: OrderDose, index: int, concentration: Fraction | None, limits: DoseLimits
) -> DoseCheck:
    assert order.kind is not None
    bolus = order.kind is DoseKind.BOLUS
    statement = _BOLUS if bolus else _INFUSION
    unit = "mg" if bolus else "mg/h"
    limit = limits.bolus_limit_mg_per_kg if bolus else limits.infusion_limit_mg_per_kg_per_h
    weight = ctx.facts.weight_kg
    limit_amount = limit * weight if weight is not None else None
    raw = amount_per_dose(order.dose, concentration)
    per_kg: Fraction | None
    amount: Fraction | None
    if order.dose.unit.per_kg:
        per_kg = raw
        amount = raw * weight if raw is not None and weight is not None else None
    else:
        amount = raw
        per_kg = raw / weight if raw is not None and weight is not None else None
    status = _dose_status(order, raw, per_kg, limit, ctx.facts.setting)
    params = {
        "ordered": order.dose,
        "dose": DoseMath(order.dose, amount, per_kg, weight, unit, limit, limit_amount),
        "limit": (limit, f"mg/kg{unit[2:]}"),
        "max": Clause(": max ", limit_amount, unit, apart_from=amount),
        "max_for_weight": Clause(" (max ", limit_amount, unit, " for this weight)", apart_from=amount),
        "setting": ctx.facts.setting.value,
        "dose_index": index,
    }
    ctx.add(statement, _DOSE_MESSAGES[status], **params)
    if status is DoseStatus.NO_WEIGHT:
        ctx.need(
            "weight",
            "the dose is in absolute units and there is no body weight to check it against",
            statement,
        )
    elif status is DoseStatus.NO_CONCENTRATION:
        ctx.need(
            "concentration",
            "the dose is a volume and the ketamine concentration (mg/mL) is not given",
            statement,
        )
    elif status is DoseStatus.EXCEEDS_UNLESS_INTENSIVE_CARE:
        ctx.need(
            "setting",
            "the infusion is above the limit outside intensive care; the setting is unknown",
            statement,
        )
    return DoseCheck(statement, order.kind, order.dose, amount, per_kg, limit, limit_amount, status, index)


def _dose_status(
    order: OrderDose, raw: Fraction | None, per_kg: Fraction | None, limit: Fraction, setting: Setting
) -> DoseStatus:
    if raw is None:
        return DoseStatus.NO_CONCENTRATION
    if per_kg is None:
        return DoseStatus.NO_WEIGHT
    if order.kind is DoseKind.INFUSION and setting is Setting.INTENSIVE_CARE:
        return DoseStatus.LIMIT_NOT_APPLICABLE
    if per_kg <= limit:
        return DoseStatus.WITHIN
    if order.kind is DoseKind.INFUSION and setting is Setting.UNKNOWN:
        return DoseStatus.EXCEEDS_UNLESS_INTENSIVE_CARE
    return DoseStatus.EXCEEDS


_DOSE_MESSAGES = {
    DoseStatus.WITHIN: "within",
    DoseStatus.EXCEEDS: "exceeds",
    DoseStatus.LIMIT_NOT_APPLICABLE: "icu",
    DoseStatus.EXCEEDS_UNLESS_INTENSIVE_CARE: "exceeds-setting-unknown",
    DoseStatus.NO_WEIGHT: "no-weight",
    DoseStatus.NO_CONCENTRATION: "no-concentration",
}


# --- verdict ----------------------------------------------------------------------------------------


def _verdict(ctx: _Context, use: Use | None) -> Verdict:
    flags = ctx.flags
    supported = "support-strong" in flags or "support-weak" in flags
    if use is not None and use.kind == "out-of-scope":
        return Verdict.OUT_OF_SCOPE
    if "contraindication" in flags:
        return Verdict.CONTRAINDICATED
    if "dose-exceeds" in flags:
        return Verdict.DOSE_EXCEEDS_LIMIT
    if "against" in flags and not supported:
        return Verdict.NOT_INDICATED
    if "insufficient" in flags:
        return Verdict.INSUFFICIENT_EVIDENCE
    if any(m.decisive for m in ctx.missing) or (ctx.support_missing and not supported):
        return Verdict.NEEDS_INFORMATION
    if "support-strong" in flags:
        return Verdict.CONSIDER
    if "support-weak" in flags:
        return Verdict.MAY_CONSIDER
    return Verdict.INSUFFICIENT_EVIDENCE


def _reason(verdict: Verdict, ctx: _Context, use: Use | None) -> str:
    """Why, when no single finding says it (the renderer otherwise uses the decisive finding's summary)."""
    if verdict is Verdict.OUT_OF_SCOPE and use is not None:
        return f"The guideline covers ketamine for pain; {use.label} is outside its scope."
    if verdict is Verdict.NEEDS_INFORMATION:
        needed = [m.reason for m in ctx.missing if m.decisive] or [m.reason for m in ctx.support_missing]
        return "Needs information: " + "; ".join(needed) + "."
    if verdict is Verdict.INSUFFICIENT_EVIDENCE and "insufficient" not in ctx.flags:
        label = use.label if use is not None else "this use"
        return f"No guideline statement supports ketamine for {label} in this patient."
    return ""


def _decisive(verdict: Verdict, ctx: _Context) -> Finding | None:
    roles = _DECISIVE_ROLE.get(verdict, ())
    for finding in ctx.findings:
        if finding.statement.role in roles and finding.message_key in ("applies", "present", "exceeds"):
            return finding
    return None


_DECISIVE_ROLE: dict[Verdict, tuple[str, ...]] = {
    Verdict.CONTRAINDICATED: ("contraindication",),
    Verdict.DOSE_EXCEEDS_LIMIT: ("dose-limit",),
    Verdict.NOT_INDICATED: ("against",),
    Verdict.INSUFFICIENT_EVIDENCE: ("insufficient",),
    Verdict.CONSIDER: ("support-strong",),
    Verdict.MAY_CONSIDER: ("support-weak",),
}
