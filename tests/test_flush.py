"""Flush control on the wire: per-token sends, coalescing bounds, backpressure."""

from __future__ import annotations

import threading
import time

import anyio
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from asgi_stream import Coalesce, Outcome, SendTimeoutError, StreamMiddleware, TokenChannel, TokenStream
from conformance.clients import H1Client, H1Response
from conformance.sse import parse_sse as parse

from .support.waiting import wait_for

INTERVAL = 0.1


def paced_app(probe, *, sync: bool = False, n: int = 6, interval: float = INTERVAL, **stream_kwargs):
    async def agen():
        try:
            for i in range(n):
                probe.produced.append(time.monotonic())
                yield f"t{i}"
                await anyio.sleep(interval)
        finally:
            probe.mark_finally()

    def sgen():
        try:
            for i in range(n):
                probe.produced.append(time.monotonic())
                yield f"t{i}"
                time.sleep(interval)
        finally:
            probe.mark_finally()

    async def endpoint(request):
        return TokenStream(sgen() if sync else agen(), format="sse", **stream_kwargs)

    app = Starlette(routes=[Route("/", endpoint)])
    app.add_middleware(StreamMiddleware)
    return app


def read(port: int, path: str = "/", **kw) -> H1Response:
    with H1Client("127.0.0.1", port, **kw) as c:
        return c.fetch("GET", path)


@pytest.mark.parametrize("sync", [False, True], ids=["async-gen", "sync-gen"])
@pytest.mark.parametrize("kind", ["uvicorn", "hypercorn", "hypercorn-trio"])
def test_each_token_is_its_own_chunk_and_arrives_before_the_next_is_produced(server, probe, sync, kind) -> None:
    srv = server(paced_app(probe, sync=sync), kind)
    r = read(srv.port)
    events = parse(r.body).events
    assert [e.data for e in events] == [f"t{i}" for i in range(6)]
    assert len(r.chunks) == 6
    for i, chunk in enumerate(r.chunks[:-1]):
        assert chunk.data == f"data: t{i}\n\n".encode()
        assert chunk.t < probe.produced[i + 1], f"token {i} arrived after token {i + 1} was produced"


def test_coalescing_merges_bursts_within_max_delay(server, probe) -> None:
    bursts, per_burst = 4, 25

    async def gen():
        try:
            for b in range(bursts):
                for i in range(per_burst):
                    probe.produced.append(time.monotonic())
                    yield f"{b}.{i} "
                await anyio.sleep(0.15)
        finally:
            probe.mark_finally()

    async def endpoint(request):
        return TokenStream(gen(), format="text", flush=Coalesce(max_delay=0.05, max_bytes=1 << 20))

    app = Starlette(routes=[Route("/", endpoint)])
    app.add_middleware(StreamMiddleware)
    srv = server(app)
    r = read(srv.port)
    assert r.body.decode() == "".join(f"{b}.{i} " for b in range(bursts) for i in range(per_burst))
    assert len(r.chunks) <= bursts * 2, f"{len(r.chunks)} chunks for {bursts} bursts"
    # Every token reached the client within max_delay of being produced (+ generous slack).
    offset = 0
    for chunk in r.chunks:
        count = chunk.data.count(b" ")
        for t_produced in probe.produced[offset : offset + count]:
            assert chunk.t - t_produced < 0.05 + 0.25
        offset += count


def test_coalescing_never_holds_a_lone_token_past_max_delay(server, probe) -> None:
    srv = server(paced_app(probe, n=5, interval=0.3, flush=Coalesce(max_delay=0.03)))
    r = read(srv.port)
    assert len(r.chunks) == 5  # tokens 300 ms apart cannot share a 30 ms window
    for chunk, produced in zip(r.chunks, probe.produced):
        assert chunk.t - produced < 0.03 + 0.2


def test_coalescing_respects_max_bytes(server) -> None:
    async def endpoint(request):
        return TokenStream(iter(["x" * 100] * 50), format="text", flush=Coalesce(max_delay=10.0, max_bytes=1000))

    app = Starlette(routes=[Route("/", endpoint)])
    app.add_middleware(StreamMiddleware)
    srv = server(app)
    r = read(srv.port)
    assert r.body == b"x" * 5000
    assert all(len(c.data) <= 1000 for c in r.chunks[:-1])
    assert len(r.chunks) >= 5


def test_slow_reader_backpressure_reaches_the_generator_and_send_timeout_ends_it(server, probe) -> None:
    records = []
    token = "y" * 1000

    async def gen():
        try:
            while True:
                probe.produced.append(time.monotonic())
                yield token
        finally:
            probe.mark_finally()

    async def endpoint(request):
        return TokenStream(gen(), format="text", send_timeout=0.5)

    app = Starlette(routes=[Route("/", endpoint)])
    app.add_middleware(StreamMiddleware, on_end=records.append)
    srv = server(app)
    c = H1Client("127.0.0.1", srv.port, rcvbuf=4096)
    c.request("GET", "/")
    try:
        probe.wait_finally(10)  # never reads: the server must give up on its own
        produced = len(probe.produced)
        # Bounded: socket buffers plus the server's write buffer, never "as fast as possible".
        assert produced * len(token) < 8 * 1024 * 1024, f"{produced} tokens buffered for a stalled reader"
        wait_for(lambda: records, message="no stream record")  # the record closes after the generator
        assert len(probe.produced) == produced  # nothing more was pulled after the cancel
        assert records[0].outcome is Outcome.TIMED_OUT
        assert isinstance(records[0].error, SendTimeoutError)
    finally:
        c.abort()


def test_channel_merges_what_a_slow_client_missed_and_stays_bounded(server) -> None:
    channels = []
    n = 20_000

    async def endpoint(request):
        channel = TokenChannel(max_buffer=1 << 22)
        channels.append(channel)

        def produce():
            for i in range(n):
                if not channel.put(f"{i},"):
                    return
            channel.close()

        threading.Thread(target=produce, daemon=True).start()
        return TokenStream(channel, format="text", cancel=channel.cancel_token)

    app = Starlette(routes=[Route("/", endpoint)])
    app.add_middleware(StreamMiddleware)
    srv = server(app)
    c = H1Client("127.0.0.1", srv.port, rcvbuf=8192)
    c.request("GET", "/")
    chunks = []
    for item in c.stream():
        if hasattr(item, "data"):
            chunks.append(item.data)
            time.sleep(0.001)  # a slow reader
    c.close()
    body = b"".join(chunks).decode()
    assert body == "".join(f"{i}," for i in range(n))  # complete and in order
    assert len(chunks) < n / 4  # text produced during blocked sends was merged


def test_channel_overflow_ends_the_stream_and_stops_the_producer(server) -> None:
    stopped = threading.Event()
    under_way = threading.Event()  # the first line reached the server

    async def endpoint(request):
        channel = TokenChannel(max_buffer=64 * 1024)

        def produce():
            channel.put("first")
            assert under_way.wait(10)  # the stream is under way: the overflow fails it in band
            while channel.put("z" * 1024):
                pass
            stopped.set()

        threading.Thread(target=produce, daemon=True).start()
        return TokenStream(channel, format="ndjson", cancel=channel.cancel_token)

    app = Starlette(routes=[Route("/", endpoint)])
    app.add_middleware(StreamMiddleware)

    async def server_side(scope, receive, send):
        async def send_(message):
            await send(message)
            if message["type"] == "http.response.body" and message.get("body"):
                under_way.set()

        await app(scope, receive, send_ if scope["type"] == "http" else send)

    srv = server(server_side)
    c = H1Client("127.0.0.1", srv.port, rcvbuf=4096)
    c.request("GET", "/")
    assert stopped.wait(10), "the producer was never told to stop"
    r = None
    for item in c.stream():
        r = item if isinstance(item, H1Response) else r
    c.close()
    assert r is not None and r.complete
    last = r.body.rstrip(b"\n").split(b"\n")[-1]
    assert b"BufferOverflowError" in last
