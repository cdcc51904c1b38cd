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

    __slots__ = ("content", "name", "close_timeout", "driver", "_agen", "next")

    def __init__(self, content: Any, *, name: str, close_timeout: float) -> None:
        self.content = content
        self.name = name
        self.close_timeout = close_timeout
        self.driver: SyncIteratorDriver | None = None
        self._agen: Any = None
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

    async def aclose(self) -> None:
        """Close the generator; a sync one right after its current ``next()`` returns."""
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
