"""The churn test's server side: one endless stream per generator kind, instrumented.

Served by a real server (``uvicorn tests.fault.churn_app:app``). ``GET /<kind>`` awaits
a moment (the endpoint's auth call), then streams a token every ``INTERVAL`` seconds
forever: only the client's leaving ends it. ``GET /_churn/stats`` (answered outside
StreamMiddleware) reports requests in flight, generators started and closed per kind,
event-loop tasks, threads, file descriptors and RSS; ``?gc=1`` collects garbage first
(for the kind documented to be closed by the collector).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
from fastapi import Depends, FastAPI
from fastapi.sse import EventSourceResponse as FastAPIEventSourceResponse
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Mount, Route

from asgi_stream import CancelToken, Coalesce, StreamMiddleware, TokenChannel, TokenStream

#: Seconds between tokens (the first comes at once).
INTERVAL = 0.25
#: The endpoint's own await before it returns its response.
AUTH = 0.01
KINDS = (
    "async",
    "sync",
    "channel",
    "coalesce",
    "resumable",
    "text",
    "sr_async",
    "sr_sync",
    "sse_starlette",
    "fastapi_async",
    "fastapi_sync",
)

_lock = threading.Lock()
started: Counter[str] = Counter()
closed: Counter[str] = Counter()
#: Requests in flight, by kind (the path's last segment).
inflight: Counter[str] = Counter()


def _enter(kind: str) -> None:
    with _lock:
        started[kind] += 1


def _leave(kind: str) -> None:
    with _lock:
        closed[kind] += 1


async def agen(kind: str, frame: bool = False) -> AsyncIterator[Any]:
    _enter(kind)
    try:
        n = 0
        while True:
            yield f"data: t{n}\n\n" if frame else f"t{n}"
            n += 1
            await anyio.sleep(INTERVAL)
    finally:
        _leave(kind)


def sgen(kind: str, frame: bool = False) -> Iterator[str]:
    _enter(kind)
    try:
        n = 0
        while True:
            yield f"data: t{n}\n\n" if frame else f"t{n}"
            n += 1
            time.sleep(INTERVAL)
    finally:
        _leave(kind)


def channel(token: CancelToken) -> TokenChannel:
    ch = TokenChannel(cancel=token)

    def produce() -> None:
        _enter("channel")
        try:
            n = 0
            while ch.put(f"t{n}"):
                n += 1
                if token.wait_sync(INTERVAL):
                    return
        finally:
            _leave("channel")
            ch.close()

    threading.Thread(target=produce, name="churn: channel producer", daemon=True).start()
    return ch


async def stream(request: Request) -> Response:
    kind = request.path_params["kind"]
    await anyio.sleep(AUTH)
    if kind == "async":
        return TokenStream(agen(kind))
    if kind == "sync":
        return TokenStream(sgen(kind))
    if kind == "channel":
        token = CancelToken()
        return TokenStream(channel(token), cancel=token)
    if kind == "coalesce":
        return TokenStream(agen(kind), flush=Coalesce())
    if kind == "resumable":
        return TokenStream(agen(kind), resumable=True)
    if kind == "text":
        return TokenStream(agen(kind), format="text")
    if kind == "sr_async":
        return StreamingResponse(agen(kind, frame=True), media_type="text/event-stream")
    if kind == "sr_sync":
        return StreamingResponse(sgen(kind, frame=True), media_type="text/event-stream")
    if kind == "sse_starlette":
        return EventSourceResponse(agen(kind))
    return Response(status_code=404)


api = FastAPI()


async def auth() -> None:
    await anyio.sleep(AUTH)


@api.get("/fastapi_async", response_class=FastAPIEventSourceResponse, dependencies=[Depends(auth)])
async def fastapi_async() -> AsyncIterator[str]:
    _enter("fastapi_async")  # the path operation is the generator (no inner one to close)
    try:
        n = 0
        while True:
            yield f"t{n}"
            n += 1
            await anyio.sleep(INTERVAL)
    finally:
        _leave("fastapi_async")


@api.get("/fastapi_sync", response_class=FastAPIEventSourceResponse, dependencies=[Depends(auth)])
def fastapi_sync() -> Iterator[str]:
    yield from sgen("fastapi_sync")


inner = Starlette(routes=[Mount("/api", app=api), Route("/{kind}", stream)])
# resume_grace is short so that abandoned resumable producers end within a wave
inner.add_middleware(StreamMiddleware, resume_grace=0.2, handle_signals=False)


def _threads() -> dict[str, int]:
    """Threads by what they do: asgi-stream's own, app threads, pool workers busy in app
    code, and idle pool workers (kept warm by anyio; not a leak)."""
    me = __file__
    frames = sys._current_frames()
    out: Counter[str] = Counter()
    for thread in threading.enumerate():
        frame = frames.get(thread.ident or -1)
        in_app = False
        while frame is not None and not in_app:
            in_app = frame.f_code.co_filename == me
            frame = frame.f_back
        if thread.name.startswith("asgi-stream") and thread.name != "asgi-stream loop watchdog":
            out["asgi_stream"] += 1
        elif in_app:
            out["in_app"] += 1
        elif thread.name.startswith("AnyIO worker thread"):
            out["idle_pool"] += 1
        else:
            out["other"] += 1
    return dict(out)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def stats(collect: bool) -> dict[str, Any]:
    """What the churn test checks."""
    if collect:
        gc.collect()
    with _lock:
        opened, ended = dict(started), dict(closed)
    return {
        "inflight": {kind: n for kind, n in inflight.items() if n},
        "started": opened,
        "closed": ended,
        "tasks": len(asyncio.all_tasks()) - 1,  # not this request's own
        "threads": _threads(),
        "fds": len(os.listdir("/proc/self/fd")),
        "rss": _rss(),
    }


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Counts requests in flight around everything; answers the stats itself."""
    if scope["type"] == "http" and scope["path"] == "/_churn/stats":
        body = json.dumps(stats(b"gc=1" in scope.get("query_string", b""))).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    if scope["type"] != "http":
        await inner(scope, receive, send)
        return
    kind = scope["path"].rsplit("/", 1)[-1]
    inflight[kind] += 1
    try:
        await inner(scope, receive, send)
    finally:
        inflight[kind] -= 1
