"""Loop watchdog: detects a stream whose generator blocks the event loop.

A ``time.sleep()`` (or a blocking call) inside an *async* generator freezes every
connection of the worker, including their disconnect handling. One daemon thread per
event loop pings the loop while streams are open; when a ping waits longer than
``block_warning`` seconds it inspects the loop thread's stack, finds the stream whose
generator is running, logs a warning naming the endpoint and the blocking line, and
makes that stream yield to the loop after every token from then on, so the others
keep being served between its steps.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING

import anyio.lowlevel

from ._loop import post

if TYPE_CHECKING:
    from .pump import TokenPump

logger = logging.getLogger("asgi_stream")

_watchdogs: dict[int, LoopWatchdog] = {}
_registry_lock = threading.Lock()


class LoopWatchdog:
    """Pings one event loop from a daemon thread while it has open streams."""

    def __init__(self, loop: anyio.lowlevel.EventLoopToken, loop_thread: int, threshold: float) -> None:
        self.loop = loop
        self.loop_thread = loop_thread
        self.threshold = threshold
        self.streams: set[TokenPump] = set()
        self._cv = threading.Condition()
        self._warned: set[str] = set()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="asgi-stream loop watchdog", daemon=True)
        self._thread.start()

    def add(self, stream: TokenPump) -> None:
        """Watch while ``stream`` is open."""
        with self._cv:
            self.streams.add(stream)
            self._cv.notify()

    def discard(self, stream: TokenPump) -> None:
        """Stop watching ``stream``."""
        with self._cv:
            self.streams.discard(stream)

    def _run(self) -> None:
        code_objects = _pump_code_objects()
        while True:
            with self._cv:
                while not self.streams and not self._stopped:
                    self._cv.wait()
                if self._stopped:
                    return
            pinged = threading.Event()
            start = time.monotonic()
            if not post(self.loop, pinged.set):  # the loop is gone: retire this watchdog
                with _registry_lock:
                    _watchdogs.pop(self.loop_thread, None)
                return
            if not pinged.wait(self.threshold):
                self._blocked(code_objects, start, pinged)
                pinged.wait()
            time.sleep(self.threshold / 2)

    def stop(self) -> None:
        """End the watchdog thread (its event loop is finished)."""
        with self._cv:
            self._stopped = True
            self._cv.notify()

    def _blocked(self, code_objects: frozenset[object], start: float, pinged: threading.Event) -> None:
        # Blame a generator only if two samples, 50 ms apart, find the loop inside the same
        # step of it at the same line: a loop that is merely overloaded shows other frames.
        first = _find_stream(sys._current_frames().get(self.loop_thread), code_objects)
        if first is None or pinged.wait(0.05):
            return  # not inside a stream's generator, or the loop is free again
        second = _find_stream(sys._current_frames().get(self.loop_thread), code_objects)
        if second is None or second != first:
            return
        stream, _, where = first
        stream.yield_mask = 0
        key = stream.record.endpoint
        if key in self._warned:
            return
        self._warned.add(key)
        logger.warning(
            "asgi_stream: the generator of %s blocked the event loop for more than %.2f s at %s. "
            "Every connection of this worker stalls meanwhile. Use `await` (e.g. anyio.sleep) "
            "in async generators, or make it a plain (sync) generator: those run in a worker "
            "thread. This stream now yields to the loop after every token.",
            stream.describe(),
            time.monotonic() - start,
            where,
        )


def _pump_code_objects() -> frozenset[object]:
    from .pump import TokenPump

    return frozenset(getattr(TokenPump, name).__code__ for name in ("_pump", "_per_token", "_coalesce"))


def _find_stream(frame: FrameType | None, code_objects: frozenset[object]) -> tuple[TokenPump, FrameType, str] | None:
    """(stream, generator frame, "file:line in function()") when the loop thread is inside
    a stream's async generator step; None otherwise (e.g. inside the server's send)."""
    innermost = frame
    while frame is not None:
        if frame.f_code in code_objects:
            stream: TokenPump | None = frame.f_locals.get("self")
            if stream is None:
                return None
            agen_frame = getattr(getattr(getattr(stream, "source", None), "_agen", None), "ag_frame", None)
            inner = innermost
            while agen_frame is not None and inner is not None and inner is not frame:
                if inner is agen_frame:
                    assert innermost is not None
                    code = innermost.f_code
                    return stream, agen_frame, f"{code.co_filename}:{innermost.f_lineno} in {code.co_name}()"
                inner = inner.f_back
            return None
        frame = frame.f_back
    return None


def watch(stream: TokenPump, threshold: float) -> LoopWatchdog:
    """The watchdog of the current event loop (started on first use), now watching ``stream``."""
    ident = threading.get_ident()
    loop = anyio.lowlevel.current_token()
    with _registry_lock:
        dog = _watchdogs.get(ident)
        if dog is not None and dog.loop.native_token is not loop.native_token:
            dog.stop()  # a previous event loop on this thread has finished
            dog = None
        if dog is None:
            dog = _watchdogs[ident] = LoopWatchdog(loop, ident, threshold)
        dog.threshold = min(dog.threshold, threshold)
    dog.add(stream)
    return dog
