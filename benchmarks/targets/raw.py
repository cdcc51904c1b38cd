"""Target (a): a hand-written raw ASGI app that frames SSE itself — the practical limit.

It does what a careful hand-written streaming endpoint must: frames each token as an
SSE event, watches ``receive()`` for ``http.disconnect`` in a second task (cancelling
the stream and closing the generator), and runs a sync generator's ``next()`` in a
worker thread. Per token it does nothing else: frame, ``await send``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from typing import Any

import anyio
import anyio.to_thread

from .common import query, source_for

_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
_START = {"type": "http.response.start", "status": 200, "headers": _HEADERS}
_END = {"type": "http.response.body", "body": b"", "more_body": False}
_SENTINEL = object()


async def _thread_iter(gen: Generator[str, None, None]) -> AsyncGenerator[str, None]:
    """Iterate a sync generator on worker threads; close it when the iteration ends."""
    try:
        while True:
            item = await anyio.to_thread.run_sync(next, gen, _SENTINEL)
            if isinstance(item, str):
                yield item
            else:
                return
    finally:
        gen.close()  # the thread has returned: cancellation waits for it


async def _stream(source: Any, receive: Any, send: Any) -> None:
    agen: AsyncGenerator[str, None] = source if hasattr(source, "__anext__") else _thread_iter(source)
    async with anyio.create_task_group() as tg:

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            tg.cancel_scope.cancel()

        tg.start_soon(watch_disconnect)
        try:
            await send(dict(_START))
            async for token in agen:
                await send(
                    {"type": "http.response.body", "body": ("data: " + token + "\n\n").encode(), "more_body": True}
                )
            await send(_END)
        finally:
            with anyio.CancelScope(shield=True):
                await agen.aclose()
        tg.cancel_scope.cancel()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The raw ASGI application."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    source = source_for(scope["path"], query(scope), framed=False)
    if source is None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"not found"})
        return
    await _stream(source, receive, send)
