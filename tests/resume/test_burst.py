"""A resumable stream never drops events its attached clients have not read: a generator
faster than its client (a burst larger than the store's bounds, a slow reader) is held
back while a client is attached, like a non-resumable stream. Only a stream nobody is
reading trims its oldest events, which a later resume reports as 410."""

from __future__ import annotations

import json

import anyio
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from asgi_stream import Outcome, StreamMiddleware, TokenStream
from asgi_stream.resume import Limits, MemoryStore, StreamMeta
from conformance.clients import H1Client

from ..support.sse import sse_data
from ..support.waiting import wait_for_async
from .asgi import call, http_scope

META = StreamMeta("sse", "text/event-stream", "text/event-stream", "GET", "/chat")


def burst_app(store, n: int = 300, size: int = 20_000, records=None) -> Starlette:
    async def endpoint(request):
        async def gen():  # never awaits: the whole burst is ready at once
            for i in range(n):
                yield {"i": i, "pad": "x" * size}

        return TokenStream(gen(), resumable=True, end="[DONE]")

    app = Starlette(routes=[Route("/chat", endpoint)])
    app.add_middleware(StreamMiddleware, resume_store=store, on_end=records.append if records is not None else None)
    return app


@pytest.mark.parametrize("fmt", ["sse", "ndjson"])
def test_a_burst_over_the_default_bounds_reaches_the_original_client_whole(server, fmt) -> None:
    """300 × 20 KB JSON events (6 MB > the default 4 MiB per stream), over real uvicorn."""
    srv = server(burst_app(MemoryStore()))
    accept = "text/event-stream" if fmt == "sse" else "application/x-ndjson"
    with H1Client("127.0.0.1", srv.port, timeout=30) as c:
        r = c.fetch("GET", "/chat", [("accept", accept)])
    assert r.status == 200, r.body[:300]
    if fmt == "sse":
        items = sse_data(r.body)
        assert items[-1] == "[DONE]"
        assert [json.loads(x)["i"] for x in items[:-1]] == list(range(300))
    else:
        lines = [json.loads(x) for x in r.body.decode().splitlines()]
        assert lines[-1] == "[DONE]" and [x["i"] for x in lines[:-1]] == list(range(300))


def test_a_burst_reaches_a_local_client_whole_on_the_redis_store(server, redis_server, key_prefix) -> None:
    from asgi_stream.resume import RedisStore

    srv = server(burst_app(RedisStore(redis_server.url, key_prefix=key_prefix)))
    with H1Client("127.0.0.1", srv.port, timeout=30) as c:
        r = c.fetch("GET", "/chat", [("accept", "text/event-stream")])
    assert r.status == 200
    assert [json.loads(x)["i"] for x in sse_data(r.body)[:-1]] == list(range(300))


def test_a_slow_client_gets_every_event_through_a_tiny_window() -> None:
    """A store keeping 4 events, a generator that never waits, a client whose every send
    takes a moment: the generator is paced by the client, nothing is dropped."""
    records = []
    app = burst_app(MemoryStore(Limits(max_events=4, max_bytes=1 << 20)), n=200, size=10, records=records)

    async def main() -> None:
        seen: list[bytes] = []

        async def slow_call() -> None:
            scope = http_scope(headers=[(b"accept", b"text/event-stream")])
            first = True

            async def receive():
                nonlocal first
                if first:
                    first = False
                    return {"type": "http.request", "body": b"", "more_body": False}
                await anyio.sleep_forever()

            async def send(message):
                if message["type"] == "http.response.start":
                    assert message["status"] == 200
                body = message.get("body", b"")
                if body:
                    seen.append(body)
                    await anyio.sleep(0.0005)

            with anyio.fail_after(30):
                await app(scope, receive, send)

        await slow_call()
        items = sse_data(b"".join(seen))
        assert items[-1] == "[DONE]"
        assert [json.loads(x)["i"] for x in items[:-1]] == list(range(200))

    anyio.run(main)
    assert [r.outcome for r in records] == [Outcome.COMPLETED]


def test_a_stream_nobody_reads_trims_and_finishes_and_a_late_resume_gets_410() -> None:
    """The client leaves after a few events: the generator is not held back (nobody to
    wait for), the store keeps its newest events only, an old cursor gets 410."""
    records = []
    store = MemoryStore(Limits(max_events=5))
    app = burst_app(store, n=100, size=10, records=records)

    async def main() -> None:
        first = await call(app, http_scope(headers=[(b"accept", b"text/event-stream")]), limit=1)
        sid = first.headers[b"x-stream-id"].decode()
        await wait_for_async(lambda: records, message="the stream's record")
        gap = await call(app, http_scope(headers=[(b"last-event-id", f"{sid}.1".encode())]))
        assert gap.status == 410 and json.loads(gap.body)["error"]["type"] == "resume_gap"
        tail = await call(app, http_scope(headers=[(b"last-event-id", f"{sid}.97".encode())]))
        assert tail.status == 200
        assert [json.loads(x)["i"] for x in sse_data(tail.body)[:-1]] == [97, 98, 99]

    anyio.run(main)
    assert records[0].outcome is Outcome.COMPLETED and records[0].events == 100


# ------------------------------------------------------------ the store alone
def test_append_reports_a_full_window_while_a_reader_is_behind_and_wait_room_waits() -> None:
    async def main() -> None:
        store = MemoryStore(Limits(max_events=3))
        writer = await store.open("s" * 16, META)
        reader = store.read("s" * 16, 0)
        assert [writer.append(i, b"e%d" % i) for i in (1, 2, 3)] == [False] * 3
        assert await reader.__anext__() == (1, b"e1")  # attached, has read event 1
        assert writer.append(4, b"e4") is False  # event 1 is read: trimmed, window full again
        assert writer.append(5, b"e5") is True  # event 2 is not read: kept, over the bounds
        waited = anyio.Event()

        async def producer() -> None:
            await writer.wait_room()
            waited.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(producer)
            await anyio.wait_all_tasks_blocked()
            assert not waited.is_set()
            assert await reader.__anext__() == (2, b"e2")
            with anyio.fail_after(5):
                await waited.wait()
        # Nothing the reader has not read was dropped.
        assert [x async for x in _take(reader, 3)] == [(3, b"e3"), (4, b"e4"), (5, b"e5")]
        await reader.aclose()
        # Detached: appends trim at once and never ask for room.
        assert writer.append(6, b"e6") is False
        assert writer.first_kept() == 4

    anyio.run(main)


def test_a_reader_leaving_releases_a_waiting_producer() -> None:
    async def main() -> None:
        store = MemoryStore(Limits(max_events=2))
        writer = await store.open("s" * 16, META)
        reader = store.read("s" * 16, 0)
        writer.append(1, b"1")
        assert await reader.__anext__() == (1, b"1")
        writer.append(2, b"2")
        writer.append(3, b"3")
        assert writer.append(4, b"4") is True
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.wait_room)
            await anyio.wait_all_tasks_blocked()
            await reader.aclose()
        assert writer.first_kept() == 3

    anyio.run(main)


async def _take(reader, n):
    for _ in range(n):
        yield await reader.__anext__()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_resume_cancelled_before_its_pump_starts_leaves_no_reader_attached(backend: str) -> None:
    """A consumer is attached from its creation; a request cancelled before its pump task
    ran (server shutdown, a client gone at once) must still detach it, or the producer
    would wait for it for ever and never count the stream as abandoned."""
    store = MemoryStore()
    app = burst_app(store, n=3, size=10)

    async def main() -> None:
        first = await call(app, http_scope(headers=[(b"accept", b"text/event-stream")]))
        sid = first.headers[b"x-stream-id"].decode()
        with anyio.CancelScope() as scope:
            scope.cancel()
            await call(app, http_scope(headers=[(b"last-event-id", f"{sid}.1".encode())]))
        assert store._streams[sid].readers == []

    anyio.run(main, backend=backend)
