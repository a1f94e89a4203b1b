"""What reaches the log: a request's values one line and bounded; the HTTP client's URLs without their path.

A client chooses the path it calls and the strings it sends. Logged as they are, a line break in them would
start a line of the client's making (a forged entry), and a string of megabytes would be written whole. Every
value a caller chose goes through :func:`loggable` before it reaches a log: characters that are not printable
(control characters, line and paragraph separators, format characters such as bidirectional overrides) are
shown escaped (``\\n``, ``\\u2028``), a backslash as ``\\\\`` so that an escape cannot be faked, and the text
is cut at ``limit`` characters with the length said.
"""

from __future__ import annotations

import logging
import re

LOG_LIMIT = 200


def loggable(value: object, limit: int = LOG_LIMIT) -> str:
    text = str(value)
    shown = text[:limit]
    if not shown.isprintable() or "\\" in shown:
        shown = "".join(_escaped(ch) for ch in shown)
    if len(text) > limit:
        shown += f"... ({len(text)} characters)"
    return shown


def _escaped(ch: str) -> str:
    if ch == "\\":
        return "\\\\"
    if ch.isprintable():
        return ch
    code = ord(ch)
    if ch in "\n\r\t":
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch]
    return f"\\x{code:02x}" if code < 0x100 else (f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")


# The HTTP client logs each request's URL (httpx at INFO, "HTTP Request: GET https://ehr/fhir/Condition?
# patient=..."); a FHIR read's URL holds the patient's id. Its loggers are kept at WARNING, and, whatever
# level an operator's logging configuration later gives them, a filter on each shows a URL as its origin only.
_CLIENT_LOGGERS = ("httpx", "httpcore")
_URL = re.compile(r"(?P<origin>\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s\"'<>?#]*)[^\s\"'<>]*")


class NoURLPaths(logging.Filter):
    """Rewrites a record so that every URL in its message shows only its origin (``https://ehr.example/...``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: say so, without its arguments
            message = str(record.msg)
        record.msg = _URL.sub(lambda m: m.group("origin") + "/...", message)
        record.args = None
        return True


def keep_urls_out_of_logs() -> None:
    """Lower the HTTP client's loggers to WARNING and filter the URLs out of what they still log."""
    names = [
        name
        for name in list(logging.root.manager.loggerDict)
        if any(name == prefix or name.startswith(prefix + ".") for prefix in _CLIENT_LOGGERS)
    ]
    for name in {*names, *_CLIENT_LOGGERS}:
        logger = logging.getLogger(name)
        if name in _CLIENT_LOGGERS:
            logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
        if not any(isinstance(f, NoURLPaths) for f in logger.filters):
            logger.addFilter(NoURLPaths())
