"""With the one line, the generator of a FastAPI SSE / JSON Lines path operation is closed
when the request ends: an async one at once, a sync one right after its current step, on
its own worker thread, before FastAPI tears down the path operation's yield dependencies."""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import anyio
import pytest

from asgi_stream import Outcome
from conformance.clients.h1 import H1Client

from ..support.waiting import wait_for
from .app import KIND_IDS, KINDS
from .conftest import OPTIONS, stream_threads


def _stalled(trace, quiet: float = 0.5, timeout: float = 15.0) -> None:
    """Wait until the generator stopped producing (the client stopped reading)."""
    deadline = time.monotonic() + timeout
    last = -1
    while True:
        time.sleep(quiet)
        if len(trace.produced) == last and last > 0:
            return
        last = len(trace.produced)
        assert time.monotonic() < deadline, "the generator never stalled"


def _assert_closed_after_its_step(trace, closed_at: float) -> None:
    """A sync generator: closed on its own worker thread, after the step in flight ended,
    without being asked for another item; the thread is gone afterwards."""
    assert trace.finally_thread is not None and trace.finally_thread.startswith("asgi-stream ")
    assert trace.step_threads == {trace.finally_thread}, "every step and the close ran on one thread"
    assert len(trace.steps_started) == len(trace.produced), "no step was started after the disconnect"
    assert trace.finally_at >= trace.produced[-1]
    assert trace.finally_at - max(trace.produced[-1], closed_at) < 3.0, "closed right after its step"
    wait_for(lambda: not [t for t in stream_threads() if t.name == trace.finally_thread], 5.0, message="thread exits")


@pytest.mark.parametrize("prefix", ["", "/included"])
@pytest.mark.parametrize(("fmt", "mode"), KINDS, ids=KIND_IDS)
def test_disconnect_mid_step_closes_the_generator(with_line, key, fmt, mode, prefix) -> None:
    trace = with_line.probes.trace(key)
    if mode == "sync":
        query = "delay=0.4"  # every step blocks its thread for 0.4 s
    else:
        query = "delay=0.02&gap_after=1&gap=30"  # then awaits for 30 s
    client, response = with_line.open(f"{prefix}/{fmt}/{mode}/{key}?{query}")
    assert response.status == 200
    client.read_chunks(2, deadline=time.monotonic() + 15)
    closed_at = time.monotonic()
    client.close()

    finally_at = trace.wait_finally(10.0)
    if mode == "sync":
        _assert_closed_after_its_step(trace, closed_at)
    else:
        assert trace.finally_thread == "test uvicorn"  # on the event loop, while blocked awaiting
        assert finally_at - closed_at < 3.0
    record = with_line.probes.record(key)
    assert record.outcome is Outcome.CANCELLED
    # The generator's finally still had its yield dependency; the dependency closed after.
    assert trace.resource_open_in_finally is True
    wait_for(lambda: trace.dependency_closed_at is not None, 5.0, message="dependency teardown")
    assert trace.dependency_closed_at >= finally_at


@pytest.mark.parametrize(("fmt", "mode"), KINDS, ids=KIND_IDS)
def test_disconnect_under_backpressure_closes_the_generator_left_at_a_yield(fresh, key, fmt, mode, caplog) -> None:
    """The client stops reading, FastAPI's producer blocks on its send with the generator
    suspended at a yield, then the client leaves: FastAPI never resumes the generator, so
    it is closed when the request ends (not at the next garbage collection)."""
    served = fresh(send_timeout=None, keepalive=None)
    trace = served.probes.trace(key)
    client, _ = served.open(f"/{fmt}/{mode}/{key}?size=65536", rcvbuf=4096)
    _stalled(trace)
    closed_at = time.monotonic()
    client.abort()

    finally_at = trace.wait_finally(10.0)
    assert finally_at - closed_at < 5.0
    wait_for(lambda: served.probes.records, 5.0, message="the stream's record")
    assert served.probes.records[0].outcome is Outcome.CANCELLED
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "nothing logged as an error"
    if mode == "sync":
        _assert_closed_after_its_step(trace, closed_at)
    assert trace.resource_open_in_finally is True
    wait_for(lambda: trace.dependency_closed_at is not None, 5.0, message="dependency teardown")
    assert trace.dependency_closed_at >= finally_at


@pytest.mark.parametrize(("fmt", "mode"), KINDS, ids=KIND_IDS)
def test_send_timeout_ends_the_stream_and_closes_the_generator(with_line, key, fmt, mode) -> None:
    """A client that stops reading: after ``send_timeout`` (1 s) without progress the
    stream is ended and its generator closed (sync ones on their thread)."""
    trace = with_line.probes.trace(key)
    client, _ = with_line.open(f"/{fmt}/{mode}/{key}?size=65536", rcvbuf=4096)
    try:
        record = with_line.probes.record(key, timeout=20.0)
        assert record.outcome is Outcome.TIMED_OUT
        finally_at = trace.wait_finally(10.0)
        if mode == "sync":
            _assert_closed_after_its_step(trace, finally_at)
        assert trace.resource_open_in_finally is True
        wait_for(lambda: trace.dependency_closed_at is not None, 5.0, message="dependency teardown")
    finally:
        client.abort()


@pytest.mark.parametrize("fmt", ["sse", "jsonl"])
def test_many_cancelled_sync_streams_leave_no_thread_behind(with_line, fmt) -> None:
    keys = [f"many-{fmt}-{i}" for i in range(20)]
    clients = []
    for k in keys:
        client, _ = with_line.open(f"/{fmt}/sync/{k}?delay=0.2")
        clients.append(client)
    for client in clients:
        client.read_chunks(1, deadline=time.monotonic() + 30)
    for client in clients:
        client.close()
    for k in keys:
        with_line.probes.trace(k).wait_finally(15.0)
    names = {with_line.probes.trace(k).finally_thread for k in keys}
    wait_for(lambda: not [t for t in stream_threads() if t.name in names], 10.0, message="all worker threads exit")


@pytest.mark.parametrize(("fmt", "mode"), KINDS, ids=KIND_IDS)
def test_complete_bodies_are_byte_identical_with_and_without_the_line(with_line, without_line, key, fmt, mode) -> None:
    ours = with_line.fetch(f"/{fmt}/{mode}/{key}?n=5&size=3")
    theirs = without_line.fetch(f"/{fmt}/{mode}/{key}-w?n=5&size=3")
    assert ours.complete and theirs.complete
    assert ours.body == theirs.body
    assert with_line.probes.record(key).outcome is Outcome.COMPLETED
    assert with_line.probes.trace(key).finally_at is not None


@pytest.mark.parametrize("fmt", ["sse", "jsonl"])
def test_sync_and_async_generators_stream_the_same_bytes(with_line, fmt) -> None:
    bodies = {mode: with_line.fetch(f"/{fmt}/{mode}/same-{fmt}-{mode}?n=4").body for mode in ("sync", "async")}
    assert bodies["sync"] == bodies["async"]


@pytest.mark.parametrize("fmt", ["sse", "jsonl"])
def test_sync_generator_sees_the_request_context(with_line, key, fmt) -> None:
    """Context variables set before the generator runs (here by a dependency) are visible in
    its worker thread, as they are on FastAPI's thread pool."""
    with_line.fetch(f"/{fmt}/sync/{key}?n=2")
    assert with_line.probes.trace(key).tag_seen == f"tag-{key}"


@pytest.mark.parametrize("fmt", ["sse", "jsonl"])
def test_without_the_line_fastapi_runs_its_own_code(without_line, key, fmt) -> None:
    """Only requests through StreamMiddleware are changed: without it, FastAPI iterates a
    sync generator on its thread pool as before."""
    response = without_line.fetch(f"/{fmt}/sync/{key}?n=3")
    assert response.complete
    trace = without_line.probes.trace(key)
    assert trace.step_threads and not any(name.startswith("asgi-stream ") for name in trace.step_threads)
    assert threading.current_thread().name not in trace.step_threads


def _sync_teardown_survives_cancellation() -> bool:
    """Whether this FastAPI runs a ``def`` yield dependency's exit when the request is
    cancelled (``contextmanager_in_threadpool`` catching BaseException, shielded)."""
    from fastapi.concurrency import contextmanager_in_threadpool

    exited: list[bool] = []
    seen: list[bool] = []

    @contextlib.contextmanager
    def dependency():
        try:
            yield
        finally:
            exited.append(True)

    async def main() -> None:
        with anyio.CancelScope() as scope:
            try:
                async with contextmanager_in_threadpool(dependency()):
                    scope.cancel()
                    await anyio.sleep(5)
            finally:
                seen.append(bool(exited))

    anyio.run(main)
    return seen == [True]


def test_sync_yield_dependency_is_torn_down_after_the_generator(with_line, key) -> None:
    trace = with_line.probes.trace(key)
    client, _ = with_line.open(f"/sync-dependency/{key}", rcvbuf=4096)
    try:
        assert with_line.probes.record(key, timeout=20.0).outcome is Outcome.TIMED_OUT
        finally_at = trace.wait_finally(10.0)
        assert trace.resource_open_in_finally is True
        wait_for(lambda: trace.dependency_closed_at is not None, 5.0, message="dependency teardown")
        assert trace.dependency_closed_at >= finally_at
    finally:
        client.abort()


@pytest.mark.parametrize("kind", ["hypercorn", "hypercorn-trio"])
@pytest.mark.parametrize("fmt", ["sse", "jsonl"])
def test_sync_generator_closed_after_its_step_on_hypercorn(server, key, fmt, kind) -> None:
    """The same on hypercorn, on asyncio and on trio."""
    pytest.importorskip("hypercorn")
    from .app import Probes, make_app

    probes = Probes()
    running = server(make_app(probes, **OPTIONS), kind)
    trace = probes.trace(key)
    with H1Client(running.host, running.port, timeout=15.0) as client:
        client.request("GET", f"/{fmt}/sync/{key}?delay=0.4")
        client.read_chunks(2, deadline=time.monotonic() + 15)
        closed_at = time.monotonic()
    trace.wait_finally(10.0)
    _assert_closed_after_its_step(trace, closed_at)
    assert probes.record(key).outcome is Outcome.CANCELLED
