"""ReceiveHub: owns the server's ``receive()`` for one request.

ASGI servers that speak spec 2.3 or older (uvicorn, hypercorn) report a client that
went away only through ``receive()``; ``send()`` then returns silently. So exactly
one task may read at a time, and whatever it reads is fanned out: the app still
gets its body messages and ``http.disconnect`` (``request.is_disconnected()`` keeps
working), while the stream's guard learns of the disconnect the moment it arrives.

Two facts are kept apart: the client is *gone* (the server said so, or a send
failed), and the application is *told* the client is gone. A stream that ends
while its client is still connected (send timeout, shutdown) tells the application
— an ``http.disconnect``, delivered even to a ``receive()`` already waiting — so
that the application winds its response down by its own means (Starlette cancels
its body task and still runs the response's background task).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import anyio

from . import _clock
from ._types import Message, Receive

DISCONNECT: Message = {"type": "http.disconnect"}
#: Request-body bytes kept for the app when the guard reads them first.
MAX_PENDING_BODY = 1 << 20


class ReceiveHub:
    """One reader at a time over ``receive()``, with disconnect fan-out."""

    __slots__ = (
        "_app_read",
        "_empty_end",
        "_listeners",
        "_pending",
        "_pending_bytes",
        "_read_done",
        "_reading",
        "_receive",
        "body_complete",
        "disconnected",
        "disconnected_at",
        "told_app",
    )

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        #: The client is gone (the server reported it, or a send failed).
        self.disconnected = False
        self.disconnected_at: float | None = None
        #: The application is told the client is gone (gone, or the stream ended).
        self.told_app = False
        self.body_complete = False
        self._reading = False
        self._read_done: anyio.Event | None = None
        self._pending: deque[Message] | None = None  # allocated only if ever needed
        self._pending_bytes = 0
        #: The guard read the (empty, final) request body the app has not asked for yet:
        #: a flag instead of a buffer, since that is every GET.
        self._empty_end = False
        self._listeners: list[Callable[[], None]] | None = None
        #: The scope of the application's read in progress, once its body is complete
        #: (such a read can only bring ``http.disconnect``, so it may be interrupted).
        self._app_read: anyio.CancelScope | None = None

    def on_disconnect(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (synchronously, once) when the client disconnects."""
        if self.disconnected:
            callback()
        elif self._listeners is None:
            self._listeners = [callback]
        else:
            self._listeners.append(callback)

    def mark_disconnected(self) -> None:
        """Record a disconnect seen another way (a failing ``send()``) and fan it out."""
        if self.disconnected:
            return
        self.disconnected = True
        self.disconnected_at = _clock.monotonic()
        self.tell_app()
        listeners, self._listeners = self._listeners, None
        for callback in listeners or ():
            callback()

    def tell_app(self) -> None:
        """From now on the application's ``receive()`` returns ``http.disconnect``,
        including a call already waiting."""
        if self.told_app:
            return
        self.told_app = True
        if self._app_read is not None:
            self._app_read.cancel()
        done, self._read_done = self._read_done, None
        if done is not None:
            done.set()

    async def _read(self, *, app: bool = False) -> Message:
        self._reading = True
        try:
            if app and self.body_complete:
                try:
                    with anyio.CancelScope() as scope:
                        self._app_read = scope
                        message = await self._receive()
                finally:
                    self._app_read = None
                if scope.cancelled_caught:  # tell_app() interrupted it
                    return dict(DISCONNECT)
            else:
                message = await self._receive()
        finally:
            self._reading = False
            done, self._read_done = self._read_done, None
            if done is not None:
                done.set()
        kind = message.get("type")
        if kind == "http.disconnect":
            self.mark_disconnected()
        elif kind == "http.request" and not message.get("more_body", False):
            self.body_complete = True
        return message

    async def _wait_for_reader(self) -> None:
        if self._read_done is None:
            self._read_done = anyio.Event()
        await self._read_done.wait()

    async def receive(self) -> Message:
        """The ``receive`` handed to the application."""
        while True:
            if self._pending:
                message = self._pending.popleft()
                self._pending_bytes -= len(message.get("body", b""))
                return message
            if self._empty_end:
                self._empty_end = False
                return {"type": "http.request", "body": b"", "more_body": False}
            if self.told_app:
                return dict(DISCONNECT)
            if not self._reading:
                return await self._read(app=True)
            await self._wait_for_reader()

    async def wait_disconnect(self) -> None:
        """Read until the client disconnects (used by the stream's guard).

        Body messages read here are kept for the application (up to 1 MiB; a request
        body nobody reads once the response streams is dropped beyond that, as
        Starlette's StreamingResponse does). Cancel-safe between reads.
        """
        while not self.disconnected:
            if self._reading:
                await self._wait_for_reader()
                continue
            message = await self._read()
            if message.get("type") == "http.request":
                body = message.get("body", b"")
                if not body and not message.get("more_body", False) and not self._pending:
                    self._empty_end = True
                elif self._pending_bytes + len(body) <= MAX_PENDING_BODY:
                    if self._pending is None:
                        self._pending = deque()
                    self._pending.append(message)
                    self._pending_bytes += len(body)
