"""Integration with the ecosystem: FastAPI, GZipMiddleware in either order,
sse-starlette passthrough, mounted apps, TokenStream without the middleware, hooks
and records, HTTP/2 on hypercorn."""

from __future__ import annotations

import json
import time

import anyio
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import StreamingResponse
from starlette.routing import Mount, Route

from asgi_stream import Outcome, StreamMiddleware, TokenStream, current_stream
from conformance.clients import H1Client
from conformance.sse import parse_sse as parse

from .support.layers import Ends
from .support.waiting import wait_for


async def slow_tokens(n: int = 5, interval: float = 0.05):
    for i in range(n):
        yield f"tok{i} "
        await anyio.sleep(interval)


def test_fastapi_one_line_and_yield_dependency_lifetime(server) -> None:
    app = FastAPI()
    app.add_middleware(StreamMiddleware)
    lifecycle: list[str] = []

    async def dependency():
        lifecycle.append("dep-open")
        try:
            yield "resource"
        finally:
            lifecycle.append("dep-closed")

    @app.get("/chat")
    async def chat(resource: str = Depends(dependency)):
        async def gen():
            for i in range(3):
                lifecycle.append(f"token{i}")
                yield {"i": i, "dep": resource}
                await anyio.sleep(0.05)

        return TokenStream(gen())

    srv = server(app)
    with H1Client("127.0.0.1", srv.port) as c:
        r = c.fetch("GET", "/chat", [("accept", "application/x-ndjson")])
    assert [json.loads(x) for x in r.body.decode().splitlines()] == [{"i": i, "dep": "resource"} for i in range(3)]
    # Documented behaviour (FastAPI >= 0.118): a yield dependency's exit runs after the
    # whole stream was sent, so the generator may use the resource to the end …
    wait_for(lambda: "dep-closed" in lifecycle)
    assert lifecycle == ["dep-open", "token0", "token1", "token2", "dep-closed"]


def test_fastapi_function_scoped_dependency_closes_before_the_stream(server) -> None:
    app = FastAPI()
    app.add_middleware(StreamMiddleware)
    lifecycle: list[str] = []

    async def dependency():
        try:
            yield "resource"
        finally:
            lifecycle.append("dep-closed")

    @app.get("/chat")
    async def chat(resource: str = Depends(dependency, scope="function")):
        async def gen():
            lifecycle.append("token0")
            yield resource

        return TokenStream(gen())

    srv = server(app)
    with H1Client("127.0.0.1", srv.port) as c:
        c.fetch("GET", "/chat")
    # … while scope="function" closes it when the endpoint returns, before any token.
    assert lifecycle == ["dep-closed", "token0"]


@pytest.mark.parametrize("gzip_outer", [True, False], ids=["gzip-outside", "gzip-inside"])
@pytest.mark.parametrize("accept", ["text/event-stream", "application/x-ndjson", "text/plain"])
def test_gzip_never_swallows_or_compresses_streams(server, gzip_outer, accept) -> None:
    produced: list[float] = []

    async def endpoint(request):
        async def gen():
            for i in range(5):
                produced.append(time.monotonic())
                yield f"token number {i} " * 20  # compressible, above GZip's minimum size
                await anyio.sleep(0.1)

        return TokenStream(gen())

    async def page(request):
        return StreamingResponse(iter(["<html>" + "x" * 2000]), media_type="text/html")

    app = Starlette(routes=[Route("/", endpoint), Route("/page", page)])
    if gzip_outer:
        app.add_middleware(StreamMiddleware)
        app.add_middleware(GZipMiddleware, minimum_size=10)
    else:
        app.add_middleware(GZipMiddleware, minimum_size=10)
        app.add_middleware(StreamMiddleware)
    srv = server(app)
    with H1Client("127.0.0.1", srv.port) as c:
        r = c.fetch("GET", "/", [("accept", accept), ("accept-encoding", "gzip")])
    assert r.header_map.get("content-encoding", "identity") == "identity"
    assert len(r.chunks) == 5
    for i, chunk in enumerate(r.chunks[:-1]):
        assert chunk.t < produced[i + 1]  # still streamed token by token
    with H1Client("127.0.0.1", srv.port) as c:
        page_response = c.fetch("GET", "/page", [("accept-encoding", "gzip")])
    assert page_response.header_map["content-encoding"] == "gzip"  # other responses still compressed


def test_sse_starlette_response_gets_headers_and_disconnect_cancellation(server, probe) -> None:
    from sse_starlette import EventSourceResponse

    async def endpoint(request):
        async def gen():
            try:
                yield {"data": "first"}
                await anyio.sleep(30)
            finally:
                probe.mark_finally()

        return EventSourceResponse(gen(), ping=3600)

    app = Starlette(routes=[Route("/", endpoint)])
    app.add_middleware(StreamMiddleware)
    srv = server(app)
    c = H1Client("127.0.0.1", srv.port)
    c.request("GET", "/")
    response = None
    for item in c.stream():
        if hasattr(item, "status"):
            response = item
        else:
            break
    assert response.header_map["x-accel-buffering"] == "no"
    t_close = time.monotonic()
    c.close()
    assert probe.wait_finally(5) - t_close < 0.5


def test_mounted_app_with_its_own_middleware_inside_an_app_with_one(server) -> None:
    records_outer, records_inner = [], []

    async def inner(request):
        return TokenStream(slow_tokens(3))

    inner_app = Starlette(routes=[Route("/gen", inner)])
    inner_app.add_middleware(StreamMiddleware, default_format="sse", on_end=records_inner.append)
    outer = Starlette(routes=[Mount("/sub", app=inner_app)])
    outer.add_middleware(StreamMiddleware, on_end=records_outer.append)
    ends = Ends(outer)
    srv = server(ends)
    with H1Client("127.0.0.1", srv.port) as c:
        r = c.fetch("GET", "/sub/gen")
    assert [e.data for e in parse(r.body).events] == ["tok0 ", "tok1 ", "tok2 "]
    assert len(r.chunks) == 3
    wait_for(lambda: ends.ended)  # over for the server: every layer has reported by now
    assert len(records_inner) == 1 and not records_outer  # exactly one layer handled it
    assert records_inner[0].path == "/sub/gen"


def test_token_stream_works_without_the_middleware(server, probe) -> None:
    async def endpoint(request):
        async def gen():
            try:
                yield "first"
                await anyio.sleep(30)
            finally:
                probe.mark_finally()

        return TokenStream(gen(), format="sse")

    srv = server(Starlette(routes=[Route("/", endpoint)]))
    c = H1Client("127.0.0.1", srv.port)
    c.request("GET", "/")
    for item in c.stream():
        if hasattr(item, "data"):
            assert item.data == b"data: first\n\n"
            break
    t_close = time.monotonic()
    c.close()
    assert probe.wait_finally(5) - t_close < 0.5


def test_hooks_receive_complete_records(server) -> None:
    started, ended = [], []
    seen_inside = []

    async def endpoint(request):
        async def gen():
            seen_inside.append(current_stream())
            await anyio.sleep(0.2)
            for i in range(4):
                yield f"t{i}"

        return TokenStream(gen(), name="chat-stream")

    app = Starlette(routes=[Route("/chat", endpoint)])
    app.add_middleware(StreamMiddleware, on_start=started.append, on_end=ended.append)
    srv = server(app)
    with H1Client("127.0.0.1", srv.port) as c:
        c.fetch("GET", "/chat", [("accept", "text/event-stream")])
    wait_for(lambda: ended)
    assert len(started) == 1 and len(ended) == 1
    rec = ended[0]
    assert rec is started[0] is seen_inside[0]
    assert rec.endpoint == "chat-stream" and rec.path == "/chat" and rec.format == "sse"
    assert rec.outcome is Outcome.COMPLETED
    assert rec.events == 4 and rec.bytes == len(b"data: t0\n\n") * 4
    assert 0.2 <= rec.ttft < 1.0
    assert rec.duration >= rec.ttft


def test_async_hooks_are_awaited(server) -> None:
    ended = []

    async def on_end(record):
        await anyio.sleep(0.01)
        ended.append(record.outcome)

    async def endpoint(request):
        return TokenStream(iter(["x"]))

    app = Starlette(routes=[Route("/", endpoint)])
    app.add_middleware(StreamMiddleware, on_end=on_end)
    srv = server(app)
    with H1Client("127.0.0.1", srv.port) as c:
        c.fetch("GET", "/")
    wait_for(lambda: ended)
    assert ended == [Outcome.COMPLETED]


@pytest.mark.parametrize("kind", ["hypercorn", "hypercorn-trio"])
def test_http2_one_data_frame_per_token_and_rst_stream_cancels_one_stream(server, kind) -> None:
    from conformance.clients.h2 import H2Client

    finals: dict[str, float] = {}

    async def endpoint(request):
        label = request.query_params["label"]

        async def gen():
            try:
                for i in range(6):
                    yield f"{label}{i}"
                    await anyio.sleep(0.1)
            finally:
                finals[label] = time.monotonic()

        return TokenStream(gen(), format="sse")

    app = Starlette(routes=[Route("/", endpoint)])
    app.add_middleware(StreamMiddleware)
    srv = server(app, kind)
    with H2Client("127.0.0.1", srv.port) as client:
        a = client.request("GET", "/?label=a")
        b = client.request("GET", "/?label=b")
        client.run_until(lambda: len(b.chunks) >= 2, timeout=5)
        t_cancel = time.monotonic()
        client.cancel(b.stream_id)
        client.read_all([a.stream_id], timeout=10)
    assert a.ended and a.status == 200
    names = {k for k, _ in a.headers}
    assert not names & {b"connection", b"keep-alive", b"transfer-encoding", b"upgrade"}
    data_frames = [c.data for c in a.chunks if c.data]
    assert data_frames == [f"data: a{i}\n\n".encode() for i in range(6)]
    wait_for(lambda: "b" in finals, message="the reset stream's generator never finished")
    assert finals["b"] - t_cancel < 0.5  # only the reset stream was cancelled …
    assert finals["a"] > finals["b"]  # … the other one completed
