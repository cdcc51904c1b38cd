"""What the fidelity tests share: the two variants of an app, a server-side view of
when requests end, and a client that stops reading."""

from __future__ import annotations

import time
from typing import Any

import pytest

from asgi_stream import StreamMiddleware
from conformance.clients.h1 import H1Client
from tests.peers.allowlist import DEFECTS

from ..support.layers import Ends

__all__ = ["BUDGET", "Ends", "add_line", "defect", "frozen_client", "open_stream", "variants"]

#: Seconds a condition that holds without the line within ~1 s gets on a loaded machine.
BUDGET = 8.0


def defect(number: str) -> str:
    """The reason of a strict xfail: the defect, as the peer-suites gate names it."""
    return f"defect {number}: {DEFECTS[number]}"


def variants(number: str | None) -> list[Any]:
    """``line`` parameters: without the line, then with it (a strict xfail naming the
    defect ``number`` when one holds it back today)."""
    marks = [] if number is None else [pytest.mark.xfail(strict=True, reason=defect(number))]
    return [pytest.param(False, id="without-the-line"), pytest.param(True, id="with-the-line", marks=marks)]


def add_line(app: Any, line: bool, **options: Any) -> Any:
    """``app.add_middleware(StreamMiddleware, **options)`` when ``line``; the app either way."""
    if line:
        app.add_middleware(StreamMiddleware, **options)
    return app


def frozen_client(port: int, path: str) -> H1Client:
    """A client that sends the request, reads the response head, and never reads again
    (a tiny receive buffer, so the server's sends block soon)."""
    client = H1Client("127.0.0.1", port, rcvbuf=4096, timeout=15.0)
    client.request("GET", path)
    client.read_head(deadline=time.monotonic() + 15)
    return client


def open_stream(port: int, path: str, chunks: int = 1) -> H1Client:
    """A client that reads the head and the first ``chunks`` body chunks."""
    client = H1Client("127.0.0.1", port, timeout=15.0)
    client.request("GET", path)
    response = client.read_chunks(chunks, deadline=time.monotonic() + 15)
    assert response.status == 200 and len(response.chunks) >= chunks, response
    return client
