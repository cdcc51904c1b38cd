"""A body send() that raises something other than OSError (hypercorn's HTTP/3 raises
aioquic's FrameUnexpected after the client's STOP_SENDING, and never sends
http.disconnect) ends the stream as a disconnect: the generator is closed, on_end
runs once with outcome cancelled, and the request returns."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from asgi_stream import StreamMiddleware, TokenStream
from asgi_stream.record import StreamRecord


class FrameUnexpected(Exception):
    """Stands in for aioquic's h3 error (not an OSError)."""


@pytest.mark.parametrize("silent", [False, True], ids=["token-send", "keepalive-send"])
def test_a_raising_body_send_ends_the_stream_as_a_disconnect(silent: bool) -> None:
    closed: list[str] = []
    ends: list[StreamRecord] = []

    async def tokens() -> AsyncIterator[str]:
        try:
            yield "t0"
            await anyio.sleep(60 if silent else 0.01)  # silent: only keepalives are sent
            for i in range(1, 100):
                yield f"t{i}"
                await anyio.sleep(0.01)
        finally:
            closed.append("closed")

    async def endpoint(request: Request) -> TokenStream:
        return TokenStream(tokens(), keepalive=0.05)

    app = StreamMiddleware(Starlette(routes=[Route("/", endpoint)]), on_end=ends.append)
    bodies = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal bodies
        if message["type"] == "http.response.body":
            bodies += 1
            if bodies >= 2:  # the client cancelled after the first token
                raise FrameUnexpected("DATA frame is not allowed in this state")

    async def receive() -> dict[str, Any]:
        await anyio.sleep_forever()  # the server never reports the disconnect
        raise AssertionError

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.1"},
        "http_version": "3",
        "method": "GET",
        "scheme": "https",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"accept", b"text/event-stream")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }

    async def main() -> None:
        with anyio.fail_after(5):  # the request returns: no task waits for itself
            await app(scope, receive, send)

    anyio.run(main)
    assert closed == ["closed"]
    assert len(ends) == 1
    assert ends[0].outcome is not None and ends[0].outcome.value == "cancelled"
    assert ends[0].cancel_reason is not None and ends[0].cancel_reason.value == "disconnect"
