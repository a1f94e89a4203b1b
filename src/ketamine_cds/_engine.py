"""The assessment engine: a pure function from ``Facts`` to an ``Assessment``.

Each guideline statement is decided by exactly one rule, registered under the statement's id with
``@rule`` (``RULES``: search a statement id here to find its rule). A rule decides whether its statements
apply and adds their findings; a rule that decides several statements (a table-driven screen, a choice
between two) names each of them. ``_verdict`` then applies the reference's verdict order. The engine reads no
files, clock or network: the knowledge base and ``facts.as_of`` are its only other inputs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from fractions import Fraction
from typing import TypeVar

from . import _dose_policy as _dp
from ._assessment import (
    Assessment,
    Beside,
    Clause,
    DoseCheck,
    DoseLimits,
    DoseMath,
    DoseRange,
    DoseStatus,
    Drawable,
    Elapsed,
    Finding,
    LimitText,
    MissingDatum,
    Note,
    Outweighed,
    ProcedureRef,
    RoundedLimit,
    ScreeningResult,
    SettingName,
    SettingScope,
    SiteNote,
    Verdict,
    WeightUsed,
    WithinFrom,
)
from ._dose_policy import DosePolicy, KindPolicy, Limit, dose_policy
from ._facts import MAX_WEIGHT_KG, Coded, DoseKind, Facts, OrderDose, Pain, Route, Setting, WeightBasis
from ._kb import KnowledgeBase, Use, load_knowledge
from ._opioids import OpioidStatus, Presence, opioid_status
from ._site import Site
from ._units import Quantity, amount_per_dose, dose_amounts

_Rule = TypeVar("_Rule", bound=Callable[..., object])
RULES: dict[str, Callable[..., object]] = {}  # statement id -> the one rule that decides it


def rule(*statement_ids: str) -> Callable[[_Rule], _Rule]:
    """Registers the decorated function as the rule of each statement named: every statement of the knowledge
    base has exactly one (tests/test_statement_registry.py), and a second rule for a statement is an error."""

    def register(function: _Rule) -> _Rule:
        for statement_id in statement_ids:
            if statement_id in RULES:
                raise ValueError(f"{statement_id} has a rule already: {RULES[statement_id].__name__}")
            RULES[statement_id] = function
        return function

    return register


# the message keys of a dose over its limit: each makes the verdict dose-exceeds-limit
EXCEEDING_MESSAGES = frozenset({"exceeds", "exceeds-setting-unknown", "exceeds-any-weight", "exceeds-beside"})


class _Context:
    """Collects findings and missing data while the statement rules run."""

    __slots__ = (
        "by_concept",
        "facts",
        "findings",
        "flags",
        "kb",
        "missing",
        "no_weight",
        "site",
        "support_missing",
    )

    def __init__(self, facts: Facts, kb: KnowledgeBase, site: Site | None = None) -> None:
        self.facts = facts
        self.kb = kb
        self.site = site
        self.by_concept: dict[str, list[Coded]] = {}
        for condition in (*(facts.conditions or ()), *facts.stated):
            sources = self.by_concept.setdefault(condition.concept, [])
            if condition.source not in sources:
                sources.append(condition.source)
        self.findings: list[Finding] = []
        self.missing: list[MissingDatum] = []
        self.support_missing: list[MissingDatum] = []  # data that could add support if it were known
        self.flags: set[str] = set()
        # how a finding without a weight names what is missing (a weight the record holds but cannot be
        # used is not "no weight in the record": a finding of its own says why, ``weight-unusable``)
        unusable = facts.weight_kg is None and facts.weight_problem is not None
        self.no_weight = "no usable body weight" if unusable else "no body weight"

    def add(self, statement_id: str, message: str, **params: object) -> None:
        statement = self.kb.statements[statement_id]
        params.setdefault("no_weight", self.no_weight)
        self.findings.append(Finding(statement, message, params))
        if message in ("applies", "present"):
            self.flags.add(statement.role)
        elif message in EXCEEDING_MESSAGES:
            self.flags.add("dose-exceeds")

    def need(self, datum: str, reason: str, statement: str | None = None, decisive: bool = True) -> None:
        missing = MissingDatum(datum, reason, statement, decisive)
        if missing not in self.missing:  # two doses of one order may lack the same datum
            self.missing.append(missing)


def assess(facts: Facts, kb: KnowledgeBase | None = None, site: Site | None = None) -> Assessment:
    """Assess one clinical question, against a site's protocol when given (README, "Site protocols").
    Pure: the same facts (and site) always give the same assessment."""
    kb = kb or load_knowledge()
    ctx = _Context(facts, kb, site)
    use = _use(facts, kb)
    route = facts.order.route if facts.order is not None else Route.INTRAVENOUS
    opioid = opioid_status(facts, kb)
    in_scope = use is None or use.guideline is not None
    # an unknown use gets the acute guideline's limits: the stricter ones
    guideline = use.guideline if use is not None and use.guideline else "acute"
    policy = dose_policy(kb, guideline, facts.setting, site)
    limits = _dose_limits(facts, policy, in_scope)
    screening = contraindication_screen(ctx)
    dose_checks: tuple[DoseCheck, ...] = ()
    if use is None and in_scope:
        ctx.need("indication", "the intended use of ketamine (the indication) is not stated")
    if in_scope and route is Route.INTRAVENOUS:
        if use is not None:
            _intravenous_use(ctx, use, opioid)
        use_note = kb.notes["unknown-use-limits"].summary if use is None else ""
        dose_checks = dose_limits_and_checks(ctx, policy, limits, use_note)
        if use is not None:
            _beside_the_dose(ctx, use, dose_checks)
    elif in_scope:
        follow_up(ctx, route)
    verdict = _verdict(ctx, use)
    decisive = _decisive(verdict, ctx)
    hidden = site.hidden if site is not None else frozenset()
    return Assessment(
        verdict=verdict,
        reason=_reason(verdict, ctx, use),
        decisive=decisive,
        findings=tuple(_outweighed(f, decisive) for f in ctx.findings if f.statement.id not in hidden),
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
        knowledge_base_digest=_digest(kb, site),
        notes=_notes(facts, kb),
        site=site,
    )


def _outweighed(finding: Finding, decisive: Finding | None) -> Finding:
    """A statement that supports ketamine, beside a contraindication that decides the verdict, says that it
    is outweighed here (its role and grade unchanged): "Consider IV ketamine" must not read as advice to
    give it to a patient with a relative contraindication."""
    supports = (
        finding.statement.role in ("support-strong", "support-weak") and finding.message_key == "applies"
    )
    if not supports or decisive is None or decisive.statement.role != "contraindication":
        return finding
    condition = decisive.params.get("condition")
    shown = condition if isinstance(condition, tuple) else ()
    return Finding(
        finding.statement, finding.message_key, {**finding.params, "outweighed": Outweighed(shown)}
    )


def _digest(kb: KnowledgeBase, site: Site | None) -> str:
    """The knowledge base's digest, covering the site file when one is in force."""
    if site is None:
        return kb.digest
    return "sha256:" + hashlib.sha256(f"{kb.digest} {site.digest}".encode()).hexdigest()[:16]


def _use(facts: Facts, kb: KnowledgeBase) -> Use | None:
    if facts.use is None:
        return None
    try:
        return kb.uses[facts.use]
    except KeyError:
        raise ValueError(f"unknown use {facts.use!r}; adapters must pass a knowledge-base use id") from None


def _notes(facts: Facts, kb: KnowledgeBase) -> tuple[Note, ...]:
    """No statement about children was found in the sources: a patient under 18 is told so."""
    if facts.age_years is not None and facts.age_years < kb.adult_age_years:
        return (Note("no-pediatric-statement", {"age": facts.age_years}),)
    return ()


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


def _beside_the_dose(ctx: _Context, use: Use, checks: tuple[DoseCheck, ...]) -> None:
    """Information that goes with the dose: the opioid-adjunct range after surgery; for a chronic infusion
    (or the question whether to give one) the first-infusion minimum and pre-infusion testing."""
    if use.kind == "perioperative":
        acute_opioid_adjunct(ctx, checks)
        return
    if use.guideline != "chronic":
        return
    order = ctx.facts.order
    infusions = [d for d in order.doses if d.kind is DoseKind.INFUSION] if order is not None else []
    if order is not None and order.doses and not infusions:
        return  # a bolus only: not an infusion
    concentration = order.concentration_mg_per_ml if order is not None else None
    chronic_dose_minimum(ctx, infusions[0] if infusions else None, concentration)
    pretest(ctx)


# --- acute pain -------------------------------------------------------------------------------------


@rule("acute-painful-surgery", "acute-mild-pain")
def acute_painful_surgery_or_mild_pain(ctx: _Context) -> None:
    """acute-painful-surgery and acute-mild-pain: the expected pain of the planned procedure."""
    procedure = ctx.facts.procedure
    if procedure is None:
        ctx.need("procedure", "perioperative use, but no planned procedure is recorded")
        return
    pclass = ctx.kb.procedure_classes.get(procedure.procedure_class) if procedure.procedure_class else None
    pain = Pain(pclass.pain) if pclass is not None else Pain.UNKNOWN
    if pclass is not None and pain in (Pain.SEVERE, Pain.MILD):
        # a case that gives only the class (no name, no code) names the procedure by its class alone
        source = procedure.source
        named = bool(source.code) or source.display.casefold() != pclass.label.casefold()
        severe = pain is Pain.SEVERE
        ref = ProcedureRef(source, named, pclass.label if severe else "the planned procedure")
        statement = "acute-painful-surgery" if severe else "acute-mild-pain"
        ctx.add(statement, "applies", procedure=ref, procedure_class=pclass.label)
    else:
        ctx.need(
            "procedure-class",
            f"the expected postoperative pain of {procedure.source.display} is not in the knowledge base",
        )


@rule("acute-opioid-tolerant-surgery")
def acute_opioid_tolerant_surgery(ctx: _Context, opioid: OpioidStatus) -> None:
    state = opioid.tolerant_or_dependent
    if state is Presence.PRESENT:
        ctx.add("acute-opioid-tolerant-surgery", "applies", status=opioid.label, basis=opioid.basis)
    elif state is Presence.UNKNOWN:
        ctx.support_missing.append(
            MissingDatum("opioid-use", opioid.basis, "acute-opioid-tolerant-surgery", decisive=False)
        )


@rule("acute-sickle-cell")
def acute_sickle_cell(ctx: _Context, use: Use, opioid: OpioidStatus) -> None:
    sickle = use.id == "sickle-cell-pain" or _present(ctx, "sickle-cell-crisis")
    if not sickle:
        return
    state = opioid.tolerant_or_dependent
    if state is Presence.PRESENT:
        ctx.add("acute-sickle-cell", "applies", status=opioid.label, basis=opioid.basis)
    elif state in (Presence.UNKNOWN, Presence.NOT_RECORDED):
        # it decides the statement: neither shown nor ruled out is missing information, never "not tolerant"
        ctx.need(
            "opioid-use",
            "whether the patient is opioid-tolerant or opioid-dependent, which decides the sickle cell "
            f"statement ({opioid.basis.rstrip('.')})",
            "acute-sickle-cell",
        )
    else:
        ctx.add("acute-sickle-cell", "not-tolerant", basis=opioid.basis)


@rule("acute-sleep-apnea")
def acute_sleep_apnea(ctx: _Context) -> None:
    sources = _evidence(ctx, "sleep-apnea")
    if sources:
        ctx.add("acute-sleep-apnea", "applies", condition=sources)


@rule("acute-pca-sole-agent")
def acute_pca_sole_agent(ctx: _Context) -> None:
    order = ctx.facts.order
    if order is not None and order.pca_sole_agent:
        ctx.add("acute-pca-sole-agent", "applies")


# --- chronic pain and follow-up ---------------------------------------------------------------------


@rule("chronic-crps", "chronic-sci", "chronic-weak-evidence", "chronic-no-long-term", "evidence-2019-review")
def chronic_evidence(ctx: _Context, use: Use) -> None:
    """chronic-crps, chronic-sci, chronic-weak-evidence, chronic-no-long-term and evidence-2019-review."""
    if use.statement == "chronic-crps":
        ctx.add("chronic-crps", "applies")
    else:
        if use.statement in ("chronic-sci", "chronic-weak-evidence"):
            ctx.add(use.statement, "applies", indication=use.label)
        else:  # which condition it is decides between support (CRPS, SCI) and a recommendation against
            ctx.need(
                "indication",
                "which chronic pain condition this is: CRPS has moderate evidence, spinal cord injury pain "
                "weak evidence, and for the others the guideline recommends against infusions",
            )
        ctx.add("chronic-no-long-term", "applies", indication=use.label)
    ctx.add("evidence-2019-review", "applies")


@rule("followup-oral", "followup-intranasal")
def follow_up(ctx: _Context, route: Route) -> None:
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
    order = ctx.facts.order
    if order is not None and order.dose is not None:
        ctx.add(statement, "dose-not-checked", ordered=order.dose)


# --- contraindications and cautions -----------------------------------------------------------------


@rule(
    "contra-cardiovascular",
    "contra-hepatic",
    "contra-intracranial-pressure",
    "contra-intraocular-pressure",
    "contra-pregnancy",
    "contra-psychosis",
    "caution-hepatic-moderate",
    "caution-substance-misuse",
)
def contraindication_screen(ctx: _Context) -> tuple[ScreeningResult, ...]:
    """The contraindications and cautions, table-driven: each statement's ``[screen]`` (its statement file)
    names the concept whose presence in the record makes it apply, and for contra-cardiovascular the concept
    that asks to verify instead; ``kb.screening`` is the order screened."""
    unread = ctx.facts.conditions is None
    if unread:
        ctx.need(
            "conditions", "the patient's conditions could not be read, so contraindications were not screened"
        )
    by_concept, ruled_out = ctx.by_concept, ctx.facts.ruled_out
    if not by_concept and not ruled_out:  # nothing recorded: the same answer for every record like it
        return _nothing_recorded(ctx.kb, unread)
    results = []
    for statement, concept, verify in _screen(ctx.kb):
        if concept in by_concept:
            evidence = tuple(by_concept[concept])
            ctx.add(statement, "present", condition=evidence)
            results.append(ScreeningResult(statement, concept, Presence.PRESENT, evidence))
        elif verify is not None and verify in by_concept:
            unclear = tuple(by_concept[verify])
            ctx.add(statement, "verify", condition=unclear)
            results.append(ScreeningResult(statement, verify, Presence.UNKNOWN, unclear))
        elif concept in ruled_out:
            results.append(ScreeningResult(statement, concept, Presence.ABSENT))
        else:
            results.append(
                ScreeningResult(statement, concept, Presence.UNKNOWN if unread else Presence.NOT_RECORDED)
            )
    return tuple(results)


def _screen(kb: KnowledgeBase) -> tuple[tuple[str, str, str | None], ...]:
    """(statement, concept, concept to verify) of each statement screened, in ``kb.screening``'s order."""
    found = kb.memo.get("screen")
    if found is None:
        found = kb.memo["screen"] = tuple(
            (s.id, s.screen.concept, s.screen.verify) for s in kb.screening if s.screen is not None
        )
    screen: tuple[tuple[str, str, str | None], ...] = found
    return screen


def _nothing_recorded(kb: KnowledgeBase, unread: bool) -> tuple[ScreeningResult, ...]:
    """The screen of a record with no condition in it (none recorded, or none that could be read)."""
    key = ("nothing recorded", unread)
    found = kb.memo.get(key)
    if found is None:
        presence = Presence.UNKNOWN if unread else Presence.NOT_RECORDED
        found = kb.memo[key] = tuple(ScreeningResult(s, c, presence) for s, c, _verify in _screen(kb))
    results: tuple[ScreeningResult, ...] = found
    return results


def _evidence(ctx: _Context, concept: str) -> tuple[Coded, ...]:
    return tuple(ctx.by_concept.get(concept, ()))


def _present(ctx: _Context, concept: str) -> bool:
    return concept in ctx.by_concept


# --- dose limits ------------------------------------------------------------------------------------


def _weight_used(facts: Facts) -> WeightUsed | None:
    if facts.weight_kg is None:
        return None
    return WeightUsed(facts.weight_kg, facts.weight_basis, facts.weight_measured)


def _dose_limits(facts: Facts, policy: DosePolicy, in_scope: bool) -> DoseLimits:
    weight = facts.weight_kg if in_scope else None
    bolus, infusion = policy.bolus.limit, policy.infusion.limit
    order = facts.order
    concentration = order.concentration_mg_per_ml if order is not None and in_scope else None
    return DoseLimits(
        weight_kg=facts.weight_kg,
        max_bolus_mg=_effective(bolus, weight)[1] if in_scope else None,
        max_infusion_mg_per_h=_effective(infusion, weight)[1] if in_scope else None,
        bolus_limit_mg_per_kg=bolus.per_kg,
        infusion_limit_mg_per_kg_per_h=infusion.per_kg,
        infusion_limit_applies=policy.outside_icu_applies,
        guideline=policy.guideline,
        bolus_statement=bolus.statement,
        infusion_statement=infusion.statement,
        infusion_minimum_mg_per_kg_per_h=policy.infusion.minimum,
        weight=_weight_used(facts) if in_scope else None,
        weight_problem=facts.weight_problem if in_scope and facts.weight_kg is None else None,
        bolus_limit=bolus,
        infusion_limit=infusion,
        concentration_mg_per_ml=concentration,
    )


Effective = tuple[Fraction, Fraction | None, bool]


def _effective(limit: Limit, weight_kg: Fraction | None) -> Effective:
    """(limit per kg, limit in mg or mg/h, whether the site's absolute cap is the tighter) for this weight.
    Without a weight there is no limit in mg: a site's absolute cap alone is not the limit, since its per-kg
    limit may be the tighter (0.3 mg/kg is under 20 mg for anyone under 66.7 kg), and it is never guessed."""
    if weight_kg is None:
        return limit.per_kg, None, False
    by_weight = limit.per_kg * weight_kg
    cap = limit.max_amount
    if cap is not None and cap < by_weight:
        return cap / weight_kg, cap, True
    return limit.per_kg, by_weight, False


def _over(limit: Limit, amount: Fraction | None, per_kg: Fraction | None) -> bool | None:
    """Whether a dose is over a limit; None when it cannot be told: a per-kg limit and no weight (unless the
    dose is over it at the heaviest weight the software accepts), or a site's cap in mg and a dose per kg
    without a weight (never "within" when it is not known)."""
    if limit.max_amount is not None and amount is not None and amount > limit.max_amount:
        return True
    if per_kg is not None and per_kg > limit.per_kg:
        return True
    if per_kg is None and amount is not None and amount > limit.per_kg * MAX_WEIGHT_KG:
        return True  # without a weight, over the limit for any weight a patient can have
    if per_kg is None or (limit.max_amount is not None and amount is None):
        return None
    return False


def _over_at_any_weight(limit: Limit, amount: Fraction | None, weight_kg: Fraction | None) -> bool:
    """Without a weight, a dose in mg (mg/h) over its limit per kg even at the heaviest weight accepted (and
    not merely over a site's cap in mg, which its own words say)."""
    if weight_kg is not None or amount is None:
        return False
    if limit.max_amount is not None and amount > limit.max_amount:
        return False
    return amount > limit.per_kg * MAX_WEIGHT_KG


def _limit_params(
    ctx: _Context, limit: Limit, weight_kg: Fraction | None, unit: str, effective: Effective | None = None
) -> dict[str, object]:
    """How a finding names its limit: the guideline's, or the site protocol's with the guideline's beside
    (``effective``: ``_effective(limit, weight_kg)`` when the caller has it already)."""
    per_kg, amount, absolute = effective or _effective(limit, weight_kg)
    per_kg_unit = f"mg/kg{unit[2:]}"
    text = LimitText(
        limit.per_kg,
        per_kg_unit,
        limit.max_amount if absolute else None,
        unit,
        limit.guideline_per_kg is not None,
        limit.max_amount if weight_kg is None else None,  # without a weight both caps are named
    )
    note = None
    if ctx.site is not None and limit.from_site:
        guideline_amount = limit.guideline * weight_kg if weight_kg is not None else None
        note = SiteNote(
            ctx.site.label, limit.guideline, per_kg_unit, guideline_amount, unit, limit.above_guideline
        )
    return {"limit": text, "site_note": note, "limit_amount": amount, "effective_per_kg": per_kg}


@rule("dose-bolus-limit", "dose-infusion-limit", "dose-ceiling", "chronic-dose-range")
def dose_limits_and_checks(
    ctx: _Context, policy: DosePolicy, limits: DoseLimits, use_note: str
) -> tuple[DoseCheck, ...]:
    """dose-bolus-limit, dose-infusion-limit, dose-ceiling and chronic-dose-range: the limits for this use,
    setting and weight, or each dose of the order checked (which statement's limit a dose of each kind is
    checked against is ``_dose_policy.dose_policy``'s choice, from the knowledge base). A dose the order
    writes down but the record does not give in a form that can be read is missing information: it is not
    checked, and that decides the verdict unless something else does."""
    order = ctx.facts.order
    doses = [d for d in order.doses if d.kind is not None] if order is not None else []
    concentration = order.concentration_mg_per_ml if order is not None else None
    checks = tuple(
        _check_dose(ctx, policy.of(dose.kind), dose, i, concentration, use_note)
        for i, dose in enumerate(doses)
        if dose.kind is not None
    )
    if not checks:
        _dose_limit_findings(ctx, policy, limits, use_note)
    if order is not None and order.dose_unreadable is not None:
        ctx.need("dose", order.dose_unreadable)
    statement = checks[0].statement if checks else policy.bolus.limit.statement
    if ctx.facts.weight_kg is not None:
        _weight_age(ctx, statement)
    elif ctx.facts.weight_problem is not None:
        _weight_unusable(ctx, statement, ctx.facts.weight_problem)
    return checks


def _weight_unusable(ctx: _Context, statement: str, problem: str) -> None:
    """A weight the record holds but that cannot be used (two at one time that disagree, a bound): said, and
    needed. None is guessed: doses in mg are not checked and no maximum is given in mg until it is known."""
    ctx.add(statement, "weight-unusable", weight_problem=problem)
    ctx.need("weight", problem, statement)


def _dose_limit_findings(ctx: _Context, policy: DosePolicy, limits: DoseLimits, use_note: str) -> None:
    weight = limits.weight
    key = "limits" if weight is not None else "limits-no-weight"
    if policy.guideline == "chronic":
        _chronic_range_limits(ctx, policy, limits, key)
    else:
        _acute_limits(ctx, policy, limits, key, use_note)
    if weight is None and ctx.facts.weight_problem is None:  # else needed already, and said why
        ctx.need("weight", "no body weight: the maximum dose in mg cannot be worked out", decisive=False)


def _acute_limits(ctx: _Context, policy: DosePolicy, limits: DoseLimits, key: str, use_note: str) -> None:
    weight = limits.weight
    kg = weight.kg if weight is not None else None
    bolus = _limit_params(ctx, policy.bolus.limit, kg, "mg")
    ctx.add(
        policy.bolus.limit.statement,
        key,
        weight=weight,
        max=Clause("", limits.max_bolus_mg, "mg", concentration=limits.concentration_mg_per_ml),
        largest=_drawable(ctx, limits.max_bolus_mg, DoseKind.BOLUS, limits.concentration_mg_per_ml),
        limit=bolus["limit"],
        site_note=bolus["site_note"],
        use_note=use_note,
    )
    infusion = policy.infusion.limit
    rate = _limit_params(ctx, infusion, kg, "mg/h")
    maximum = Clause("", limits.max_infusion_mg_per_h, "mg/h", concentration=limits.concentration_mg_per_ml)
    if policy.outside_icu_applies is False:
        outside = ctx.kb.threshold(_dp.INFUSION_LIMIT, "limit_mg_per_kg_per_h")
        ctx.add(_dp.INFUSION_LIMIT, "limits-icu", limit=(outside, "mg/kg/h"))
    elif policy.outside_icu_applies is None:
        key = "limits-setting-unknown" if weight is not None else "limits-no-weight-setting-unknown"
    ctx.add(
        infusion.statement,
        key,
        weight=weight,
        max=maximum,
        largest=_drawable(
            ctx, limits.max_infusion_mg_per_h, DoseKind.INFUSION, limits.concentration_mg_per_ml
        ),
        limit=rate["limit"],
        site_note=rate["site_note"],
        use_note=use_note,
    )


def _drawable(
    ctx: _Context, maximum: Fraction | None, kind: DoseKind, concentration: Fraction | None
) -> Drawable:
    """The largest measurable dose within a maximum, at the product default steps (kb.toml [defaults]) or the
    site's bolus step."""
    steps = ctx.kb.dose_steps
    if kind is DoseKind.BOLUS:
        site_step = ctx.site.bolus_step_mg if ctx.site is not None else None
        return Drawable(maximum, "mg", site_step or steps["bolus_mg"], steps["bolus_ml"], concentration)
    return Drawable(maximum, "mg/h", steps["infusion_mg_per_h"], steps["infusion_ml_per_h"], concentration)


def _chronic_range_limits(ctx: _Context, policy: DosePolicy, limits: DoseLimits, key: str) -> None:
    infusion = policy.infusion
    kg = limits.weight.kg if limits.weight is not None else None
    bolus = _limit_params(ctx, policy.bolus.limit, kg, "mg")
    rate = _limit_params(ctx, infusion.limit, kg, "mg/h")
    ctx.add(
        _dp.CHRONIC_RANGE,
        key,
        weight=limits.weight,
        bolus_limit=bolus["limit"],
        bolus_max=Clause("", limits.max_bolus_mg, "mg", concentration=limits.concentration_mg_per_ml)
        if limits.max_bolus_mg is not None
        else None,
        range=DoseRange(infusion.minimum or Fraction(0), infusion.limit.per_kg, limits.weight),
        setting_words=SettingScope(policy.setting),
        site_note=bolus["site_note"] or rate["site_note"],
    )


def _check_dose(
    ctx: _Context,
    policy: KindPolicy,
    order: OrderDose,
    index: int,
    concentration: Fraction | None,
    use_note: str,
) -> DoseCheck:
    unit = "mg" if order.kind is DoseKind.BOLUS else "mg/h"
    statement = policy.limit.statement
    weight = _weight_used(ctx.facts)
    weight_kg = weight.kg if weight is not None else None
    amount, per_kg = dose_amounts(order.dose, concentration, weight_kg)
    effective = _effective(policy.limit, weight_kg)
    shown = _limit_params(ctx, policy.limit, weight_kg, unit, effective)
    limit_amount = shown["limit_amount"]
    assert isinstance(limit_amount, Fraction | None)
    limit = shown["effective_per_kg"]
    assert isinstance(limit, Fraction)
    status = _dose_status(policy, amount, per_kg, ctx.facts.setting)
    within_from = _within_from(policy.limit, amount) if status is DoseStatus.NO_WEIGHT else None
    params: dict[str, object] = {
        "ordered": order.dose,
        "dose": DoseMath(order.dose, amount, per_kg, weight, unit, limit, limit_amount),
        "limit": shown["limit"],
        "site_note": shown["site_note"],
        **_max_clauses(order.dose, amount, limit_amount, unit, concentration),
        "within_from": WithinFrom(within_from),
        "setting": SettingName(ctx.facts.setting),
        # the bolus limits hold in every setting; an infusion's depend on it
        "setting_words": SettingScope(ctx.facts.setting)
        if order.kind is DoseKind.INFUSION
        else "in every setting",
        "kind": order.kind,
        "dose_index": index,
        "use_note": use_note,
    }
    if policy.limit.statement == _dp.CEILING and policy.kind is DoseKind.INFUSION:
        outside = ctx.kb.threshold(_dp.INFUSION_LIMIT, "limit_mg_per_kg_per_h")
        ctx.add(_dp.INFUSION_LIMIT, "icu", **{**params, "limit": (outside, "mg/kg/h"), "site_note": None})
    if status.exceeds:
        params["rounding"] = _rounded_limit(order, per_kg, limit, amount, limit_amount)
    key = _DOSE_MESSAGES[status]
    if status is DoseStatus.NO_WEIGHT and order.dose.unit.per_kg:  # only a site's cap in mg needs the weight
        key = "no-weight-site-cap"
    if _over_at_any_weight(policy.limit, amount, weight_kg):
        key = "exceeds-any-weight"
        params["heaviest"] = (MAX_WEIGHT_KG, "kg")
        params["heaviest_max"] = (policy.limit.per_kg * MAX_WEIGHT_KG, unit)
    ctx.add(statement, key, **params)
    _also_exceeds(ctx, policy, per_kg, weight_kg, amount, params)
    _need_for_dose(ctx, status, statement)
    if policy.limit.max_amount is not None and amount is None and status is DoseStatus.NO_WEIGHT:
        ctx.need("weight", "the site protocol's cap in mg cannot be checked without a body weight", statement)
    if weight_kg is None and status.exceeds and per_kg is None:
        ctx.need(
            "weight",
            "the dose is over its limit at any weight; the maximum for this patient needs a body weight",
            statement,
            decisive=False,
        )
    kind = order.kind or DoseKind.BOLUS
    guideline_amount = _guideline_amount(policy.limit, weight_kg, effective)
    return DoseCheck(
        statement,
        kind,
        order.dose,
        amount,
        per_kg,
        limit,
        limit_amount,
        status,
        index,
        limit_source=_limit_source(policy.limit, effective),
        guideline_limit_per_kg=policy.limit.guideline,
        guideline_limit_amount=guideline_amount,
        per_kg_limit=policy.limit.per_kg,
        cap_amount=policy.limit.max_amount,
        concentration=concentration,
        within_from_kg=within_from,
    )


def _guideline_amount(limit: Limit, weight_kg: Fraction | None, effective: Effective) -> Fraction | None:
    """The guideline's own limit in mg (mg/h) for this weight: the limit for this weight (``effective``)
    where no site changed it."""
    if weight_kg is None:
        return None
    if not limit.from_site:
        return effective[1]
    return limit.guideline * weight_kg


def _rounded_limit(
    order: OrderDose,
    per_kg: Fraction | None,
    limit: Fraction,
    amount: Fraction | None,
    limit_amount: Fraction | None,
) -> RoundedLimit | None:
    """The order writes the limit rounded to its own decimals (16.67 mcg/kg/min for 16.666...): it is over the
    limit, by the exact excess, and the finding says it is a rounding of the limit."""
    if per_kg is not None:
        ratio = per_kg / limit
    elif amount is not None and limit_amount:
        ratio = amount / limit_amount
    else:
        return None
    value = order.dose.value
    exponent = value.as_tuple().exponent
    places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    in_unit = Fraction(value) / ratio
    scaled = in_unit * 10**places
    rounded = Fraction(int(scaled + Fraction(1, 2)), 10**places)  # half up, as the order would be written
    if rounded != Fraction(value) or ratio <= 1:
        return None
    return RoundedLimit(in_unit, order.dose.unit.text, ratio - 1)


def _max_clauses(
    ordered: Quantity,
    amount: Fraction | None,
    limit_amount: Fraction | None,
    unit: str,
    concentration: Fraction | None,
) -> dict[str, Clause]:
    """ ": max 28 mg" and ", at most 28 mg for this weight", in mL too when the concentration is known; the
    maximum shown is kept from reading below the dose (``apart_from``), in mL below a dose ordered in mL."""
    written = ordered.unit
    in_ml = written.amount == "volume" and written.factor == 1 and written.per_hours in (None, 1)
    ml = Fraction(ordered.value) if in_ml else None
    return {
        "max": Clause(": max ", limit_amount, unit, "", amount, concentration, ml),
        "max_for_weight": Clause(
            ", at most ", limit_amount, unit, " for this weight", amount, concentration, ml
        ),
    }


def _concentration(ctx: _Context) -> Fraction | None:
    order = ctx.facts.order
    return order.concentration_mg_per_ml if order is not None else None


def _within_from(limit: Limit, amount: Fraction | None) -> Fraction | None:
    """The least body weight for which a dose in mg (mg/h) is within the limit per kg, exactly; None when a
    site's absolute cap makes it over whatever the weight (the check then says so without a weight)."""
    if amount is None or (limit.max_amount is not None and amount > limit.max_amount):
        return None
    return amount / limit.per_kg


def _limit_source(limit: Limit, effective: Effective) -> str:
    """ "site" when the site's protocol sets the limit that applies to this dose (``effective``: the limit
    for this weight, ``_effective``), else "guideline"."""
    if limit.guideline_per_kg is not None or effective[2]:
        return "site"
    return "guideline"


def _also_exceeds(
    ctx: _Context,
    policy: KindPolicy,
    per_kg: Fraction | None,
    weight_kg: Fraction | None,
    amount: Fraction | None,
    params: dict[str, object],
) -> None:
    """dose-ceiling beside the acute infusion limit: an infusion above every rate the guidelines describe."""
    also = policy.also
    if also is None or not _over(also, amount, per_kg):
        return
    unit = "mg/h"
    shown = _limit_params(ctx, also, weight_kg, unit)
    limit_amount = shown["limit_amount"]
    assert isinstance(limit_amount, Fraction | None)
    dose = params["dose"]
    assert isinstance(dose, DoseMath)
    ctx.add(
        also.statement,
        "exceeds-beside",
        **{
            **params,
            "dose": DoseMath(dose.ordered, amount, per_kg, dose.weight, unit, also.per_kg, limit_amount),
            "limit": shown["limit"],
            "site_note": shown["site_note"],
            **_max_clauses(dose.ordered, amount, limit_amount, unit, _concentration(ctx)),
        },
    )


def _need_for_dose(ctx: _Context, status: DoseStatus, statement: str) -> None:
    if status is DoseStatus.NO_WEIGHT and ctx.facts.weight_problem is not None:
        return  # needed already, with why the record's weight is not used (_weight_unusable)
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
            "whether the patient is in intensive care: the infusion is over the limit outside it",
            statement,
            decisive=False,
        )


def _dose_status(
    policy: KindPolicy, amount: Fraction | None, per_kg: Fraction | None, setting: Setting
) -> DoseStatus:
    if amount is None and per_kg is None:
        return DoseStatus.NO_CONCENTRATION
    over = _over(policy.limit, amount, per_kg)
    if over is None:
        return DoseStatus.NO_WEIGHT
    if over:
        icu = policy.icu_limit
        if setting is Setting.UNKNOWN and icu is not None and _over(icu, amount, per_kg) is False:
            return DoseStatus.EXCEEDS_UNLESS_INTENSIVE_CARE
        return DoseStatus.EXCEEDS
    if policy.minimum is not None and per_kg is not None and per_kg < policy.minimum:
        return DoseStatus.BELOW_RANGE
    return DoseStatus.WITHIN


_DOSE_MESSAGES = {
    DoseStatus.WITHIN: "within",
    DoseStatus.BELOW_RANGE: "below-range",
    DoseStatus.EXCEEDS: "exceeds",
    DoseStatus.EXCEEDS_UNLESS_INTENSIVE_CARE: "exceeds-setting-unknown",
    DoseStatus.NO_WEIGHT: "no-weight",
    DoseStatus.NO_CONCENTRATION: "no-concentration",
}


def _weight_age(ctx: _Context, statement: str) -> None:
    """A dose worked out from an old weight, or one whose date is not recorded, is said so (a product
    default, not a guideline figure: the sources give no age for a weight)."""
    facts = ctx.facts
    weight = _weight_used(facts)
    site_days = ctx.site.weight_max_age_days if ctx.site is not None else None
    limit_days = site_days or ctx.kb.weight_max_age_days
    if facts.weight_basis is WeightBasis.UNDATED:
        ctx.add(statement, "weight-undated", weight=weight, max_age_days=limit_days)
    elif facts.weight_measured is not None:
        age = (facts.as_of - facts.weight_measured).days
        if age > limit_days:
            ctx.add(
                statement,
                "weight-old",
                weight=weight,
                weight_age=Elapsed(Fraction(age * 24)),
                max_age_days=limit_days,
            )


# --- information beside the dose: opioid adjunct range, chronic first-infusion minimum, pre-infusion tests


@rule("acute-opioid-adjunct")
def acute_opioid_adjunct(ctx: _Context, checks: tuple[DoseCheck, ...]) -> None:
    """Shown beside a perioperative order whose every IV dose is within the acute limits (0.35 mg/kg,
    1 mg/kg/h), whatever the setting; it never changes the verdict."""
    if not checks:
        return
    bolus = ctx.kb.threshold(_dp.BOLUS_LIMIT, "limit_mg_per_kg")
    rate = ctx.kb.threshold(_dp.INFUSION_LIMIT, "limit_mg_per_kg_per_h")
    for check in checks:
        limit = bolus if check.kind is DoseKind.BOLUS else rate
        if check.per_kg is None or check.per_kg > limit or check.status.exceeds:  # a site's tighter cap too
            return
    ctx.add("acute-opioid-adjunct", "applies")


@rule("chronic-dose-minimum")
def chronic_dose_minimum(ctx: _Context, infusion: OrderDose | None, concentration: Fraction | None) -> None:
    """A first chronic pain infusion should total at least 80 mg over more than 2 hours (information)."""
    statement = "chronic-dose-minimum"
    if infusion is None:
        ctx.add(statement, "minimum")
        return
    weight_kg = ctx.facts.weight_kg
    rate, _ = dose_amounts(infusion.dose, concentration, weight_kg)
    total = _delivered(infusion, concentration, weight_kg)
    duration = infusion.duration_h
    if duration is None and total is not None and rate:
        duration = total / rate
    if total is None and duration is not None and rate is not None:
        total = rate * duration
    if total is None or duration is None:
        given = infusion.duration_h is not None or infusion.total is not None
        ctx.add(statement, "amount-unknown" if given else "duration-unknown", ordered=infusion.dose)
        return
    least_mg = ctx.kb.threshold(statement, "minimum_total_mg")
    least_h = ctx.kb.threshold(statement, "minimum_duration_h")
    key = "meets" if total >= least_mg and duration > least_h else "below"
    ctx.add(statement, key, total=Beside(total, "mg", least_mg), duration=Elapsed(duration, least_h))


def _delivered(
    infusion: OrderDose, concentration: Fraction | None, weight_kg: Fraction | None
) -> Fraction | None:
    """The amount in mg an infusion delivers, where the order gives it."""
    if infusion.total is None:
        return None
    amount = amount_per_dose(infusion.total, concentration)
    if amount is None or not infusion.total.unit.per_kg:
        return amount
    return amount * weight_kg if weight_kg is not None else None


@rule("pretest-ecg", "pretest-liver", "pretest-none-routine")
def pretest(ctx: _Context) -> None:
    """pretest-ecg and pretest-liver when the record shows what they name; otherwise pretest-none-routine.
    Information for chronic IV infusions: they never change the verdict."""
    shown = False
    for statement in ("pretest-ecg", "pretest-liver"):
        concepts = ctx.kb.statements[statement].concepts
        evidence = tuple(e for concept in concepts for e in _evidence(ctx, concept))
        if evidence:
            ctx.add(statement, "applies", condition=evidence)
            shown = True
    if not shown:
        reviewed = ctx.facts.conditions is not None
        ctx.add("pretest-none-routine", "applies" if reviewed else "conditions-not-reviewed")


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
        if finding.statement.role in roles and finding.message_key in _DECIDING_MESSAGES:
            return finding
    return None


_DECIDING_MESSAGES = frozenset({"applies", "present", *EXCEEDING_MESSAGES})
_DECISIVE_ROLE: dict[Verdict, tuple[str, ...]] = {
    Verdict.CONTRAINDICATED: ("contraindication",),
    Verdict.DOSE_EXCEEDS_LIMIT: ("dose-limit",),
    Verdict.NOT_INDICATED: ("against",),
    Verdict.INSUFFICIENT_EVIDENCE: ("insufficient",),
    Verdict.CONSIDER: ("support-strong",),
    Verdict.MAY_CONSIDER: ("support-weak",),
}
