"""The CDS Hooks routes: discovery, a service call, feedback and the CORS preflight, with CORS on every
answer (errors included) and their OpenAPI descriptions. Same order of answers everywhere: 401, then 404,
then 400."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..._kb import KnowledgeBase
from .. import prefetch as pf
from ..auth import authenticate
from ..settings import Settings
from ..store import Store
from .call import Call, error_response, precondition_failed
from .contract import BadRequest, Body, FeedbackBody, HookRequestBody, json_body, request_body_schema
from .discovery import SERVICE_IDS, discovery_document, services
from .feedback import feedback_records
from .gather import PreconditionFailed, reader_for
from .orders import answer_orders
from .request import parse_hook_request

log = logging.getLogger("ketamine_cds.service.hooks")
Json = dict[str, Any]

# development warning are exposed. A preflight allows the request headers the service reads.
DEV_WARNING_HEADER = "X-Ketamine-CDS-Warning"
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": f"WWW-Authenticate, Retry-After, {DEV_WARNING_HEADER}",
}
READ_HEADERS = ("Authorization", "Content-Type", "Accept", "Accept-Language", "Content-Language")
PREFLIGHT_HEADERS = {
    **CORS_HEADERS,
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": ", ".join(READ_HEADERS),
    "Access-Control-Max-Age": "600",
}


class _CORSRoute(APIRoute):
    """CORS on every CDS Hooks response, errors included (CDS Hooks 2.0: browser-based clients need it)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_cors(request: Request) -> Response:
            try:
                response = await handler(request)
            except StarletteHTTPException as exc:
                exc.headers = {**(exc.headers or {}), **CORS_HEADERS}
                raise
            response.headers.update(CORS_HEADERS)
            return response

        return with_cors


router = APIRouter(route_class=_CORSRoute, tags=["CDS Hooks"])


JsonBody = Annotated[Body, Depends(json_body)]
# The OpenAPI document lists the service ids; any other id is answered 404 by the handler (not 422).
_SERVICE_ID = "a service id from discovery"
ServiceId = Annotated[str, Path(description=_SERVICE_ID, json_schema_extra={"enum": SERVICE_IDS})]
Issuer = Annotated[str | None, Depends(authenticate)]
_SERVICE_ID_PARAMETER: Json = {
    "name": "service_id",
    "in": "path",
    "required": True,
    "description": _SERVICE_ID,
    "schema": {"type": "string", "title": "Service Id", "enum": SERVICE_IDS},
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "Malformed request",
        401: "No valid JWT",
        404: "Unknown service",
        412: "The patient (patient-view: the ketamine orders) not prefetched, nor readable from fhirServer",
        503: "The database (audit trail, feedback, token ids) is unavailable; try again after Retry-After",
    }
    return {code: {"description": text[code]} for code in codes}


@router.get("/cds-services", summary="CDS Hooks discovery")
def discovery(request: Request) -> JSONResponse:
    return JSONResponse(discovery_document(request.app.state.kb))


@router.options("/cds-services", include_in_schema=False)
@router.options("/cds-services/{service_id}", include_in_schema=False)
@router.options("/cds-services/{service_id}/feedback", include_in_schema=False)
def preflight(request: Request) -> Response:
    """A CORS preflight: every header the service reads is allowed, whichever the browser asks about."""
    return Response(status_code=204, headers=PREFLIGHT_HEADERS)


@router.post(
    "/cds-services/{service_id}",
    summary="Call a CDS service (order-select, order-sign or patient-view)",
    openapi_extra={**request_body_schema(HookRequestBody), "parameters": [_SERVICE_ID_PARAMETER]},
    responses=_errors(400, 401, 404, 412, 503),
)
async def call_service(request: Request) -> JSONResponse:
    # The hot path: the caller, the path and the body are read here, not declared as dependencies (the
    # feedback route's style), which spares every call FastAPI's dependency solving (tens of us). Same
    # order of answers: 401, then 404, then 400.
    started, received_at = time.perf_counter(), time.monotonic()
    issuer = await authenticate(request)
    kb: KnowledgeBase = request.app.state.kb
    service_id = request.path_params["service_id"]
    service = services(kb).get(service_id)
    if service is None:
        return error_response(404, f"no CDS service {service_id!r}; see GET /cds-services")
    body = await json_body(request)
    if body.data is None:
        return error_response(
            400, body.error or "a JSON object is required", code=body.code or "invalid-request"
        )
    try:
        req = parse_hook_request(body.data, service)
    except BadRequest as exc:
        return error_response(400, str(exc), code=exc.code)
    call = Call(request, req, service, issuer, started, reader_for(req, request, received_at))
    try:
        if service.hook == "patient-view":
            from ..patient_view import answer_patient_view

            return await answer_patient_view(call)
        return await answer_orders(call)
    except pf.PrefetchError as exc:
        return error_response(400, str(exc), code="invalid-request")
    except PreconditionFailed as exc:
        return await precondition_failed(call, exc)


@router.post(
    "/cds-services/{service_id}/feedback",
    summary="Feedback on cards (accepted or overridden)",
    openapi_extra=request_body_schema(FeedbackBody),
    responses=_errors(400, 401, 404, 503),
)
def feedback(service_id: ServiceId, request: Request, issuer: Issuer, body: JsonBody) -> JSONResponse:
    _, kb, store = _app_state(request)
    service = services(kb).get(service_id)
    if service is None:
        return error_response(404, f"no CDS service {service_id!r}; see GET /cds-services")
    if body.data is None:
        return error_response(
            400, body.error or "a JSON object is required", code=body.code or "invalid-request"
        )
    try:
        records = feedback_records(body.data, service, issuer)
    except BadRequest as exc:
        return error_response(400, str(exc), code=exc.code)
    try:
        store.record_feedback(records)  # committed before it returns
    except Exception as exc:
        log.error("feedback not stored (%s)", type(exc).__name__)
        return error_response(503, "the feedback could not be stored; send it again", retry=True)
    return JSONResponse({"received": len(records)})


def _app_state(request: Request) -> tuple[Settings, KnowledgeBase, Store]:
    state = request.app.state
    return state.settings, state.kb, state.store
