"""Virtual time for the fault-injection harness, on both anyio backends.

* trio: :class:`TrioClock`, a ``MockClock(autojump_threshold=0)`` that jumps to the next
  deadline the moment every task waits;
* asyncio: :class:`VirtualLoop`, a selector event loop whose ``time()`` is virtual and
  whose selector jumps it to the next timer when nothing is ready.

Threads break "every task waits": a sync generator's worker thread (or a producer
thread) may be about to wake the loop. The :class:`Ledger` counts threads that owe the
loop a wake-up; neither clock jumps while one does. The loop side counts itself in
around its awaits on a thread; a thread counts itself out while it sleeps in virtual
time (:meth:`Ledger.sleeper`), and whoever wakes it counts it back in first.

The core reads ``time.monotonic()``; :func:`use_virtual_time` points it at the virtual
clock (this module is the only place that knows how).
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import sys
import threading
import time as _time
import types
from collections.abc import Callable, Iterator
from typing import Any

import trio
import trio.testing

#: Real seconds a loop waits for threads before it declares the run stuck.
STUCK_AFTER = 3.0


class Stuck(RuntimeError):
    """The run can make no progress: nothing is ready, no thread owes a wake-up, and
    no deadline is left (a deadlock)."""


class Ledger:
    """Threads that owe the event loop a wake-up (the clocks do not jump meanwhile).

    Counts are kept per thread (or per sync-iterator driver, resolved to its thread):
    what a thread that has exited still owes is void, since it will never answer (its
    last posts, if any, reached the loop before it exited). When that leaves the loop
    awaiting a dead thread, or a live thread keeps the clocks frozen for
    :data:`STUCK_AFTER` real seconds, :attr:`stuck` records it and the ledger stops
    holding time back, so the run goes on and shows the hang.
    """

    #: Real seconds a thread must have exited before what it owed is void.
    DEAD_GRACE = 0.05

    def __init__(self) -> None:
        self._cv = threading.Condition(threading.Lock())
        self._counts: dict[object, int] = {}
        self._alive: dict[object, Callable[[], bool]] = {}
        self._dead_at: dict[object, float] = {}
        #: Keys the loop awaits an answer from (a dead one there is a hang).
        self._awaits: set[object] = set()
        self._busy_since: float | None = None
        #: Real seconds a thread kept the clocks frozen before the ledger gave up on it.
        self.stuck: float | None = None
        self._armed: list[threading.Event] = []

    def add(self, n: int, key: object = None, alive: Callable[[], bool] | None = None) -> None:
        """Count ``n`` more (or fewer) running threads for ``key`` (a thread, a driver;
        None: an anonymous one that never exits, e.g. a pool worker)."""
        with self._cv:
            self._counts[key] = self._counts.get(key, 0) + n
            if alive is not None:
                self._alive[key] = alive
            if self._owed() <= 0:
                self._cv.notify_all()

    def _owed(self) -> int:
        """What the live threads owe (the lock is held)."""
        total, now = 0, None
        for key, count in self._counts.items():
            if not count:
                continue
            alive = self._alive.get(key)
            if alive is not None and not alive():
                now = now or _time.monotonic()
                dead_at = self._dead_at.setdefault(key, now)
                if now - dead_at > self.DEAD_GRACE:
                    if count > 0 and key in self._awaits and self.stuck is None:
                        self.stuck = now - (self._busy_since or now)  # the loop awaits a dead thread
                    continue
            # awaiting two answers from one thread (next() and its close) is still one wake-up owed
            total += min(count, 1) if key in self._awaits else count
        return total

    @property
    def busy(self) -> bool:
        """Whether some thread is running and will wake the loop."""
        with self._cv:
            return self.stuck is None and self._owed() > 0

    def wait_idle(self, timeout: float) -> bool:
        """Block (GIL released) up to ``timeout`` real seconds for the threads to settle."""
        with self._cv:
            if self.stuck is not None or self._owed() <= 0:
                self._busy_since = None
                return True
            now = _time.monotonic()
            if self._busy_since is None:
                self._busy_since = now
            elif now - self._busy_since > STUCK_AFTER:
                self.stuck = now - self._busy_since
                return True
            self._cv.wait(timeout)
            return self.stuck is not None or self._owed() <= 0

    def idle_again(self) -> None:
        """The loop got an event: restart the stuck timer."""
        self._busy_since = None

    def arm(self, event: threading.Event) -> None:
        """Loop side: set ``event`` the next time the loop has nothing left to run."""
        with self._cv:
            self._armed.append(event)

    def loop_idle(self) -> None:
        """Called by the clocks whenever the loop has no runnable task left."""
        if self._armed:
            with self._cv:
                armed, self._armed = self._armed, []
            for event in armed:
                event.set()

    @contextlib.asynccontextmanager
    async def awaiting_thread(self, key: object = None, alive: Callable[[], bool] | None = None) -> Any:
        """Loop side: count a thread as running while the loop awaits its answer;
        ``alive()`` tells whether that thread still exists (a dead one never answers)."""
        with self._cv:
            self._awaits.add(key)
        self.add(1, key, alive)
        try:
            yield
        finally:
            self.add(-1, key)

    def sleeper(self) -> Sleeper:
        """A one-shot wake-up for the calling thread (see :class:`Sleeper`)."""
        return Sleeper(self, threading.current_thread())


class Sleeper:
    """A one-shot wake-up for a thread that waits on the loop.

    The thread stays counted until the loop counts it out (:meth:`park`, run on the
    loop after whatever timer will wake it exists: a decrement from the thread itself
    could reach the loop's idle check before the thread's earlier posts do). Whoever
    wakes it counts it back in first, so no clock can jump in between.
    """

    __slots__ = ("_event", "_ledger", "_thread", "_woken")

    def __init__(self, ledger: Ledger, thread: threading.Thread) -> None:
        self._ledger = ledger
        self._thread = thread
        self._event = threading.Event()
        self._woken = False

    def park(self) -> None:
        """Loop side: the thread waits from now on (it no longer owes a wake-up)."""
        self._ledger.add(-1, self._thread, self._thread.is_alive)

    def wake(self) -> None:
        """Release the waiting thread (any thread, idempotent)."""
        with self._ledger._cv:
            if self._woken:
                return
            self._woken = True
        self._ledger.add(1, self._thread, self._thread.is_alive)
        self._event.set()

    def wait(self, real_timeout: float = 30.0) -> bool:
        """Thread side: wait until woken."""
        if self._event.wait(real_timeout):
            return True
        self.wake()
        return False


# ---------------------------------------------------------------- trio
_ledgers: dict[int, Ledger] = {}
_original_autojump = trio.testing.MockClock._autojump


def _autojump(clock: trio.testing.MockClock) -> None:
    """MockClock's autojump, except while a thread owes the loop a wake-up."""
    ledger = _ledgers.get(id(clock))
    if ledger is None:
        return _original_autojump(clock)
    ledger.loop_idle()
    if ledger.busy:
        ledger.wait_idle(0.0005)
        return None
    ledger.idle_again()
    if trio.lowlevel.current_statistics().seconds_to_next_deadline == float("inf"):
        # every task waits and nothing can wake one: give threads a moment, then say so
        idle = _idle_since.get(id(clock))
        now = _time.monotonic()
        if idle is None:
            _idle_since[id(clock)] = now
        elif now - idle > 1.0:
            raise Stuck("deadlock: every task waits, no thread runs and no deadline is left")
        _time.sleep(0.0005)
        return None
    _idle_since.pop(id(clock), None)
    return _original_autojump(clock)


_idle_since: dict[int, float] = {}


@contextlib.contextmanager
def trio_clock(ledger: Ledger) -> Iterator[trio.testing.MockClock]:
    """A ``MockClock(autojump_threshold=0)`` that does not jump while ``ledger`` says a
    thread is running (MockClock cannot be subclassed: its autojump is wrapped)."""
    clock = trio.testing.MockClock(autojump_threshold=0)
    _ledgers[id(clock)] = ledger
    trio.testing.MockClock._autojump = _autojump  # type: ignore[method-assign]
    try:
        yield clock
    finally:
        _ledgers.pop(id(clock), None)
        _idle_since.pop(id(clock), None)
        if not _ledgers:
            trio.testing.MockClock._autojump = _original_autojump  # type: ignore[method-assign]


def seed_trio_scheduler(seed: int) -> None:
    """Make trio's batch-order randomisation repeatable (a run is then deterministic)."""
    rng = getattr(getattr(trio, "_core", None), "_run", None)
    rng = getattr(rng, "_r", None)
    if rng is not None:
        rng.seed(seed)


# ---------------------------------------------------------------- asyncio
class _VirtualSelector(selectors.BaseSelector):
    """Delegates to a real selector; when nothing is ready, jumps the loop's virtual
    clock to the next timer instead of sleeping (unless a thread owes a wake-up)."""

    def __init__(self, loop: VirtualLoop, ledger: Ledger) -> None:
        self._inner = selectors.DefaultSelector()
        self._loop = loop
        self._ledger = ledger

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.get_key(fileobj)

    def get_map(self) -> Any:
        return self._inner.get_map()

    def close(self) -> None:
        self._inner.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._inner.select(0)
        if ready or (timeout is not None and timeout <= 0):
            self._ledger.idle_again()
            return ready
        idle_since = None
        while True:
            self._ledger.loop_idle()
            if self._ledger.busy:
                ready = self._inner.select(0.0005)
                if ready:
                    self._ledger.idle_again()
                    return ready
                self._ledger.wait_idle(0)
                continue
            ready = self._inner.select(0)
            if ready:
                return ready
            if timeout is not None:
                self._loop._vtime += timeout
                return []
            now = _time.monotonic()  # no timer at all: only a thread could wake us
            if idle_since is None:
                idle_since = now
            elif now - idle_since > 1.0:
                raise Stuck("deadlock: every task waits, no thread runs and no timer is left")
            ready = self._inner.select(0.001)
            if ready:
                return ready


class VirtualLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on virtual time (anyio's deadlines and sleeps follow it)."""

    def __init__(self, ledger: Ledger) -> None:
        self._vtime = 0.0
        super().__init__(selector=_VirtualSelector(self, ledger))

    def time(self) -> float:
        return self._vtime


# ---------------------------------------------------------------- the core's clock
class _TimeShim(types.ModuleType):
    """Stands in for the ``time`` module inside asgi_stream: ``monotonic()`` is virtual,
    everything else is the real module."""

    def __init__(self, now: Callable[[], float]) -> None:
        super().__init__("time")
        self.monotonic = now

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)


def _core_modules() -> list[types.ModuleType]:
    import asgi_stream.middleware
    import asgi_stream.resume.producer  # noqa: F401

    return [m for name, m in list(sys.modules.items()) if name.startswith("asgi_stream") and m is not None]


@contextlib.contextmanager
def use_virtual_time(now: Callable[[], float]) -> Iterator[None]:
    """Make the core read ``now()`` (thread-safe) as its monotonic clock.

    Patches ``asgi_stream._clock.monotonic`` where that module exists, and the ``time``
    global of every asgi_stream module that still imports the time module itself.
    """
    patched: list[tuple[Any, str, Any]] = []
    shim = _TimeShim(now)
    for module in _core_modules():
        if module.__name__ == "asgi_stream._clock" and hasattr(module, "monotonic"):
            patched.append((module, "monotonic", module.monotonic))
            module.monotonic = now
        if getattr(module, "time", None) is _time:
            patched.append((module, "time", _time))
            module.time = shim
    try:
        yield
    finally:
        for module, name, value in reversed(patched):
            setattr(module, name, value)
