"""Reading event streams in the tests: every test reads SSE through the conformance
client's WHATWG parser (conformance/sse.py, the one the ``sse-parse`` case uses), never
by splitting text itself. These are its shapes the tests need."""

from __future__ import annotations

from collections.abc import Iterable

from conformance.sse import SSEComment, SSEMessage, SSEParser

__all__ = ["SSEComment", "SSEMessage", "SSEParser", "first_event", "nothing_after", "parse", "sse_data", "sse_events"]

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


def nothing_after(parser: SSEParser) -> bool:
    """The last event ends the stream: no comment after it, nothing unfinished."""
    n = len(parser.events)
    return n > 0 and all(c.events_before < n for c in parser.comments) and not parser.unfinished


def first_event(body: bytes | str) -> tuple[SSEMessage, SSEParser]:
    """The first event, and the parser as it stood when that event was dispatched (the
    ``retry`` it had read by then, the comments before it)."""
    data = body.encode() if isinstance(body, str) else body
    parser = SSEParser()
    for i in range(len(data)):
        if parser.feed(data[i : i + 1]):
            return parser.events[0], parser
    raise AssertionError(f"no complete event in {data[:200]!r}")
