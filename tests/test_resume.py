"""Resumable streams on one process (MemoryStore): Last-Event-ID resume with no gap or
duplicate, the producer decoupled from the connection, grace expiry, bounds, and the
documented answers for unknown ids and gaps."""

from __future__ import annotations

import json
import time

import anyio
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from asgi_stream import CancelReason, Outcome, StreamMiddleware, TokenStream
from asgi_stream.resume import Limits, MemoryStore
from conformance.clients import H1Client
from conformance.sse import SSEParser as SpecParser

from .support.waiting import wait_for

N = 30


def make_app(records=None, *, interval=0.03, grace=5.0, store=None, finals=None, produced=None):
    async def endpoint(request):
        async def gen():
            try:
                for i in range(N):
                    if produced is not None:
                        produced.append(i)
                    yield f"t{i} "
                    await anyio.sleep(interval)
            finally:
                if finals is not None:
                    finals.append(time.monotonic())

        return TokenStream(gen(), resumable=True, end="[DONE]")

    app = Starlette(routes=[Route("/chat", endpoint), Route("/other", endpoint)])
    app.add_middleware(
        StreamMiddleware,
        resume_store=store or MemoryStore(),
        resume_grace=grace,
        on_end=(records.append if records is not None else None),
    )
    return app


def read_events(c: H1Client, limit: int | None = None):
    parser = SpecParser()
    response = None
    for item in c.stream():
        if hasattr(item, "status"):
            response = item
            continue
        parser.feed(item.data)
        if limit is not None and len(parser.events) >= limit:
            break
    return response, parser


EXPECTED = [f"t{i} " for i in range(N)] + ["[DONE]"]


def _wait_detached(store: MemoryStore, response) -> None:
    """Until the server has seen the client leave: its consumer is detached from the
    stream (the generator runs on, for nobody, its grace period running)."""
    readers = store._streams[response.header_map["x-stream-id"]].readers
    wait_for(lambda: not readers, message="the server never saw the client leave")


def test_every_event_has_an_id_and_the_stream_id_header(server) -> None:
    srv = server(make_app(interval=0))
    with H1Client("127.0.0.1", srv.port) as c:
        c.request("GET", "/chat", [("accept", "text/event-stream")])
        response, parser = read_events(c)
    sid = response.header_map["x-stream-id"]
    assert [e.data for e in parser.events] == EXPECTED
    assert [e.last_event_id for e in parser.events] == [f"{sid}.{i}" for i in range(1, N + 2)]


@pytest.mark.parametrize("via", ["header", "query"])
def test_resume_after_a_dropped_connection_is_exactly_once(server, via) -> None:
    produced: list[int] = []
    store = MemoryStore()
    srv = server(make_app(produced=produced, store=store))
    c = H1Client("127.0.0.1", srv.port)
    c.request("GET", "/chat", [("accept", "text/event-stream")])
    response, first = read_events(c, limit=7)
    c.abort()
    _wait_detached(store, response)
    left = len(produced)
    wait_for(lambda: len(produced) >= min(left + 3, N))  # the generator keeps running while nobody listens
    cursor = first.events[-1].last_event_id
    with H1Client("127.0.0.1", srv.port) as c2:
        if via == "header":
            c2.request("GET", "/chat", [("accept", "text/event-stream"), ("last-event-id", cursor)])
        else:
            c2.request("GET", f"/chat?last_event_id={cursor}", [("accept", "text/event-stream")])
        response2, rest = read_events(c2)
    assert response2.status == 200
    assert [e.data for e in first.events] + [e.data for e in rest.events] == EXPECTED
    assert rest.events[0].last_event_id == f"{response.header_map['x-stream-id']}.8"


def test_resume_after_completion_within_ttl(server) -> None:
    srv = server(make_app(interval=0))
    with H1Client("127.0.0.1", srv.port) as c:
        c.request("GET", "/chat", [("accept", "text/event-stream")])
        response, parser = read_events(c)
    cursor = parser.events[9].last_event_id
    with H1Client("127.0.0.1", srv.port) as c:
        c.request("GET", "/chat", [("last-event-id", cursor)])
        _, rest = read_events(c)
    assert [e.data for e in rest.events] == EXPECTED[10:]


def test_ndjson_resumes_with_a_line_count_cursor(server) -> None:
    srv = server(make_app())
    c = H1Client("127.0.0.1", srv.port)
    c.request("GET", "/chat", [("accept", "application/x-ndjson")])
    lines: list[str] = []
    response = None
    buf = b""
    for item in c.stream():
        if hasattr(item, "status"):
            response = item
            continue
        buf += item.data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            lines.append(json.loads(line))
        if len(lines) >= 5:
            break
    c.abort()
    sid = response.header_map["x-stream-id"]
    with H1Client("127.0.0.1", srv.port) as c2:
        r = c2.fetch("GET", "/chat", [("accept", "application/x-ndjson"), ("last-event-id", f"{sid}.{len(lines)}")])
    assert r.header_map["content-type"] == "application/x-ndjson"
    rest = [json.loads(x) for x in r.body.decode().splitlines()]
    assert lines + rest == EXPECTED


@pytest.mark.parametrize(
    "cursor, path",
    [("AAAAAAAAAAAAAAAA.3", "/chat"), (None, "/other")],
    ids=["unknown-stream", "other-path"],
)
def test_unknown_or_foreign_ids_get_204(server, cursor, path) -> None:
    srv = server(make_app(interval=0))
    if cursor is None:
        with H1Client("127.0.0.1", srv.port) as c:
            c.request("GET", "/chat", [("accept", "text/event-stream")])
            _, parser = read_events(c)
        cursor = parser.events[2].last_event_id
    with H1Client("127.0.0.1", srv.port) as c:
        r = c.fetch("GET", path, [("last-event-id", cursor)])
    assert r.status == 204 and r.body == b""


def test_ids_that_are_not_ours_reach_the_endpoint(server) -> None:
    srv = server(make_app(interval=0))
    with H1Client("127.0.0.1", srv.port) as c:
        c.request("GET", "/chat", [("accept", "text/event-stream"), ("last-event-id", "42")])
        response, parser = read_events(c)
    assert response.status == 200 and [e.data for e in parser.events] == EXPECTED


def test_cursor_before_the_kept_window_gets_410(server) -> None:
    srv = server(make_app(interval=0, store=MemoryStore(Limits(max_events=5))))
    with H1Client("127.0.0.1", srv.port) as c:
        c.request("GET", "/chat", [("accept", "text/event-stream")])
        response, parser = read_events(c)
    sid = response.header_map["x-stream-id"]
    with H1Client("127.0.0.1", srv.port) as c:
        r = c.fetch("GET", "/chat", [("last-event-id", f"{sid}.2")])
    assert r.status == 410
    assert json.loads(r.body)["error"]["type"] == "resume_gap"
    with H1Client("127.0.0.1", srv.port) as c:  # the last five are still there
        c.request("GET", "/chat", [("last-event-id", f"{sid}.{N - 3}")])
        _, tail = read_events(c)
    assert [e.data for e in tail.events] == EXPECTED[N - 3 :]


def test_abandoned_stream_is_cancelled_after_the_grace_period(server) -> None:
    records, finals = [], []
    srv = server(make_app(records, interval=0.05, grace=0.4, finals=finals))
    c = H1Client("127.0.0.1", srv.port)
    c.request("GET", "/chat", [("accept", "text/event-stream")])
    read_events(c, limit=2)
    t_left = time.monotonic()
    c.abort()
    wait_for(lambda: finals and records, message="the generator never finished")
    waited = finals[0] - t_left
    assert 0.4 <= waited < 0.4 + 0.5, f"cancelled {waited:.2f}s after the client left"
    assert records[0].outcome is Outcome.CANCELLED
    assert records[0].cancel_reason is CancelReason.ABANDONED
    assert records[0].events < N


def test_a_returning_client_keeps_the_generator_alive(server) -> None:
    records, finals = [], []
    store = MemoryStore()
    srv = server(make_app(records, interval=0.05, grace=0.5, finals=finals, store=store))
    c = H1Client("127.0.0.1", srv.port)
    c.request("GET", "/chat", [("accept", "text/event-stream")])
    response, first = read_events(c, limit=3)
    c.abort()
    _wait_detached(store, response)  # its grace runs from now
    with H1Client("127.0.0.1", srv.port) as c2:
        c2.request("GET", "/chat", [("last-event-id", first.events[-1].last_event_id)])
        _, rest = read_events(c2)
    assert [e.data for e in first.events + rest.events] == EXPECTED
    wait_for(lambda: records)
    assert records[0].outcome is Outcome.COMPLETED


def test_memory_store_is_bounded_in_streams() -> None:
    store = MemoryStore(max_streams=3)

    async def main():
        from asgi_stream.resume import StreamMeta

        meta = StreamMeta("sse", "text/event-stream", "text/event-stream", "GET", "/")
        writers = [await store.open(f"{'s' * 15}{i}", meta) for i in range(3)]
        await writers[0].finish("completed")
        await store.open("n" * 16, meta)
        assert await store.meta("s" * 15 + "0") is None  # the finished one was evicted first
        assert await store.meta("s" * 15 + "1") is not None

    anyio.run(main)


def test_resume_owner_restricts_resumes_to_the_same_client(server) -> None:
    def owner(scope):
        for name, value in scope["headers"]:
            if name == b"x-user":
                return value.decode()
        return None

    async def endpoint(request):
        return TokenStream(iter([f"t{i}" for i in range(5)]), resumable=True, format="sse")

    app = Starlette(routes=[Route("/chat", endpoint)])
    app.add_middleware(StreamMiddleware, resume_owner=owner)
    srv = server(app)
    with H1Client("127.0.0.1", srv.port) as c:
        c.request("GET", "/chat", [("x-user", "alice")])
        _, parser = read_events(c)
    cursor = parser.events[1].last_event_id
    with H1Client("127.0.0.1", srv.port) as c:
        r = c.fetch("GET", "/chat", [("x-user", "mallory"), ("last-event-id", cursor)])
    assert r.status == 204  # indistinguishable from an unknown stream
    with H1Client("127.0.0.1", srv.port) as c:
        r = c.fetch("GET", "/chat", [("last-event-id", cursor)])
    assert r.status == 204
    with H1Client("127.0.0.1", srv.port) as c:
        c.request("GET", "/chat", [("x-user", "alice"), ("last-event-id", cursor)])
        _, rest = read_events(c)
    assert [e.data for e in rest.events] == ["t2", "t3", "t4"]
