"""The FastAPI integration: installed by StreamMiddleware, a no-op where FastAPI lacks
its own streaming, reversible; ThreadIterator on its own."""

from __future__ import annotations

import sys
import threading
import time

import anyio
import pytest

from asgi_stream import StreamMiddleware
from asgi_stream.integrations import fastapi as integration

routing = pytest.importorskip("fastapi.routing")
needs_sse = pytest.mark.skipif(not integration.supported(), reason="FastAPI < 0.135")


@pytest.fixture
def restore():
    """Leave the hooks as they were found."""
    was = integration.installed()
    yield
    if was:
        integration.install()
    else:
        integration.uninstall()


@needs_sse
def test_the_middleware_installs_it_and_it_rebinds_three_names(restore) -> None:
    from fastapi import FastAPI

    integration.uninstall()
    originals = (routing.solve_dependencies, routing.iterate_in_threadpool, routing.StreamingResponse)
    StreamMiddleware(FastAPI())
    assert integration.installed()
    now = (routing.solve_dependencies, routing.iterate_in_threadpool, routing.StreamingResponse)
    assert all(a is not b for a, b in zip(now, originals, strict=True))
    assert issubclass(routing.StreamingResponse, originals[2])
    assert integration.install() is True  # idempotent
    assert (routing.solve_dependencies, routing.iterate_in_threadpool, routing.StreamingResponse) == now
    integration.uninstall()
    assert (routing.solve_dependencies, routing.iterate_in_threadpool, routing.StreamingResponse) == originals


def test_a_fastapi_without_its_own_streaming_is_left_alone(restore, monkeypatch) -> None:
    integration.uninstall()
    before = (routing.solve_dependencies, routing.iterate_in_threadpool, routing.StreamingResponse)
    monkeypatch.setitem(sys.modules, "fastapi.sse", None)  # as before FastAPI 0.135
    assert integration.supported() is False
    assert integration.install() is False and not integration.installed()
    assert (routing.solve_dependencies, routing.iterate_in_threadpool, routing.StreamingResponse) == before


def test_an_unexpected_solve_dependencies_is_left_alone(restore, monkeypatch) -> None:
    integration.uninstall()

    async def solve_dependencies(*, dependant, body):  # no ``request``: another FastAPI layout
        raise AssertionError

    monkeypatch.setattr(routing, "solve_dependencies", solve_dependencies)
    assert integration.install() is False
    assert routing.solve_dependencies is solve_dependencies


def test_a_starlette_app_never_imports_fastapi(restore, monkeypatch) -> None:
    integration.uninstall()
    monkeypatch.delitem(sys.modules, "fastapi.routing")
    assert integration.install_if_imported() is False
    assert "fastapi.routing" not in sys.modules


@needs_sse
def test_uninstall_leaves_a_name_someone_else_rebound_since(restore, monkeypatch) -> None:
    integration.install()
    other = object()
    monkeypatch.setattr(routing, "iterate_in_threadpool", other)
    integration.uninstall()
    assert routing.iterate_in_threadpool is other


# ------------------------------------------------------------ ThreadIterator
def test_thread_iterator_runs_every_step_and_the_close_on_one_thread() -> None:
    seen: list[str] = []

    def gen():
        try:
            for i in range(3):
                seen.append(threading.current_thread().name)
                yield i
        finally:
            seen.append("finally " + threading.current_thread().name)

    async def main() -> list[int]:
        return [x async for x in integration.ThreadIterator(gen(), name="t")]

    assert anyio.run(main) == [0, 1, 2]
    assert seen == ["asgi-stream t"] * 3 + ["finally asgi-stream t"]


def test_thread_iterator_cancelled_mid_step_closes_right_after_the_step() -> None:
    events: list[tuple[str, float]] = []
    stepping = threading.Event()

    def gen():
        try:
            yield 0
            stepping.set()
            time.sleep(0.5)
            events.append(("step ended", time.monotonic()))
            yield 1
            events.append(("asked again", time.monotonic()))
        finally:
            events.append(("finally", time.monotonic()))

    async def main() -> float:
        it = integration.ThreadIterator(gen(), name="t", close_timeout=5.0)
        assert await it.__anext__() == 0
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:

                async def cancel_when_stepping() -> None:
                    await anyio.to_thread.run_sync(stepping.wait)
                    scope.cancel()

                tg.start_soon(cancel_when_stepping)
                await it.__anext__()
        cancelled_at = time.monotonic()
        await it.aclose()
        return cancelled_at

    cancelled_at = anyio.run(main)
    assert [name for name, _ in events] == ["step ended", "finally"]  # no further step
    # The cancelled task waits for the step and the close, as FastAPI's own pool makes it
    # wait for the step; the close follows the step at once.
    assert events[0][1] <= events[1][1] <= cancelled_at
    assert events[1][1] - events[0][1] < 2.0


def test_thread_iterator_propagates_the_generators_exception_and_aclose_is_idempotent() -> None:
    def gen():
        yield 1
        raise ValueError("boom")

    async def main() -> None:
        it = integration.ThreadIterator(gen())
        assert await it.__anext__() == 1
        with pytest.raises(ValueError, match="boom"):
            await it.__anext__()
        await it.aclose()
        await it.aclose()

    anyio.run(main)
