"""FastAPI's own streaming (≥ 0.135) on real uvicorn, with and without the one line."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from asgi_stream import StreamMiddleware
from conformance.clients.h1 import H1Client, H1Response

from ..support.servers import Running, serve

try:
    import fastapi.sse  # noqa: F401  (FastAPI >= 0.135)
except ImportError:  # no FastAPI streaming to test (test_install.py covers the no-op)
    collect_ignore_glob = ["test_close.py", "test_guarantees.py"]

#: Middleware options of the shared server: short enough to observe, long enough for a
#: loaded 2-core machine.
OPTIONS: dict[str, Any] = {"keepalive": 0.3, "send_timeout": 1.0, "close_timeout": 5.0}


class Served:
    """A running app and its probes."""

    def __init__(self, running: Running, probes: Any, app: Any) -> None:
        self.running = running
        self.probes = probes
        self.app = app

    def open(self, path: str, *, rcvbuf: int | None = None) -> tuple[H1Client, H1Response]:
        client = H1Client(self.running.host, self.running.port, rcvbuf=rcvbuf, timeout=15.0)
        response = client.request("GET", path)
        client.read_head(deadline=time.monotonic() + 15)
        return client, response

    def fetch(self, path: str, headers: list[tuple[str, str]] = ()) -> H1Response:
        with H1Client(self.running.host, self.running.port, timeout=15.0) as client:
            client.request("GET", path, headers)
            return client.read_response(deadline=time.monotonic() + 15)

    def middleware(self) -> StreamMiddleware:
        layer = self.app.middleware_stack
        while layer is not None and not isinstance(layer, StreamMiddleware):
            layer = getattr(layer, "app", None)
        assert isinstance(layer, StreamMiddleware)
        return layer


@pytest.fixture(scope="module")
def with_line() -> Iterator[Served]:
    """The app with ``app.add_middleware(StreamMiddleware)``; one server for the module."""
    from .app import Probes, make_app

    probes = Probes()
    app = make_app(probes, **OPTIONS)
    with serve(app) as running:
        yield Served(running, probes, app)


@pytest.fixture(scope="module")
def without_line() -> Iterator[Served]:
    """The same app without the middleware (FastAPI's own behaviour)."""
    from .app import Probes, make_app

    probes = Probes()
    app = make_app(probes, line=False)
    with serve(app) as running:
        yield Served(running, probes, app)


@pytest.fixture
def fresh() -> Iterator[Callable[..., Served]]:
    """``fresh(**options)``: a server of its own (for shutdown, which is one-way)."""
    stack: list[Any] = []

    def start(**options: Any) -> Served:
        from .app import Probes, make_app

        probes = Probes()
        app = make_app(probes, **options)
        cm = serve(app)
        running = cm.__enter__()
        stack.append(cm)
        return Served(running, probes, app)

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


_keys = iter(range(1_000_000))


@pytest.fixture
def key(request: pytest.FixtureRequest) -> str:
    """A request key unique in the session (traces and records are looked up by it)."""
    return f"k{next(_keys)}"


def stream_threads() -> list[threading.Thread]:
    """asgi-stream's sync-generator worker threads alive now."""
    return [t for t in threading.enumerate() if t.name.startswith("asgi-stream ")]
