"""Passthrough: the wire guarantees for streaming responses the app built itself
(Starlette's StreamingResponse, sse-starlette, FastAPI's EventSourceResponse, …),
with no code change — and nothing else changed.

Streams are recognised by their media type at ``http.response.start``. They get the
stream headers, keepalive comments for ``text/event-stream`` written only at line
boundaries, the flush policy, send timeouts (the final send included) and shutdown
drain. Token boundaries are unknown here, so a keepalive is never written mid-line.

How a passthrough stream ends when it is cancelled matters as much: the application
winds its response down *by its own means*, as it would without the middleware.

* The client left: the application sees ``http.disconnect`` (as always).
* The send timeout fired, or the server shuts down: the application is *told* the
  client is gone — ``http.disconnect``, delivered even to a ``receive()`` already
  waiting — so Starlette cancels its body task (aborting a blocked send) and still
  runs the response's background task. On shutdown the body is first ended cleanly.
* Later sends of the application are dropped, as a server drops them after a
  disconnect (ASGI 2.4 servers: they raise ``OSError``, so here too).
* An application that shows it listens for none of this (it goes on sending) is
  cancelled at once; one that has not returned ``close_timeout`` seconds later is
  cancelled then.
* Its body iterator, if it is left suspended (the body task was cancelled inside a
  send), is closed when the application returns — a sync iterator Starlette runs on
  its thread pool too — so its ``finally`` runs without waiting for the garbage
  collector.
* An exception the application raises after the response started becomes an in-band
  error event when the format has one and the body is between events; either way the
  exception propagates as it would without the middleware.
"""

from __future__ import annotations

import logging
import sys
from types import FrameType
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread

from . import _clock
from ._types import Message, Scope
from .cancel import CancelReason
from .framing import NDJSONFramer, SSEFramer
from .headers import header_value, stream_headers
from .lifecycle import Ending, Event, Transition
from .stream import Stream
from .wire import BODY

logger = logging.getLogger("asgi_stream")

_LINE_KEEPALIVE = b": keepalive\n"
_FRAME_DEPTH = 12
#: Sends after an abort that show the application is not listening for disconnects.
_IGNORED_SENDS = 8


def media_type_of(message: Message) -> str:
    """The lower-cased media type of an ``http.response.start`` message ('' if none)."""
    value = header_value(message.get("headers", ()), b"content-type")
    if not value:
        return ""
    return value.decode("latin-1").partition(";")[0].strip().lower()


def spec_version(scope: Scope) -> tuple[int, ...]:
    """The ASGI HTTP spec version the server reports (2.0 when it says nothing)."""
    raw = scope.get("asgi", {}).get("spec_version", "2.0")
    try:
        return tuple(int(part) for part in str(raw).split("."))
    except ValueError:
        return (2, 0)


class Passthrough(Stream):
    """Applies stream policy to a response whose body the application produces."""

    __slots__ = (
        "_app_scope",
        "_body_iterator",
        "_dropped",
        "_raise_gone",
        "aborted_at",
        "body_ended_at",
        "framer",
        "tail",
    )

    def __init__(self, *, media_type: str, app_scope: anyio.CancelScope, raise_gone: bool, **kwargs: Any) -> None:
        self.framer: SSEFramer | NDJSONFramer | None
        if media_type == "text/event-stream":
            self.framer = SSEFramer()
        elif "json" in media_type:
            self.framer = NDJSONFramer(media_type)
        else:
            self.framer = None
        super().__init__(keepalive_bytes=self.framer.keepalive if self.framer else None, **kwargs)
        self.tail = b""
        #: The request's task group scope: cancelled only as the last resort.
        self._app_scope = app_scope
        self.wire.reraise = True  # the application sees what the server's send raised
        #: ASGI ≥ 2.4: sends after the client left raise OSError, as the server's do.
        self._raise_gone = raise_gone
        self._dropped = 0
        self._body_iterator: tuple[object | None, object | None] = (None, None)
        self.aborted_at: float | None = None
        #: When the body ended on the wire (the stream closes when the app returns).
        self.body_ended_at: float | None = None

    async def begin(self, message: Message) -> None:
        """Handle the app's ``http.response.start``."""
        self.lifecycle.handle(Event.START)
        self._body_iterator = _body_iterators(_caller_body_iterator())
        self.status = message["status"]
        self.raw_headers = stream_headers(
            message.get("headers", ()),
            content_type=None,
            anti_buffering=self.config.anti_buffering,
            identity_encoding=isinstance(self.framer, NDJSONFramer),  # compressors skip it (as TokenStream's)
        )
        if self.lifecycle.running:
            await self.start()
        else:
            await self._drop()  # the client left before the response started

    async def on_message(self, message: Message) -> None:
        """Handle a later message of the app's response (every chunk takes this path:
        the app's own message goes on to the server when nothing is batched)."""
        if message.get("type") != BODY:
            await self.wire.send(message)
            return
        if self.lifecycle.ending is not None:  # after begin: no longer running
            await self._drop()
            return
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if body:
            if type(body) is not bytes:
                body = bytes(body)
                message = {"type": BODY, "body": body, "more_body": more}
            rec = self.record
            if rec.first_token_at is None:
                rec.first_token_at = _clock.monotonic()
            rec.events += 1
            rec.bytes += len(body)
            self.tail = body[-4:] if len(body) >= 4 else (self.tail + body)[-4:]
        batch = self.batch
        if more:
            if batch is not None:
                if body:
                    await self.offer(body, _clock.monotonic())
            elif body:  # an empty non-final message never becomes a zero-length chunk
                await self.wire.send(message)
            if self._raise_gone and self.hub.disconnected:
                raise OSError("the client disconnected")
            return
        if batch:
            body = batch.take() + body
        self.lifecycle.handle(Event.FINISH)
        await self.end_body(body)
        self.body_ended_at = _clock.monotonic()
        self.guard.stop()  # nothing left to guard; the stream closes when the app returns
        self._raise_if_gone()

    async def _drop(self) -> None:
        self._raise_if_gone()
        self._dropped += 1
        if self.aborted_at is not None and self._dropped == _IGNORED_SENDS:
            logger.info(
                "asgi_stream: %s: the application goes on sending after being told the client is gone; cancelling it",
                self.describe(),
            )
            self.aborted_at = None
            self._app_scope.cancel()
        await anyio.lowlevel.checkpoint()  # the application's own disconnect handling runs

    def _raise_if_gone(self) -> None:
        if self._raise_gone and self.hub.disconnected:
            raise OSError("the client disconnected")

    # ------------------------------------------------------------ keepalive
    def boundary(self) -> str:
        """Where the body stands: ``event`` (between events), ``line`` or ``mid``. An
        NDJSON record ends at its newline; an SSE event at a blank line."""
        tail = self.tail
        if not tail or tail.endswith((b"\n\n", b"\r\n\r\n", b"\r\r", b"\n\r\n")):
            return "event"
        if isinstance(self.framer, NDJSONFramer) and tail.endswith(b"\n"):
            return "event"
        if tail.endswith(b"\n"):
            return "line"
        return "mid"  # mid-line, or a CR that a following LF may complete

    def can_keepalive(self) -> bool:
        """Only SSE, and never in the middle of a line."""
        return self.framer is not None and self.framer.supports_comments and self.boundary() != "mid"

    async def _send_keepalive(self) -> None:
        data = self.keepalive_bytes if self.boundary() == "event" else _LINE_KEEPALIVE
        assert data is not None
        await self.send_body(data)
        self.record.keepalives += 1

    # ------------------------------------------------------------ cancelling
    def stop_producing(self, transition: Transition, reason: CancelReason) -> None:
        """Tell the application the client is gone; end the body cleanly first when
        the client is still there (shutdown, the application's token)."""
        super().stop_producing(transition, reason)  # a clean ending's send in progress
        if transition is Transition.ESCALATED and reason is CancelReason.DISCONNECT:
            return  # the body is complete or being completed: that send returns by itself
        hub = self.hub
        if self.lifecycle.ending is Ending.CLEAN:
            hub.tell_app()
            if self.task_group is not None:
                self.task_group.start_soon(self._end_cleanly)
            return
        # ABORT: the client is gone or stuck. The application is told; one that goes on
        # sending as if nothing happened (see _drop), or has not returned by
        # close_timeout, is cancelled.
        self.aborted_at = _clock.monotonic()
        self._dropped = 0
        hub.tell_app()
        self.guard.rearm(self.aborted_at + self.config.close_timeout)

    async def _end_cleanly(self) -> None:
        with anyio.CancelScope() as scope:
            self.scope = scope
            if self.lifecycle.ending is Ending.CLEAN:
                await self.end_body(b"")
        self.scope = None
        if self.lifecycle.ending is Ending.CLEAN:
            self.body_ended_at = _clock.monotonic()
            self.guard.stop()

    def aborted_deadline(self) -> float:
        """An application told of the abort gets ``close_timeout`` to return."""
        return (
            self.aborted_at + self.config.close_timeout if self.aborted_at is not None else super().aborted_deadline()
        )

    async def on_aborted_deadline(self, now: float) -> None:
        """The application did not wind down in time: cancel it."""
        if self.aborted_at is not None and now >= self.aborted_at + self.config.close_timeout:
            logger.warning(
                "asgi_stream: %s: the application did not end its response within %.1f s of "
                "being told the client is gone; cancelling it",
                self.describe(),
                self.config.close_timeout,
            )
            self.aborted_at = None
            self._app_scope.cancel()

    # ------------------------------------------------------------ endings
    async def app_failed(self, exc: BaseException) -> None:
        """The app raised after the response started: an in-band error event if the
        format has one and the body is between events. The caller re-raises."""
        lifecycle = self.lifecycle
        lifecycle.handle(Event.FAIL, error=exc)  # after a complete body: recorded, nothing sent
        if lifecycle.ending is not Ending.ERROR:
            return
        if self.framer is None or self.boundary() != "event" or self.wire.ended or self.wire.interrupted:
            return  # no in-band channel, mid-event, or the client is not reading (the app gave up a send)
        framed = self.framer.error(self.config.error_payload(exc, self.record))
        if framed is None:
            return
        logger.error("asgi_stream: %s failed mid-stream; sent an error event", self.describe(), exc_info=exc)
        with anyio.CancelScope() as scope:
            self.scope = scope
            await self.end_body(framed)
        self.scope = None

    async def app_returned(self) -> None:
        """The application returned (or raised, or was cancelled): close what it left
        suspended, then the stream."""
        with anyio.CancelScope(shield=True):
            if self.lifecycle.ending is not Ending.COMPLETE:
                await _close_iterators(self._body_iterator, self.config.close_timeout, self.describe())
            await self.close(ended_at=self.body_ended_at)


def _caller_body_iterator() -> object | None:
    """The ``body_iterator`` of the response whose ``stream_response`` is sending the
    start message (Starlette and the responses built on it), if it can be found."""
    frame: FrameType | None = sys._getframe(2)
    for _ in range(_FRAME_DEPTH):
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        iterator: object | None = getattr(owner, "body_iterator", None) if owner is not None else None
        if iterator is not None:
            return iterator
        frame = frame.f_back
    return None


def _body_iterators(iterator: object | None) -> tuple[object | None, object | None]:
    """The body iterator and, for Starlette's ``iterate_in_threadpool`` wrapper, the sync
    iterator it drives (read now: once the wrapper has finished its frame is gone)."""
    try:
        from starlette.concurrency import iterate_in_threadpool
    except ImportError:  # pragma: no cover - Starlette is a dependency
        return iterator, None
    if getattr(iterator, "ag_code", None) is not iterate_in_threadpool.__code__:
        return iterator, None
    frame = getattr(iterator, "ag_frame", None)
    inner = frame.f_locals.get("iterator") if frame is not None else None
    return iterator, inner if hasattr(inner, "close") and hasattr(inner, "gi_frame") else None


async def _close_iterators(iterators: tuple[object | None, object | None], timeout: float, name: str) -> None:
    """Close an async generator left suspended at a ``yield``, and the sync generator
    inside Starlette's thread-pool wrapper (on a worker thread) if it is not finished."""
    outer, inner = iterators
    with anyio.move_on_after(timeout) as scope:
        try:
            if (
                outer is not None
                and getattr(outer, "ag_frame", None) is not None
                and not getattr(outer, "ag_running", True)
            ):
                await outer.aclose()  # type: ignore[attr-defined]
            if inner is not None and getattr(inner, "gi_frame", None) is not None:
                await anyio.to_thread.run_sync(inner.close)  # type: ignore[attr-defined]
        except Exception:
            logger.exception("asgi_stream: closing the body iterator of %s raised", name)
    if scope.cancelled_caught:
        logger.error("asgi_stream: the body iterator of %s did not close within %.1f s", name, timeout)
