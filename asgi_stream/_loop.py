"""Calling into an event loop from another thread, whatever the async backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio.lowlevel

LoopToken = anyio.lowlevel.EventLoopToken


def current_loop() -> LoopToken:
    """A token for the running event loop (asyncio or trio)."""
    return anyio.lowlevel.current_token()


def post(loop: LoopToken, func: Callable[..., Any], *args: Any) -> bool:
    """Schedule ``func(*args)`` on ``loop`` without waiting; safe from any thread and
    from signal handlers. Returns False when the loop has finished."""
    try:
        loop.backend_class.run_sync_soon(func, args, loop.native_token)
    except Exception:
        return False
    return True
