"""What a log line may show of a value a caller chose: one line, bounded, unambiguous."""

from __future__ import annotations

from ketamine_cds.service.logsafe import loggable


def test_line_breaks_and_other_unprintable_characters_are_escaped() -> None:
    forged = "x\nCRITICAL y\r\tz\x0b\x1b[2J\x85\u2028\u2029\u202e\U000e0001"
    shown = loggable(forged)
    assert shown == "x\\nCRITICAL y\\r\\tz\\x0b\\x1b[2J\\x85\\u2028\\u2029\\u202e\\U000e0001"
    assert len(shown.splitlines()) == 1 and shown.isprintable()


def test_a_backslash_is_doubled_so_an_escape_cannot_be_faked() -> None:
    assert loggable("a\\nb") == "a\\\\nb"
    assert loggable("a\\nb") != loggable("a\nb")


def test_printable_text_is_shown_as_it_is_and_long_text_is_cut_with_its_length() -> None:
    assert loggable("hook-instance é 1") == "hook-instance é 1"
    assert loggable("x" * 10_000_000) == "x" * 200 + "... (10000000 characters)"
    assert loggable("abcdef", limit=3) == "abc... (6 characters)"


def test_the_http_clients_urls_are_logged_without_their_path() -> None:
    import logging

    from ketamine_cds.service.logsafe import NoURLPaths

    record = logging.LogRecord(
        "httpx", logging.INFO, __file__, 1, 'HTTP Request: %s %s "%s %d %s"',
        ("GET", "https://ehr.example:8443/fhir/Condition?patient=MRN-123", "HTTP/1.1", 200, "OK"), None,
    )  # fmt: skip
    assert NoURLPaths().filter(record)
    assert record.getMessage() == 'HTTP Request: GET https://ehr.example:8443/... "HTTP/1.1 200 OK"'
