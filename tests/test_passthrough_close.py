"""A passthrough stream's body iterator that the application leaves suspended (its body
task was cancelled inside a send, or waiting for a thread) is closed when the
application returns, not by the garbage collector: async generators, and the sync
iterators Starlette runs on its thread pool."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest
from starlette.applications import Starlette
from starlette.responses import StreamingResponse
from starlette.routing import Route

from asgi_stream import StreamMiddleware
from conformance.clients.h1 import H1Client

from .support.layers import Ends
from .support.waiting import wait_for


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("no_cyclic_gc")
@pytest.mark.parametrize("kind", ["async", "sync"])
@pytest.mark.parametrize("line", [False, True], ids=["without-the-line", "with-the-line"])
def test_a_stream_left_suspended_is_closed_when_the_app_returns(server, kind: str, line: bool) -> None:
    closed = threading.Event()
    stepping = threading.Event()

    async def agen() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"data: x\n\n"
                stepping.set()
                await anyio.sleep(0.01)
        finally:
            closed.set()

    def sgen() -> Iterator[bytes]:
        try:
            while True:
                yield b"data: x\n\n"
                stepping.set()
                time.sleep(0.01)
        finally:
            closed.set()

    async def endpoint(request):
        return StreamingResponse(agen() if kind == "async" else sgen(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/", endpoint)])
    if line:
        app.add_middleware(StreamMiddleware)
    ends = Ends(app)
    srv = server(ends)
    client = H1Client("127.0.0.1", srv.port, timeout=10.0)
    client.request("GET", "/")
    client.read_head(deadline=time.monotonic() + 10)
    assert stepping.wait(10)
    client.abort()
    if line:
        wait_for(closed.is_set, timeout=5)
    elif kind == "sync":
        # The application has returned (its thread-pool step awaited to its end): the
        # iterator is left suspended; only the collector (off here) would close it.
        wait_for(lambda: ends.ended, timeout=5)
        assert not closed.is_set(), "without the line the sync iterator waits for the collector"
