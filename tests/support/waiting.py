"""Waiting on a condition with a deadline: the suite's one way to wait for something
that happens elsewhere (a server-side record, a generator's ``finally``, a thread's
exit). Poll the actual condition; never sleep a guessed time instead."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import anyio

T = TypeVar("T")

#: Generous enough for a loaded 2-core machine; a passing wait returns at once anyway.
TIMEOUT = 10.0
INTERVAL = 0.01

Message = str | Callable[[], object]


def wait_for(
    predicate: Callable[[], T],
    timeout: float = TIMEOUT,
    *,
    interval: float = INTERVAL,
    message: Message = "condition",
) -> T:
    """Poll ``predicate()`` until it returns a truthy value, and return that value.

    Raises AssertionError after ``timeout`` seconds, naming ``message`` (a string, or a
    callable evaluated only then, e.g. a server's diagnostics)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(_failure(timeout, message, value))
        time.sleep(interval)


async def wait_for_async(
    predicate: Callable[[], T],
    timeout: float = TIMEOUT,
    *,
    interval: float = INTERVAL,
    message: Message = "condition",
) -> T:
    """:func:`wait_for` inside an event loop (asyncio or trio): the loop runs meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(_failure(timeout, message, value))
        await anyio.sleep(interval)


def _failure(timeout: float, message: Message, last: object) -> str:
    text = message() if callable(message) else message
    return f"not reached within {timeout:g} s: {text} (last value: {last!r})"
