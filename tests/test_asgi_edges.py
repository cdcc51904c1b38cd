"""ASGI-level edges without a server: ASGI 2.4 servers whose send() raises once the
client is gone, and the uvicorn httptools + uvloop stack."""

from __future__ import annotations

import time

import anyio
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from asgi_stream import CancelReason, StreamMiddleware, TokenStream
from conformance.clients import H1Client

from .support.waiting import wait_for_async


def test_send_raising_oserror_counts_as_a_disconnect() -> None:
    """ASGI 2.4: send() raises OSError after the client left; receive() may never tell."""
    closed = []
    records = []

    async def endpoint(request):
        async def gen():
            try:
                for i in range(1000):
                    yield f"t{i}"
                    await anyio.sleep(0.001)
            finally:
                closed.append(i)

        return TokenStream(gen(), format="sse")

    app = Starlette(routes=[Route("/", endpoint)])
    app.add_middleware(StreamMiddleware, on_end=records.append)

    async def main() -> None:
        sent = []

        async def receive():
            await anyio.sleep(3600)  # this server never reports the disconnect here

        async def send(message):
            if message["type"] == "http.response.body" and len(sent) >= 5:
                raise OSError("connection reset by peer")
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": "GET",
            "path": "/",
            "raw_path": b"/",
            "root_path": "",
            "scheme": "http",
            "query_string": b"",
            "headers": [],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 2),
        }
        with anyio.fail_after(5):
            await app(scope, receive, send)
        assert sent[0]["type"] == "http.response.start"

    anyio.run(main)
    assert closed and closed[0] < 20  # the generator was closed at once, not run to the end
    assert records[0].cancel_reason is CancelReason.DISCONNECT


def test_generator_is_closed_even_when_the_servers_send_cannot_be_cancelled() -> None:
    """Some servers (hypercorn's trio worker) shield socket writes from cancellation: the
    send timeout must still close the generator, which waits at its yield."""
    closed = []

    async def endpoint(request):
        async def gen():
            try:
                while True:
                    yield "x" * 1024
            finally:
                closed.append(time.monotonic())

        return TokenStream(gen(), format="sse", send_timeout=0.3)

    app = Starlette(routes=[Route("/", endpoint)])
    app.add_middleware(StreamMiddleware)

    async def main() -> None:
        unblock = anyio.Event()
        sends = 0

        async def receive():
            await anyio.sleep(3600)

        async def send(message):
            nonlocal sends
            sends += 1
            if sends > 3:  # the client stopped reading: this write never completes...
                with anyio.CancelScope(shield=True):  # ...and cannot be cancelled
                    await unblock.wait()

        async with anyio.create_task_group() as tg:
            scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}
            tg.start_soon(app, scope, receive, send)
            t0 = time.monotonic()
            await wait_for_async(lambda: closed, 5, message="the generator was never closed")
            assert closed[0] - t0 < 0.3 + 1.0
            unblock.set()  # the client finally goes away

    anyio.run(main)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_httptools_and_uvloop_stream_per_token(server, probe, loop) -> None:
    pytest.importorskip("httptools")
    if loop == "uvloop":
        pytest.importorskip("uvloop")

    async def endpoint(request):
        async def gen():
            try:
                for i in range(5):
                    probe.produced.append(time.monotonic())
                    yield f"t{i}"
                    await anyio.sleep(0.1)
                await anyio.sleep(30)
            finally:
                probe.mark_finally()

        return TokenStream(gen(), format="sse")

    app = Starlette(routes=[Route("/", endpoint)])
    app.add_middleware(StreamMiddleware)
    srv = server(app, http="httptools", loop=loop)
    if loop == "uvloop":
        assert type(srv.loop).__module__.startswith("uvloop")
    c = H1Client("127.0.0.1", srv.port)
    c.request("GET", "/")
    chunks = []
    for item in c.stream():
        if hasattr(item, "data"):
            chunks.append(item)
            if len(chunks) == 5:
                break
    for i, chunk in enumerate(chunks[:-1]):
        assert chunk.data == f"data: t{i}\n\n".encode()
        assert chunk.t < probe.produced[i + 1]
    t_close = time.monotonic()
    c.close()
    assert probe.wait_finally(5) - t_close < 0.5
