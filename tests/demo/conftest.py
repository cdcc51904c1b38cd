"""Fixtures of the demo app tests: the tiny model (loaded once), apps, live servers."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from asgi_stream.demo.model import LoadedModel, load_tiny

from ..support.sse import sse_data


@pytest.fixture(scope="session")
def tiny() -> LoadedModel:
    """The tiny random-weight Llama, shared by every test (it is read-only)."""
    return load_tiny()


@pytest.fixture
def make_app(tiny: LoadedModel) -> Iterator[Callable[..., Any]]:
    """``make_app(**options)``: a demo app on the tiny model (paced=True for paced);
    every engine is closed at teardown."""
    from asgi_stream.demo import create_app

    apps: list[Any] = []

    def make(**options: Any) -> Any:
        model = options.pop("model", tiny)
        app = create_app(model, **options)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.state.service.engine.close()


@pytest.fixture
def live(server: Callable[..., Any], make_app: Callable[..., Any]) -> Callable[..., tuple[Any, str]]:
    """``live(**options)`` → (app, base URL) of a demo app served by uvicorn."""

    def start(**options: Any) -> tuple[Any, str]:
        app = make_app(**options)
        running = server(app, lifespan="on")
        return app, running.url

    return start


def stats_entry(base: str, job_id: int | None = None, *, endpoint: str | None = None) -> dict[str, Any] | None:
    """The /stats entry of a job (or the newest for an endpoint) once its compute is over."""
    streams = httpx.get(f"{base}/stats", timeout=5).json()["streams"]
    for entry in reversed(streams):
        if job_id is not None and entry["id"] != job_id:
            continue
        if endpoint is not None and entry["endpoint"] != endpoint:
            continue
        return entry if entry["generation_done"] and entry["outcome"] is not None else None
    return None


def chunk_texts(body: str) -> list[str]:
    """The content pieces of an OpenAI chat stream body."""
    out = []
    for data in sse_data(body):
        if data == "[DONE]":
            break
        choice = (json.loads(data).get("choices") or [{}])[0]
        piece = choice.get("delta", {}).get("content") if "delta" in choice else choice.get("text")
        if piece:
            out.append(piece)
    return out


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
