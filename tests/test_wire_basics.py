"""End-to-end on a real uvicorn: negotiation, headers, framing on the wire, HEAD,
HTTP/1.0, end sentinel, per-stream overrides."""

from __future__ import annotations

import time

import anyio
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgi_stream import Event, StreamMiddleware, TokenStream
from conformance.clients import H1Client
from conformance.sse import parse_sse as parse

from .support.layers import Ends
from .support.waiting import wait_for

TOKENS = ["Hel", "lo", " wör", "ld", " 😀", "\nnext line"]


def make_app(probe=None, **mw):
    async def tokens(request):
        async def gen():
            if probe is not None:
                probe.started = time.monotonic()
            try:
                for t in TOKENS:
                    yield t
                    await anyio.sleep(0)
            finally:
                if probe is not None:
                    probe.mark_finally()

        return TokenStream(gen())

    async def forced(request):
        return TokenStream(iter(["a", "b"]), format="ndjson")

    async def done(request):
        return TokenStream(iter([{"n": 1}, {"n": 2}]), format="sse", end="[DONE]")

    async def events(request):
        return TokenStream(iter([Event(data="x", event="delta", id="1"), Event(comment="c"), "y"]), format="sse")

    async def custom(request):
        return TokenStream(
            iter(["x"]),
            status_code=201,
            headers={"X-Request-Id": "abc", "Connection": "close", "Content-Length": "99", "Cache-Control": "no-store"},
        )

    async def plain(request):
        return PlainTextResponse("not a stream")

    app = Starlette(
        routes=[
            Route("/tokens", tokens, methods=["GET", "POST"]),
            Route("/forced", forced),
            Route("/done", done),
            Route("/events", events),
            Route("/custom", custom),
            Route("/plain", plain),
        ]
    )
    app.add_middleware(StreamMiddleware, **mw)
    return app


@pytest.mark.parametrize(
    "accept, content_type",
    [
        ("text/event-stream", "text/event-stream; charset=utf-8"),
        ("application/x-ndjson", "application/x-ndjson"),
        ("application/jsonl", "application/jsonl"),
        ("text/plain", "text/plain; charset=utf-8"),
        (None, "text/plain; charset=utf-8"),
    ],
)
def test_negotiated_stream_headers(server, accept, content_type) -> None:
    srv = server(make_app())
    with H1Client("127.0.0.1", srv.port) as c:
        r = c.fetch("GET", "/tokens", [("accept", accept)] if accept else [])
    assert r.status == 200
    assert r.header_map["content-type"] == content_type
    assert r.header_map["cache-control"] == "no-cache"
    assert r.header_map["x-accel-buffering"] == "no"
    assert r.header_map["vary"] == "Accept"
    assert "content-length" not in r.header_map
    assert r.header_map["transfer-encoding"] == "chunked"
    assert r.complete


def test_sse_body_parses_per_spec(server) -> None:
    srv = server(make_app())
    with H1Client("127.0.0.1", srv.port) as c:
        r = c.fetch("GET", "/tokens", [("accept", "text/event-stream")])
    assert [e.data for e in parse(r.body).events] == TOKENS
    assert len(r.chunks) == len(TOKENS)  # one chunk per token


def test_ndjson_and_text_bodies(server) -> None:
    import json

    srv = server(make_app())
    with H1Client("127.0.0.1", srv.port) as c:
        r = c.fetch("GET", "/tokens", [("accept", "application/x-ndjson")])
    assert [json.loads(line) for line in r.body.decode().splitlines()] == TOKENS
    with H1Client("127.0.0.1", srv.port) as c:
        r = c.fetch("GET", "/tokens")
    assert r.body.decode() == "".join(TOKENS)


def test_app_wide_default_and_per_stream_override(server) -> None:
    srv = server(make_app(default_format="sse"))
    with H1Client("127.0.0.1", srv.port) as c:
        r = c.fetch("GET", "/tokens", [("accept", "*/*")])
    assert r.header_map["content-type"].startswith("text/event-stream")
    with H1Client("127.0.0.1", srv.port) as c:
        r = c.fetch("GET", "/forced", [("accept", "text/event-stream")])
    assert r.header_map["content-type"] == "application/x-ndjson"
    assert "vary" not in r.header_map  # not negotiated
    assert r.body == b'"a"\n"b"\n'


def test_end_sentinel_and_json_tokens(server) -> None:
    srv = server(make_app())
    with H1Client("127.0.0.1", srv.port) as c:
        r = c.fetch("GET", "/done")
    assert r.body == b'data: {"n":1}\n\ndata: {"n":2}\n\ndata: [DONE]\n\n'


def test_event_objects_on_the_wire(server) -> None:
    srv = server(make_app())
    with H1Client("127.0.0.1", srv.port) as c:
        r = c.fetch("GET", "/events")
    parsed = parse(r.body)
    assert [(e.type, e.data, e.last_event_id) for e in parsed.events] == [("delta", "x", "1"), ("message", "y", "1")]
    assert [c.text for c in parsed.comments] == [" c"]


def test_connection_specific_and_length_headers_never_sent(server) -> None:
    srv = server(make_app())
    with H1Client("127.0.0.1", srv.port) as c:
        r = c.fetch("GET", "/custom")
    assert r.status == 201
    assert r.header_map["x-request-id"] == "abc"
    assert r.header_map["cache-control"] == "no-store"  # the app's own choice is kept
    assert "content-length" not in r.header_map
    names = [k.lower() for k, _ in r.headers]
    assert b"connection" not in names and b"keep-alive" not in names


def test_head_sends_headers_only_and_never_starts_the_generator(server, probe) -> None:
    ends = Ends(make_app(probe))
    srv = server(ends)
    with H1Client("127.0.0.1", srv.port) as c:
        r = c.fetch("HEAD", "/tokens", [("accept", "text/event-stream")])
    assert r.status == 200
    assert r.header_map["content-type"].startswith("text/event-stream")
    assert r.body == b""
    wait_for(lambda: ends.ended)  # over for the server
    assert probe.started is None


def test_http_1_0_gets_a_close_delimited_body(server) -> None:
    srv = server(make_app())
    with H1Client("127.0.0.1", srv.port) as c:
        r = c.fetch("GET", "/tokens", [("accept", "text/event-stream")], http_version="1.0")
    assert r.status == 200
    assert r.http_version in ("1.1", "1.0")
    assert "transfer-encoding" not in r.header_map
    assert "content-length" not in r.header_map
    assert [e.data for e in parse(r.body).events] == TOKENS


def test_keep_alive_connection_serves_a_second_request_after_a_stream(server) -> None:
    srv = server(make_app())
    with H1Client("127.0.0.1", srv.port) as c:
        first = c.fetch("GET", "/tokens", [("accept", "text/event-stream")])
        second = c.fetch("GET", "/plain")
    assert first.complete and second.body == b"not a stream"


def test_non_stream_responses_pass_untouched(server) -> None:
    srv = server(make_app())
    with H1Client("127.0.0.1", srv.port) as c:
        r = c.fetch("GET", "/plain")
    assert r.header_map["content-length"] == "12"
    assert "x-accel-buffering" not in r.header_map
