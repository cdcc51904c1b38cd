"""The line chains the server's SIGINT/SIGTERM handlers (to drain its streams) without
hiding them: code that inspects the installed handler still finds the server behind it.
sse-starlette finds uvicorn's ``Server`` this way (``signal.getsignal(SIGTERM).__self__``)
to see ``should_exit``; with the handler hidden its streams never ended on shutdown."""

from __future__ import annotations

import asyncio
import signal
import socket

import anyio
import httpx
import pytest
import uvicorn
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.routing import Route

from asgi_stream import shutdown

from .support import BUDGET, add_line, variants


def test_a_chained_handler_shows_the_server_it_wraps() -> None:
    class Server:
        should_exit = False

        def handle_exit(self, signum: int, frame: object) -> None:
            self.should_exit = True

    server = Server()
    chained = shutdown._Chained(server.handle_exit)
    assert chained.__self__ is server
    assert chained.__wrapped__ == server.handle_exit
    assert not hasattr(shutdown._Chained(lambda signum, frame: None), "__self__")
    chained(signal.SIGTERM, None)
    assert server.should_exit


@pytest.mark.parametrize("line", variants(None))
def test_sse_starlette_sees_uvicorns_exit_through_the_chained_handler(line: bool) -> None:
    async def endpoint(_request: object) -> EventSourceResponse:
        async def events():  # type: ignore[no-untyped-def]
            yield {"data": "hello"}
            await anyio.sleep_forever()

        return EventSourceResponse(events(), ping=0)

    app = add_line(Starlette(routes=[Route("/events", endpoint)]), line)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def main() -> tuple[int, str]:
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
        serving = asyncio.create_task(server.serve())
        try:
            while not server.started:
                await asyncio.sleep(0.01)
            if line:
                assert signal.getsignal(signal.SIGTERM).__self__ is server  # type: ignore[union-attr]
            text = ""
            async with httpx.AsyncClient() as client:
                async with client.stream("GET", f"http://127.0.0.1:{port}/events") as response:
                    with anyio.fail_after(BUDGET):  # the body ends: the stream saw the exit
                        async for chunk in response.aiter_text():
                            text += chunk
                            if "hello" in chunk:
                                server.should_exit = True  # what uvicorn's SIGTERM handler sets
            return response.status_code, text
        finally:
            server.should_exit = True
            await serving

    status, text = asyncio.run(main())
    assert status == 200 and "data: hello" in text
