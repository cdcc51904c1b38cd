"""Defect 5: sse-starlette's ``client_close_handler_callable`` is called when the
client leaves, with an ``@app.middleware("http")`` between it and the line."""

from __future__ import annotations

import anyio
import pytest
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.routing import Route

from ..support.servers import serve
from ..support.waiting import wait_for
from .support import BUDGET, add_line, open_stream, variants


@pytest.mark.parametrize("line", variants(None))
def test_client_close_handler_runs_behind_base_http_middleware(line: bool) -> None:
    closed_with: list[dict] = []

    async def on_client_close(message: dict) -> None:
        closed_with.append(message)

    async def events(request):
        async def gen():
            yield {"data": "Hel"}
            await anyio.sleep(60)
            yield {"data": "lo"}

        return EventSourceResponse(gen(), client_close_handler_callable=on_client_close)

    async def passthrough(request, call_next):  # an ``@app.middleware("http")``
        return await call_next(request)

    app = Starlette(routes=[Route("/events", events)])
    app.add_middleware(BaseHTTPMiddleware, dispatch=passthrough)
    add_line(app, line)  # added last, the usual placement: the BaseHTTPMiddleware is inside it
    with serve(app) as srv:
        client = open_stream(srv.port, "/events")
        client.close()
        wait_for(lambda: closed_with, BUDGET, message="client_close_handler_callable was never called")
    assert [m["type"] for m in closed_with] == ["http.disconnect"]
