"""Defects 2, 6, 7 and 8: a client that stops reading (a frozen tab, a stalled proxy)
never holds a request for good, and ending it leaves nothing behind: real uvicorn, a
client with a tiny receive buffer that reads the response head and nothing more."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator

import anyio
import pytest
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.responses import StreamingResponse
from starlette.routing import Route

from asgi_stream import TokenStream

from ..support.servers import serve
from ..support.waiting import wait_for
from .support import BUDGET, Ends, add_line, frozen_client, variants

EVENT = "x" * 65536  # a few events fill every buffer between the server and the client


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    """Only reference counting frees objects during the test: a generator closed only
    by the garbage collector stays open."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _sse_app(line: bool, **middleware: float) -> tuple[Ends, list[float]]:
    """sse-starlette's EventSourceResponse with its own ``send_timeout=1``."""
    closed: list[float] = []

    async def events(request):
        async def gen():
            try:
                while True:
                    yield {"data": EVENT}
                    await anyio.sleep(0)  # a model awaits between tokens
            finally:
                closed.append(time.monotonic())

        return EventSourceResponse(gen(), send_timeout=1, ping=0)

    return Ends(add_line(Starlette(routes=[Route("/events", events)]), line, **middleware)), closed


@pytest.mark.parametrize("line", variants(None))
def test_a_frozen_client_never_holds_the_request_at_its_last_send(line: bool) -> None:
    """sse-starlette's send timeout ends the response (SendTimeoutError) in about a
    second; with the line (its send_timeout as strict as the app's) the request must
    end too, not hang in the final send of the body."""
    served, closed = _sse_app(line, send_timeout=1.0)
    with serve(served) as srv:
        client = frozen_client(srv.port, "/events")
        try:
            wait_for(lambda: served.ended, BUDGET, message="the request is still stuck")
            assert closed, "the generator was not closed"
        finally:
            client.abort()


@pytest.mark.parametrize("line", variants(None))
def test_the_apps_own_send_timeout_still_ends_the_request(line: bool) -> None:
    """The line's default send_timeout (30 s) is laxer than the app's (1 s): the
    stricter one wins, so the request ends about as soon as without the line."""
    served, closed = _sse_app(line)
    with serve(served) as srv:
        client = frozen_client(srv.port, "/events")
        started = time.monotonic()
        try:
            wait_for(lambda: served.ended, BUDGET, message="the request outlived the app's send_timeout")
            assert served.ended[0] - started < BUDGET
        finally:
            client.abort()


@pytest.mark.parametrize("line", variants(None))
def test_token_stream_behind_base_http_middleware_ends_on_its_send_timeout(line: bool) -> None:
    """TokenStream(send_timeout=1) with an ``@app.middleware("http")`` between it and
    the line: the send timeout closes the generator, as it does without the line, and
    the line ends the request too. (Without the line nothing can: the request is stuck
    in BaseHTTPMiddleware's own send to the server, out of TokenStream's reach.)"""
    closed: list[float] = []

    async def chat(request):
        async def tokens():
            try:
                while True:
                    yield EVENT
                    await anyio.sleep(0)
            finally:
                closed.append(time.monotonic())

        return TokenStream(tokens(), format="sse", send_timeout=1.0)

    async def passthrough(request, call_next):  # an ``@app.middleware("http")``
        return await call_next(request)

    app = Starlette(routes=[Route("/chat", chat)])
    app.add_middleware(BaseHTTPMiddleware, dispatch=passthrough)
    served = Ends(add_line(app, line))  # the line added last: the BaseHTTPMiddleware is inside it
    with serve(served) as srv:
        client = frozen_client(srv.port, "/chat")
        try:
            wait_for(lambda: closed, BUDGET, message="the send timeout did not close the generator")
            if line:
                wait_for(lambda: served.ended, BUDGET, message="the request is still stuck in a send")
        finally:
            client.abort()


@pytest.mark.usefixtures("no_cyclic_gc")
@pytest.mark.parametrize("line", variants(None))
def test_a_stream_ended_by_the_send_timeout_closes_the_apps_generator(line: bool) -> None:
    """When a StreamingResponse's request ends, its generator's ``finally`` runs then,
    not at the next garbage collection. Without the line the request ends when the
    frozen client finally leaves; with it the send timeout ends it first: either way
    the generator is closed right away."""
    closed = threading.Event()

    async def events(request):
        async def gen():
            try:
                while True:
                    yield f"data: {EVENT}\n\n"
                    await anyio.sleep(0)
            finally:
                closed.set()

        return StreamingResponse(gen(), media_type="text/event-stream")

    served = Ends(add_line(Starlette(routes=[Route("/events", events)]), line, send_timeout=1.0))
    with serve(served) as srv:
        client = frozen_client(srv.port, "/events")
        try:
            if line:
                wait_for(lambda: served.ended, BUDGET, message="the send timeout did not end the request")
            else:
                time.sleep(1.5)  # frozen for longer than the line's send_timeout
                client.abort()
                wait_for(lambda: served.ended, BUDGET, message="the request did not end after the client left")
            assert closed.wait(2.0), "the request ended but its generator is still open"
        finally:
            client.abort()
