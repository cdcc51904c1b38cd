"""One fault-injection run: where the app is (its await points), what to inject there,
and what the app's generator, hooks and background task did.

App code calls :meth:`Run.step` (on the event loop) or :meth:`Run.step_sync` (in a
worker thread) at each of its own await points; the fake server's hooks call
:meth:`Run.at` at each ``receive()`` / ``send()``. When the scenario's point comes, the
scenario's event is fired there, once. A step then takes :data:`STEP` virtual seconds
(the auth call, the model's prefill or decode step).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from asgi_stream import CancelToken, current_cancel_token
from asgi_stream._loop import post

from .fakeserver import BODY, FINAL, START, FakeServer
from .vclock import Ledger, Sleeper

#: Virtual seconds each await point of the app takes (auth call, prefill, decode step).
STEP = 1.0
#: How long a slow send takes (well under the send timeout).
SLOW = 4.7
#: After ``send_block``: the client gives up this long after its sends stopped.
GIVE_UP = 0.3


class Boom(RuntimeError):
    """The exception the app's generator (or endpoint) raises when told to."""


@dataclass
class Observed:
    """What the app's side did during a run (virtual times)."""

    gen_started: int = 0
    finally_at: list[float] = field(default_factory=list)
    finally_threads: list[str] = field(default_factory=list)
    natural_end: bool = False
    on_end: list[Any] = field(default_factory=list)
    background_at: list[float] = field(default_factory=list)
    points: list[tuple[str, float]] = field(default_factory=list)


class Run:
    """The state of one (kind, point, event) run, shared by the app and the server."""

    def __init__(self, kind: str, point: str, event: str, ledger: Ledger, now: Callable[[], float]) -> None:
        self.kind = kind
        self.point = point
        self.event = event
        self.ledger = ledger
        self.now = now
        self.seen = Observed()
        self.fired_at: float | None = None
        #: When the endpoint's own await ended (it then returns its response).
        self.endpoint_done_at: float | None = None
        self.token: CancelToken | None = None
        self.server: FakeServer | None = None
        self.middleware: Any = None
        self.loop: anyio.lowlevel.EventLoopToken | None = None
        self.timers: anyio.abc.TaskGroup | None = None
        self._sleepers: list[Sleeper] = []
        self._lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self._bodies = 0

    # ------------------------------------------------------------ recording
    def gen_started(self) -> None:
        with self._lock:
            self.seen.gen_started += 1

    def gen_finally(self) -> None:
        with self._lock:
            self.seen.finally_at.append(self.now())
            self.seen.finally_threads.append(threading.current_thread().name)

    def gen_done(self) -> None:
        self.seen.natural_end = True

    def record_end(self, record: Any) -> None:
        """The middleware's ``on_end`` hook (a snapshot: the record is mutable)."""
        self.seen.on_end.append(copy.copy(record))

    async def background(self) -> None:
        """The response's BackgroundTask."""
        self.seen.background_at.append(anyio.current_time())

    # ------------------------------------------------------------ firing
    def _mark(self, point: str) -> bool:
        self.seen.points.append((point, self.now()))
        return point == self.point and self.fired_at is None

    def fire(self) -> None:
        """Inject the scenario's event now (on the event loop)."""
        if self.fired_at is not None:
            return
        self.fired_at = anyio.current_time()
        srv = self.server
        assert srv is not None
        event = self.event
        if event == "disconnect":
            srv.disconnect()
        elif event == "send_error":
            srv.break_pipe()
        elif event == "send_block":
            srv.hang_sends()
            srv.later(GIVE_UP, srv.disconnect)
        elif event == "send_timeout":
            srv.hang_sends()
        elif event == "send_slow":
            srv.slow_next_send(SLOW)
        elif event in ("cancel_gen", "cancel_thread"):
            self._cancel_from_thread() if event == "cancel_thread" else self._token().cancel()
        elif event == "shutdown":
            self.middleware.begin_shutdown()
        elif event == "lifespan_shutdown":
            srv.lifespan_shutdown()
        elif event == "server_cancel":
            srv.cancel_request()
        elif event == "gen_raise":
            raise Boom("boom")
        elif event != "none":
            raise ValueError(event)

    def _token(self) -> CancelToken:
        token = current_cancel_token() or self.token
        assert token is not None, "no cancel token to cancel"
        return token

    def _cancel_from_thread(self) -> None:
        """``token.cancel()`` from another thread; its callbacks (which hop to the loop)
        have all been posted when this returns, so the run stays deterministic."""
        token = self._token()
        thread = threading.Thread(target=token.cancel, name="fault: cancel from a thread", daemon=True)
        self.threads.append(thread)
        thread.start()
        thread.join(30)

    # ------------------------------------------------------------ await points
    def at(self, point: str) -> None:
        """A server-side point (a receive or send call): fire here if it is ours."""
        if self._mark(point):
            self.fire()

    def on_receive(self, n: int) -> None:
        """FakeServer hook: receive #1 reads the body, #2 is the one that blocks."""
        if n <= 2:
            self.at("recv_body" if n == 1 else "recv_wait")

    def on_send(self, n: int, role: str, message: dict[str, Any]) -> None:
        """FakeServer hook: the start, the first and second body sends, the final one."""
        if role == START:
            self.at("send_start")
        elif role == BODY:
            self._bodies += 1
            if self._bodies <= 2:
                self.at("send_first" if self._bodies == 1 else "send_mid")
        elif role == FINAL:
            self.at("send_final")

    async def step(self, point: str | None) -> None:
        """An await point of the app on the event loop (endpoint or async generator)."""
        if point is not None and self._mark(point):
            self.fire()
        await anyio.sleep(STEP)
        if point == "endpoint":
            self.endpoint_done_at = anyio.current_time()

    def step_sync(self, point: str | None, *, wake_on: CancelToken | None = None) -> None:
        """An await point of a sync generator or producer thread: fire the event (the
        generator's own ones right here, the others on the loop), then take a step."""
        self.settle_loop()  # a thread-pool generator runs ahead of the loop: act on a quiet one
        if point is not None and self._mark(point):
            if self.event == "gen_raise":
                self.fired_at = self.now()
                raise Boom("boom")
            if self.event == "cancel_gen":
                self.fired_at = self.now()
                self._token().cancel()  # from the generator's own thread
            else:
                self.call_on_loop(self.fire)
        self.sleep_sync(STEP, wake_on=wake_on)

    def call_on_loop(self, func: Callable[[], None]) -> None:
        """Run ``func()`` on the event loop and wait until it has run (thread side)."""
        done = threading.Event()
        box: list[BaseException] = []

        def run() -> None:
            try:
                func()
            except BaseException as exc:
                box.append(exc)
            finally:
                done.set()

        assert self.loop is not None
        if not post(self.loop, run) or not done.wait(30):
            raise RuntimeError("the event loop never ran the injected event")
        self.settle_loop()
        if box:
            raise box[0]

    def settle_loop(self) -> None:
        """Thread side: wait until the loop has run everything that is ready (what this
        thread just did included), so a thread acts only on a quiet loop and every run
        of a combination takes the same path."""
        quiet = threading.Event()
        assert self.loop is not None
        if post(self.loop, self.ledger.arm, quiet):
            quiet.wait(30)

    def sleep_sync(self, seconds: float, *, wake_on: CancelToken | None = None) -> None:
        """Sleep ``seconds`` of virtual time in a thread (earlier if ``wake_on`` is set)."""
        sleeper = self.ledger.sleeper()
        with self._lock:
            self._sleepers.append(sleeper)

        def arm() -> None:
            assert self.timers is not None
            self.timers.start_soon(self._wake_later, seconds, sleeper)
            sleeper.park()

        if wake_on is not None:  # before arming: a token already set wakes it before park()
            wake_on.add_callback(lambda _token: sleeper.wake())
        assert self.loop is not None
        if not post(self.loop, arm):
            return  # the run is over
        sleeper.wait()

    @staticmethod
    async def _wake_later(seconds: float, sleeper: Sleeper) -> None:
        await anyio.sleep(seconds)
        sleeper.wake()

    def wake_all(self) -> None:
        """End of the run: release every thread still sleeping in virtual time."""
        with self._lock:
            sleepers = list(self._sleepers)
        for sleeper in sleepers:
            sleeper.wake()

    def start_thread(self, target: Callable[[], None], name: str) -> threading.Thread:
        """Start an app thread (a producer), counted as running until it returns."""

        def main() -> None:
            try:
                target()
            finally:  # counted out by the loop, after the thread's last posts
                assert self.loop is not None
                if not post(self.loop, self.ledger.add, -1, thread):
                    self.ledger.add(-1, thread)

        thread = threading.Thread(target=main, name=name, daemon=True)
        self.ledger.add(1, thread, lambda: thread.ident is None or thread.is_alive())
        self.threads.append(thread)
        thread.start()
        return thread
