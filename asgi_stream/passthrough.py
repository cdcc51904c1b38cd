"""Passthrough: the wire guarantees for streaming responses the app built itself
(Starlette's StreamingResponse, sse-starlette, …), with no code change.

Streams are recognised by their media type at ``http.response.start``. They get the
stream headers, disconnect cancellation (the app's task is cancelled, so an async
generator's ``finally`` runs at once), keepalive comments for ``text/event-stream``
written only at line boundaries, the flush policy, send timeouts and shutdown drain.
Token boundaries are unknown here, so a keepalive is never written mid-line.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio

from .cancel import CancelReason
from .framing import NDJSONFramer, SSEFramer
from .headers import header_value, stream_headers
from .record import Outcome
from .stream import Stream

logger = logging.getLogger("asgi_stream")

_LINE_KEEPALIVE = b": keepalive\n"


def media_type_of(message: Any) -> str:
    """The lower-cased media type of an ``http.response.start`` message ('' if none)."""
    value = header_value(message.get("headers", ()), b"content-type")
    if not value:
        return ""
    return value.decode("latin-1").partition(";")[0].strip().lower()


class Passthrough(Stream):
    """Applies stream policy to a response whose body the application produces."""

    __slots__ = ("framer", "tail")

    def __init__(self, *, media_type: str, **kwargs: Any) -> None:
        self.framer: SSEFramer | NDJSONFramer | None
        if media_type == "text/event-stream":
            self.framer = SSEFramer()
        elif "json" in media_type:
            self.framer = NDJSONFramer(media_type)
        else:
            self.framer = None
        super().__init__(keepalive_bytes=self.framer.keepalive if self.framer else None, **kwargs)
        self.tail = b""

    async def start(self, message: Any) -> None:
        """Handle the app's ``http.response.start``."""
        self.status = message["status"]
        self.raw_headers = stream_headers(
            message.get("headers", ()), content_type=None, anti_buffering=self.config.anti_buffering
        )
        await self.send_start()

    async def on_message(self, message: Any) -> None:
        """Handle a later message of the app's response."""
        if message.get("type") != "http.response.body":
            await self.send(message)
            return
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if body:
            body = bytes(body)
            rec = self.record
            if rec.first_token_at is None:
                rec.first_token_at = time.monotonic()
            rec.events += 1
            rec.bytes += len(body)
            self.tail = (self.tail + body)[-4:]
        batch = self.batch
        if batch is not None:
            if more:
                if body:
                    await self.offer(body, time.monotonic())
                return
            body = (batch.take() if batch else b"") + body
        if body or not more:  # an empty non-final message never becomes a zero-length chunk
            await self.send_body(body, more_body=more)

    # ------------------------------------------------------------ keepalive
    def boundary(self) -> str:
        """Where the body stands: ``event`` (between events), ``line`` or ``mid``."""
        tail = self.tail
        if not tail or tail.endswith((b"\n\n", b"\r\n\r\n", b"\r\r", b"\n\r\n")):
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

    # ------------------------------------------------------------ endings
    async def fail(self, exc: BaseException) -> bool:
        """The app raised after the response started: send an in-band error event if the
        format has one and the body is between events. Returns whether it was handled."""
        if self.completed or self.framer is None or self.boundary() != "event":
            return False
        framed = self.framer.error(self.config.error_payload(exc, self.record))
        if framed is None:
            return False
        logger.error("asgi_stream: %s failed mid-stream; sent an error event", self.describe(), exc_info=exc)
        await self.send_body(framed, more_body=False)
        await self.finish_record(Outcome.ERROR, exc)
        return True

    async def end(self) -> None:
        """The app returned (or was cancelled): close the record."""
        if self.finished:
            return
        if self._cancelled:
            if self.token.reason is CancelReason.SHUTDOWN and not self.completed and not self.hub.disconnected:
                with anyio.move_on_after(1.0):  # the client is still there: end cleanly
                    await self.send_body(b"", more_body=False)
            await self.finish_record(self.outcome_for_cancel())
        else:
            await self.finish_record(Outcome.COMPLETED)
