"""The dedicated-thread driver for sync generators.

A sync generator blocked inside ``next()`` cannot be closed from another thread
("generator already executing"). So each sync stream gets one worker thread that
runs every ``next()`` and, finally, ``close()``: when the stream is cancelled the
cancel token is set at once (cooperative code sees it immediately), and the thread
closes the generator right after its current ``next()`` returns, running its
``finally`` blocks, then exits. No thread outlives its generator.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import anyio
import anyio.lowlevel

from ._loop import post

logger = logging.getLogger("asgi_stream")

_VALUE, _STOP, _ERROR = 0, 1, 2


class SyncIteratorDriver:
    """Pulls a sync iterable one item at a time on its own thread, in lockstep."""

    __slots__ = (
        "_closed_waiter",
        "_closing",
        "_context",
        "_cv",
        "_iterable",
        "_iterator",
        "_loop",
        "_name",
        "_requested",
        "_result",
        "_thread",
        "_waiter",
        "closed",
        "closed_at",
    )

    def __init__(self, iterable: Iterable[Any], name: str = "stream") -> None:
        self._iterable = iterable
        self._iterator: Iterator[Any] | None = None
        self._name = name
        self._cv = threading.Condition(threading.Lock())
        self._requested = False
        self._closing = False
        self._thread: threading.Thread | None = None
        self._result: tuple[int, Any] = (_STOP, None)
        self._waiter: anyio.Event | None = None
        self._loop: anyio.lowlevel.EventLoopToken | None = None
        self._context: contextvars.Context | None = None
        #: Set (from the worker thread) once the iterator has been closed or exhausted.
        self.closed = threading.Event()
        self.closed_at: float | None = None
        self._closed_waiter: anyio.Event | None = None

    async def next(self) -> Any:
        """The next item; raises StopAsyncIteration at the end, or what ``next()`` raised."""
        waiter = anyio.Event()
        with self._cv:
            if self._closing:
                raise StopAsyncIteration
            self._waiter = waiter
            self._requested = True
            if self._thread is None:
                self._loop = anyio.lowlevel.current_token()
                self._context = contextvars.copy_context()
                self._thread = threading.Thread(target=self._run, name=f"asgi-stream {self._name}", daemon=True)
                self._thread.start()
            else:
                self._cv.notify()
        await waiter.wait()
        kind, value = self._result
        self._result = (_STOP, None)
        if kind == _VALUE:
            return value
        if kind == _STOP:
            raise StopAsyncIteration
        raise value

    def close_soon(self) -> None:
        """Ask for the iterator to be closed; never blocks the event loop.

        If a ``next()`` is running, the close happens in the worker thread as soon as
        it returns; if the thread never started, the iterator is closed here (an
        unstarted generator's ``close()`` runs no code).
        """
        with self._cv:
            if self._closing:
                return
            self._closing = True
            started = self._thread is not None
            if started:
                self._cv.notify()
        if not started:
            self._close_iterator(self._iterable)

    async def wait_closed(self) -> None:
        """Wait (without blocking the loop) until the iterator is closed or exhausted."""
        with self._cv:
            if self.closed.is_set() or self._thread is None:
                return
            if self._loop is None:
                self._loop = anyio.lowlevel.current_token()
            waiter = self._closed_waiter = anyio.Event()
        await waiter.wait()

    # ------------------------------------------------------------ worker thread
    def _run(self) -> None:
        assert self._context is not None
        try:
            self._iterator = self._context.run(iter, self._iterable)
        except BaseException as exc:  # not iterable after all, or __iter__ failed
            self._deliver((_ERROR, exc))
            self._mark_closed()
            return
        iterator = self._iterator
        stepped = False
        while True:
            with self._cv:
                while not self._requested and not self._closing:
                    self._cv.wait()
                # Closing wins over a pending request, except the very first: a generator
                # that was never entered could not run its `finally` when closed.
                if self._closing and (stepped or not self._requested):
                    break
                self._requested = False
            stepped = True
            try:
                result: tuple[int, Any] = (_VALUE, self._context.run(next, iterator))
            except StopIteration:
                result = (_STOP, None)
            except BaseException as exc:
                result = (_ERROR, exc)
            with self._cv:
                closing = self._closing
            if closing:
                break  # the stream is over: close right now (a waiter gets the end)
            if not self._deliver(result) or result[0] != _VALUE:
                if result[0] == _VALUE:
                    break  # the event loop is gone
                self._mark_closed()  # exhausted, or raised: the generator is finished
                return
        self._close_iterator(iterator)
        self._answer_pending()

    def _answer_pending(self) -> None:
        """A ``next()`` still waiting when the iterator closed gets the end of it
        (normally its task was cancelled first; this makes a hang impossible)."""
        with self._cv:
            waiter, loop = self._waiter, self._loop
            self._waiter = None
        if waiter is not None and loop is not None:
            self._result = (_STOP, None)
            post(loop, waiter.set)

    def _deliver(self, result: tuple[int, Any]) -> bool:
        with self._cv:
            waiter, self._waiter = self._waiter, None
        loop = self._loop
        assert waiter is not None and loop is not None
        self._result = result
        return post(loop, waiter.set)

    def _close_iterator(self, iterator: Any) -> None:
        close = getattr(iterator, "close", None)
        if close is not None:
            try:
                if self._context is not None:
                    self._context.run(close)
                else:
                    close()
            except Exception:
                logger.exception("asgi_stream: closing sync generator of %s raised", self._name)
        self._mark_closed()

    def _mark_closed(self) -> None:
        with self._cv:
            self.closed_at = time.monotonic()
            self.closed.set()
            waiter, loop = self._closed_waiter, self._loop
        if waiter is not None and loop is not None:
            post(loop, waiter.set)
