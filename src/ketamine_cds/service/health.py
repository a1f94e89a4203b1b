"""Liveness and readiness, for load balancers and orchestrators (no authentication, no patient data).

``GET /healthz``: the process answers (its event loop runs); it says nothing about the database, so an
orchestrator does not restart a service whose database is merely away. ``GET /readyz``: the database of the
audit trail answers a query (on PostgreSQL, after reconnecting if the connection was lost); 503 with
``Retry-After`` when it does not, so that a load balancer sends no hook calls that could only be answered 503.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from .store import RETRY_AFTER_S

log = logging.getLogger("ketamine_cds.service.health")
router = APIRouter(tags=["Operations"])
_NO_STORE = {"Cache-Control": "no-store"}


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "alive"}, headers=_NO_STORE)


@router.get(
    "/readyz",
    summary="Readiness: the audit database answers",
    responses={503: {"description": "The database cannot be reached; try again after Retry-After"}},
)
async def readyz(request: Request) -> JSONResponse:
    store = request.app.state.store
    database = "postgresql" if request.app.state.settings.database_url else "sqlite"
    try:
        await run_in_threadpool(store.ping)
    except Exception as exc:
        log.warning("not ready: the %s database cannot be used (%s)", database, type(exc).__name__)
        return JSONResponse(
            {"status": "unavailable", "database": database, "error": "the audit database cannot be reached"},
            status_code=503,
            headers={**_NO_STORE, "Retry-After": RETRY_AFTER_S},
        )
    return JSONResponse({"status": "ready", "database": database}, headers=_NO_STORE)
