"""Reading event streams in the tests: every test reads SSE through the conformance
client's WHATWG parser (conformance/sse.py, the one the ``sse-parse`` case uses), never
by splitting text itself. These are its shapes the tests need."""

from __future__ import annotations

from collections.abc import Iterable

from conformance.sse import SSEComment, SSEMessage, SSEParser

__all__ = ["SSEComment", "SSEMessage", "SSEParser", "parse", "sse_data", "sse_events"]

Body = bytes | str | Iterable[bytes]


def parse(body: Body) -> SSEParser:
    """A whole body (bytes, text, or the pieces as they came), parsed and closed."""
    parser = SSEParser()
    if isinstance(body, str):
        body = body.encode()
    for piece in [body] if isinstance(body, bytes) else body:
        parser.feed(piece)
    parser.close()
    return parser


def sse_events(body: Body) -> list[SSEMessage]:
    """The events an EventSource would dispatch."""
    return parse(body).events


def sse_data(body: Body) -> list[str]:
    """The data of each event."""
    return [event.data for event in parse(body).events]
