"""Shutdown as a cancel source, without patching any server.

When the process receives SIGINT or SIGTERM, each StreamMiddleware starts draining:
open streams get ``shutdown_grace`` seconds, then their generators are cancelled.
The server's own handler (uvicorn's, hypercorn's, gunicorn's) is chained, so it still
runs exactly as before. Handlers are only chained from the main thread, and only
over a Python-level handler: a process whose signals are at their defaults is left
alone. Servers that deliver ``lifespan.shutdown`` before draining connections reach
the same code through the middleware's lifespan wrapper.
"""

from __future__ import annotations

import logging
import signal
import threading
import weakref
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import anyio.lowlevel

    from .middleware import StreamMiddleware

from ._loop import post

logger = logging.getLogger("asgi_stream")

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_watched: weakref.WeakKeyDictionary[StreamMiddleware, anyio.lowlevel.EventLoopToken] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


class _Chained:
    """A signal handler that notifies the middlewares, then calls the previous one.

    It looks like the handler it wraps to code that inspects the installed handler:
    ``__self__`` is the previous handler's (uvicorn's ``Server``, which sse-starlette
    finds this way to see ``should_exit``), ``__wrapped__`` the previous handler."""

    __slots__ = ("__wrapped__", "previous")

    def __init__(self, previous: Callable[[int, FrameType | None], Any]) -> None:
        self.previous = previous
        self.__wrapped__ = previous

    def __call__(self, signum: int, frame: FrameType | None) -> Any:
        notify_all()
        return self.previous(signum, frame)

    @property
    def __self__(self) -> object:
        try:
            return self.previous.__self__  # type: ignore[attr-defined]
        except AttributeError:
            raise AttributeError("__self__") from None


def watch(middleware: StreamMiddleware, loop: anyio.lowlevel.EventLoopToken) -> None:
    """Drain ``middleware``'s streams on SIGINT/SIGTERM (chaining the current handlers)."""
    with _lock:
        _watched[middleware] = loop
    if threading.current_thread() is not threading.main_thread():
        logger.debug("asgi_stream: not in the main thread; shutdown signals are not chained")
        return
    for sig in SIGNALS:
        try:
            current = signal.getsignal(sig)
        except (ValueError, OSError):
            continue
        if isinstance(current, _Chained) or not callable(current):
            continue  # already chained, or default/ignored: leave the process's semantics alone
        try:
            signal.signal(sig, _Chained(current))
        except (ValueError, OSError):
            logger.debug("asgi_stream: could not chain signal %s", sig)


def notify_all() -> None:
    """Ask every watched middleware (on its own event loop) to begin draining."""
    with _lock:
        targets = list(_watched.items())
    for middleware, loop in targets:
        post(loop, middleware.begin_shutdown)
