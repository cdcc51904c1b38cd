"""A deliberately broken raw-ASGI streaming app: the suite must fail against it.

It serves the target app's endpoints (``/stream``, ``/utf8``, ``/_hooks/streams``)
without StreamMiddleware, and with the flaws named in ``CONFORMANCE_FLAWS``
(comma-separated):

``buffer``            collect every token, then send the body in one piece
``content-length``    ... and declare a Content-Length (implies ``buffer``)
``no-stream-headers`` no Cache-Control, no X-Accel-Buffering
``no-cancel``         ignore ``http.disconnect``: the generator always runs to its end
``replace-utf8``      decode each bytes token on its own, with errors="replace"
``truncate``          fail after the last token (the server aborts the body)
``unbounded``         an endless stream is produced into an unbounded queue, with no
                      send timeout
``sse-no-terminator`` the last SSE event lacks its blank line
``bad-json``          NDJSON lines are raw text, not JSON
``single-worker``     one stream at a time in the whole process (the others wait, headers sent)
``swallow-send-errors`` ignore any exception a ``send()`` raises and keep streaming
``leak-on-send-error`` when a ``send()`` raises: close the generator, then never return

A request's ``X-Conformance-Flaws`` header adds flaws for that request, so one server
serves every flaw set. ``/metrics`` serves the gauge of running generators.

It never sends keepalive comments and ignores the flush policy: the keepalive and
coalesce cases fail against it whatever the flaws.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any
from urllib.parse import parse_qs

import anyio

from conformance.asgi_tap import AsgiTap
from conformance.hooks import Registry, StreamLog
from conformance.tokens import UTF8_TOKENS, event_for, token_text

FLAWS = {f.strip() for f in os.environ.get("CONFORMANCE_FLAWS", "").split(",") if f.strip()}
#: A request header that adds flaws to this one request (one server, many flaw sets).
FLAWS_HEADER = b"x-conformance-flaws"
#: ``unbounded`` stops producing after this much (it proves the point; memory stays finite).
UNBOUNDED_LIMIT = 64 * 1024 * 1024
registry = Registry()
_single_worker: anyio.Lock | None = None


def flaws_of(scope: Scope) -> set[str]:
    """The flaws of one request: ``CONFORMANCE_FLAWS`` plus the request's header."""
    flaws = set(FLAWS)
    for k, v in scope.get("headers", []):
        if k == FLAWS_HEADER:
            flaws |= {f.strip() for f in v.decode("latin-1").split(",") if f.strip()}
    if "content-length" in flaws:
        flaws.add("buffer")
    return flaws


Scope = dict[str, Any]


def _fmt(scope: Scope) -> tuple[str, str]:
    forced = parse_qs(scope.get("query_string", b"").decode()).get("format", [""])[0]
    if forced:
        return forced, {"sse": "text/event-stream; charset=utf-8", "ndjson": "application/x-ndjson"}.get(
            forced, "text/plain; charset=utf-8"
        )
    accept = ""
    for k, v in scope.get("headers", []):
        if k == b"accept":
            accept = v.decode("latin-1")
    if "text/event-stream" in accept:
        return "sse", "text/event-stream; charset=utf-8"
    if "application/x-ndjson" in accept:
        return "ndjson", "application/x-ndjson"
    return "text", "text/plain; charset=utf-8"


def _frame(fmt: str, tok: Any, flaws: set[str]) -> bytes:
    if fmt == "sse":
        if hasattr(tok, "data"):
            lines = "".join(f"data: {x}\n" for x in str(tok.data).replace("\r\n", "\n").split("\n"))
            return f"event: {tok.event}\nid: {tok.id}\n{lines}\n".encode()
        return f"data: {tok}\n\n".encode()
    if fmt == "ndjson":
        if "bad-json" in flaws:
            return (str(getattr(tok, "data", tok)) + "\n").encode()
        return (json.dumps(getattr(tok, "data", tok)) + "\n").encode()
    return str(getattr(tok, "data", tok)).encode()


async def _tokens(log: StreamLog, q: dict[str, list[str]]) -> AsyncIterator[Any]:
    n = int(q.get("n", ["5"])[0])
    interval = float(q.get("interval", ["0.1"])[0])
    idle = float(q.get("idle", ["0"])[0])
    pause = float(q.get("pause", ["0"])[0])
    pause_after = int(q.get("pause_after", ["0"])[0])
    size = int(q.get("size", ["0"])[0])
    events = q.get("events", ["0"])[0] == "1"
    i = 0
    reason = "closed"
    log.enter()
    try:
        if idle:
            await anyio.sleep(idle)
        while n == 0 or i < n:
            if i and pause and i == pause_after:
                await anyio.sleep(pause)
            if i and interval:
                await anyio.sleep(interval)
            elif n == 0 and i % 16 == 0:
                await anyio.sleep(0)
            log.produced(size or 5)
            yield event_for(i, n) if events else token_text(i, size)
            i += 1
        reason = "exhausted"
    finally:
        log.finished(reason, None)


async def _utf8(log: StreamLog, interval: float) -> AsyncIterator[Any]:
    reason = "closed"
    try:
        for i, tok in enumerate(UTF8_TOKENS):
            if i:
                await anyio.sleep(interval)
            log.produced(len(tok))
            yield tok
        reason = "exhausted"
    finally:
        log.finished(reason, None)


#: The flaws of the request being served (for the send-error flaws, deep in the loop).
_request_flaws: ContextVar[frozenset[str]] = ContextVar("request_flaws", default=frozenset(FLAWS))


class _SendFailed(Exception):
    """A send raised (``leak-on-send-error``)."""


async def _send_safely(send: Any, message: dict[str, Any]) -> None:
    try:
        await send(message)
    except OSError:
        pass
    except Exception:
        flaws = _request_flaws.get()
        if "swallow-send-errors" in flaws:
            return
        if "leak-on-send-error" in flaws:
            raise _SendFailed from None
        raise


async def stream(scope: Scope, receive: Any, send: Any) -> None:
    """The flawed streaming endpoint."""
    global _single_worker
    flaws = flaws_of(scope)
    _request_flaws.set(frozenset(flaws))
    q = parse_qs(scope.get("query_string", b"").decode())
    label = q.get("label", [f"anon-{time.monotonic()}"])[0]
    log = registry.open(label, "broken")
    fmt, ctype = _fmt(scope)
    if scope["path"] == "/utf8":
        source: AsyncIterator[Any] = _utf8(log, float(q.get("interval", ["0.05"])[0]))
    else:
        source = _tokens(log, q)
    headers = [(b"content-type", ctype.encode())]
    if "no-stream-headers" not in flaws:
        headers += [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]

    def frame(tok: Any) -> bytes:
        if isinstance(tok, bytes):
            tok = tok.decode("utf-8", "replace") if "replace-utf8" in flaws else tok.decode("utf-8", "ignore")
        return _frame(fmt, tok, flaws)

    if scope["method"] == "HEAD":
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        await source.aclose()
        return
    if "buffer" in flaws:
        body = b"".join([frame(t) async for t in source])
        if "content-length" in flaws:
            headers.append((b"content-length", str(len(body)).encode()))
        log.outcome = "completed"
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        log.ended_at = time.monotonic()
        return
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if "unbounded" in flaws:
        await _unbounded(source, frame, send, log)
        return
    async with anyio.create_task_group() as tg:
        if "no-cancel" not in flaws:

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                log.cancel_reason = "disconnect"
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
        hold_last = "sse-no-terminator" in flaws
        if "single-worker" in flaws:
            _single_worker = _single_worker or anyio.Lock()
            await _single_worker.acquire()
        try:
            await _serve_tokens(source, frame, send, hold_last)
        except _SendFailed:  # leak-on-send-error
            await source.aclose()
            await anyio.sleep_forever()
        finally:
            if "single-worker" in flaws and _single_worker is not None:
                _single_worker.release()
        if "truncate" in flaws:
            raise RuntimeError("deliberately truncated stream")
        await _send_safely(send, {"type": "http.response.body", "body": b"", "more_body": False})
        log.outcome = "completed"
        log.ended_at = time.monotonic()
        tg.cancel_scope.cancel()


async def _serve_tokens(source: AsyncIterator[Any], frame: Any, send: Any, hold_last: bool) -> None:
    """Send each token as it comes (holding the last one back with ``sse-no-terminator``)."""
    last = b""
    async for tok in source:
        data = frame(tok)
        if hold_last:
            if last:
                await _send_safely(send, {"type": "http.response.body", "body": last, "more_body": True})
            last = data
        else:
            await _send_safely(send, {"type": "http.response.body", "body": data, "more_body": True})
    if last:
        await _send_safely(send, {"type": "http.response.body", "body": last.removesuffix(b"\n"), "more_body": True})


async def _unbounded(source: AsyncIterator[Any], frame: Any, send: Any, log: StreamLog) -> None:
    """Produce as fast as possible into a list; send from it; never give up."""
    queue: list[bytes] = []

    done = False

    async def produce() -> None:
        nonlocal done
        produced = 0
        async for tok in source:
            data = frame(tok)
            queue.append(data)
            produced += len(data)
            if produced >= UNBOUNDED_LIMIT:
                break
        await source.aclose()
        done = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(produce)
        while not (done and not queue):
            if queue:
                await _send_safely(send, {"type": "http.response.body", "body": queue.pop(0), "more_body": True})
            else:
                await anyio.sleep(0)


async def _app(scope: Scope, receive: Any, send: Any) -> None:
    """The raw ASGI entry point."""
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] == "/metrics":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": registry.prometheus().encode()})
        return
    if scope["path"] == "/_hooks/streams":
        raw = parse_qs(scope.get("query_string", b"").decode()).get("label", [""])[0]
        body = json.dumps(registry.snapshot([x for x in raw.split(",") if x] or None)).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
        return
    if scope["path"] in ("/stream", "/utf8"):
        await stream(scope, receive, send)
        return
    await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"not found\n"})


#: What the servers run: inside the suite's AsgiTap, like the target app.
app = AsgiTap(_app, registry.open_tap)
