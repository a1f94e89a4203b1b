"""CDS Hooks 2.0: discovery, the ketamine order-select, order-sign and patient-view services, and their
feedback endpoints.

An order hook call: parse and check the request (400 when malformed, 404 for an unknown service); find the
ketamine MedicationRequests among ``context.draftOrders`` (at order-select only the selected ones); without
one, answer ``{"cards": []}`` at once. Otherwise gather the record (``record.py``: the prefetch, else the
client's FHIR server, else named as not read), assess each ketamine order with the engine, turn the
assessment into cards (``cards.py``) and record it in the audit trail before answering. Data that could not
be had is passed to the engine as unknown, and a card names it; the call is answered 412 only when the patient
cannot be read at all (the order is in the request). patient-view is ``patient_view.py``'s.

The hook handler runs on the event loop: with a complete prefetch (the usual case) the work is a fraction of
a millisecond of computing, and a hop to a pool thread and back would cost a third as much again. What can
block goes elsewhere: reads from the client's FHIR server and the assessment of an unusually large record
run in the thread pool; the audit trail write goes through ``store.AuditWriter``, which commits SQLite rows
from the loop only when nothing holds the database, and otherwise (and always on PostgreSQL) on its own
thread.

The package, by concern: ``discovery`` (the services and their prefetch templates), ``contract`` (the request
as it must be sent, and the 400s), ``request`` (a hook call's request read), ``gather`` (the record: prefetch,
FHIR server, what could not be read), ``orders`` (order-select and order-sign answered), ``call`` (one call:
its audit trail rows and its answer), ``feedback`` (feedback on cards) and ``routes`` (the HTTP routes).
"""

from __future__ import annotations

from .call import Call, error_response, log_unexpected
from .contract import BadRequest
from .discovery import SELECT_ID, SERVICE_IDS, SIGN_ID, VIEW_ID, CdsService, discovery_document, services
from .feedback import feedback_records
from .gather import PreconditionFailed, context_of, precondition, reader_for, with_unknowns
from .request import DraftOrder, HookRequest, parse_hook_request
from .routes import CORS_HEADERS, DEV_WARNING_HEADER, router

__all__ = [
    "CORS_HEADERS",
    "DEV_WARNING_HEADER",
    "SELECT_ID",
    "SERVICE_IDS",
    "SIGN_ID",
    "VIEW_ID",
    "BadRequest",
    "Call",
    "CdsService",
    "DraftOrder",
    "HookRequest",
    "PreconditionFailed",
    "context_of",
    "discovery_document",
    "error_response",
    "feedback_records",
    "log_unexpected",
    "parse_hook_request",
    "precondition",
    "reader_for",
    "router",
    "services",
    "with_unknowns",
]
