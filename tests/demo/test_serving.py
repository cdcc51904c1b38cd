"""The batched demo over real servers: the running-generations gauge a client's leaving
moves, 429 + Retry-After beyond the batch and the queue, concurrent SSE streams, and
the CLI (uvicorn pinned to h11: an HTTP/1.0 client gets a plain body)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from asgi_stream.demo.batching import BatchSettings
from asgi_stream.demo.cli import DEFAULT_MAX_BATCH
from asgi_stream.demo.schemas import Limits

from ..support.waiting import wait_for
from .conftest import free_port
from .test_app import Reader
from .test_cli import Server

LONG = Limits(max_tokens=4000)
GAUGE = "asgi_stream_demo_generations_running"


def _gauge(url: str, name: str = GAUGE) -> float:
    for family in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} not exposed")


def _ended(url: str) -> list[dict[str, Any]]:
    """The /stats entries of streams whose compute and stream are both over."""
    streams = httpx.get(url + "/stats", timeout=10).json()["streams"]
    return [e for e in streams if e["generation_done"] and e["outcome"] is not None]


def _long(prompt: str) -> dict[str, Any]:
    return {"prompt": prompt, "max_tokens": 4000, "temperature": 0}


def test_the_running_gauge_follows_clients(live: Any) -> None:
    app, url = live(limits=LONG)
    assert app.state.service.engine.mode == "batched"
    assert _gauge(url) == 0
    readers = [Reader(url + "/generate", _long(p)) for p in ("a", "b", "c")]
    for reader in readers:
        reader.start()
    wait_for(lambda: all(r.chunks for r in readers), timeout=30)  # all three streaming at once
    assert _gauge(url) == 3 and _gauge(url, "asgi_stream_demo_queue_depth") == 0
    readers[0].close.set()  # this client leaves
    readers[0].join(10)
    wait_for(lambda: _gauge(url) == 2, timeout=10)
    gone = wait_for(lambda: _ended(url), timeout=10)
    assert len(gone) == 1 and gone[0]["outcome"] == "cancelled" and gone[0]["steps_after_cancel"] <= 1
    stats = httpx.get(url + "/stats", timeout=10).json()
    assert stats["mode"] == "batched" and stats["generations_running"] == 2
    for reader in readers[1:]:
        reader.close.set()
        reader.join(10)
    wait_for(lambda: _gauge(url) == 0, timeout=10)


def test_beyond_the_batch_and_the_queue_is_429_with_retry_after(live: Any) -> None:
    app, url = live(limits=LONG, batching=BatchSettings(max_batch=2), max_queue=1, keepalive=0.2)
    engine = app.state.service.engine
    readers = [Reader(url + "/generate", _long(p)) for p in ("a", "b", "c")]
    for reader in readers[:2]:
        reader.start()
    wait_for(lambda: engine.running == 2, timeout=30)
    readers[2].start()  # the third waits for a slot
    wait_for(lambda: engine.queue_depth == 1, timeout=30)
    refused = httpx.post(url + "/v1/completions", json={"prompt": "d", "max_tokens": 5}, timeout=10)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "queue_full"
    wait_for(lambda: b": keepalive" in readers[2].body_bytes, timeout=10)  # the queued one is kept alive
    readers[0].close.set()
    wait_for(lambda: b"data:" in readers[2].body_bytes, timeout=30)  # it got the freed slot
    for reader in readers:
        reader.close.set()
        reader.join(10)


def test_concurrent_sse_streams_match_their_text_alone(live: Any) -> None:
    _, url = live()
    prompts = ["one", "two two", "three ☃", "four"]

    def run(prompt: str) -> str:
        body = {"prompt": prompt, "max_tokens": 60, "temperature": 0}
        return httpx.post(url + "/generate", json=body, timeout=60).text

    alone = {p: run(p) for p in prompts}
    results: dict[str, str] = {}
    barrier = threading.Barrier(len(prompts))

    def worker(prompt: str) -> None:
        barrier.wait()
        results[prompt] = run(prompt)

    threads = [threading.Thread(target=worker, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == alone


@pytest.fixture
def cli() -> Iterator[Any]:
    servers: list[Server] = []

    def start(*args: str) -> Server:
        server = Server(*args)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def test_cli_batches_and_answers_http10_without_chunking(cli: Any) -> None:
    port = free_port()
    server = cli("--tiny", "--port", str(port), "--threads", "1", "--max-batch", "4")
    line = server.wait_for("torch thread")
    assert "continuous batching, up to 4 streams" in line and "1 torch thread(s)" in line
    server.wait_for("open http://")
    body = json.dumps({"prompt": "hi", "max_tokens": 20, "temperature": 0}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            b"POST /generate HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        raw = b""
        while chunk := sock.recv(65536):  # an HTTP/1.0 body ends when the server closes
            raw += chunk
    head, _, text = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n")[0]
    assert b"transfer-encoding" not in head.lower()  # h11: no chunked framing for HTTP/1.0
    assert len(text.decode()) >= 5 and b"\r\n0\r\n" not in text
    server.stop()


def test_cli_thread_path_and_the_max_batch_default(cli: Any) -> None:
    assert BatchSettings().max_batch == DEFAULT_MAX_BATCH
    port = free_port()
    server = cli("--tiny", "--port", str(port), "--no-batching")
    line = server.wait_for("torch thread")
    assert "one stream at a time (batching is off)" in line
