"""Target (c): sse-starlette's EventSourceResponse (default options)."""

from __future__ import annotations

from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from .common import source_for


async def endpoint(request: Request) -> Response:
    """Every workload's path, as an EventSourceResponse of plain tokens."""
    source = source_for(request.url.path, dict(request.query_params), framed=False)
    if source is None:
        return PlainTextResponse("not found", status_code=404)
    return EventSourceResponse(source)


app = Starlette(routes=[Route(p, endpoint) for p in ("/fast", "/slow", "/block", "/ttfb")])
