"""Calling user hooks safely: sync or async, errors logged and never raised."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Iterable
from typing import Any

import anyio
import anyio.abc

from .config import Hook
from .record import StreamRecord

logger = logging.getLogger("asgi_stream")


def call_hook(hook: Hook, record: StreamRecord, task_group: anyio.abc.TaskGroup | None, name: str) -> None:
    """Call a hook now; an async hook continues as a task of ``task_group``."""
    try:
        result = hook(record)
    except Exception:
        logger.exception("asgi_stream: %s hook %r failed", name, hook)
        return
    if inspect.isawaitable(result):
        if task_group is not None:
            task_group.start_soon(_await_hook, result, name)
        else:
            if inspect.iscoroutine(result):
                result.close()
            logger.error("asgi_stream: async %s hook cannot run outside a task group", name)


async def _await_hook(result: Awaitable[Any], name: str) -> None:
    with anyio.CancelScope(shield=True):
        try:
            await result
        except Exception:
            logger.exception("asgi_stream: %s hook failed", name)


async def run_end_hooks(hooks: Iterable[Hook], record: StreamRecord) -> None:
    """Call each ``on_end`` hook in turn, awaiting async ones (shielded)."""
    for hook in hooks:
        try:
            result = hook(record)
            if inspect.isawaitable(result):
                with anyio.CancelScope(shield=True):
                    await result
        except Exception:
            logger.exception("asgi_stream: on_end hook %r failed", hook)
