"""The edges between lifecycle states, each once a defect: a client that leaves before
the endpoint returns its stream, and a cancel that arrives while a per-token send is
blocked."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from asgi_stream import (
    CancelReason,
    Coalesce,
    Outcome,
    StreamMiddleware,
    StreamRecord,
    TokenChannel,
    TokenStream,
)
from conformance.clients import H1Client

from .support.layers import Ends
from .support.waiting import wait_for, wait_for_async

KINDS = ["async", "sync", "coalesce", "channel"]


class Seen:
    """What the generators of one test did (thread-safe)."""

    def __init__(self) -> None:
        self.finally_ran = 0
        self.records: list[StreamRecord] = []
        self.lock = threading.Lock()

    def done(self) -> None:
        with self.lock:
            self.finally_ran += 1


def _stream(kind: str, seen: Seen) -> TokenStream:
    async def agen() -> AsyncIterator[str]:
        try:
            while True:
                yield "tok "
                await anyio.sleep(0.01)
        finally:
            seen.done()

    def sgen() -> Iterator[str]:
        try:
            while True:
                yield "tok "
                time.sleep(0.01)
        finally:
            seen.done()

    if kind == "sync":
        return TokenStream(sgen())
    if kind == "coalesce":
        return TokenStream(agen(), flush=Coalesce(max_delay=0.02))
    if kind == "channel":
        channel = TokenChannel()

        def produce() -> None:
            try:
                while channel.put("tok "):
                    time.sleep(0.01)
            finally:
                seen.done()

        threading.Thread(target=produce, daemon=True).start()
        return TokenStream(channel, cancel=channel.cancel_token)
    return TokenStream(agen())


def _app(kind: str, seen: Seen, *, delay: float) -> Starlette:
    async def endpoint(request: Any) -> TokenStream:
        await anyio.sleep(delay)  # auth, a database call, tokenisation…
        return _stream(kind, seen)

    app = Starlette(routes=[Route("/", endpoint)])
    app.add_middleware(StreamMiddleware, on_end=seen.records.append)
    return app


@pytest.mark.parametrize("http", ["h11", "httptools"])
@pytest.mark.parametrize("how", ["close", "abort"])
@pytest.mark.parametrize("kind", KINDS)
def test_client_that_leaves_before_the_endpoint_returns_ends_the_stream_once(server, kind, how, http) -> None:
    seen = Seen()
    ends = Ends(_app(kind, seen, delay=0.2))
    srv = server(ends, http=http)
    c = H1Client("127.0.0.1", srv.port)
    c.request("GET", "/", [("accept", "text/event-stream")])
    getattr(c, how)()  # FIN or RST while the endpoint is still awaiting
    # Over for the server: a second (wrong) end would have shown up by then.
    wait_for(lambda: seen.finally_ran and seen.records and ends.ended, timeout=10)
    assert seen.finally_ran == 1
    assert len(seen.records) == 1, [r.outcome for r in seen.records]
    record = seen.records[0]
    assert record.outcome is Outcome.CANCELLED
    assert record.cancel_reason is CancelReason.DISCONNECT


class _BlockingServer:
    """An in-process ASGI server whose client stops reading after ``allowed`` body
    messages: later non-final sends block until cancelled; the final one goes out."""

    def __init__(self, allowed: int) -> None:
        self.allowed = allowed
        self.messages: list[dict[str, Any]] = []
        self.blocked = anyio.Event()

    async def receive(self) -> dict[str, Any]:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(self, message: dict[str, Any]) -> None:
        body = message["type"] == "http.response.body"
        if body and message.get("more_body") and len(self.messages) > self.allowed:
            self.blocked.set()
            await anyio.sleep_forever()
        self.messages.append(message)


def _scope() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"accept", b"text/event-stream")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }


@pytest.mark.parametrize("flush", ["per-token", "coalesce"])
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_cancel_while_a_send_is_blocked_ends_the_body_cleanly(flush: str, backend: str) -> None:
    stream: list[TokenStream] = []

    async def gen() -> AsyncIterator[str]:
        while True:
            yield "x" * 64
            await anyio.sleep(0)

    async def endpoint(request: Any) -> TokenStream:
        policy = Coalesce(max_delay=0.001, max_bytes=64) if flush == "coalesce" else None
        stream.append(TokenStream(gen(), **({"flush": policy} if policy else {})))
        return stream[0]

    app = StreamMiddleware(Starlette(routes=[Route("/", endpoint)]), send_timeout=None)
    peer = _BlockingServer(allowed=3)

    async def main() -> float:
        async with anyio.create_task_group() as tg:
            tg.start_soon(app, _scope(), peer.receive, peer.send)
            await peer.blocked.wait()
            t0 = anyio.current_time()
            stream[0].cancel_token.cancel()  # the application (or a shutdown) cancels
            await wait_for_async(
                lambda: peer.messages and peer.messages[-1].get("more_body") is False, 5, interval=0.005
            )
            return anyio.current_time() - t0

    took = anyio.run(main, backend=backend)
    final = peer.messages[-1]
    assert final["type"] == "http.response.body" and final["more_body"] is False
    assert sum(1 for m in peer.messages if m.get("more_body") is False) == 1
    assert took < 0.9, f"the body ended {took:.2f} s after the cancel"
    record = stream[0].record
    assert record is not None
    assert record.outcome is Outcome.CANCELLED and record.cancel_reason is CancelReason.APPLICATION
