"""The clinician web page: a form that builds a case document, and the assessment rendered as HTML.

The form goes through ``facts_from_case`` like every other caller, so the same validation and the same engine
decide; this module only turns form fields into a case document and an ``InputError`` back into a message
next to the field it concerns. Server-rendered Jinja2 (autoescaped), no front-end framework; a few lines of
JavaScript (``static/page.js``) only move focus to the answer and wire the print button.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup, escape

from .._engine import assess
from .._errors import InputError
from .._kb import KnowledgeBase, Statement, load_knowledge
from .._render import DOSE_STATUS_WORDS as report_dose_status_words
from .._render import SCREENING_WORDS as report_screening_words
from .._render import VERDICT_WORDS as report_verdict_words
from .._render import DoseDisplay, assessment_json, dose_display, sentence
from .._site import Site
from .._units import format_number, plain_decimal
from ..adapters.case import facts_from_case

router = APIRouter(include_in_schema=False)

_HERE = Path(__file__).parent
_STATIC = _HERE / "static"
_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}

OPIOID_ROWS = 3
MAX_FIELD_CHARS = 200
MAX_NUMBER_CHARS = 20

WEIGHT_UNITS = (("kg", "kg"), ("lb", "lb"), ("g", "g"))
DOSE_UNITS = (
    ("mg", "mg (bolus)"),
    ("mcg", "mcg (bolus)"),
    ("mg/kg", "mg/kg (bolus)"),
    ("mcg/kg", "mcg/kg (bolus)"),
    ("mL", "mL (bolus; give the concentration)"),
    ("mg/h", "mg/h (infusion)"),
    ("mg/kg/h", "mg/kg/h (infusion)"),
    ("mcg/kg/min", "mcg/kg/min (infusion)"),
    ("mcg/kg/h", "mcg/kg/h (infusion)"),
    ("mL/h", "mL/h (infusion; give the concentration)"),
)
ROUTES = (("intravenous", "Intravenous (IV)"), ("oral", "Oral"), ("intranasal", "Intranasal"))
SEXES = (("female", "Female"), ("male", "Male"), ("other", "Other"), ("unknown", "Unknown"))

VERDICT_WORDS: Mapping[str, str] = report_verdict_words
VERDICT_TONE: Mapping[str, str] = {
    "out-of-scope": "neutral",
    "contraindicated": "stop",
    "dose-exceeds-limit": "stop",
    "not-indicated": "stop",
    "insufficient-evidence": "caution",
    "needs-information": "caution",
    "consider": "go",
    "may-consider": "go",
}
SCREENING_WORDS: Mapping[str, str] = {**report_screening_words, "present": "present in the record"}
DOSE_STATUS_WORDS: Mapping[str, str] = report_dose_status_words
ROLE_WORDS: Mapping[str, str] = {
    "support-strong": "supports ketamine (should be considered, or moderate certainty)",
    "support-weak": "supports ketamine weakly (may be considered, low certainty)",
    "against": "advises against ketamine (no benefit, or recommended against)",
    "insufficient": "evidence insufficient",
    "contraindication": "contraindication",
    "caution": "caution",
    "dose-limit": "dose limit",
    "context": "context",
}
TAG_WORDS: Mapping[str, str] = {
    "seed": (
        "stated in the project's seed: a one-page summary of the 2018 ASRA/AAPM/ASA recommendations on "
        "ketamine for acute and chronic pain (and of the 2019 review), the document the project was started "
        "from; where it is looser than the guidelines' own conclusions, the guidelines' wording is followed"
    ),
    "V1": "checked against the guideline's own text (abstract or conclusions)",
    "V2v": (
        "the conclusion and its grade, word for word, in two independent copies of the guideline's "
        "conclusions"
    ),
    "V2": "from secondary summaries of the recommendations (the number of sources is noted)",
    "U": "not verified (never used as a rule)",
}
PRESENCE_WORDS: Mapping[str, str] = {
    "present": "present",
    "absent": "absent",
    "not-recorded": "not recorded",
    "unknown": "unknown",
}
SETTING_WORDS: Mapping[str, str] = {
    "intensive-care": "intensive care",
    "non-intensive-care": "outside intensive care",
    "unknown": "setting not known",
}
OTHER_CONCEPTS = ("sleep-apnea", "opioid-dependence", "sickle-cell-crisis")
CARDIOVASCULAR = ("cardiovascular-disease", "cardiovascular-severe")
# fields shown as a group (radios, checkboxes): an error links to the group, not to one choice
GROUPS = frozenset(
    {
        "pregnant",
        "setting",
        "dose_kind",
        "prior_iv",
        "conditions_record",
        "opioid_record",
        "cardiovascular",
        "conditions",
    }
)


# --- templates ---------------------------------------------------------------------------------------


def _number(value: Any) -> str:
    """A JSON number as the texts write it: 28.0 -> '28', 24.45 -> '24.45', 1200 -> '1,200'."""
    if value is None:
        return "unknown"
    return format_number(Fraction(str(value)))


_BOLD = re.compile(r"\*\*(.+?)\*\*")


def _markdown(text: str) -> Markup:
    """The findings' markdown subset (**bold**), escaped first."""
    return Markup(_BOLD.sub(r"<strong>\1</strong>", str(escape(text))))


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        extensions=["jinja2.ext.do"],
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _number
    env.filters["markdown"] = _markdown
    env.filters["sentence"] = sentence
    env.globals.update(
        verdict_words=VERDICT_WORDS,
        verdict_tone=VERDICT_TONE,
        screening_words=SCREENING_WORDS,
        dose_status_words=DOSE_STATUS_WORDS,
        role_words=ROLE_WORDS,
        tag_words=TAG_WORDS,
        setting_words=SETTING_WORDS,
        presence_words=PRESENCE_WORDS,
    )
    return env


_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _html(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("kb", _kb(request))
    context.setdefault("site", _site(request))
    body = _environment().get_template(template).render(**context)
    return HTMLResponse(body, status_code=status_code, headers=_SECURITY_HEADERS)


def _kb(request: Request) -> KnowledgeBase:
    kb = getattr(request.app.state, "kb", None)
    return kb if isinstance(kb, KnowledgeBase) else load_knowledge()


def _site(request: Request) -> Site | None:
    site = getattr(request.app.state, "site", None)
    return site if isinstance(site, Site) else None


# --- the form's choices, from the knowledge base ----------------------------------------------------


@dataclass(frozen=True)
class Choices:
    contraindications: list[tuple[str, str]]
    cautions: list[tuple[str, str]]
    others: list[tuple[str, str]]
    cardiovascular: list[tuple[str, str]]
    procedure_classes: list[tuple[str, str]]
    indications: list[tuple[str, list[tuple[str, str]]]]
    opioids: list[tuple[str, str]]
    weight_units: Sequence[tuple[str, str]] = WEIGHT_UNITS
    dose_units: Sequence[tuple[str, str]] = DOSE_UNITS
    routes: Sequence[tuple[str, str]] = ROUTES
    sexes: Sequence[tuple[str, str]] = SEXES
    opioid_rows: int = OPIOID_ROWS


def _choices(kb: KnowledgeBase) -> Choices:
    def role(concept_statement: str | None) -> str | None:
        st = kb.statements.get(concept_statement or "")
        return st.role if st else None

    concepts = kb.concepts.values()
    contraindications = [
        (c.id, c.label)
        for c in concepts
        if role(c.statement) == "contraindication" and c.id != "pregnancy" and c.id not in CARDIOVASCULAR
    ]
    cautions = [(c.id, c.label) for c in concepts if role(c.statement) == "caution"]
    others = [(c, kb.concepts[c].label) for c in OTHER_CONCEPTS if c in kb.concepts]
    groups = (
        ("Acute pain", ("perioperative", "acute")),
        ("Chronic pain", ("chronic",)),
        ("Out of scope of the guideline", ("out-of-scope",)),
    )
    indications = [
        (title, [(u.id, u.label) for u in kb.uses.values() if u.kind in kinds]) for title, kinds in groups
    ]
    return Choices(
        contraindications=contraindications,
        cautions=cautions,
        others=others,
        cardiovascular=[(c, kb.concepts[c].label) for c in CARDIOVASCULAR if c in kb.concepts],
        procedure_classes=[(p.id, p.label) for p in kb.procedure_classes.values()],
        indications=indications,
        opioids=[
            (o.ingredient, o.ingredient + (" (transdermal, mcg/h)" if o.unit == "ug/h" else ""))
            for o in kb.opioids.values()
        ],
    )


# --- form -> case document ------------------------------------------------------------------------

FormValues = dict[str, Any]  # field name -> str, or list[str] for the condition checkboxes

DEFAULTS: Mapping[str, str] = {
    "weight_unit": "kg",
    "pregnant": "unknown",
    "cardiovascular": "",
    "conditions_record": "unknown",  # nobody has looked at the record until the user says so
    "setting": "unknown",
    "dose_kind": "",
    "prior_iv": "unknown",
    "opioid_record": "listed",
}


@dataclass
class FormError(Exception):
    """A field the form cannot turn into a case document (before the adapter sees it)."""

    field: str
    message: str


@dataclass
class Built:
    case: dict[str, Any]
    # the case document's path prefixes -> form field names, longest first (for error messages)
    fields: list[tuple[str, str]] = field(default_factory=list)


def _text(form: FormValues, name: str) -> str:
    value = form.get(name, "")
    return value.strip() if isinstance(value, str) else ""


def _number_value(form: FormValues, name: str) -> Decimal | str:
    """A plain decimal number as ``Decimal``; words are passed on as text for the adapter to refuse.

    What Python would read as a number but nobody writes as a dose is refused here: exponent notation
    (``1e99999999`` would make the exact arithmetic work on a number with a hundred million digits), digit
    separators (``7_0`` is not 70) and other scripts' digits (``７０``).
    """
    text = _text(form, name)
    if len(text) > MAX_NUMBER_CHARS:
        raise FormError(name, "enter a plain number such as 80 or 0.5")
    number = plain_decimal(text)
    if number is not None:
        return number
    try:
        Decimal(text)
    except InvalidOperation:
        return text  # words: "must be a number"
    raise FormError(name, "enter a plain number such as 80 or 0.5")


# (path in the case document, form field): where an adapter error's path points on the form
_CASE_FIELDS: tuple[tuple[str, str], ...] = (
    ("as_of", "as_of"),
    ("patient.weight.unit", "weight_unit"),
    ("patient.weight", "weight_value"),
    ("patient.age_years", "age_years"),
    ("patient.sex", "sex"),
    ("patient.pregnant", "pregnant"),
    ("patient.conditions", "conditions"),
    ("patient.opioids", "opioid_record"),
    ("indication", "indication"),
    ("procedure.class", "procedure_class"),
    ("procedure", "procedure_name"),
    ("setting", "setting"),
    ("prior_iv_ketamine", "prior_iv"),
    ("order.route", "route"),
    ("order.kind", "dose_kind"),
    ("order.dose.unit", "dose_unit"),
    ("order.dose", "dose_value"),
    ("order.concentration", "concentration_value"),
    ("order.duration", "duration_value"),
    ("order.pca_sole_agent", "pca_sole_agent"),
    ("order", "route"),
)


def build_case(form: FormValues, kb: KnowledgeBase) -> Built:
    """The case document (README, "The case document") for the form's values: the patient, the procedure and
    its setting, the order; a value the form cannot give is a ``FormError`` on its field."""
    case: dict[str, Any] = {}
    fields = list(_CASE_FIELDS)
    if as_of := _text(form, "as_of"):
        case["as_of"] = as_of
    patient = _patient(form, kb, fields)
    if patient:
        case["patient"] = patient
    if indication := _text(form, "indication"):
        case["indication"] = indication
    procedure = _procedure(form)
    if procedure:
        case["procedure"] = procedure
    if setting := _text(form, "setting"):
        case["setting"] = setting
    prior = _yes_no(form, "prior_iv")
    if prior is not None:
        case["prior_iv_ketamine"] = prior
    order = _order(form)
    if order is not None:
        case["order"] = order
    return Built(case, sorted(fields, key=lambda f: len(f[0]), reverse=True))


def _yes_no(form: FormValues, name: str) -> bool | None:
    """yes, no, or None for not known (empty or "unknown")."""
    answer = _text(form, name)
    if answer in ("yes", "no"):
        return answer == "yes"
    if answer not in ("", "unknown"):
        raise FormError(name, "choose yes, no or not known")
    return None


def _patient(form: FormValues, kb: KnowledgeBase, fields: list[tuple[str, str]]) -> dict[str, Any]:
    """The case's patient; each opioid row read adds its fields to ``fields``."""
    patient: dict[str, Any] = {}
    if _text(form, "weight_value"):
        patient["weight"] = {"value": _number_value(form, "weight_value"), "unit": _text(form, "weight_unit")}
    if age := _text(form, "age_years"):
        patient["age_years"] = int(age) if age.isascii() and age.isdigit() and len(age) <= 3 else age
    if sex := _text(form, "sex"):
        patient["sex"] = sex
    pregnant = _yes_no(form, "pregnant")
    if pregnant is not None:
        patient["pregnant"] = pregnant
    conditions = _conditions(form)
    if conditions is not None:
        patient["conditions"] = conditions
    opioids = _opioids(form, kb, fields)
    if opioids is not None:
        patient["opioids"] = opioids
    return patient


def _conditions(form: FormValues) -> list[str] | None:
    """The ticked conditions, or None when the record is marked as not reviewed (and none is ticked)."""
    ticked = [c for c in form.get("conditions", []) if isinstance(c, str) and c]
    if cardio := _text(form, "cardiovascular"):
        ticked.append(cardio)
    if _text(form, "conditions_record") != "unknown":
        return ticked
    if ticked:
        raise FormError(
            "conditions_record",
            "conditions are ticked but the record is marked as not reviewed: choose 'Reviewed' (unticked "
            "conditions were looked for and not found) or untick them",
        )
    return None


def _opioids(
    form: FormValues, kb: KnowledgeBase, fields: list[tuple[str, str]]
) -> list[dict[str, Any]] | None:
    """The opioid rows filled in, or None when opioid use is marked as not known (and no row is filled)."""
    if _text(form, "opioid_record") == "unknown":
        if any(
            _text(form, f"opioid_{part}_{row}")
            for row in range(OPIOID_ROWS)
            for part in ("ingredient", "amount", "start")
        ):
            raise FormError(
                "opioid_record",
                "opioids are listed but opioid use is marked as not known: clear the rows or choose "
                "'as listed'",
            )
        return None
    opioids: list[dict[str, Any]] = []
    for row in range(OPIOID_ROWS):
        item = _opioid_row(form, kb, row)
        if item is None:
            continue
        prefix = f"patient.opioids[{len(opioids)}]"
        fields += [
            (f"{prefix}.ingredient", f"opioid_ingredient_{row}"),
            (f"{prefix}.mg_per_day", f"opioid_amount_{row}"),
            (f"{prefix}.mcg_per_h", f"opioid_amount_{row}"),
            (f"{prefix}.start", f"opioid_start_{row}"),
            (prefix, f"opioid_ingredient_{row}"),
        ]
        opioids.append(item)
    return opioids


def _opioid_row(form: FormValues, kb: KnowledgeBase, row: int) -> dict[str, Any] | None:
    ingredient = _text(form, f"opioid_ingredient_{row}")
    amount = _text(form, f"opioid_amount_{row}")
    start = _text(form, f"opioid_start_{row}")
    if not (ingredient or amount or start):
        return None
    item: dict[str, Any] = {"ingredient": ingredient}
    opioid = kb.opioids.get(ingredient.lower())
    key = "mcg_per_h" if opioid is not None and opioid.unit == "ug/h" else "mg_per_day"
    if amount:
        item[key] = _number_value(form, f"opioid_amount_{row}")
    if start:
        item["start"] = start
    return item


def _procedure(form: FormValues) -> dict[str, Any]:
    procedure: dict[str, Any] = {}
    if pclass := _text(form, "procedure_class"):
        procedure["class"] = pclass
    if name := _text(form, "procedure_name"):
        procedure["display"] = name
    return procedure


def _order(form: FormValues) -> dict[str, Any] | None:
    """The order, or None when the form gives none of it."""
    order: dict[str, Any] = {}
    if _text(form, "dose_value"):
        order["dose"] = {"value": _number_value(form, "dose_value"), "unit": _text(form, "dose_unit")}
    if kind := _text(form, "dose_kind"):
        order["kind"] = kind
    if _text(form, "concentration_value"):
        order["concentration"] = {"value": _number_value(form, "concentration_value"), "unit": "mg/mL"}
    if _text(form, "duration_value"):
        order["duration"] = {"value": _number_value(form, "duration_value"), "unit": "h"}
    if _text(form, "pca_sole_agent"):
        order["pca_sole_agent"] = True
    route = _text(form, "route")
    if not (route or order):
        return None
    order["route"] = route or None
    return order


def field_for(path: str, fields: Sequence[tuple[str, str]]) -> str:
    """The form field an adapter error's path concerns (``order.dose.value`` -> ``dose_value``)."""
    for prefix, name in fields:
        if path == prefix or path.startswith((prefix + ".", prefix + "[")):
            return name
    return ""


def case_json(case: Mapping[str, Any]) -> str:
    def plain(value: object) -> object:
        if isinstance(value, Decimal):
            return int(value) if value == value.to_integral_value() else float(value)
        raise TypeError(type(value).__name__)

    return json.dumps(case, indent=2, ensure_ascii=False, default=plain)


async def _form_values(request: Request) -> FormValues:
    form = await request.form()
    values: FormValues = {}
    for key, value in form.multi_items():
        if not isinstance(value, str):
            continue  # no file uploads on this form
        value = value[:MAX_FIELD_CHARS]
        if key == "conditions":
            values.setdefault("conditions", []).append(value)
        else:
            values[key] = value
    return values


# --- routes -------------------------------------------------------------------------------------


def _form_page(
    request: Request,
    form: FormValues,
    *,
    status_code: int = 200,
    errors: Mapping[str, str] | None = None,
    result: Mapping[str, Any] | None = None,
    doses: DoseDisplay | None = None,
    case: str | None = None,
) -> HTMLResponse:
    kb = _kb(request)
    values = {**DEFAULTS, **form}
    return _html(
        request,
        "form.html",
        status_code,
        title=_title(result, errors),
        choices=_choices(kb),
        values=values,
        errors=dict(errors or {}),
        error_anchors={name: name + "-group" if name in GROUPS else name for name in errors or {}},
        result=result,
        doses=doses,
        case=case,
        today=_date_words(dt.date.today()),
    )


def _date_words(day: dt.date) -> str:
    """ "6 December 2026": a date no reader takes for another, whatever order a date field shows."""
    return f"{day.day} {_MONTHS[day.month - 1]} {day.year}"


_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


def _title(result: Mapping[str, Any] | None, errors: Mapping[str, str] | None) -> str:
    if errors:
        return "Error: check the case - ketamine decision support"
    if result:
        return f"{VERDICT_WORDS.get(result['verdict'], result['verdict'])} - ketamine decision support"
    return "Ketamine for pain: decision support"


@router.get("/", response_class=HTMLResponse)
async def form_page(request: Request) -> HTMLResponse:
    return _form_page(request, {})


@router.post("/", response_class=HTMLResponse)
@router.post("/assess", response_class=HTMLResponse)
async def assess_page(request: Request) -> HTMLResponse:
    kb = _kb(request)
    try:
        form = await _form_values(request)
    except Exception:  # a malformed body: tell the user, never a traceback
        return _form_page(request, {}, status_code=400, errors={"": "the form could not be read; try again"})
    fields: list[tuple[str, str]] = []
    try:
        built = build_case(form, kb)
        fields = built.fields
        facts = facts_from_case(built.case, today=dt.date.today(), kb=kb)
    except FormError as exc:
        return _form_page(request, form, status_code=400, errors={exc.field: exc.message})
    except InputError as exc:
        name = field_for(exc.field, fields)
        message = exc.message if name else str(exc)
        return _form_page(request, form, status_code=400, errors={name: message})
    site = _site(request)
    assessment = assess(facts, kb, site)
    result = assessment_json(assessment, kb)
    concentrations = site.concentrations_mg_per_ml if site is not None else ()
    doses = dose_display(assessment, concentrations or kb.ketamine_concentrations)
    return _form_page(request, form, result=result, doses=doses, case=case_json(built.case))


@router.get("/statements", response_class=HTMLResponse)
async def statements_page(request: Request) -> HTMLResponse:
    kb = _kb(request)
    return _html(
        request,
        "statements.html",
        title="Guideline statements - ketamine decision support",
        statements=list(kb.statements.values()),
    )


@router.get("/statements/{statement_id}", response_class=HTMLResponse)
async def statement_page(request: Request, statement_id: str) -> HTMLResponse:
    kb = _kb(request)
    statement = kb.statements.get(statement_id)
    if statement is None:
        return _html(
            request,
            "not_found.html",
            404,
            title="Statement not found - ketamine decision support",
            statement_id=statement_id,
        )
    return _html(
        request,
        "statement.html",
        title=f"{statement.title} - ketamine decision support",
        st=statement,
        thresholds=_thresholds(statement),
        concepts=[
            c for c in kb.concepts.values() if c.statement == statement.id or c.id in statement.concepts
        ],
        uses=[u for u in kb.uses.values() if u.statement == statement.id],
    )


def _thresholds(statement: Statement) -> list[tuple[str, str]]:
    """``limit_mg_per_kg_per_h = "1"`` -> ("limit", "1 mg/kg/h")."""
    rows = []
    for key, value in statement.thresholds.items():
        name, _, unit = str(key).partition("_mg_")
        unit_text = ("mg_" + unit).replace("_per_", "/") if unit else ""
        for suffix, word in (("_mg", "mg"), ("_h", "h")):
            if not unit and name.endswith(suffix):
                name, unit_text = name[: -len(suffix)], word
        shown = "–".join(str(v) for v in value) if isinstance(value, list) else str(value)
        rows.append((name.replace("_", " "), f"{shown} {unit_text}".strip()))
    return rows


@router.get("/static/{name}")
async def static_file(request: Request, name: str) -> Response:
    content = _static(name)
    if content is None:
        return _html(
            request, "not_found.html", 404, title="Not found - ketamine decision support", statement_id=None
        )
    return Response(
        content,
        media_type=_STATIC_TYPES[Path(name).suffix],
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


def _static(name: str) -> bytes | None:
    return _static_files().get(name)


@cache
def _static_files() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in _STATIC.iterdir() if p.suffix in _STATIC_TYPES}
