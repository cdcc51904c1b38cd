"""Targets (f) and (g): FastAPI's own ``EventSourceResponse`` (FastAPI ≥ 0.135): path
operations with ``response_class=EventSourceResponse`` that yield ``ServerSentEvent
(raw_data=token)`` (the same ``data: tok`` bytes on the wire as every other target).
``app`` is FastAPI alone; ``line_app`` adds ``app.add_middleware(StreamMiddleware)``.

FastAPI chooses its sync or async machinery from the path operation itself, so the
disconnect workload's ``/block?mode=sync`` is routed to a ``def`` path operation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from asgi_stream import StreamMiddleware

from .common import blocking_sync, query, source_for


def make_app(line: bool) -> Any:
    """The FastAPI app; ``line``: with StreamMiddleware (and so its FastAPI integration)."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    async def stream(request: Request) -> AsyncIterator[ServerSentEvent]:
        source = source_for(request.url.path, dict(request.query_params), framed=False)
        try:
            async for token in source:
                yield ServerSentEvent(raw_data=token)
        finally:
            await source.aclose()

    for path in ("/fast", "/slow", "/block", "/ttfb"):
        app.get(path, response_class=EventSourceResponse)(stream)

    @app.get("/block-sync", response_class=EventSourceResponse)
    def block_sync(trial: str = "?", block: float = 0.5) -> Iterator[ServerSentEvent]:
        source = blocking_sync(trial, block)
        try:
            for token in source:
                yield ServerSentEvent(raw_data=token)
        finally:
            source.close()

    if line:
        app.add_middleware(StreamMiddleware)
    return _SyncBlockRoute(app)


class _SyncBlockRoute:
    """Sends ``/block?mode=sync`` to the ``def`` path operation (pure ASGI, no copy of the body)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/block" and query(scope).get("mode") == "sync":
            scope = dict(scope, path="/block-sync", raw_path=b"/block-sync")
        await self.app(scope, receive, send)


app = make_app(line=False)
line_app = make_app(line=True)
