"""Errors: in-band error events after the first byte, the app's own error handling
before it, clear TypeErrors for unsupported tokens, aborted plain-text streams."""

from __future__ import annotations

import json
import logging

import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route

from asgi_stream import Outcome, StreamMiddleware, TokenStream
from conformance.clients import H1Client
from conformance.sse import parse_sse as parse

from .support.waiting import wait_for


def failing_after(n: int, exc: BaseException):
    async def gen():
        for i in range(n):
            yield f"t{i}"
        raise exc

    return gen


def make_app(records, **mw):
    async def mid(request):
        return TokenStream(failing_after(2, RuntimeError("secret internals"))())

    async def early(request):
        return TokenStream(failing_after(0, RuntimeError("before any token"))())

    async def http_early(request):
        return TokenStream(failing_after(0, HTTPException(422, "bad prompt"))())

    async def bad_type(request):
        return TokenStream(iter(["ok", object()]))

    async def exposed(request):
        return TokenStream(
            failing_after(1, ValueError("quota exceeded"))(),
            format="sse",
        )

    app = Starlette(
        routes=[
            Route("/mid", mid),
            Route("/early", early),
            Route("/http-early", http_early),
            Route("/bad-type", bad_type),
            Route("/exposed", exposed),
        ]
    )
    app.add_middleware(StreamMiddleware, on_end=records.append, **mw)
    return app


def test_sse_error_after_first_byte_is_a_framed_event_and_a_clean_end(server, caplog) -> None:
    records = []
    srv = server(make_app(records))
    caplog.set_level(logging.ERROR, logger="asgi_stream")
    with H1Client("127.0.0.1", srv.port) as c:
        r = c.fetch("GET", "/mid", [("accept", "text/event-stream")])
    assert r.status == 200 and r.complete  # the body ended cleanly
    events = parse(r.body).events
    assert [e.data for e in events[:2]] == ["t0", "t1"]
    assert events[2].type == "error"
    payload = json.loads(events[2].data)
    assert payload == {"error": {"type": "internal_error", "message": "The stream failed on the server."}}
    assert b"secret internals" not in r.body  # internals are not leaked
    wait_for(lambda: records)
    assert any("secret internals" in str(rec.exc_info[1]) for rec in caplog.records if rec.exc_info)
    assert records[0].outcome is Outcome.ERROR


def test_ndjson_error_line(server) -> None:
    srv = server(make_app([]))
    with H1Client("127.0.0.1", srv.port) as c:
        r = c.fetch("GET", "/mid", [("accept", "application/x-ndjson")])
    lines = [json.loads(x) for x in r.body.decode().splitlines()]
    assert lines[:2] == ["t0", "t1"]
    assert set(lines[2]) == {"error"}


def test_plain_text_error_aborts_the_response(server) -> None:
    srv = server(make_app([]))
    with H1Client("127.0.0.1", srv.port) as c:
        c.request("GET", "/mid")
        with pytest.raises(Exception, match="incomplete|closed"):
            for _ in c.stream():
                pass


def test_error_before_the_first_token_uses_the_apps_error_handling(server) -> None:
    srv = server(make_app([]))
    with H1Client("127.0.0.1", srv.port) as c:
        r = c.fetch("GET", "/early", [("accept", "text/event-stream")])
    assert r.status == 500
    with H1Client("127.0.0.1", srv.port) as c:
        r = c.fetch("GET", "/http-early", [("accept", "text/event-stream")])
    assert r.status == 422 and b"bad prompt" in r.body


def test_unsupported_token_type_is_a_clear_type_error(server) -> None:
    srv = server(make_app([]))
    with H1Client("127.0.0.1", srv.port) as c:
        r = c.fetch("GET", "/bad-type", [("accept", "text/event-stream")])
    err = parse(r.body).events[-1]
    assert err.type == "error"
    message = json.loads(err.data)["error"]
    assert message["type"] == "UnsupportedTokenError"
    assert "builtins.object" in message["message"]


def test_custom_error_payload(server) -> None:
    def payload(exc, record):
        return {"error": {"message": str(exc), "stream": record.id}}

    srv = server(make_app([], error_payload=payload))
    with H1Client("127.0.0.1", srv.port) as c:
        r = c.fetch("GET", "/exposed")
    data = json.loads(parse(r.body).events[-1].data)
    assert data["error"]["message"] == "quota exceeded"
