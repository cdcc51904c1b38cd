"""Shared fixtures: real servers on loopback, and probes into generators."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from .support.servers import Running, serve


@dataclass
class Probe:
    """What a test generator did, in time.monotonic() seconds (thread-safe appends)."""

    produced: list[float] = field(default_factory=list)
    started: float | None = None
    finally_at: float | None = None
    finally_thread: str | None = None
    cancelled_seen: bool = False
    done: threading.Event = field(default_factory=threading.Event)

    def mark_finally(self) -> None:
        self.finally_at = time.monotonic()
        self.finally_thread = threading.current_thread().name
        self.done.set()

    def wait_finally(self, timeout: float = 10.0) -> float:
        assert self.done.wait(timeout), "the generator's finally block never ran"
        assert self.finally_at is not None
        return self.finally_at


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def server() -> Iterator[Callable[..., Running]]:
    """``server(app, kind="uvicorn")`` starts a real server; all are stopped at teardown."""
    stack: list[Any] = []

    def start(app: Any, kind: str = "uvicorn", **options: Any) -> Running:
        cm = serve(app, kind, **options)
        running = cm.__enter__()
        stack.append(cm)
        return running

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)
