"""A store's own background task, outside any request's task group.

A replay store outlives the requests that fill it, so its expiry timer cannot run in a
request's task group (the request would wait for it). It runs as a task of the event
loop itself — an asyncio task, or a trio system task — and is stopped by its owner
(:meth:`BackgroundTask.cancel`), or by the loop when the loop ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import anyio

logger = logging.getLogger("asgi_stream")

#: Strong references to running asyncio tasks (the loop keeps only weak ones).
_RUNNING: set[asyncio.Task[None]] = set()


def current_loop() -> object:
    """The running event loop (asyncio) or trio run (its token): tells two loops apart."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        import trio

        return trio.lowlevel.current_trio_token()


class BackgroundTask:
    """One task running ``fn`` on the current event loop until it returns or is cancelled."""

    __slots__ = ("_scope", "done", "loop")

    def __init__(self, fn: Callable[[], Awaitable[None]], *, name: str) -> None:
        self.loop = current_loop()
        self._scope = anyio.CancelScope()
        #: Set once ``fn`` returned, failed or was cancelled.
        self.done = False

        async def run() -> None:
            try:
                with self._scope:
                    await fn()
            except Exception:
                logger.exception("asgi_stream: %s failed", name)
            finally:
                self.done = True

        if isinstance(self.loop, asyncio.AbstractEventLoop):
            task = self.loop.create_task(run(), name=name)
            _RUNNING.add(task)
            task.add_done_callback(_RUNNING.discard)
        else:
            import trio

            trio.lowlevel.spawn_system_task(run, name=name)

    def alive_here(self) -> bool:
        """Whether the task is still running, on the current event loop."""
        return not self.done and self.loop is current_loop()

    def cancel(self) -> None:
        """Stop the task (from a task of the same loop)."""
        self._scope.cancel()
