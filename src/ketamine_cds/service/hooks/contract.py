"""The request contract of the CDS Hooks routes, written once: pydantic models of a hook call and of feedback,
from which come the OpenAPI schema of the request bodies, the checks every field passes and the message and
stable error ``code`` of each 400 (``invalid-request``; ``field-too-long`` and ``control-character`` for
strings the service would store or log; ``too-many-draft-orders``; the body's own, e.g. ``duplicate-key``).

A check fails with ``PydanticCustomError(code, message)``; a message that begins with ``{path}`` is given the
dotted path of the field (``context.patientId``, ``feedback[0].card``). Every field has its own check before
pydantic's, so that the message says what CDS Hooks asks for rather than what Python type was expected; the
fields are checked in the order they are declared, and the first failure is the answer."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, NoReturn, TypeVar

from fastapi import Request
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..._errors import DuplicateKeyError, InputError, NotJSONError
from ..._inputs import parse_json
from .discovery import ORDER_HOOKS, CdsService

Json = dict[str, Any]


@dataclass(frozen=True)
class Body:
    data: Json | None = None
    error: str | None = None
    code: str | None = None  # the input error's stable code (``InputError.code``), where there is one


async def json_body(request: Request) -> Body:
    """The body as a JSON object (numbers exact), or why it is not one; read here so that a sync handler can
    check the service id first and answer 404 before complaining about the body."""
    raw = await request.body()
    if not raw.strip():
        return Body(error="the request body is empty; a JSON object is required")
    try:
        data = parse_json(raw)
    except DuplicateKeyError as exc:  # JSON, but ambiguous: a key written twice in one object
        return Body(error=f"the request body cannot be read: {exc.message}", code=exc.code)
    except NotJSONError as exc:
        return Body(error=f"the request body is not JSON: {exc.message}", code=exc.code)
    except InputError as exc:  # JSON, but a number no input can hold (out of range)
        return Body(error=f"the request body cannot be read: {exc}", code=exc.code)
    except RecursionError:
        return Body(error="the request body is nested too deeply")
    if not isinstance(data, dict):
        return Body(error="the request body must be a JSON object")
    return Body(data)


class BadRequest(ValueError):
    """A hook request that does not follow CDS Hooks 2.0: answered with 400, this message and a stable
    ``code`` (``invalid-request``; ``field-too-long`` and ``control-character`` for strings the service would
    store or log; ``too-many-draft-orders``)."""

    def __init__(self, message: str, code: str = "invalid-request") -> None:
        super().__init__(message)
        self.code = code


# Every string the service stores or logs is bounded (CDS Hooks gives no limits; these are generous):
MAX_ID_CHARS = 256  # hookInstance, patient, user and encounter ids, card and suggestion ids, codes
MAX_TEXT_CHARS = 2048  # URLs (fhirServer, a code system) and a reason's display
MAX_COMMENT_CHARS = 8192  # a clinician's userComment
MAX_ACCESS_TOKEN_CHARS = 16384
MAX_DRAFT_ORDERS = 200  # entries of context.draftOrders read in one call (an order set rarely holds 100)
MAX_TIMESTAMP_CHARS = 64
PATH = "{path}"  # a message beginning so is given the field's path


def _fail(message: str, code: str = "invalid-request") -> NoReturn:
    raise PydanticCustomError(code, message)


# --- the checks of single fields -----------------------------------------------------------------------


def _storable(value: str, limit: int) -> str:
    """Strings the service stores must be storable everywhere (PostgreSQL text cannot hold NUL) and
    bounded."""
    if len(value) > limit:
        _fail(f"{PATH} is longer than {limit} characters", "field-too-long")
    if "\x00" in value:
        _fail(f"{PATH} must not contain a NUL character", "control-character")
    return value


def _identifier(limit: int) -> BeforeValidator:
    """A non-empty string of at most ``limit`` characters with no control character (a line break in it
    could forge a log line)."""

    def check(value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            _fail(f"{PATH} must be a non-empty string")
        _storable(value, limit)
        if not value.isprintable():
            _fail(
                f"{PATH} must not contain control characters (line breaks, tabs, separators)",
                "control-character",
            )
        return value

    return BeforeValidator(check)


def _any_string(limit: int | None = None) -> BeforeValidator:
    """A string, empty or not (a null given is refused too); at most ``limit`` characters when given."""

    def check(value: Any) -> str:
        if not isinstance(value, str):
            _fail(f"{PATH} must be a string")
        return _storable(value, limit) if limit is not None else value

    return BeforeValidator(check)


def _array(message: str = f"{PATH} must be an array") -> BeforeValidator:
    def check(value: Any) -> list[Any]:
        if not isinstance(value, list):
            _fail(message)
        return value

    return BeforeValidator(check)


def _json_object(value: Any) -> Any:
    if value is not None and not isinstance(value, Mapping):
        _fail(f"{PATH} must be a JSON object")
    return value


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(f"{PATH} must be an integer (the token's lifetime in seconds)")
    return value


def _bearer(value: str) -> str:
    if value.lower() != "bearer":
        _fail(f"{PATH} must be Bearer")
    return value


_UTC_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]00:00)", re.ASCII)


def _utc_timestamp(value: Any) -> str:
    """CDS Hooks 2.0: "ISO8601 representation of the date and time in Coordinated Universal Time (UTC) ...,
    as profiled in section 5.6 of RFC3339": a full date and time with seconds and the offset of UTC (``Z``,
    or ``+00:00`` / ``-00:00``). A local time, even with its offset (``+01:00``), is refused, as are a bare
    date and a date and time without an offset: they are not UTC as the specification asks."""
    message = f"{PATH} must be a date and time in UTC (RFC 3339, offset Z), e.g. 2026-11-24T10:15:00Z"
    if isinstance(value, str) and len(value) > MAX_TIMESTAMP_CHARS:
        _fail(f"{PATH} is longer than {MAX_TIMESTAMP_CHARS} characters", "field-too-long")
    if not isinstance(value, str) or not _UTC_TIMESTAMP.fullmatch(value):
        _fail(message)
    try:
        dt.datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:  # e.g. month 13, 25 o'clock
        _fail(message)
    return value


Id = Annotated[str, _identifier(MAX_ID_CHARS)]
Url = Annotated[str, _identifier(MAX_TEXT_CHARS)]  # a URL, a code system, a display: longer, still one line


class _Contract(BaseModel):
    """An object of the contract: a JSON object (else ``<path> must be a JSON object``), whose required
    fields, when absent, are checked as null (so that their own check says what they must be)."""

    _required: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls._required = tuple(name for name, f in cls.model_fields.items() if f.is_required())

    @model_validator(mode="before")
    @classmethod
    def _an_object(cls, data: Any) -> Any:
        if type(data) is not dict and not isinstance(data, Mapping):  # parse_json gives dicts: the fast test
            _fail(f"{PATH} must be a JSON object")
        absent = [name for name in cls._required if name not in data]
        return {**data, **dict.fromkeys(absent)} if absent else data


# --- a hook call ---------------------------------------------------------------------------------------


class FhirAuthorization(_Contract):
    access_token: Annotated[str, _identifier(MAX_ACCESS_TOKEN_CHARS)]
    token_type: Annotated[str, _identifier(MAX_ID_CHARS), AfterValidator(_bearer)] = Field(
        json_schema_extra={"enum": ["Bearer"]}
    )
    expires_in: Annotated[int, BeforeValidator(_integer)]
    scope: Annotated[str | None, _any_string()] = None
    subject: Annotated[str | None, _any_string()] = None
    patient: Annotated[str | None, _any_string()] = None


def _for_hooks(hooks: tuple[str, ...], check: Callable[[Any], Any]) -> BeforeValidator:
    """A field checked only at the given hooks (and ignored at the others, as CDS Hooks lets a client send
    it)."""

    def checked(value: Any, info: ValidationInfo) -> Any:
        return check(value) if _service(info).hook in hooks else None

    return BeforeValidator(checked)


def _service(info: ValidationInfo) -> CdsService:
    service: CdsService = (info.context or {})["service"]
    return service


def _selections(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
        _fail("context.selections must be an array of references (e.g. MedicationRequest/1)")
    return value


def _bundle(value: Any) -> Any:
    """CDS Hooks 2.0 sends a Bundle; a single order resource (as some 1.0-era clients and the CDC opioid IG's
    examples send) is unambiguous, so it is read as a Bundle of one rather than refused."""
    if not isinstance(value, Mapping):
        _fail(f"{PATH} must be a JSON object")
    if value.get("resourceType") == "Bundle":
        return value
    if isinstance(value.get("resourceType"), str):
        return {"resourceType": "Bundle", "entry": [{"resource": value}]}
    _fail(f"{PATH} must be a FHIR Bundle of the draft orders")


def _a_resource(value: Any) -> Any:
    if not isinstance(value, Mapping) or not isinstance(value.get("resourceType"), str):
        _fail(f"{PATH} must be a FHIR resource")
    return value


class DraftEntry(_Contract):
    fullUrl: Annotated[str | None, BeforeValidator(lambda v: v if isinstance(v, str) else None)] = None
    resource: Annotated[dict[str, Any], BeforeValidator(_a_resource)]


def draft_id(resource: Mapping[str, Any], i: int) -> str:
    """The draft's id, or the one given to a draft without (internal only: suggestions carry the order as
    sent)."""
    rid = resource.get("id")
    return rid if isinstance(rid, str) and rid else f"ketamine-cds-draft-{i}"


def _entries(value: Any) -> list[Any]:
    """At most ``MAX_DRAFT_ORDERS`` entries, and no two drafts of a type with one id (the record keeps one
    resource per id, so the other order would go unchecked), found before the first malformed entry (the
    first error in the entries' order is the answer)."""
    if not isinstance(value, list):
        _fail(f"{PATH} must be an array")
    if len(value) > MAX_DRAFT_ORDERS:
        _fail(
            f"context.draftOrders holds {len(value)} entries; this service reads at most "
            f"{MAX_DRAFT_ORDERS} draft orders in one call",
            "too-many-draft-orders",
        )
    seen: set[tuple[str, str]] = set()
    for i, entry in enumerate(value):
        resource = entry.get("resource") if isinstance(entry, Mapping) else None
        if not isinstance(resource, Mapping) or not isinstance(resource.get("resourceType"), str):
            break  # the entry's own check answers
        key = (resource["resourceType"], draft_id(resource, i))
        if key in seen:
            _fail(
                f"context.draftOrders.entry[{i}].resource: two draft {key[0]}s have the id {key[1]!r}; "
                "each draft order needs its own id"
            )
        seen.add(key)
    return value


class DraftOrders(_Contract):
    """context.draftOrders: a FHIR Bundle of the draft orders."""

    resourceType: str
    entry: Annotated[list[DraftEntry], BeforeValidator(_entries)] = Field(default_factory=list)


class HookContext(_Contract):
    """The context of the call; draftOrders is required at order-select and order-sign, selections too
    at order-select."""

    patientId: Id
    userId: Id | None = None
    encounterId: Id | None = None
    selections: Annotated[list[str] | None, _for_hooks(("order-select",), _selections)] = Field(
        default=None, validate_default=True
    )
    draftOrders: Annotated[DraftOrders | None, _for_hooks(ORDER_HOOKS, _bundle)] = Field(
        default=None, validate_default=True
    )


class HookRequestBody(_Contract):
    """A CDS Hooks 2.0 hook call, as this service reads it."""

    hook: Id = Field(json_schema_extra={"enum": ["order-select", "order-sign", "patient-view"]})
    hookInstance: Id
    fhirServer: Url | None = None
    fhirAuthorization: FhirAuthorization | None = None
    context: HookContext
    prefetch: Annotated[dict[str, Any] | None, BeforeValidator(_json_object)] = None

    @field_validator("hook")
    @classmethod
    def _the_service_hook(cls, hook: str, info: ValidationInfo) -> str:
        service = _service(info)
        if hook != service.hook:
            _fail(f"the service {service.id} answers the {service.hook} hook, not {hook}")
        return hook

    @field_validator("fhirAuthorization")
    @classmethod
    def _with_a_server(
        cls, value: FhirAuthorization | None, info: ValidationInfo
    ) -> FhirAuthorization | None:
        if value is not None and not isinstance(info.data.get("fhirServer"), str):
            _fail("fhirServer is required when fhirAuthorization is given")
        return value


# --- feedback ------------------------------------------------------------------------------------------


class AcceptedSuggestion(_Contract):
    id: Id


class OverrideCoding(_Contract):
    code: Id
    system: Url
    display: Url | None = None


class OverrideReason(_Contract):
    reason: OverrideCoding | None = None
    userComment: Annotated[str | None, _any_string(MAX_COMMENT_CHARS)] = None


def _outcome(value: Any) -> str:
    if value not in ("accepted", "overridden"):
        _fail(f"{PATH} must be accepted or overridden")
    return str(value)


class FeedbackItem(_Contract):
    card: Id
    outcome: Annotated[str, BeforeValidator(_outcome)] = Field(
        json_schema_extra={"enum": ["accepted", "overridden"]}
    )
    acceptedSuggestions: Annotated[list[AcceptedSuggestion], _array()] = Field(default_factory=list)
    overrideReason: OverrideReason | None = None
    outcomeTimestamp: Annotated[str | None, BeforeValidator(_utc_timestamp)] = None

    @field_validator("acceptedSuggestions")
    @classmethod
    def _when_accepted(
        cls, value: list[AcceptedSuggestion], info: ValidationInfo
    ) -> list[AcceptedSuggestion]:
        if value and info.data.get("outcome") != "accepted":
            _fail(f"{PATH} belong to an accepted outcome")
        return value

    @field_validator("overrideReason", mode="before")
    @classmethod
    def _when_overridden(cls, value: Any, info: ValidationInfo) -> Any:
        """Said before the reason itself is checked."""
        _json_object(value)
        if value is not None and info.data.get("outcome") != "overridden":
            _fail(f"{PATH} belongs to an overridden outcome")
        return value


class FeedbackBody(_Contract):
    feedback: Annotated[list[FeedbackItem], _array(f"{PATH} must be an array of feedback objects")]


M = TypeVar("M", bound=BaseModel)


# --- reading a body by the contract --------------------------------------------------------------------


def checked(model: type[M], data: Mapping[str, Any], service: CdsService) -> M:
    """``data`` read by ``model`` for ``service``, or ``BadRequest`` with the first failure's message and
    code."""
    try:
        return model.model_validate(data, context={"service": service})
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_context=False, include_input=False)[0]
        raise BadRequest(*_message(first)) from None


def _message(error: Any) -> tuple[str, str]:
    """A failure's message (its path put in) and code."""
    path = _path(error["loc"])
    message: str = error["msg"]
    if error["type"] not in _OUR_CODES:  # a check of pydantic's own: none is expected, each field has ours
        return f"{path}: {message}", "invalid-request"
    return (path + message[len(PATH) :] if message.startswith(PATH) else message), error["type"]


_OUR_CODES = ("invalid-request", "field-too-long", "control-character", "too-many-draft-orders")


def _path(loc: tuple[int | str, ...]) -> str:
    """``("feedback", 0, "card")`` -> ``feedback[0].card``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path


def request_body_schema(model: type[BaseModel]) -> Json:
    """The OpenAPI ``requestBody`` of a route whose body is read by ``model`` (its definitions inlined: the
    models are not recursive)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(definitions[node["$ref"].rsplit("/", 1)[1]])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    body = {"required": True, "content": {"application/json": {"schema": inline(schema)}}}
    return {"requestBody": body}
