"""The FastAPI application: CDS Hooks routes, the clinician page, error handling and start-up."""

from __future__ import annotations

import base64
import gc
import hashlib
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._kb import load_knowledge
from .._site import load_site
from .fhir_client import server_prefixes
from .logsafe import keep_urls_out_of_logs
from .settings import Settings
from .store import AuditWriter, open_store

log = logging.getLogger("ketamine_cds.service")
DEV_WARNING = "AUTHENTICATION DISABLED (development flag): any caller is accepted"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = (settings or Settings.from_env()).prepared()
    # httpx logs every request's URL at INFO, and a FHIR read's URL holds the patient's id: no identifier may
    # reach a log, so its request lines are kept out (its warnings and errors still show), and any URL it logs
    # anyway (an operator's configuration may turn it up) shows only its origin.
    keep_urls_out_of_logs()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.allow_unauthenticated:
            log.warning("*** %s ***", DEV_WARNING)
        # What is alive now (modules, the knowledge base, the app) lives as long as the process: taken out of
        # the collector's reach, a full collection no longer walks it, which stopped pauses of tens of ms
        # in the middle of hook calls (bench/bench_hooks.py: max 49 -> 7 ms at 1 client).
        gc.collect()
        gc.freeze()
        yield
        app.state.audit.close()  # commits what is queued before the store closes
        app.state.store.close()

    kb = load_knowledge()
    app = FastAPI(
        title="ketamine-cds",
        version=kb.version,
        lifespan=lifespan,
        description="CDS Hooks 2.0 service for ketamine in acute and chronic pain",
        docs_url=None,  # Swagger UI and ReDoc load scripts from a CDN: /docs only when asked for (_add_docs)
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.kb = kb
    app.state.site = load_site(settings.site, kb) if settings.site else None  # SiteError: stops start-up
    if app.state.site is not None:
        log.info("site protocol in force: %s (%s)", app.state.site.label, app.state.site.digest)
    app.state.fhir_servers = server_prefixes(settings.fhir_servers)  # FhirServerListError: stops start-up
    if settings.fhir_servers:
        log.info("FHIR servers this service may read (and no other): %s", ", ".join(settings.fhir_servers))
    app.state.store = open_store(settings)
    app.state.audit = AuditWriter(app.state.store)
    _add_error_handlers(app)
    if settings.allow_unauthenticated:
        _announce_dev_mode(app)
    from . import auth, health, hooks, page

    auth.configure(app)  # a malformed trust list stops start-up with a precise message
    app.include_router(hooks.router)
    app.include_router(page.router)
    app.include_router(health.router)
    if settings.docs:
        _add_docs(app)
    return app


def _add_docs(app: FastAPI) -> None:
    """Swagger UI at /docs, as FastAPI draws it (its script and style from the jsDelivr CDN), under a
    Content-Security-Policy: scripts from that CDN and the page's one inline script (by its hash) only, data
    from this service only, no framing."""
    from fastapi.openapi.docs import get_swagger_ui_html

    page = get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} API")
    body = bytes(page.body)
    inline = re.findall(rb"<script>(.*?)</script>", body, re.DOTALL)
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s).digest()).decode()}'" for s in inline)
    headers = {
        "Content-Security-Policy": (
            f"default-src 'none'; script-src {_CDN} {hashes}; style-src {_CDN} 'unsafe-inline'; "
            f"img-src 'self' data: https://fastapi.tiangolo.com; connect-src 'self'; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(body, headers=headers)


_CDN = "https://cdn.jsdelivr.net"


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        return JSONResponse({"error": "invalid request", "errors": errors}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def _announce_dev_mode(app: FastAPI) -> None:
    @app.middleware("http")
    async def warn(request: Request, call_next):  # type: ignore[no-untyped-def]
        response: Response = await call_next(request)
        response.headers["X-Ketamine-CDS-Warning"] = DEV_WARNING
        return response
