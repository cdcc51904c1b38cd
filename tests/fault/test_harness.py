"""The harness itself: virtual time on both backends (threads included), the core's
clock shim, the fake server's controls, and repeatable runs."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from typing import Any

import anyio
import anyio.to_thread
import pytest
import trio

from asgi_stream import _clock as core_clock

from . import churn
from .churn_app import KINDS as CHURN_KINDS
from .fakeserver import FakeServer
from .known_failures import TABLE, known
from .matrix import BACKENDS, _count_threads_in, combinations, run_combination
from .vclock import Ledger, VirtualLoop, trio_clock, use_virtual_time


def _run(backend: str, main: object) -> None:
    """Run ``main()`` on a virtual clock (with the core reading it)."""
    ledger = Ledger()
    if backend == "trio":
        with trio_clock(ledger) as clock, use_virtual_time(clock.current_time), _count_threads_in(ledger):
            trio.run(main, clock=clock)  # type: ignore[arg-type]
    else:
        loop = VirtualLoop(ledger)
        with use_virtual_time(loop.time), _count_threads_in(ledger), asyncio.Runner(loop_factory=lambda: loop) as r:
            r.run(main())  # type: ignore[operator]


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_hour_of_virtual_time_costs_no_real_time(backend: str) -> None:
    seen: list[float] = []

    async def main() -> None:
        start = anyio.current_time()
        with anyio.move_on_after(1800):
            await anyio.sleep(3600)
        seen.append(anyio.current_time() - start)
        seen.append(core_clock.monotonic() - start)  # the core reads the same clock

    real = time.monotonic()
    _run(backend, main)
    assert time.monotonic() - real < 5
    assert seen[0] == pytest.approx(1800)
    assert seen[1] == pytest.approx(1800)
    assert core_clock.monotonic is time.monotonic  # restored after the run


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_clock_waits_for_a_thread_the_loop_awaits(backend: str) -> None:
    """A thread working for real (20 ms) is not skipped over: virtual time stays put."""
    elapsed: list[float] = []

    async def main() -> None:
        start = anyio.current_time()
        with anyio.move_on_after(60):  # a deadline the clock could jump to
            await anyio.to_thread.run_sync(time.sleep, 0.02)
        elapsed.append(anyio.current_time() - start)

    _run(backend, main)
    assert elapsed == [0.0]


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        kind = (await receive())["type"].split(".")[1]
        await send({"type": f"lifespan.{kind}.complete"})
        if kind == "shutdown":
            return


@pytest.mark.parametrize("backend", BACKENDS)
def test_fake_server_hangs_a_send_and_the_client_leaves(backend: str) -> None:
    seen: list[object] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await _lifespan(receive, send)
        assert (await receive())["type"] == "http.request"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        with anyio.move_on_after(5) as hung:
            await send({"type": "http.response.body", "body": b"a", "more_body": True})
        seen.append(hung.cancelled_caught)
        seen.append((await receive())["type"])
        return None

    async def main() -> None:
        def on_send(n: int, role: str, message: dict[str, Any]) -> None:
            if role == "body":
                server.hang_sends()
                server.later(2.0, server.disconnect)

        server = FakeServer(app, on_send=on_send)
        result = await server.run(60.0)
        seen.append(result.returned_at - result.started_at)
        seen.append([(s.role, s.fate) for s in result.sent])
        seen.append(result.receives[-1])

    _run(backend, main)
    assert seen == [
        True,
        "http.disconnect",
        5.0,
        [("start", "delivered"), ("body", "blocked")],
        (5.0, "http.disconnect"),
    ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_fake_server_breaks_the_pipe_and_cancels_the_request(backend: str) -> None:
    seen: list[object] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await _lifespan(receive, send)
        server.break_pipe()
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        except OSError:
            seen.append("OSError")
        server.later(1.0, server.cancel_request)
        await anyio.sleep_forever()

    async def main() -> None:
        nonlocal server
        server = FakeServer(app)
        result = await server.run(60.0)
        seen.extend([result.server_cancelled, result.hung, result.returned_at - result.started_at, result.exception])

    server: Any = None
    _run(backend, main)
    assert seen == ["OSError", True, False, 1.0, None]


def test_combination_table_is_consistent() -> None:
    """Every known-failure row names existing kinds, events and points, and matches."""
    names = {name for combo in combinations() for name in combo}
    for entry in TABLE:
        for kinds, modes, servers in entry.churn:
            assert set(kinds.split()) <= set(CHURN_KINDS), entry.key
            assert set(modes.split()) <= set(churn.MODES), entry.key
            assert set(servers.split()) <= set(churn.SERVERS), entry.key
        hits = 0
        for kinds, events, points in entry.rows:
            for word in (*kinds.split(), *events.split(), *(p.partition("@")[0] for p in points.split())):
                assert word in names, f"{entry.key}: unknown name {word!r}"
            for point in points.split():
                backend = point.partition("@")[2]
                assert backend in ("", *BACKENDS), f"{entry.key}: unknown backend in {point!r}"
        for backend in BACKENDS:
            hits += sum(1 for kind, point, event in combinations() if entry in known(backend, kind, point, event))
        assert hits, f"{entry.key} matches no combination"


@pytest.mark.parametrize(
    ("kind", "point", "event"),
    [
        ("sync", "between", "cancel_thread"),
        ("channel", "after_last", "cancel_thread"),
        ("fastapi_sync", "between", "send_error"),
    ],
)
def test_runs_repeat_exactly(kind: str, point: str, event: str) -> None:
    """Thread-driven kinds take the same path every time (strict xfails rely on it)."""
    first = [run_combination(kind, point, event, "trio").violations for _ in range(5)]
    assert all(v == first[0] for v in first)
    assert threading.active_count() < 200


@pytest.mark.parametrize("backend", BACKENDS)
def test_gc_closes_a_sync_streaming_response_after_a_disconnect(backend: str) -> None:
    """The documented limit of passthrough for sync iterators: after a disconnect the
    matrix does not wait for the garbage collector, so check here that it does close it."""
    report = run_combination("sr_sync", "send_mid", "disconnect", backend)
    assert report.run is not None and report.run.seen.gen_started == 1
    gc.collect()
    deadline = time.monotonic() + 5
    while not report.run.seen.finally_at and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(report.run.seen.finally_at) == 1
