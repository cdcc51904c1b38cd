"""The ``asgi-stream demo`` console script: uvicorn (HTTP/1.1) and hypercorn (h2c)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from asgi_stream.demo.cli import main

from ..support.sse import sse_data
from .conftest import free_port


class Server:
    """The CLI in a subprocess (its real PID kept), with its stderr lines."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "asgi_stream.demo.cli", "demo", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.log.append(line)
            if text in line:
                return line
        raise AssertionError(f"{text!r} never printed; output:\n{''.join(self.log)}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise
        return self.proc.returncode


@pytest.fixture
def cli() -> Iterator[Any]:
    servers: list[Server] = []

    def start(*args: str) -> Server:
        server = Server(*args)
        servers.append(server)
        return server

    yield start
    for server in servers:
        try:
            server.stop()
        except subprocess.TimeoutExpired:
            pass


def test_cli_tiny_model_over_uvicorn(cli: Any) -> None:
    port = free_port()
    server = cli("--tiny", "--port", str(port))
    server.wait_for("model ready")
    line = server.wait_for("open http://")
    assert f"http://127.0.0.1:{port}/" in line and "/v1" in line
    base = f"http://127.0.0.1:{port}"
    httpx_ok = httpx.get(base + "/", timeout=10)
    assert httpx_ok.status_code == 200 and "<title>asgi-stream demo</title>" in httpx_ok.text
    chat = httpx.post(
        base + "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "temperature": 0},
        timeout=30,
    )
    assert chat.status_code == 200 and chat.json()["usage"]["completion_tokens"] == 5
    assert server.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once shut down
    server.wait_for("Finished server process", timeout=5)  # after a graceful shutdown


def test_cli_paced_http2(cli: Any) -> None:
    port = free_port()
    server = cli("--paced", "--paced-interval", "0.02", "--http2", "--port", str(port))
    server.wait_for("h2c")
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(http1=False, http2=True, timeout=10) as client:  # prior knowledge
        response = client.post(
            base + "/generate", json={"prompt": "x", "max_tokens": 5}, headers={"Accept": "text/event-stream"}
        )
    assert response.http_version == "HTTP/2"
    assert len(sse_data(response.text)) == 5
    h1 = httpx.post(base + "/generate", json={"prompt": "x", "max_tokens": 2}, timeout=10)
    assert h1.http_version == "HTTP/1.1" and h1.status_code == 200
    assert server.stop() == 0  # hypercorn drains and returns


def test_cli_rejects_a_missing_model_directory(capsys: Any, tmp_path: Any) -> None:
    assert main(["demo", "--model", str(tmp_path / "nothing"), "--port", "0"]) == 1
    assert "not a directory" in capsys.readouterr().err


def test_cli_usage_errors() -> None:
    with pytest.raises(SystemExit) as info:
        main(["demo", "--tiny", "--paced"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main([])
