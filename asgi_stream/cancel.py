"""CancelToken: the per-stream signal that reaches generators, worker threads and the GPU.

A token is set once, with a reason, from any thread. Async code can ``await
token.wait()``; sync code (a worker thread, a transformers ``StoppingCriteria``)
polls ``token.cancelled`` or blocks in ``token.wait_sync(timeout)``.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable

import anyio

from ._loop import current_loop, post

logger = logging.getLogger("asgi_stream")


class CancelReason(str, enum.Enum):
    """Why a stream was cancelled."""

    DISCONNECT = "disconnect"
    SEND_TIMEOUT = "send_timeout"
    BUFFER_OVERFLOW = "buffer_overflow"
    SHUTDOWN = "shutdown"
    #: A resumable stream's client did not come back within the resume grace period.
    ABANDONED = "abandoned"
    ERROR = "error"
    APPLICATION = "application"


class CancelToken:
    """A thread-safe, set-once cancellation flag carrying a reason and a timestamp."""

    __slots__ = ("_at", "_callbacks", "_event", "_lock", "_reason", "_set")

    def __init__(self) -> None:
        self._set = False
        #: A threading.Event, created only when a thread waits (tokens are per stream).
        self._event: threading.Event | None = None
        self._reason: CancelReason | None = None
        self._at: float | None = None
        self._callbacks: list[Callable[[CancelToken], object]] | None = None
        self._lock = threading.Lock()

    @property
    def cancelled(self) -> bool:
        """True once the token has been set."""
        return self._set

    def __bool__(self) -> bool:
        return self._set

    @property
    def reason(self) -> CancelReason | None:
        """Why the token was set, or None while it is not."""
        return self._reason

    @property
    def cancelled_at(self) -> float | None:
        """``time.monotonic()`` when the token was set, or None."""
        return self._at

    def cancel(self, reason: CancelReason | str = CancelReason.APPLICATION) -> bool:
        """Set the token; returns False if it was already set (the first reason wins)."""
        with self._lock:
            if self._set:
                return False
            self._reason = CancelReason(reason)
            self._at = time.monotonic()
            self._set = True
            event, callbacks, self._callbacks = self._event, self._callbacks, None
        if event is not None:
            event.set()
        for callback in callbacks or ():
            try:
                callback(self)
            except Exception:  # a callback must never break the canceller
                logger.exception("asgi_stream: cancel callback %r raised", callback)
        return True

    def add_callback(self, callback: Callable[[CancelToken], object]) -> None:
        """Call ``callback(token)`` when the token is set (at once if it already is).

        Callbacks run in the thread that sets the token; keep them short.
        """
        with self._lock:
            if not self._set:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(callback)
                return
        callback(self)

    def wait_sync(self, timeout: float | None = None) -> bool:
        """Block the calling thread until set or ``timeout``; returns whether it is set."""
        with self._lock:
            if self._set:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)

    async def wait(self) -> None:
        """Wait, without blocking the event loop, until the token is set."""
        if self._set:
            return
        event = anyio.Event()
        loop = current_loop()

        def wake(_: CancelToken) -> None:
            post(loop, event.set)

        self.add_callback(wake)
        await event.wait()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`StreamCancelled` if the token is set (for sync worker code)."""
        if self._set:
            raise StreamCancelled(self._reason)

    def __repr__(self) -> str:
        state = f"cancelled ({self._reason.value})" if self._reason else "active"
        return f"<CancelToken {state}>"


def on_loop(action: Callable[[CancelReason], object]) -> Callable[[CancelToken], None]:
    """A token callback that calls ``action(reason)`` on the current event loop, whatever
    thread sets the token (BUFFER_OVERFLOW is left to the failing source)."""
    loop = current_loop()

    def on_set(token: CancelToken) -> None:
        if token.reason is not CancelReason.BUFFER_OVERFLOW:  # an overflowing source fails in band
            post(loop, action, token.reason or CancelReason.APPLICATION)

    return on_set


class StreamCancelled(Exception):
    """Raised by :meth:`CancelToken.raise_if_cancelled` inside cooperative sync code."""

    def __init__(self, reason: CancelReason | None) -> None:
        super().__init__(f"stream cancelled: {reason.value if reason else 'unknown'}")
        self.reason = reason
