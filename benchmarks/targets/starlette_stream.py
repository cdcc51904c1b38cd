"""Target (b): Starlette's StreamingResponse over pre-framed SSE strings."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from .common import source_for


async def endpoint(request: Request) -> Response:
    """Every workload's path, as a StreamingResponse of framed events."""
    source = source_for(request.url.path, dict(request.query_params), framed=True)
    if source is None:
        return PlainTextResponse("not found", status_code=404)
    return StreamingResponse(source, media_type="text/event-stream")


app = Starlette(routes=[Route(p, endpoint) for p in ("/fast", "/slow", "/block", "/ttfb")])
