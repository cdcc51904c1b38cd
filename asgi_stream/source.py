"""TokenSource: any sync or async iterable as one awaitable ``next()``, and its close.

Async iterables are pulled directly on the event loop; sync ones on their own worker
thread (:class:`~asgi_stream.threads.SyncIteratorDriver`). ``aclose()`` closes the
generator and waits (up to ``close_timeout``) until its ``finally`` blocks have run.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from .threads import SyncIteratorDriver

logger = logging.getLogger("asgi_stream")


class TokenSource:
    """Uniform access to a token generator, whatever its kind."""

    __slots__ = ("_agen", "_closed", "close_timeout", "content", "driver", "name", "next")

    def __init__(self, content: Any, *, name: str, close_timeout: float) -> None:
        self.content = content
        self.name = name
        self.close_timeout = close_timeout
        self.driver: SyncIteratorDriver | None = None
        self._agen: Any = None
        #: None: open; an Event: being closed; True: closed.
        self._closed: anyio.Event | bool | None = None
        #: Awaitable next item; raises StopAsyncIteration at the end.
        self.next: Callable[[], Awaitable[Any]]
        if hasattr(content, "__anext__"):
            self._agen = content
            self.next = content.__anext__
        elif hasattr(content, "__aiter__"):
            self._agen = content.__aiter__()
            self.next = self._agen.__anext__
        else:
            self.driver = SyncIteratorDriver(content, name=name)
            self.next = self.driver.next

    def idle(self) -> bool:
        """Whether the generator is suspended between items (safe to close from another
        task): always for sync generators (closed by their own thread), for native async
        generators when not running, never for other async iterators."""
        if self.driver is not None:
            return True
        running = getattr(self._agen, "ag_running", None)
        return running is False

    async def prime(self) -> None:
        """Enter a generator that will not be iterated (its stream was cancelled before
        it ran), inside an already cancelled scope, so that ``aclose()`` runs its
        ``finally`` blocks — code that releases what the endpoint set up lives there.
        It runs no further than its first ``await`` (or ``yield``)."""
        with anyio.CancelScope() as scope:
            scope.cancel()
            try:
                await self.next()
            except (StopAsyncIteration, Exception):
                pass

    async def aclose(self) -> None:
        """Close the generator; a sync one right after its current ``next()`` returns.
        Idempotent: a second caller waits for the first one's close."""
        closing = self._closed
        if closing is not None:  # closing or closed already
            if isinstance(closing, anyio.Event):
                with anyio.CancelScope(shield=True) as scope:
                    scope.deadline = anyio.current_time() + self.close_timeout
                    await closing.wait()
            return
        if self.driver is None and getattr(self._agen, "ag_frame", True) is None:
            self._closed = True  # an async generator that already finished: nothing to do
            return
        self._closed = event = anyio.Event()
        try:
            await self._close()
        finally:
            self._closed = True
            event.set()

    async def _close(self) -> None:
        with anyio.CancelScope(shield=True) as scope:
            scope.deadline = anyio.current_time() + self.close_timeout
            if self.driver is not None:
                self.driver.close_soon()
                await self.driver.wait_closed()
            else:
                aclose = getattr(self._agen, "aclose", None)
                if aclose is None:
                    return
                try:
                    await aclose()
                except Exception:
                    logger.exception("asgi_stream: closing the generator of %s raised", self.name)
        if scope.cancelled_caught:
            logger.error(
                "asgi_stream: the generator of %s did not finish closing within %.1f s",
                self.name,
                self.close_timeout,
            )
