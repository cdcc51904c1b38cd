"""TokenChannel: a bounded bridge from a producer thread (or callback) to a stream.

Pull-based generators need no buffer: TokenStream asks for a token only after the
previous send returned. A push-based producer — ``model.generate`` in a worker
thread, a callback API — cannot wait, so it ``put()``s into a TokenChannel and the
endpoint streams the channel. Whatever text arrives while the consumer is blocked on
a slow client is merged into the next token (one send), and the memory held is capped:
past ``max_buffer`` bytes the channel cancels its token (the producer stops) and the
stream ends with :class:`~asgi_stream.BufferOverflowError`.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

import anyio
import anyio.lowlevel

from ._loop import post
from .cancel import CancelReason, CancelToken
from .errors import BufferOverflowError

logger = logging.getLogger("asgi_stream")

_END = object()


class TokenChannel:
    """Thread-safe producer → async consumer channel that merges text under backpressure."""

    def __init__(self, *, max_buffer: int = 1 << 20, cancel: CancelToken | None = None) -> None:
        if not (isinstance(max_buffer, int) and max_buffer > 0):
            raise ValueError(f"max_buffer must be a positive int, got {max_buffer!r}")
        self.max_buffer = max_buffer
        self.cancel_token = cancel if cancel is not None else CancelToken()
        self._lock = threading.Lock()
        self._items: deque[Any] = deque()
        self._size = 0
        self._closed = False
        self._error: BaseException | None = None
        self._waiter: anyio.Event | None = None
        self._loop: anyio.lowlevel.EventLoopToken | None = None
        #: Largest number of bytes held at once (for tests and metrics).
        self.high_water = 0

    # ------------------------------------------------------------ producer side
    def put(self, token: object) -> bool:
        """Queue a token (any thread, never blocks). Returns False once the channel is
        closed or cancelled: the producer should stop."""
        if self.cancel_token.cancelled:
            return False
        size = len(token) if isinstance(token, (str, bytes)) else 64
        with self._lock:
            if self._closed:
                return False
            if self._size + size > self.max_buffer:
                self._error = BufferOverflowError(
                    f"producer outran the client by more than max_buffer={self.max_buffer} bytes"
                )
                self._closed = True
                self._items.clear()  # the stream is failing: deliver the error, not the backlog
                self._size = 0
                overflow = True
            else:
                overflow = False
                if self._items and type(token) is str and type(self._items[-1]) is str:
                    self._items[-1] += token  # merge text produced while the reader was busy
                else:
                    self._items.append(token)
                self._size += size
                self.high_water = max(self.high_water, self._size)
            waiter, self._waiter = self._waiter, None
        if overflow:
            logger.warning("asgi_stream: %s; cancelling the producer", self._error)
            self.cancel_token.cancel(CancelReason.BUFFER_OVERFLOW)
        if waiter is not None:
            self._wake(waiter)
        return not overflow

    def close(self, error: BaseException | None = None) -> None:
        """No more tokens; ``error`` (if given) is raised to the consumer after the rest."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._error = error
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._wake(waiter)

    def _wake(self, waiter: anyio.Event) -> None:
        if self._loop is not None:
            post(self._loop, waiter.set)

    # ------------------------------------------------------------ consumer side
    def __aiter__(self) -> TokenChannel:
        return self

    async def __anext__(self) -> object:
        while True:
            with self._lock:
                if self._items:
                    token = self._items.popleft()
                    self._size -= len(token) if isinstance(token, (str, bytes)) else 64
                    return token
                if self._closed:
                    if self._error is not None:
                        error, self._error = self._error, None
                        raise error
                    raise StopAsyncIteration
                if self._loop is None:
                    self._loop = anyio.lowlevel.current_token()
                waiter = self._waiter = anyio.Event()
            await waiter.wait()

    async def aclose(self) -> None:
        """Consumer side is done (stream ended or cancelled): stop the producer."""
        with self._lock:
            finished = self._closed and not self._items
        if not finished:
            self.cancel_token.cancel(CancelReason.APPLICATION)
        self.close()
