"""``tests/conftest.py`` for sse-starlette's tests (absent from its sdist).

Provides what the tests use from it: anyio tests on asyncio only (``anyio_backend``,
as the project's own conftest does), the per-test reset of the shutdown state
(``reset_shutdown_state``, autouse), and ``httpx_client`` on an ``app`` with an
endless ``/endless`` stream that logs when its client disconnects.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import anyio
import httpx2
import pytest
from sse_starlette import EventSourceResponse, sse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

logger = logging.getLogger(__name__)


def _reset() -> None:
    sse.AppStatus.should_exit = False
    sse.AppStatus.enable_automatic_graceful_drain = True
    sse._thread_state.shutdown_state = sse._ShutdownState()


@pytest.fixture
def anyio_backend() -> str:
    """anyio tests run on asyncio (pytest-asyncio drives the async fixtures)."""
    return "asyncio"


@pytest.fixture(autouse=True)
def reset_shutdown_state() -> Iterator[None]:
    """Every test starts and ends with no shutdown requested and no watcher."""
    _reset()
    yield
    _reset()


@pytest.fixture
def app() -> Starlette:
    """An app whose ``/endless`` sends ``data: 1``, ``data: 2``, … every 0.3 s."""

    async def endless(request: Request) -> EventSourceResponse:
        async def events() -> AsyncIterator[dict[str, int]]:
            i = 0
            try:
                while True:
                    i += 1
                    yield {"data": i}
                    await anyio.sleep(0.3)
            except anyio.get_cancelled_exc_class():
                logger.info("Disconnected from client %s", request.client)
                raise

        return EventSourceResponse(events())

    return Starlette(routes=[Route("/endless", endless)])


@pytest.fixture
async def httpx_client(app: Starlette) -> AsyncIterator[httpx2.AsyncClient]:
    """An async client on ``app`` through httpx2's ASGI transport."""
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://localhost:8000") as client:
        yield client
