"""The fault matrix: every generator kind × every await point × every injected event,
run on the fake server under virtual time, and the invariants every run must keep.

:func:`combinations` enumerates the applicable triples; :func:`run_combination` runs
one on a backend and returns the invariants it broke (an empty list is a pass).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import trio

from asgi_stream import CancelReason, Outcome, StreamMiddleware
from asgi_stream.threads import SyncIteratorDriver
from conformance.sse import SSEMessage, SSEParser

from . import kinds as kinds_mod
from .fakeserver import FakeServer
from .fakeserver import Outcome as ServerOutcome
from .harness import GIVE_UP, SLOW, STEP, Boom, Run
from .kinds import GC_CLOSED_KINDS, KINDS, PASSTHROUGH_KINDS, THREAD_KINDS, TOKENS, build_app
from .vclock import Ledger, VirtualLoop, seed_trio_scheduler, trio_clock, use_virtual_time

BACKENDS = ("trio", "asyncio")
GEN_POINTS = ("before_first", "between", "after_last")
SERVER_POINTS = ("recv_body", "recv_wait", "send_start", "send_first", "send_mid", "send_final")
POINTS = ("endpoint", *GEN_POINTS, *SERVER_POINTS)
EVENTS = (
    "disconnect",
    "send_error",
    "send_block",
    "send_timeout",
    "send_slow",
    "cancel_gen",
    "cancel_thread",
    "shutdown",
    "lifespan_shutdown",
    "server_cancel",
    "gen_raise",
)
#: Events that happen inside the app's own code (its endpoint or generator).
APP_EVENTS = frozenset({"cancel_gen", "gen_raise"})
#: Events that need the stream's CancelToken (TokenStream only).
TOKEN_EVENTS = frozenset({"cancel_gen", "cancel_thread"})
#: Await points before a generator's first step has run.
BEFORE_FIRST_STEP = frozenset({"endpoint", "recv_body", "recv_wait", "send_start"})
CLIENT_EVENTS = frozenset({"disconnect", "send_error", "send_block", "send_timeout"})
#: Events that act on the sends that follow them (their effect starts at that send).
SEND_EVENTS = frozenset({"send_error", "send_block", "send_timeout", "send_slow"})
#: Kinds whose sync generator runs in the thread pool (a step there cannot be cancelled).
POOL_KINDS = frozenset({"sr_sync", "fastapi_sync"})
FASTAPI_KINDS = frozenset({"fastapi_async", "fastapi_sync"})
#: Kinds whose generator may run ahead of a blocked send (push producer, FastAPI's buffer).
RUN_AHEAD_KINDS = frozenset({"channel", "fastapi_async", "fastapi_sync"})

SEND_TIMEOUT = kinds_mod.OPTIONS["send_timeout"]
GRACE = kinds_mod.OPTIONS["shutdown_grace"]
#: Virtual seconds of the whole stream when nothing happens (endpoint + 4 steps).
NATURAL = 5 * STEP
#: Slack for the request to return after its stream ended (virtual seconds).
SETTLE = 0.1
#: A request still running this long after it started is hung.
HANG = 1000.0


def applicable(kind: str, point: str, event: str) -> bool:
    """Whether the event can happen at that point for that kind."""
    if event in APP_EVENTS and point not in ("endpoint", *GEN_POINTS):
        return False
    return not (event in TOKEN_EVENTS and kind in PASSTHROUGH_KINDS)


def combinations() -> Iterator[tuple[str, str, str]]:
    """Every applicable (kind, point, event)."""
    for kind in KINDS:
        for point in POINTS:
            for event in EVENTS:
                if applicable(kind, point, event):
                    yield kind, point, event


# ---------------------------------------------------------------- expectations
@dataclass(frozen=True)
class Expect:
    """What a run must show."""

    #: Allowed ``StreamRecord.outcome`` values of the one on_end call (empty: no stream).
    outcomes: frozenset[Outcome]
    #: Required cancel reason when the outcome is CANCELLED (None: any).
    reason: CancelReason | None
    #: complete | clean | inband | aborted | status500 | any (see check_body)
    body: str
    #: Boom must reach the server (True) or nothing may (False).
    exception: bool
    background: bool
    #: The request returns within this many virtual seconds of the event.
    allowance: float
    #: The generator may still reach its natural end (the event does not stop it).
    may_finish: bool
    #: The server's own send error may reach the server (a passthrough app sees what
    #: the server's send raised, as it does without the middleware).
    send_error_escapes: bool = False


def expect(kind: str, point: str, event: str) -> Expect:
    """The documented behaviour for one combination (README, docs)."""
    ok = frozenset({Outcome.COMPLETED})
    passthrough = kind in PASSTHROUGH_KINDS
    done = point == "send_final"  # the stream is complete when the event happens
    remaining = NATURAL + SETTLE
    if event == "none" or event == "send_slow":
        return Expect(ok, None, "complete", False, True, remaining + SLOW, True)
    if event == "server_cancel" and point == "endpoint":  # no response was ever returned
        return Expect(frozenset(), None, "any", False, False, STEP + SETTLE, True)
    if event == "gen_raise":
        if point == "endpoint":
            return Expect(frozenset(), None, "status500", True, False, SETTLE, True)
        error = frozenset({Outcome.ERROR})
        if passthrough:  # the exception reaches the server as it does without the middleware
            return Expect(error, None, "any", True, False, SETTLE, False)
        if point == "before_first" or kind == "text":
            body = "status500" if point == "before_first" else "aborted"
            return Expect(error, None, body, True, False, SETTLE, False)
        return Expect(error, None, "inband", False, True, SETTLE, False)
    stop = STEP + SETTLE  # a thread's current step ends, then everything is over
    if event == "send_error" and passthrough:
        # The app sees the OSError the server's send raised, as without the middleware:
        # Starlette (and what builds on it) lets it propagate and skips the background.
        # Raised by the final send, the body was complete as far as the app knows.
        outcomes = frozenset({Outcome.CANCELLED, Outcome.COMPLETED}) if done else frozenset({Outcome.CANCELLED})
        reason = None if done else CancelReason.DISCONNECT
        return Expect(outcomes, reason, "any", False, False, stop, done, True)
    if done:
        late = {"send_block": GIVE_UP, "send_timeout": SEND_TIMEOUT}.get(event, 0.0)
        any_end = frozenset({Outcome.COMPLETED, Outcome.CANCELLED, Outcome.TIMED_OUT})
        if event in CLIENT_EVENTS or event == "server_cancel":
            return Expect(any_end, None, "any", False, event != "server_cancel", late + stop, True)
        return Expect(ok, None, "complete", False, True, stop, True)
    if event in CLIENT_EVENTS:
        if kind == "resumable":  # the producer runs on without a client (resume_grace)
            wait = SEND_TIMEOUT + stop if event == "send_timeout" else remaining
            return Expect(ok, None, "any", False, True, wait, True)
        # FastAPI adds a `def` path operation's background task inside its first step,
        # which FastAPI itself may or may not reach when the client leaves first (a race
        # with its thread, the same without the middleware): at most once, then.
        background = not (kind == "fastapi_sync" and point in BEFORE_FIRST_STEP)

        if event == "send_timeout":
            timed_out = frozenset({Outcome.TIMED_OUT})
            return Expect(timed_out, None, "any", False, background, SEND_TIMEOUT + stop, kind in RUN_AHEAD_KINDS)
        give_up = GIVE_UP if event == "send_block" else 0.0
        return Expect(
            frozenset({Outcome.CANCELLED}), CancelReason.DISCONNECT, "any", False, background, give_up + stop, False
        )
    cancelled = frozenset({Outcome.CANCELLED})
    if event in TOKEN_EVENTS:
        return Expect(cancelled, CancelReason.APPLICATION, "clean", False, True, stop, False)
    if event in ("shutdown", "lifespan_shutdown"):
        return Expect(cancelled, CancelReason.SHUTDOWN, "clean", False, True, GRACE + stop, False)
    if event == "server_cancel":
        if kind in POOL_KINDS and point == "after_last":  # the step cannot be interrupted; it may finish first
            cancelled = frozenset({Outcome.CANCELLED, Outcome.COMPLETED})
        return Expect(cancelled, None, "any", False, False, stop, point == "after_last")
    raise ValueError(event)


# ---------------------------------------------------------------- reading the body
def _only_send_errors(exc: BaseException) -> bool:
    """An OSError (the fake server's failing send), or a group of nothing else."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(OSError)[1] is None
    return isinstance(exc, OSError)


def data_of(event: SSEMessage) -> str:
    data = event.data
    if data.startswith('"'):
        with contextlib.suppress(ValueError):
            return str(json.loads(data))
    return data


def check_body(kind: str, result: ServerOutcome, want: str) -> list[str]:
    """The body's shape: ended cleanly, or aborted as documented."""
    problems: list[str] = []
    roles = [s.role for s in result.sent]
    if roles.count("start") > 1:
        problems.append("body: two http.response.start messages")
    if roles and roles[0] != "start":
        problems.append("body: a body message before http.response.start")
    finals = result.finals()
    if len(finals) > 1:
        problems.append(f"body: {len(finals)} messages with more_body False")
    if finals and result.sent[-1] is not finals[0]:
        problems.append("body: messages after more_body False")
    concurrent = [s for s in result.sent if s.concurrent]
    if concurrent:
        problems.append(f"send: a {concurrent[0].role} send() began while another send() was still blocked")
    if want == "any":
        return problems
    start = result.start
    status = start["status"] if start else None
    delivered_final = [s for s in finals if s.fate in ("delivered", "slow")]
    if want == "status500":
        if status != 500 or not delivered_final:
            problems.append(f"body: want a complete 500 response, got status {status} ended={bool(delivered_final)}")
        return problems
    if want == "aborted":
        if finals:
            problems.append("body: want an aborted response (no more_body False), it was ended")
        return problems
    body = result.body()
    if kind == "text":
        texts, rest, errors, error_last = [body.decode()], "", [], False
        data = texts
    else:
        parser = SSEParser()
        parser.feed(body)
        parser.close()
        rest = parser.unfinished
        errors = [e for e in parser.events if e.type == "error"]
        data = [data_of(e) for e in parser.events if e.type != "error"]
        # The stream's last word: its last event, and no comment after it.
        error_last = bool(parser.events) and parser.events[-1].type == "error"
        error_last = error_last and all(c.events_before < len(parser.events) for c in parser.comments)
    if status != 200 and not (want == "clean" and status == 503 and not body):
        problems.append(f"body: want a 200 response, got status {status}")
    if not delivered_final:
        problems.append("body: never ended (no more_body False reached the client)")
    if rest.strip():
        problems.append(f"body: ends inside an event: {rest[-40:]!r}")
    if kind == "text":
        joined = data[0] if data else ""
        if want == "complete" and joined != "".join(TOKENS):
            problems.append(f"body: want {''.join(TOKENS)!r}, got {joined!r}")
        return problems
    if kind == "channel":  # documented: text produced during a blocked send joins the next send
        data = ["".join(data)] if data else []
        tokens = ["".join(TOKENS)]
        prefix = not data or "".join(TOKENS).startswith(data[0])
    else:
        tokens = list(TOKENS)
        prefix = data == tokens[: len(data)]
    if want == "complete":
        if data != tokens or errors:
            problems.append(f"body: want events {tokens}, got {data} (+{len(errors)} error events)")
    elif not prefix:
        problems.append(f"body: events {data} are not a prefix of {tokens}")
    if want == "inband" and not (kind != "text" and error_last):
        problems.append("body: want an in-band error event last")
    if want == "clean" and errors and kind != "resumable":
        problems.append(f"body: an error event in a cleanly cancelled stream: {errors}")
    return problems


# ---------------------------------------------------------------- instrumentation
@contextlib.contextmanager
def _count_threads_in(ledger: Ledger) -> Iterator[None]:
    """Count a thread as running while the loop awaits it: sync generators' driver
    threads and the thread pool (Starlette's and FastAPI's sync iteration)."""
    orig_next, orig_wait, orig_run_sync = (
        SyncIteratorDriver.next,
        SyncIteratorDriver.wait_closed,
        anyio.to_thread.run_sync,
    )

    def alive(driver: SyncIteratorDriver) -> Any:
        return lambda: driver._thread is None or driver._thread.is_alive()

    async def next_(self: SyncIteratorDriver) -> Any:
        async with ledger.awaiting_thread(self, alive(self)):
            return await orig_next(self)

    async def wait_closed(self: SyncIteratorDriver) -> None:
        async with ledger.awaiting_thread(self, alive(self)):
            await orig_wait(self)

    async def run_sync(*args: Any, **kwargs: Any) -> Any:
        async with ledger.awaiting_thread():
            return await orig_run_sync(*args, **kwargs)

    SyncIteratorDriver.next = next_  # type: ignore[method-assign]
    SyncIteratorDriver.wait_closed = wait_closed  # type: ignore[method-assign]
    anyio.to_thread.run_sync = run_sync
    try:
        yield
    finally:
        SyncIteratorDriver.next = orig_next  # type: ignore[method-assign]
        SyncIteratorDriver.wait_closed = orig_wait  # type: ignore[method-assign]
        anyio.to_thread.run_sync = orig_run_sync


def _tasks() -> list[Any]:
    """Every task of the running loop (trio: the whole task tree)."""
    try:
        return list(asyncio.all_tasks())
    except RuntimeError:
        pass
    out, stack = [], [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        out.append(task)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return out


#: Tasks that belong to the harness or to a library's process-wide machinery.
_HARNESS_TASKS = ("watchdog", "timer", "_wake_later", "_shutdown_watcher", "_run_lifespan")


def _outlives_requests(task: Any) -> bool:
    """The harness's own tasks, and those documented to outlive requests (a replay
    store's expiry timer, asgi_stream/resume/_background.py)."""
    if _task_name(task).rsplit(".", 1)[-1] in _HARNESS_TASKS:
        return True
    coro = task.get_coro() if hasattr(task, "get_coro") else task.coro
    code = getattr(coro, "cr_code", None)
    return code is not None and code.co_filename.endswith("resume/_background.py")


def _task_name(task: Any) -> str:
    """The task's own coroutine, looking through anyio's task wrappers."""
    coro = task.get_coro() if hasattr(task, "get_coro") else task.coro
    name = getattr(coro, "__qualname__", repr(coro))
    while name.endswith("_run_coro") or "anyio" in getattr(getattr(coro, "cr_code", None), "co_filename", ""):
        inner = getattr(coro, "cr_await", None)
        if inner is None or not hasattr(inner, "__qualname__"):
            break
        coro, name = inner, inner.__qualname__
    return name


def _where(task: Any) -> str:
    """Where a task is suspended: its innermost frames in asgi_stream or the app."""
    coro = task.get_coro() if hasattr(task, "get_coro") else task.coro
    frames = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            frames.append(frame)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None) or getattr(coro, "gi_yieldfrom", None)
    ours = [f for f in frames if "asgi_stream" in f.f_code.co_filename or "tests/fault" in f.f_code.co_filename]
    shown = (ours or frames)[-2:]
    return " > ".join(f"{f.f_code.co_filename.rsplit('/', 1)[-1]}:{f.f_code.co_name}:{f.f_lineno}" for f in shown)


def _app_threads(before: set[threading.Thread]) -> list[str]:
    """Threads the run left behind: new ones still alive (idle pool workers aside), or
    any thread still inside the app's code."""
    app_file = kinds_mod.__file__
    frames = sys._current_frames()
    out = []
    for thread in threading.enumerate():
        if thread is threading.current_thread() or not thread.is_alive():
            continue
        frame = frames.get(thread.ident or -1)
        in_app = False
        while frame is not None:
            if frame.f_code.co_filename == app_file:
                in_app = True
                break
            frame = frame.f_back
        pool = thread.name.startswith(("Trio thread", "AnyIO worker thread"))
        if in_app or (thread not in before and not pool):
            out.append(thread.name)
    return out


# ---------------------------------------------------------------- a run
@dataclass
class Report:
    """One run's findings."""

    violations: list[str] = field(default_factory=list)
    result: ServerOutcome | None = None
    run: Run | None = None
    hung_tasks: list[str] = field(default_factory=list)

    def explain(self) -> str:
        lines = list(self.violations)
        if self.hung_tasks:
            lines.append("tasks when it hung: " + "; ".join(self.hung_tasks))
        return "\n".join(lines)


def _find_middleware(app: Any) -> StreamMiddleware | None:
    node = getattr(app, "middleware_stack", None)
    while node is not None:
        if isinstance(node, StreamMiddleware):
            return node
        node = getattr(node, "app", None)
    return None


async def _main(run: Run, report: Report) -> None:
    run.loop = anyio.lowlevel.current_token()
    want = expect(run.kind, run.point, run.event)
    async with anyio.create_task_group() as timers:
        run.timers = timers
        app = build_app(run)
        server = FakeServer(
            app, headers=[(b"accept", b"text/event-stream")], on_receive=run.on_receive, on_send=run.on_send
        )
        run.server = server
        before: set[Any] = set()

        def started() -> None:
            run.middleware = _find_middleware(app)
            before.update(_tasks())

        def hung() -> None:
            report.hung_tasks = [
                f"{_task_name(t)} @ {_where(t)}" for t in _tasks() if t not in before and not _outlives_requests(t)
            ]

        async def after() -> None:
            # let the app's own threads (a producer) finish what they are doing, then settle
            deadline = time.monotonic() + 5.0
            while run.ledger.busy and time.monotonic() < deadline:
                run.ledger.loop_idle()
                run.ledger.wait_idle(0.001)
                await anyio.lowlevel.checkpoint()
            for _ in range(20):
                await anyio.lowlevel.checkpoint()
            leftover = [t for t in _tasks() if t not in before and not _outlives_requests(t)]
            if leftover:
                report.violations.append("tasks left behind: " + ", ".join(_task_name(t) for t in leftover))
            report.violations.extend(_check(run, server.result, want))

        report.result = await server.run(HANG, before=started, on_hang=hung, after=after)
        timers.cancel_scope.cancel()
    run.wake_all()


def _check(run: Run, result: ServerOutcome, want: Expect) -> list[str]:
    seen = run.seen
    problems: list[str] = []
    if run.event != "none" and run.fired_at is None:
        return [f"harness: point {run.point} never reached (points: {[p for p, _ in seen.points]})"]
    fired = run.fired_at if run.fired_at is not None else result.started_at
    # when the event takes effect: at the first send it acts on, or once the endpoint returned
    effect = max(fired, run.endpoint_done_at or 0.0)
    if run.event in SEND_EVENTS:
        affected = next((s for s in result.sent if s.at >= fired and s.fate in ("failed", "blocked", "slow")), None)
        if affected is not None:
            effect = affected.at
            if affected.role == "final":  # the stream was complete before the event could act
                want = expect(run.kind, "send_final", run.event)
    if run.ledger.stuck is not None:
        problems.append("a thread never answered the event loop (the loop awaits it forever)")
    if result.hung:
        problems.append(f"hung: the request had not returned {HANG:.0f} s after it started")
    elif result.returned_at is not None and result.returned_at > effect + want.allowance + 1e-6:
        problems.append(
            f"late: the request returned {result.returned_at - effect:.2f} s after the event took effect"
            f" (bound {want.allowance:.2f} s)"
        )
    if run.ledger.stuck is not None:
        return problems  # the rest races with a thread the loop no longer waits for
    # the generator: started at most once, closed exactly when started
    if seen.gen_started > 1:
        problems.append(f"generator: started {seen.gen_started} times")
    closes = len(seen.finally_at)
    if closes > seen.gen_started or (closes < seen.gen_started and run.kind not in GC_CLOSED_KINDS):
        # (GC_CLOSED_KINDS: documented to be closed by the garbage collector, test_gc_closes_*)
        problems.append(f"generator: finally ran {closes} times (started {seen.gen_started})")
    if seen.natural_end and not want.may_finish and not (run.kind in THREAD_KINDS and run.point == "after_last"):
        problems.append("generator: ran to its end although the stream was over")
    # on_end
    ends = seen.on_end
    if not want.outcomes:
        if ends:
            problems.append(f"on_end: called {len(ends)} times for a request without a stream")
    elif len(ends) != 1:
        problems.append(f"on_end: called {len(ends)} times ({[r.outcome for r in ends]})")
    else:
        record = ends[0]
        if record.outcome not in want.outcomes:
            allowed = "/".join(sorted(o.value for o in want.outcomes))
            problems.append(f"on_end: outcome {getattr(record.outcome, 'value', record.outcome)} (want {allowed})")
        elif (
            record.outcome is Outcome.CANCELLED and want.reason is not None and record.cancel_reason is not want.reason
        ):
            reason = getattr(record.cancel_reason, "value", record.cancel_reason)
            problems.append(f"on_end: cancel_reason {reason} (want {want.reason.value})")
    # the body
    if not result.hung:
        problems.extend(check_body(run.kind, result, want.body))
    # exceptions
    exc = result.exception
    if want.exception:
        if run.kind in FASTAPI_KINDS and isinstance(exc, BaseExceptionGroup) and exc.subgroup(Boom) is not None:
            pass  # FastAPI's SSE task group wraps it (it does without the middleware too)
        elif not isinstance(exc, Boom):
            problems.append(f"exception: the generator's Boom did not reach the server (got {exc!r})")
    elif exc is not None and not (want.send_error_escapes and _only_send_errors(exc)):
        problems.append(f"exception: {type(exc).__name__}: {exc} escaped to the server")
    # background
    runs = len(seen.background_at)
    if want.background and runs != 1 and not result.hung:
        problems.append(f"background: ran {runs} times (want once)")
    elif not want.background and runs > 1:
        problems.append(f"background: ran {runs} times")
    return problems


def run_combination(kind: str, point: str, event: str, backend: str = "trio") -> Report:
    """Run one combination on the fake server; the report lists the broken invariants."""
    ledger = Ledger()
    report = Report()
    threads_before = set(threading.enumerate())
    if backend == "trio":
        with trio_clock(ledger) as clock:
            now = clock.current_time
            run = Run(kind, point, event, ledger, now)
            report.run = run
            seed_trio_scheduler(zlib.crc32(f"{kind}-{point}-{event}".encode()))
            with use_virtual_time(now), _count_threads_in(ledger):
                trio.run(_main, run, report, clock=clock)
    elif backend == "asyncio":
        loop = VirtualLoop(ledger)
        now = loop.time
        run = Run(kind, point, event, ledger, now)
        report.run = run
        with use_virtual_time(now), _count_threads_in(ledger), asyncio.Runner(loop_factory=lambda: loop) as runner:
            runner.run(_main(run, report))
    else:
        raise ValueError(backend)
    # threads: the run's own must be gone, and none may still be inside the app
    deadline = time.monotonic() + 1.0
    while (left := _app_threads(threads_before)) and time.monotonic() < deadline:
        time.sleep(0.002)
    if left:
        report.violations.append("threads left behind: " + ", ".join(left))
    return report
