"""Serving resumable streams: the originating response and resumes.

The originating request starts a :class:`Producer` (generator → store) and answers as
a consumer reading the store from the beginning. A request carrying ``Last-Event-ID``
(header, or the ``last_event_id`` query parameter) for a stream of ours is answered by
the middleware before any endpoint runs: the events after the cursor, then the live
tail, in order, without gaps or duplicates.

Answers that are not a stream:
* unknown or expired stream (or another path/method), or a finished stream with
  nothing after the cursor: **204 No Content** — an EventSource stops reconnecting;
* cursor older than the events still kept: **410 Gone** (JSON error);
* store unreachable: **503** (JSON error).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from .._types import Scope, Send
from ..cancel import CancelToken
from ..config import StreamConfig
from ..framing import Framer, make_framer
from ..headers import stream_headers
from ..hooks import call_hook
from ..pump import TokenPump, drive
from ..receive import ReceiveHub
from ..record import StreamRecord
from ..scope import endpoint_name, full_path
from .ids import event_id, new_stream_id, parse_event_id
from .producer import Producer
from .store import ReplayStore, ResumeGap, StoreUnavailable, StreamMeta, StreamNotFound

STREAM_ID_HEADER = b"x-stream-id"
RESUMABLE_FORMATS = ("sse", "ndjson")


class ReplayFramer:
    """Frames stored ``(seq, bytes)`` events for a client: SSE events get their id."""

    def __init__(self, framer: Framer, stream_id: str) -> None:
        self.inner = framer
        self.media_type = framer.media_type
        self.content_type = framer.content_type
        self.keepalive = framer.keepalive
        self.supports_comments = framer.supports_comments
        self._prefix = b"id: " + stream_id.encode() + b"."
        self._sse = framer.supports_comments

    def frame(self, item: tuple[int, bytes]) -> bytes:
        """The stored event, with ``id: <stream>.<seq>`` for SSE (the last id line wins)."""
        seq, data = item
        if self._sse:
            return data[:-1] + self._prefix + str(seq).encode() + b"\n\n"
        return data

    def finish(self) -> bytes:
        """Nothing: the stored stream carries its own ending."""
        return b""

    def error(self, payload: Mapping[str, object]) -> bytes | None:
        """An in-band error in the stream's format."""
        return self.inner.error(payload)


def cursor_of(scope: Scope) -> tuple[str, int] | None:
    """The resume cursor a request carries, if it is one of ours."""
    for name, value in scope.get("headers", ()):
        if name == b"last-event-id":
            return parse_event_id(value.decode("latin-1"))
    query = scope.get("query_string", b"")
    if b"last_event_id=" in query:
        from urllib.parse import parse_qs

        values = parse_qs(query.decode("latin-1")).get("last_event_id")
        if values:
            return parse_event_id(values[-1])
    return None


def _consumer(
    *,
    store: ReplayStore,
    stream_id: str,
    after: int,
    framer: Framer,
    config: StreamConfig,
    scope: Scope,
    hub: ReceiveHub,
    send: Send,
    accepted_at: float,
    status: int,
    raw_headers: list[tuple[bytes, bytes]],
    resumed: bool = False,
    early_error: Callable[[], BaseException | None] | None = None,
) -> TokenPump:
    record = StreamRecord(
        method=scope.get("method", "GET"),
        path=full_path(scope),
        endpoint=endpoint_name(scope),
        format=framer.media_type,
        accepted_at=accepted_at,
        labels={"stream_id": stream_id, "resumed_after": after},
    )
    source = store.read(stream_id, after)
    if resumed or early_error is not None:
        source = _UnlessOver(source, lambda: pump.wire.started, resumed=resumed, early_error=early_error)
    pump = TokenPump(
        source=source,
        framer=ReplayFramer(framer, stream_id),
        config=config.merged(on_start=None, on_end=None, on_cancel=None),
        record=record,
        token=CancelToken(),
        hub=hub,
        send=send,
    )
    pump.status = status
    pump.raw_headers = [*raw_headers, (STREAM_ID_HEADER, stream_id.encode())]
    return pump


class _UnlessOver:
    """The events after a resume cursor; StreamNotFound (→ 204) when the stream ended
    with nothing after it, so a client that reconnects after the end stops there. For
    the originating request: the generator's own exception when it failed before its
    first event (so the application's error handling answers, as without resume).

    A plain async iterator, not a generator: closing it closes the store's reader even
    if it was never read from (the reader is attached from its creation)."""

    __slots__ = ("_early_error", "_empty", "_resumed", "_source", "_started")

    def __init__(
        self,
        source: AsyncIterator[tuple[int, bytes]],
        started: Callable[[], bool],
        *,
        resumed: bool = True,
        early_error: Callable[[], BaseException | None] | None = None,
    ) -> None:
        self._source = source
        self._started = started
        self._resumed = resumed
        self._early_error = early_error
        self._empty = True

    def __aiter__(self) -> _UnlessOver:
        return self

    async def __anext__(self) -> tuple[int, bytes]:
        try:
            item = await self._source.__anext__()
        except StopAsyncIteration:
            if self._empty and not self._started():
                error = self._early_error() if self._early_error is not None else None
                if error is not None:
                    raise error from None  # the generator failed before its first event
                if self._resumed:
                    raise StreamNotFound("the stream is over: nothing after the cursor") from None
            raise
        self._empty = False
        return item

    async def aclose(self) -> None:
        """Close the store's reader."""
        aclose = getattr(self._source, "aclose", None)
        if aclose is not None:
            await aclose()


async def run_resumable(
    *,
    store: ReplayStore,
    content: Any,
    framer: Framer,
    media_type: str,
    config: StreamConfig,
    record: StreamRecord,
    token: CancelToken,
    end: Any,
    end_hooks: list[Any],
    cancel_hooks: list[Any],
    scope: Scope,
    hub: ReceiveHub,
    send: Send,
    status: int,
    raw_headers: list[tuple[bytes, bytes]],
    tg: Any,
    drain: Any,
) -> None:
    """The originating request of a resumable stream: start the producer, then serve
    this client as the stream's first consumer."""
    stream_id = new_stream_id()
    record.labels["stream_id"] = stream_id
    meta = StreamMeta(
        format=record.format,
        media_type=media_type,
        content_type=framer.content_type,
        method=record.method,
        path=record.path,
        owner=_owner(config, scope),
    )
    writer = await store.open(stream_id, meta)
    producer = Producer(
        content=content,
        framer=framer,
        writer=writer,
        token=token,
        record=record,
        config=config,
        end=end,
        end_hooks=end_hooks,
        cancel_hooks=cancel_hooks,
    )
    producer.task_group = tg
    drain(producer)
    if config.on_start is not None:
        call_hook(config.on_start, record, tg, "on_start")
    tg.start_soon(producer.run)
    consumer = _consumer(
        store=store,
        stream_id=stream_id,
        after=0,
        framer=framer,
        config=config,
        scope=scope,
        hub=hub,
        send=send,
        accepted_at=record.accepted_at,
        status=status,
        raw_headers=raw_headers,
        early_error=lambda: producer.early_error,
    )
    await drive(consumer, tg, hub)


async def serve_resume(
    *,
    store: ReplayStore,
    stream_id: str,
    after: int,
    config: StreamConfig,
    scope: Scope,
    hub: ReceiveHub,
    send: Send,
    tg: Any,
) -> None:
    """Answer a request that carries a cursor of ours."""
    accepted_at = time.monotonic()
    try:
        meta = await store.meta(stream_id)
    except StoreUnavailable as exc:
        await _come_back(send, scope, exc)
        return
    if (
        meta is None
        or meta.path != full_path(scope)
        or meta.method != scope.get("method", "GET")
        or (meta.owner and meta.owner != _owner(config, scope))
    ):
        await _answer(send, 204, None, None)  # unknown, expired, or not this client's
        return
    framer = make_framer(meta.format, meta.media_type)
    raw_headers = stream_headers(
        (),
        content_type=meta.content_type,
        anti_buffering=config.anti_buffering,
        identity_encoding=meta.format != "sse",
    )
    consumer = _consumer(
        store=store,
        stream_id=stream_id,
        after=after,
        framer=framer,
        config=config,
        scope=scope,
        hub=hub,
        send=send,
        accepted_at=accepted_at,
        status=200,
        raw_headers=raw_headers,
        resumed=True,
    )
    try:
        await drive(consumer, tg, hub)
    except StreamNotFound:
        await _answer(send, 204, None, None)
    except ResumeGap as exc:
        await _answer(send, 410, "resume_gap", str(exc))
    except StoreUnavailable as exc:
        await _come_back(send, scope, exc)


def _owner(config: StreamConfig, scope: Scope) -> str:
    """The ``resume_owner`` of a request ("" when none is configured or known)."""
    if config.resume_owner is None:
        return ""
    return config.resume_owner(scope) or ""


def _accepts_event_stream(scope: Scope) -> bool:
    """Whether the request accepts ``text/event-stream`` (an EventSource always does)."""
    return any(name == b"accept" and b"text/event-stream" in value.lower() for name, value in scope.get("headers", ()))


async def _come_back(send: Send, scope: Scope, exc: StoreUnavailable) -> None:
    """The store cannot answer now: tell the client to retry with the same cursor.

    ``503`` with ``Retry-After``, except to an EventSource: it treats every status but
    200 as final (chromium and the npm ``eventsource`` package stop on a 503 as on a
    204), and reconnects — with the same ``Last-Event-ID`` — after a 200 event stream
    that ends. So it gets one carrying only ``retry: <ms>`` and a comment.
    """
    seconds = max(1, math.ceil(exc.retry_after))
    if not _accepts_event_stream(scope):
        await _answer(send, 503, "store_unavailable", str(exc), [(b"retry-after", str(seconds).encode())])
        return
    body = f"retry: {max(1, round(exc.retry_after * 1000))}\n: store unavailable, retry\n\n".encode()
    headers = [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-store"),
        (b"retry-after", str(seconds).encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _answer(
    send: Send,
    status: int,
    kind: str | None,
    message: str | None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"cache-control", b"no-store"), *(extra or ())]
    body = b""
    if kind is not None:
        body = json.dumps({"error": {"type": kind, "message": message}}).encode()
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


__all__ = ["ReplayFramer", "cursor_of", "event_id", "run_resumable", "serve_resume"]
