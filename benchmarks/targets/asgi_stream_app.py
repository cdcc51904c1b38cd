"""Targets (d) and (e): asgi-stream's TokenStream behind StreamMiddleware, with
per-token flush (``per_token_app``) and with coalescing (``coalesce_app``)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from asgi_stream import Coalesce, PerToken, StreamMiddleware, TokenStream

from .common import source_for

#: The coalescing policy of target (e): the library's defaults, spelled out.
COALESCE = Coalesce(max_delay=0.02, max_bytes=16384)


async def endpoint(request: Request) -> Response:
    """Every workload's path, as a TokenStream of plain tokens framed as SSE."""
    source = source_for(request.url.path, dict(request.query_params), framed=False)
    if source is None:
        return PlainTextResponse("not found", status_code=404)
    return TokenStream(source, format="sse")


def make_app(flush: PerToken | Coalesce) -> Starlette:
    """The Starlette app with StreamMiddleware using ``flush``."""
    routes = [Route(p, endpoint) for p in ("/fast", "/slow", "/block", "/ttfb")]
    return Starlette(routes=routes, middleware=[Middleware(StreamMiddleware, default_format="sse", flush=flush)])


per_token_app = make_app(PerToken())
coalesce_app = make_app(COALESCE)
