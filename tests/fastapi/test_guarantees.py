"""What the passthrough promises holds for FastAPI's own SSE and JSON Lines streams, async
and sync: keepalive over silences, stream headers, shutdown drain (disconnect and send
timeout: test_close.py)."""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import AsyncIterable

import anyio
import pytest
from fastapi import FastAPI
from starlette.middleware.gzip import GZipMiddleware

from asgi_stream import CancelReason, Outcome, StreamMiddleware
from conformance.clients.h1 import H1Client

from ..support.sse import parse
from ..support.waiting import wait_for
from .app import KIND_IDS, KINDS


def _events_and_comments(body: bytes) -> tuple[list[object], list[tuple[str, int]]]:
    """The JSON of each event (FastAPI versions differ in JSON spacing), and each comment
    with the number of events before it."""
    parsed = parse(body)
    assert all(e.type == "message" for e in parsed.events) and not parsed.unfinished.strip(), body
    return [json.loads(e.data) for e in parsed.events], [(c.text, c.events_before) for c in parsed.comments]


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_sse_silence_gets_keepalive_comments_between_events(with_line, key, mode) -> None:
    """1.5 s of silence between two events, keepalive 0.3 s: comments fill it, each at an
    event boundary, and the events arrive intact and in order."""
    response = with_line.fetch(f"/sse/{mode}/{key}?n=2&gap_after=0&gap=1.5")
    assert response.complete
    events, comments = _events_and_comments(response.body)
    assert events == [{"n": 0, "pad": ""}, {"n": 1, "pad": ""}]
    assert len(comments) >= 2 and set(comments) == {(" keepalive", 1)}  # all between the two events
    assert with_line.probes.record(key).keepalives == len(comments)


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_json_lines_silence_gets_no_keepalive_bytes(with_line, key, mode) -> None:
    """JSON Lines has no comment syntax: the silence stays silent."""
    response = with_line.fetch(f"/jsonl/{mode}/{key}?n=2&gap_after=0&gap=1.0")
    assert response.complete
    assert [json.loads(line) for line in response.body.splitlines()] == [{"n": 0, "pad": ""}, {"n": 1, "pad": ""}]
    assert with_line.probes.record(key).keepalives == 0


@pytest.mark.parametrize(("fmt", "mode"), KINDS, ids=KIND_IDS)
def test_stream_headers_once_each(with_line, key, fmt, mode) -> None:
    response = with_line.fetch(f"/{fmt}/{mode}/{key}?n=1")
    names = [name for name, _ in response.headers]
    for name in (b"content-type", b"cache-control", b"x-accel-buffering"):
        assert names.count(name) == 1, name
    assert response.header("cache-control") == b"no-cache"
    assert response.header("x-accel-buffering") == b"no"
    assert b"content-length" not in names and response.chunked
    expected = b"text/event-stream; charset=utf-8" if fmt == "sse" else b"application/jsonl"
    assert response.header("content-type") == expected


@pytest.mark.parametrize(("fmt", "mode"), KINDS, ids=KIND_IDS)
def test_shutdown_drains_then_ends_the_body_cleanly_and_closes_the_generator(fresh, key, fmt, mode) -> None:
    """``begin_shutdown()`` (what SIGINT/SIGTERM start): the stream keeps flowing for
    ``shutdown_grace``, then its generator is closed and the body ends with its final chunk."""
    served = fresh(shutdown_grace=1.0, keepalive=None)
    trace = served.probes.trace(key)
    client, response = served.open(f"/{fmt}/{mode}/{key}?delay=0.05")
    with client:
        client.read_chunks(2, deadline=time.monotonic() + 15)
        middleware = served.middleware()
        began = time.monotonic()
        served.running.loop.call_soon_threadsafe(middleware.begin_shutdown)
        client.read_response(deadline=time.monotonic() + 20)
    assert response.complete, "the body ended with its terminating chunk"
    finally_at = trace.wait_finally(10.0)
    assert finally_at - began >= 0.8, "the grace period was honoured"
    assert any(t > began + 0.5 for t in trace.produced), "the stream kept flowing during the grace"
    assert finally_at - began < 8.0
    record = served.probes.record(key)
    assert record.outcome is Outcome.CANCELLED and record.cancel_reason is CancelReason.SHUTDOWN
    if mode == "sync":
        assert trace.finally_thread.startswith("asgi-stream ")
        assert len(trace.steps_started) == len(trace.produced)


@pytest.mark.parametrize(("fmt", "mode"), KINDS, ids=KIND_IDS)
def test_stream_ending_within_the_grace_completes(fresh, key, fmt, mode) -> None:
    served = fresh(shutdown_grace=5.0)
    client, response = served.open(f"/{fmt}/{mode}/{key}?n=8&delay=0.1")
    with client:
        client.read_chunks(1, deadline=time.monotonic() + 15)
        served.running.loop.call_soon_threadsafe(served.middleware().begin_shutdown)
        client.read_response(deadline=time.monotonic() + 20)
    assert response.complete
    assert served.probes.record(key).outcome is Outcome.COMPLETED
    assert len(served.probes.trace(key).produced) == 8


def test_json_lines_behind_gzip_still_stream_line_by_line(server) -> None:
    """GZipMiddleware added before the line (so inside StreamMiddleware) must not buffer a
    JSON Lines stream: each line reaches the client while the generator is still running."""
    app = FastAPI()
    released = anyio.Event()
    state: dict[str, object] = {}

    @app.get("/lines")
    async def lines() -> AsyncIterable[dict[str, int]]:
        state["released"] = released
        yield {"n": 0}
        with anyio.move_on_after(10):
            await released.wait()
        yield {"n": 1}

    app.add_middleware(GZipMiddleware, minimum_size=1)
    app.add_middleware(StreamMiddleware)
    running = server(app)
    with H1Client(running.host, running.port, timeout=15.0) as client:
        response = client.request("GET", "/lines", [("accept-encoding", "gzip")])
        client.read_head(deadline=time.monotonic() + 15)
        try:
            client.read_chunks(1, deadline=time.monotonic() + 3)
            first = response.body
        finally:
            wait_for(lambda: "released" in state, 5.0, message="generator started")
            running.loop.call_soon_threadsafe(state["released"].set)
        client.read_response(deadline=time.monotonic() + 15)
    if response.header("content-encoding") == b"gzip":  # compressed, but flushed line by line
        first = zlib.decompressobj(wbits=31).decompress(first)
    assert first == b'{"n":0}\n', f"the first line was withheld: {first!r}"


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_fastapis_own_ping_passes_through(fresh, key, mode, monkeypatch) -> None:
    """FastAPI's ``: ping`` (every 15 s; 0.3 s here) reaches the client unchanged."""
    import fastapi.routing

    if not hasattr(fastapi.routing, "_PING_INTERVAL"):
        pytest.skip("this FastAPI keeps its ping interval elsewhere")
    monkeypatch.setattr(fastapi.routing, "_PING_INTERVAL", 0.3)
    served = fresh(keepalive=None)
    response = served.fetch(f"/sse/{mode}/{key}?n=2&gap_after=0&gap=1.5")
    assert response.complete
    events, comments = _events_and_comments(response.body)
    assert events == [{"n": 0, "pad": ""}, {"n": 1, "pad": ""}]
    assert len(comments) >= 2 and set(comments) == {(" ping", 1)}  # all between the two events


def test_json_lines_are_not_compressed_by_an_outer_gzip(server) -> None:
    """The README's compression promise (NDJSON streams marked ``Content-Encoding:
    identity``, left alone by GZipMiddleware in either order) for FastAPI's JSON Lines."""
    app = FastAPI()

    @app.get("/lines")
    async def lines() -> AsyncIterable[dict[str, int]]:
        for n in range(3):
            yield {"n": n}

    app.add_middleware(StreamMiddleware)
    app.add_middleware(GZipMiddleware, minimum_size=1)  # added last: the outer one
    running = server(app)
    with H1Client(running.host, running.port, timeout=15.0) as client:
        response = client.request("GET", "/lines", [("accept-encoding", "gzip")])
        client.read_response(deadline=time.monotonic() + 15)
    assert response.complete
    assert response.header("content-encoding") in (None, b"identity")
    assert response.body == b'{"n":0}\n{"n":1}\n{"n":2}\n'
