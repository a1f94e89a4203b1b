"""Values from a request as a log line may show them: one line, bounded.

A client chooses the path it calls and the strings it sends. Logged as they are, a line break in them would
start a line of the client's making (a forged entry), and a string of megabytes would be written whole. Every
value a caller chose goes through :func:`loggable` before it reaches a log: characters that are not printable
(control characters, line and paragraph separators, format characters such as bidirectional overrides) are
shown escaped (``\\n``, ``\\u2028``), a backslash as ``\\\\`` so that an escape cannot be faked, and the text
is cut at ``limit`` characters with the length said.
"""

from __future__ import annotations

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
