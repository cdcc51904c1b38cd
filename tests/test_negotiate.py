"""Accept negotiation (RFC 9110 §12.5.1): formats, q-values, defaults."""

from __future__ import annotations

import pytest

from asgi_stream.negotiate import negotiate


@pytest.mark.parametrize(
    "accept, default, expected",
    [
        ("text/event-stream", "text", ("sse", "text/event-stream")),
        ("application/x-ndjson", "text", ("ndjson", "application/x-ndjson")),
        ("application/jsonl", "text", ("ndjson", "application/jsonl")),
        ("text/plain", "sse", ("text", "text/plain")),
        (None, "text", ("text", "text/plain")),
        ("", "sse", ("sse", "text/event-stream")),
        ("*/*", "ndjson", ("ndjson", "application/x-ndjson")),
        ("application/json", "text", ("text", "text/plain")),
        ("text/html,application/xhtml+xml,*/*;q=0.8", "sse", ("sse", "text/event-stream")),
        # q-values decide between explicit offers
        ("text/event-stream;q=0.5, application/x-ndjson", "text", ("ndjson", "application/x-ndjson")),
        ("text/event-stream;q=0.9, application/x-ndjson;q=0.3", "text", ("sse", "text/event-stream")),
        ("Text/Event-Stream ; Q=1", "text", ("sse", "text/event-stream")),
        # q=0 excludes, even the default
        ("text/event-stream;q=0, */*", "sse", ("ndjson", "application/x-ndjson")),
        ("text/event-stream;q=0, text/plain;q=0.1", "sse", ("text", "text/plain")),
        # an explicit type beats a wildcard of the same weight
        ("*/*, text/event-stream", "text", ("sse", "text/event-stream")),
        # malformed weights/ranges do not crash
        ("text/event-stream;q=abc, text/plain", "sse", ("text", "text/plain")),
        ("garbage, ,;;", "text", ("text", "text/plain")),
    ],
)
def test_negotiate(accept: str | None, default: str, expected: tuple[str, str]) -> None:
    assert tuple(negotiate(accept, default)) == expected


def test_unknown_default_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="default format"):
        negotiate("text/plain", "xml")
