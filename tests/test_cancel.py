"""Client-disconnect cancellation reaching async and sync generators, the cancel token,
hooks, event-loop blockers, and no leaks after many cancelled streams."""

from __future__ import annotations

import gc
import logging
import threading
import time

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from asgi_stream import (
    CancelReason,
    CancelToken,
    Outcome,
    StreamMiddleware,
    TokenStream,
    current_cancel_token,
)
from conformance.clients import H1Client

from .support.waiting import wait_for, wait_for_async

BUDGET = 0.5  # generous for a shared 2-core machine; benchmarks measure the real figure


def open_stream(port: int, path: str = "/") -> H1Client:
    """Open a stream and wait for its first chunk."""
    c = H1Client("127.0.0.1", port)
    c.request("GET", path, [("accept", "text/event-stream")])
    for item in c.stream():
        if hasattr(item, "data"):
            break
    return c


@pytest.mark.parametrize("kind", ["uvicorn", "hypercorn", "hypercorn-trio"])
@pytest.mark.parametrize("how", ["close", "abort"])
def test_async_generator_blocked_on_await_is_closed_promptly(server, probe, kind, how) -> None:
    records = []
    waiting = threading.Event()

    async def gen():
        try:
            yield "first"
            waiting.set()
            await anyio.sleep(30)  # blocked awaiting the next token
            yield "never"
        finally:
            probe.mark_finally()

    async def endpoint(request):
        return TokenStream(gen())

    app = Starlette(routes=[Route("/", endpoint)])
    app.add_middleware(StreamMiddleware, on_end=records.append)
    srv = server(app, kind)
    c = open_stream(srv.port)
    assert waiting.wait(5), "the generator never reached its await"
    t_close = time.monotonic()
    getattr(c, how)()
    latency = probe.wait_finally(5) - t_close
    assert latency < BUDGET, f"generator closed {latency * 1000:.0f} ms after the client left"
    wait_for(lambda: records, message="no stream record")
    assert records[0].outcome is Outcome.CANCELLED
    assert records[0].cancel_reason is CancelReason.DISCONNECT


def test_sync_generator_token_set_at_once_and_closed_after_its_blocking_step(server, probe) -> None:
    tokens: list[CancelToken] = []
    step_end: list[float] = []
    in_step = threading.Event()

    def gen():
        tokens.append(current_cancel_token())
        try:
            yield "first"
            in_step.set()
            time.sleep(1.0)  # a blocking step that cannot be interrupted
            step_end.append(time.monotonic())
            yield "second"
            step_end.append(-1.0)  # must never get here
        finally:
            probe.mark_finally()

    async def endpoint(request):
        return TokenStream(gen())

    app = Starlette(routes=[Route("/", endpoint)])
    app.add_middleware(StreamMiddleware)
    srv = server(app)
    c = open_stream(srv.port)
    assert in_step.wait(5), "the generator never started its blocking step"
    t_close = time.monotonic()
    c.close()
    token = tokens[0]
    assert token is not None
    assert token.wait_sync(BUDGET), "cancel token not set promptly"
    assert token.cancelled_at - t_close < BUDGET
    assert token.reason is CancelReason.DISCONNECT
    finally_at = probe.wait_finally(5)
    assert step_end[0] > 0 and -1.0 not in step_end
    assert finally_at - step_end[0] < BUDGET, "not closed right after the blocking step returned"
    assert probe.finally_thread.startswith("asgi-stream")  # closed on its own worker thread


def test_cooperative_sync_generator_stops_on_the_token(server, probe) -> None:
    waiting = threading.Event()

    def gen():
        token = current_cancel_token()
        try:
            yield "first"
            waiting.set()
            while not token.wait_sync(0.05):
                pass
            probe.cancelled_seen = True
        finally:
            probe.mark_finally()

    async def endpoint(request):
        return TokenStream(gen())

    app = Starlette(routes=[Route("/", endpoint)])
    app.add_middleware(StreamMiddleware)
    srv = server(app)
    c = open_stream(srv.port)
    assert waiting.wait(5), "the generator never reached its waiting loop"
    t_close = time.monotonic()
    c.close()
    assert probe.wait_finally(5) - t_close < BUDGET
    assert probe.cancelled_seen


def test_downstream_receive_still_sees_the_disconnect(server, probe) -> None:
    async def endpoint(request: Request):
        async def gen():
            try:
                yield "first"
                while not await request.is_disconnected():
                    await anyio.sleep(0.02)
                probe.cancelled_seen = True
                yield "bye"
            finally:
                probe.mark_finally()

        return TokenStream(gen())

    app = Starlette(routes=[Route("/", endpoint)])
    app.add_middleware(StreamMiddleware)
    srv = server(app)
    c = open_stream(srv.port)
    c.close()
    probe.wait_finally(5)
    # Either the app saw http.disconnect itself, or the middleware cancelled it first.
    assert probe.cancelled_seen or probe.finally_at is not None


def test_request_body_is_still_readable_by_the_endpoint(server) -> None:
    async def endpoint(request: Request):
        body = await request.body()
        return TokenStream(iter([body.decode().upper()]))

    app = Starlette(routes=[Route("/", endpoint, methods=["POST"])])
    app.add_middleware(StreamMiddleware)
    srv = server(app)
    with H1Client("127.0.0.1", srv.port) as c:
        r = c.fetch("POST", "/", body=b"x" * 100_000)
    assert r.body == b"X" * 100_000


def test_reading_the_empty_body_late_neither_hangs_nor_loses_it(server) -> None:
    taken = threading.Event()  # the server's http.request message was received (by the guard)

    async def endpoint(request: Request):
        async def gen():
            yield "first"
            await wait_for_async(taken.is_set, message="the guard never read the request body")
            body = await request.body()
            yield f"body={body!r}"

        return TokenStream(gen())

    app = Starlette(routes=[Route("/", endpoint)])
    app.add_middleware(StreamMiddleware)

    async def server_side(scope, receive, send):
        async def receive_():
            message = await receive()
            if message["type"] == "http.request":
                taken.set()
            return message

        await app(scope, receive_, send)

    srv = server(server_side)
    with H1Client("127.0.0.1", srv.port, timeout=5) as c:
        r = c.fetch("GET", "/")
    assert r.body == b"firstbody=b''"


def test_on_cancel_hook_and_token_cancel_from_another_thread(server, probe) -> None:
    cancelled = []
    tokens = []

    async def gen():
        try:
            for i in range(1000):
                yield f"t{i}"
                await anyio.sleep(0.02)
        finally:
            probe.mark_finally()

    async def endpoint(request):
        token = CancelToken()
        tokens.append(token)
        return TokenStream(gen(), cancel=token, on_cancel=cancelled.append)

    app = Starlette(routes=[Route("/", endpoint)])
    app.add_middleware(StreamMiddleware)
    srv = server(app)
    with H1Client("127.0.0.1", srv.port) as c:
        c.request("GET", "/", [("accept", "text/event-stream")])
        response, canceller = None, threading.Thread(target=lambda: tokens[0].cancel())
        for item in c.stream():
            response = item if hasattr(item, "status") else response
            if hasattr(item, "data") and canceller.ident is None:
                canceller.start()  # under way: cancel it from another thread
        assert response.complete  # the application's cancel ends the body cleanly
    probe.wait_finally(5)
    assert cancelled and cancelled[0].cancel_reason is CancelReason.APPLICATION


def test_streaming_response_async_generator_is_cancelled_on_disconnect(server, probe) -> None:
    async def endpoint(request):
        async def body():
            try:
                yield "data: first\n\n"
                await anyio.sleep(30)
            finally:
                probe.mark_finally()

        return StreamingResponse(body(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/", endpoint)])
    app.add_middleware(StreamMiddleware)
    srv = server(app)
    c = open_stream(srv.port)
    t_close = time.monotonic()
    c.close()
    assert probe.wait_finally(5) - t_close < BUDGET


def test_generator_blocking_the_loop_is_reported_and_does_not_starve_others(server, caplog) -> None:
    other = []
    other_done = threading.Event()

    async def blocking(request):
        async def gen():
            for i in range(40):
                time.sleep(0.15)  # wrong: blocks the event loop
                yield f"b{i}"

        return TokenStream(gen())

    async def polite(request):
        async def gen():
            try:
                yield "first"
                await anyio.sleep(30)
            finally:
                other.append(time.monotonic())
                other_done.set()

        return TokenStream(gen())

    app = Starlette(routes=[Route("/blocking", blocking), Route("/polite", polite)])
    app.add_middleware(StreamMiddleware, block_warning=0.3)
    srv = server(app)
    caplog.set_level(logging.WARNING, logger="asgi_stream")
    p = open_stream(srv.port, "/polite")
    b = open_stream(srv.port, "/blocking")
    wait_for(lambda: _blocked_warnings(caplog), message="no warning about the blocking generator")
    t_close = time.monotonic()
    p.close()
    assert other_done.wait(5)
    # Between two blocking steps, the polite stream's disconnect is handled.
    assert other[0] - t_close < 0.15 * 2 + BUDGET
    b.close()
    messages = _blocked_warnings(caplog)
    assert "blocking" in messages[0] and "test_cancel.py" in messages[0]


def _blocked_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "blocked the event loop" in r.getMessage()]


def test_thousand_cancelled_streams_leak_nothing(server) -> None:
    import psutil

    started = []
    ended = []

    async def agen():
        yield "first"
        await anyio.sleep(60)

    def sgen():
        while True:  # blocking steps of 50 ms: each stream's thread ends right after one
            yield "tick"
            time.sleep(0.05)

    async def endpoint(request):
        started.append(1)
        if request.query_params.get("sync"):
            return TokenStream(sgen())
        return TokenStream(agen())

    app = Starlette(routes=[Route("/", endpoint)])
    app.add_middleware(StreamMiddleware, on_end=ended.append)
    srv = server(app)

    def server_tasks() -> int:
        import asyncio

        fut = asyncio.run_coroutine_threadsafe(_count_tasks(), srv.loop)
        return fut.result(5)

    def one_round(n: int, sync: bool) -> None:
        clients = [open_stream(srv.port, "/?sync=1" if sync else "/") for _ in range(n)]
        for c in clients:
            c.abort()

    one_round(50, False)  # warm up allocations
    wait_for(lambda: len(ended) == 50, message=lambda: f"{len(ended)} of the 50 warm-up streams ended")
    gc.collect()
    rss0 = psutil.Process().memory_info().rss
    tasks0 = server_tasks()
    threads0 = threading.active_count()
    for _ in range(10):
        one_round(100, False)
    one_round(20, True)

    def settled() -> bool:
        gc.collect()
        return server_tasks() <= tasks0 and threading.active_count() <= threads0

    wait_for(
        settled,
        interval=0.1,
        message=lambda: f"tasks leaked or threads left: {[t.name for t in threading.enumerate()]}",
    )
    growth = psutil.Process().memory_info().rss - rss0
    assert growth < 20 * 1024 * 1024, f"RSS grew by {growth / 1e6:.1f} MB"
    assert len(started) >= 1070


async def _count_tasks() -> int:
    import asyncio

    return len(asyncio.all_tasks())
