"""Wire: the send stage — the one path every message of a stream takes to the server.

Two tasks may send on a stream: the one that produces it (a TokenStream's pump, the
application for a passthrough response) and the stream's guard (keepalive comments,
a coalescing batch that is due). :meth:`Wire.send` serialises them, stamps the time
a send started (the guard's send timeout and keepalive read it), and always restores
its state in ``finally`` — a send interrupted by a cancellation leaves no trace.

The path is kept cheap because every token takes it: no allocation beyond the
message, one clock read, no task, no timer. TokenStream's per-token loop runs the
same steps unrolled (a coroutine layer per token would cost a fifth of the
middleware's per-token work); its ``finally`` calls :meth:`Wire.done` likewise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
import anyio.lowlevel

from . import _clock
from ._types import Message, Send

logger = logging.getLogger("asgi_stream")

BODY = "http.response.body"


class Wire:
    """Serialised sends to one response, with the state the guard reads."""

    __slots__ = (
        "_clock",
        "_gone",
        "_idle",
        "ended",
        "interrupted",
        "last_send",
        "raw",
        "reraise",
        "sending",
        "started",
    )

    def __init__(self, send: Send, *, gone: Callable[[], None]) -> None:
        #: The server-side ``send`` body messages go to.
        self.raw = send
        self._gone = gone
        self._clock = _clock.monotonic
        #: ``http.response.start`` went out (or is going out).
        self.started = False
        #: The final body message went out (or is going out): nothing more may follow.
        self.ended = False
        #: A send is in progress (from either task).
        self.sending = False
        #: When the last send started (``_clock.monotonic()`` seconds).
        self.last_send = self._clock()
        self._idle: anyio.Event | None = None
        #: A send was cancelled before it completed.
        self.interrupted = False
        #: Also raise what a failing send raised (to an application that sends itself,
        #: as the server's send would), after reporting the disconnect.
        self.reraise = False

    async def send(self, message: Message, via: Send | None = None) -> None:
        """Send ``message`` (to ``via`` instead of the default ``send`` if given) once
        the other task's send is done. A send that raises ``OSError`` (ASGI 2.4: the
        client is gone) reports the disconnect and returns."""
        if self.sending:
            await self.wait_idle()
        self.sending = True
        self.last_send = self._clock()
        try:
            await (via or self.raw)(message)
        except Exception as exc:
            # A start message the server refuses (e.g. invalid headers) is the
            # application's error; an OSError is the client leaving, whatever the message.
            if message.get("type") != BODY and not isinstance(exc, OSError):
                raise
            if self.reraise:
                self._gone()
                raise  # at once: the application's own handling of it comes first
            await self.gone(exc)
        except BaseException:
            self.interrupted = True  # cancelled mid-send: the client may not be reading
            raise
        finally:
            self.sending = False  # what done() does, inline: every chunk passes here
            if self._idle is not None:
                idle, self._idle = self._idle, None
                idle.set()

    async def gone(self, exc: Exception) -> None:
        """A body send raised: the client is gone and nothing more can be sent — ASGI
        2.4 servers raise ``OSError``; hypercorn's HTTP/3 raises aioquic's
        ``FrameUnexpected`` once the client cancelled the request (STOP_SENDING), and
        never sends ``http.disconnect`` (docs/conformance.md). Report it as a
        disconnect, and let the cancellation that causes land here."""
        if not isinstance(exc, OSError):
            logger.debug("asgi_stream: a body send raised %r; treating it as a disconnect", exc)
        self._gone()
        await anyio.lowlevel.checkpoint()

    def done(self) -> None:
        """No send is in progress any more: wake a task waiting to send."""
        self.sending = False
        if self._idle is not None:
            idle, self._idle = self._idle, None
            idle.set()

    async def wait_idle(self) -> None:
        """Wait until the send in progress (from the other task) is done."""
        while self.sending:
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()
