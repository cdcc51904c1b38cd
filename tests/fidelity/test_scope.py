"""Defects 9 and 12: the middleware's per-request context in the scope. A nested line
(a mounted app with its own) must still read the request body through every layer in
between; a scope dict used again for a new request must not inherit the old request."""

from __future__ import annotations

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from asgi_stream import StreamMiddleware

from .support import add_line, variants


class UpperCaseBody:
    """A pure-ASGI middleware that rewrites the request body as it is received (as a
    decompressing, decrypting or size-limiting middleware does)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        async def upper_receive():
            message = await receive()
            if message["type"] == "http.request":
                message = {**message, "body": message.get("body", b"").upper()}
            return message

        await self.app(scope, upper_receive if scope["type"] == "http" else receive, send)


@pytest.mark.parametrize("line", variants(None))
def test_a_mounted_app_with_its_own_line_reads_the_body_through_the_layers_between(line: bool) -> None:
    async def echo(request: Request) -> PlainTextResponse:
        return PlainTextResponse(await request.body())

    api = add_line(Starlette(routes=[Route("/echo", echo, methods=["POST"])]), line)
    app = Starlette(routes=[Mount("/api", app=api)])
    app.add_middleware(UpperCaseBody)
    add_line(app, line)
    with TestClient(app) as client:
        response = client.post("/api/echo", content=b"hello")
    assert response.status_code == 200
    assert response.text == "HELLO"


async def _two_requests_one_scope(app) -> list[bytes]:
    """Serve two requests with one scope dict (as tests that keep a module-level scope
    do): the first client leaves at once, the second stays to the end."""
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}
    bodies: list[bytes] = []
    for client_leaves in (True, False):
        sent: list[dict] = []

        async def receive() -> dict:
            if client_leaves:  # noqa: B023
                return {"type": "http.disconnect"}
            await anyio.sleep_forever()
            raise AssertionError

        async def send(message: dict) -> None:
            sent.append(message)  # noqa: B023

        with anyio.fail_after(10):
            await app(scope, receive, send)
        bodies.append(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))
    return bodies


@pytest.mark.parametrize("line", variants(None))
def test_a_scope_dict_used_again_serves_a_new_request(line: bool) -> None:
    async def events():
        yield "data: 1\n\n"
        await anyio.sleep(0.2)
        yield "data: 2\n\n"

    async def app(scope, receive, send) -> None:
        await StreamingResponse(events(), media_type="text/event-stream")(scope, receive, send)

    served = StreamMiddleware(app) if line else app
    first, second = anyio.run(_two_requests_one_scope, served)
    # The first client left at once: what reached the server for it (nothing, or the
    # first event) is moot; the second request must get its whole body.
    assert b"data: 1\n\n".startswith(first)
    assert second == b"data: 1\n\ndata: 2\n\n"
