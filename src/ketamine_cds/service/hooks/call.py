"""One hook call being answered: its audit trail rows, its answer once they are written (503 when they
cannot be), the 412 when the patient cannot be read, and the JSON error answers of the routes."""

from __future__ import annotations

import datetime as dt
import logging
import time
import traceback
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from ..._kb import KnowledgeBase
from ..._site import Site
from ..cards import BuiltCard
from ..logsafe import loggable
from ..record import Reader
from ..settings import Settings
from ..store import RETRY_AFTER_S, AssessmentRecord, AuditWriter, CardRecord, pseudonym
from .discovery import CdsService
from .gather import PreconditionFailed
from .request import HookRequest

log = logging.getLogger("ketamine_cds.service.hooks")


def error_response(status: int, message: str, *, retry: bool = False, **extra: Any) -> JSONResponse:
    headers = {"Retry-After": RETRY_AFTER_S} if retry else None
    given = {k: v for k, v in extra.items() if v is not None}  # e.g. code: only where there is one
    return JSONResponse({"error": message, **given}, status_code=status, headers=headers)


@dataclass
class Call:
    """One hook call being answered."""

    request: Request
    req: HookRequest
    service: CdsService
    issuer: str | None
    started: float  # time.perf_counter() at arrival
    reader: Reader

    @property
    def settings(self) -> Settings:
        settings: Settings = self.request.app.state.settings
        return settings

    @property
    def kb(self) -> KnowledgeBase:
        kb: KnowledgeBase = self.request.app.state.kb
        return kb

    @property
    def site(self) -> Site | None:
        site: Site | None = getattr(self.request.app.state, "site", None)
        return site

    def latency_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def row(
        self,
        verdict: str | None,
        statements: tuple[str, ...],
        cards: list[BuiltCard],
        unread: list[str],
        kb_version: str | None = None,
    ) -> AssessmentRecord:
        """One audit trail row of this call: an assessment made (with the data it lacked), or a 412 (no
        verdict)."""
        completeness = "precondition-failed" if verdict is None else ("partial" if unread else "full")
        return AssessmentRecord(
            id=str(uuid.uuid4()),
            created_at=dt.datetime.now(dt.UTC),
            service=self.service.id,
            hook=self.req.hook,
            hook_instance=self.req.hook_instance,
            client=self.issuer,
            kb_version=kb_version or self.kb.version,
            verdict=verdict,
            statements=statements,
            patient=pseudonym(self.settings.pseudonym_secret, self.req.patient_id),
            latency_ms=self.latency_ms(),
            cards=tuple(CardRecord(c.card["uuid"], c.statement, c.indicator) for c in cards),
            completeness=completeness,
            unread=tuple(unread),
            site=self.site.label if self.site is not None else None,
        )

    async def answer(self, rows: list[AssessmentRecord], cards: list[BuiltCard], what: str) -> JSONResponse:
        """The cards, once the rows are in the audit trail (503 and no cards if they cannot be written)."""
        try:
            await audit_trail(self.request).write(rows)
        except Exception as exc:
            log.error("audit trail not written (%s): the cards are withheld", type(exc).__name__)
            return error_response(503, "the audit trail could not be written; try again", retry=True)
        log.info(
            "%s %s: %s, %d card(s), verdicts %s%s, %.0f ms",
            self.service.id,
            loggable(self.req.hook_instance),
            what,
            len(cards),
            ",".join(str(r.verdict) for r in rows),
            f", not read: {','.join(rows[0].unread)}" if rows and rows[0].unread else "",
            self.latency_ms(),
        )
        return JSONResponse({"cards": [c.card for c in cards]})


async def precondition_failed(call: Call, exc: PreconditionFailed) -> JSONResponse:
    """412, recorded in the audit trail like every other answer (no verdict, no cards)."""
    log.info("%s %s: 412, %s", call.service.id, loggable(call.req.hook_instance), exc.reason)
    try:
        await audit_trail(call.request).write([call.row(None, (), [], exc.unread)])
    except Exception as error:
        log.error("audit trail not written (%s): the 412 is withheld", type(error).__name__)
        return error_response(503, "the audit trail could not be written; try again", retry=True)
    what = "the ketamine orders" if call.service.hook == "patient-view" else "the ketamine order"
    return error_response(
        412,
        f"the data needed to check {what} is not available: {exc.reason}",
        missingPrefetch=exc.missing,
    )


def audit_trail(request: Request) -> AuditWriter:
    writer: AuditWriter = request.app.state.audit
    return writer


def log_unexpected(exc: Exception, doing: str) -> None:
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("unexpected %s while %s (values withheld):\n%s", type(exc).__name__, doing, frames)
