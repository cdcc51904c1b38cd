"""Fixtures of the resume tests: a real redis-server, real uvicorn workers behind a
real nginx. Tests needing a binary that is not installed are skipped."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .procs import NGINX, REDIS_SERVER, Cluster, RedisServer, start_cluster


def _need_redis() -> None:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session's tests that do not stop it."""
    _need_redis()
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone (it may kill, pause or restart it)."""
    _need_redis()
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def key_prefix() -> str:
    """A key prefix no other test uses."""
    return f"test-{secrets.token_hex(4)}:"


@pytest.fixture
def settled(redis_server: RedisServer, key_prefix: str) -> str:
    """``key_prefix``, with its Redis marked as holding its data for long (a permanent
    ``<prefix>settled``): an unknown stream is unknown at once, no recovery window."""
    redis_server.command(b"SET", f"{key_prefix}settled".encode(), b"1")
    return key_prefix


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """``cluster(redis_url, grace=...)``: two workers (A, B) behind nginx; stopped at teardown."""
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    started: list[Cluster] = []

    def start(
        redis_url: str,
        *,
        grace: float = 30.0,
        heartbeat: float = 0.25,
        patience: float = 2.0,
        finish_retry: float = 5.0,
        timeout: float = 1.0,
    ) -> Cluster:
        env = {
            "RESUME_TIMEOUT": str(timeout),
            "RESUME_REDIS_URL": redis_url,
            "RESUME_GRACE": str(grace),
            "RESUME_HEARTBEAT": str(heartbeat),
            "RESUME_PATIENCE": str(patience),
            "RESUME_FINISH_RETRY": str(finish_retry),
        }
        c = start_cluster(tmp_path / f"cluster{len(started)}", env)
        started.append(c)
        return c

    yield start
    for c in started:
        c.stop()
