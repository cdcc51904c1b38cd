"""The same token stream written the way each peer's documentation shows it.

``conformance.peers.apps:app`` is the app named by the ``CONFORMANCE_PEER`` environment
variable (one per server process, so that nothing one peer installs reaches another):

``asgi-stream``          Starlette, ``StreamMiddleware`` and ``TokenStream(gen)``
``fastapi``              FastAPI's own ``EventSourceResponse`` (``response_class=``, a path
                         operation that yields)
``fastapi+asgi-stream``  the same FastAPI app with ``app.add_middleware(StreamMiddleware)``
``sse-starlette``        ``sse_starlette.EventSourceResponse(gen)``
``starlette``            ``StreamingResponse(gen, media_type="text/event-stream")``, the SSE
                         lines written by hand

Every app serves ``GET /async`` and ``GET /sync`` (an async and a sync generator):
``n`` tokens ``interval`` s apart, with a ``pause`` after the first ``pause_after``
(a long prefill or tool call), and ``GET /metrics``: ``peer_generations_running``, the
generators whose body runs and whose ``finally`` has not run, as a Prometheus gauge.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

GAUGE = "peer_generations_running"
PEERS = ("asgi-stream", "fastapi", "fastapi+asgi-stream", "sse-starlette", "starlette")

_running = 0
_lock = threading.Lock()


def _count(delta: int) -> None:
    global _running
    with _lock:
        _running += delta


def running() -> int:
    """Generators running in this process."""
    with _lock:
        return _running


def _params(q: Any) -> tuple[int, float, int, float]:
    return (
        int(q.get("n", 10)),
        float(q.get("interval", 0.1)),
        int(q.get("pause_after", 3)),
        float(q.get("pause", 0.0)),
    )


async def tokens_async(n: int, interval: float, pause_after: int, pause: float) -> AsyncIterator[str]:
    """``t000 ``, ``t001 ``… paced, counted in the gauge while the body runs."""
    _count(1)
    try:
        for i in range(n):
            if i:
                await anyio.sleep(interval + (pause if i == pause_after else 0.0))
            yield f"t{i:03d} "
    finally:
        _count(-1)


def tokens_sync(n: int, interval: float, pause_after: int, pause: float) -> Iterator[str]:
    """The sync twin of :func:`tokens_async`."""
    _count(1)
    try:
        for i in range(n):
            if i:
                time.sleep(interval + (pause if i == pause_after else 0.0))
            yield f"t{i:03d} "
    finally:
        _count(-1)


async def metrics(request: Request) -> Response:
    """The gauge, in the Prometheus text format."""
    body = f"# TYPE {GAUGE} gauge\n{GAUGE} {running()}\n"
    return Response(body, media_type="text/plain; version=0.0.4")


def _starlette(make: Callable[[Request, bool], Response]) -> Starlette:
    async def stream_async(request: Request) -> Response:
        return make(request, False)

    async def stream_sync(request: Request) -> Response:
        return make(request, True)

    return Starlette(
        routes=[
            Route("/async", stream_async, methods=["GET", "HEAD"]),
            Route("/sync", stream_sync, methods=["GET", "HEAD"]),
            Route("/metrics", metrics),
        ]
    )


def _source(request: Request, sync: bool) -> Any:
    args = _params(request.query_params)
    return tokens_sync(*args) if sync else tokens_async(*args)


def asgi_stream_app() -> Any:
    """TokenStream under StreamMiddleware."""
    from asgi_stream import StreamMiddleware, TokenStream

    app = _starlette(lambda request, sync: TokenStream(_source(request, sync)))
    app.add_middleware(StreamMiddleware)
    return app


def sse_starlette_app() -> Any:
    """sse-starlette's EventSourceResponse with its defaults (ping every 15 s)."""
    from sse_starlette import EventSourceResponse

    return _starlette(lambda request, sync: EventSourceResponse(_source(request, sync)))


def _frame_async(source: AsyncIterator[str]) -> AsyncIterator[str]:
    async def frames() -> AsyncIterator[str]:
        async for tok in source:
            yield f"data: {tok}\n\n"

    return frames()


def starlette_app() -> Any:
    """A plain StreamingResponse, SSE framed by hand (sync iterators go to the thread pool)."""

    def make(request: Request, sync: bool) -> Response:
        source = _source(request, sync)
        body = (f"data: {tok}\n\n" for tok in source) if sync else _frame_async(source)
        return StreamingResponse(body, media_type="text/event-stream")

    return _starlette(make)


def fastapi_app(line: bool = False) -> Any:
    """FastAPI's own EventSourceResponse (``line``: plus the one line of StreamMiddleware)."""
    from fastapi import FastAPI
    from fastapi.sse import EventSourceResponse

    app = FastAPI()

    @app.get("/async", response_class=EventSourceResponse)
    async def stream_async(
        n: int = 10, interval: float = 0.1, pause_after: int = 3, pause: float = 0.0
    ) -> AsyncIterator[str]:
        async for tok in tokens_async(n, interval, pause_after, pause):
            yield tok

    @app.get("/sync", response_class=EventSourceResponse)
    def stream_sync(n: int = 10, interval: float = 0.1, pause_after: int = 3, pause: float = 0.0) -> Iterator[str]:
        yield from tokens_sync(n, interval, pause_after, pause)

    app.add_route("/metrics", metrics)
    if line:
        from asgi_stream import StreamMiddleware

        app.add_middleware(StreamMiddleware)
    return app


def build(peer: str) -> Any:
    """The app of one peer (see :data:`PEERS`)."""
    if peer == "asgi-stream":
        return asgi_stream_app()
    if peer == "fastapi":
        return fastapi_app()
    if peer == "fastapi+asgi-stream":
        return fastapi_app(line=True)
    if peer == "sse-starlette":
        return sse_starlette_app()
    if peer == "starlette":
        return starlette_app()
    raise ValueError(f"unknown peer {peer!r}; known: {', '.join(PEERS)}")


app = build(os.environ.get("CONFORMANCE_PEER", "asgi-stream"))
