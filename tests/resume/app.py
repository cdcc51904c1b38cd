"""The worker app of the multi-worker resume tests: ``uvicorn tests.resume.app:app``.

Configured by the environment:

* ``RESUME_REDIS_URL`` — the Redis store's URL (a MemoryStore when unset);
* ``RESUME_WORKER`` — this worker's name, sent back in every response's ``X-Worker``;
* ``RESUME_LOG`` — a file this worker appends one line per generator/stream event to;
* ``RESUME_GRACE``, ``RESUME_HEARTBEAT``, ``RESUME_PATIENCE``, ``RESUME_TIMEOUT``,
  ``RESUME_FINISH_RETRY`` — seconds.

``GET /chat?n=&interval=&retry=&cut=`` streams a deterministic generator, resumable.
``cut=k`` makes the server drop the TCP connection after ``k`` events of *this*
response (the stream itself goes on, decoupled from the connection), like a mobile
client's network would; ``retry`` sends the SSE reconnection time (ms) first.
``GET /health`` answers the worker's name and PID.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any
from urllib.parse import parse_qs

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_stream import Event, StreamMiddleware, StreamRecord, TokenStream, current_cancel_token
from asgi_stream.resume import Limits, MemoryStore, ReplayStore

WORKER = os.environ.get("RESUME_WORKER", "worker")
LOG = os.environ.get("RESUME_LOG")


def log(kind: str, **fields: Any) -> None:
    """Append one JSON line to the worker's log file."""
    if LOG:
        line = json.dumps({"t": time.time(), "worker": WORKER, "pid": os.getpid(), "kind": kind, **fields})
        with open(LOG, "a") as f:
            f.write(line + "\n")


def token(i: int) -> str:
    """Token ``i`` of the deterministic generator (multi-byte characters included)."""
    return f"tok{i:03d}·é "


def make_store() -> ReplayStore:
    """The store the environment asks for."""
    url = os.environ.get("RESUME_REDIS_URL")
    if not url:
        return MemoryStore()
    from asgi_stream.resume import RedisStore

    return RedisStore(
        url,
        limits=Limits(ttl=60.0, running_ttl=120.0),
        heartbeat=float(os.environ.get("RESUME_HEARTBEAT", "0.25")),
        patience=float(os.environ.get("RESUME_PATIENCE", "2.0")),
        timeout=float(os.environ.get("RESUME_TIMEOUT", "1.0")),
        finish_retry=float(os.environ.get("RESUME_FINISH_RETRY", "5.0")),
    )


async def chat(request: Request) -> TokenStream:
    """A deterministic stream of ``n`` tokens paced ``interval`` seconds apart."""
    q = request.query_params
    n = int(q.get("n", "40"))
    interval = float(q.get("interval", "0.05"))
    retry = q.get("retry")
    resumable = q.get("resumable", "1") == "1"
    tag = q.get("tag", "")

    async def gen():
        produced = 0
        token_ = current_cancel_token()
        log("generator-start", tag=tag)
        try:
            if retry is not None:
                yield Event(data="start", retry=int(retry))
            for i in range(n):
                yield token(i)
                produced += 1
                if interval:
                    await anyio.sleep(interval)
        finally:
            log("generator-end", tag=tag, produced=produced, cancelled=bool(token_ and token_.cancelled))

    return TokenStream(gen(), resumable=resumable, end="[DONE]")


async def health(request: Request) -> JSONResponse:
    """Liveness: the worker's name and PID."""
    return JSONResponse({"worker": WORKER, "pid": os.getpid()})


def on_end(record: StreamRecord) -> None:
    """Log how each stream (producer or consumer) ended."""
    log(
        "stream-end",
        stream_id=record.labels.get("stream_id"),
        outcome=record.outcome.value if record.outcome else None,
        cancel_reason=record.cancel_reason.value if record.cancel_reason else None,
        events=record.events,
    )


class WorkerHeaderAndCut:
    """Outermost ASGI layer: ``X-Worker`` on every response, and ``cut=k``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.background: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_worker(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-worker", WORKER.encode())]}
            await send(message)

        cut = parse_qs(scope.get("query_string", b"").decode()).get("cut")
        if not cut:
            await self.app(scope, receive, send_with_worker)
            return
        await self._with_cut(int(cut[0]), scope, receive, send_with_worker)

    async def _with_cut(self, k: int, scope: Any, receive: Any, send: Any) -> None:
        cut = asyncio.Event()
        seen = 0

        async def cutting_send(message: dict[str, Any]) -> None:
            nonlocal seen
            if cut.is_set():
                raise OSError("connection cut by the test server")  # ASGI 2.4: the client is gone
            await send(message)
            seen += message.get("body", b"").count(b"\nid: ")
            if seen >= k:
                cut.set()

        async def cutting_receive() -> dict[str, Any]:
            if cut.is_set():
                return {"type": "http.disconnect"}
            get = asyncio.ensure_future(receive())
            stop = asyncio.ensure_future(cut.wait())
            done, _ = await asyncio.wait({get, stop}, return_when=asyncio.FIRST_COMPLETED)
            if get in done:
                stop.cancel()
                return get.result()
            get.cancel()
            return {"type": "http.disconnect"}

        task = asyncio.ensure_future(self.app(scope, cutting_receive, cutting_send))
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        waiter = asyncio.ensure_future(cut.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if cut.is_set():
            log("cut", path=scope.get("path"), events=seen)
            # Returning with the response unfinished makes the server drop the connection.
            return
        await task


store = make_store()
inner = Starlette(routes=[Route("/chat", chat), Route("/health", health)])
inner.add_middleware(
    StreamMiddleware,
    resume_store=store,
    resume_grace=float(os.environ.get("RESUME_GRACE", "30")),
    keepalive=5.0,
    on_end=on_end,
)
app = WorkerHeaderAndCut(inner)
