"""Server shutdown is a cancel source: open streams get a grace period, then their
generators are cancelled — with uvicorn's and hypercorn's own signal handling intact."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h11
import pytest

from conformance.clients import H1Client

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(server: str, port: int, log: Path, grace: float) -> subprocess.Popen:
    env = {
        **os.environ,
        "ASGI_STREAM_TEST_LOG": str(log),
        "ASGI_STREAM_TEST_GRACE": str(grace),
        "PYTHONPATH": str(ROOT),
    }
    if server == "uvicorn":
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.apps.shutdown_app:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
    else:
        workers = "0" if server == "hypercorn" else "1"  # 1: hypercorn's multi-process mode
        cmd = [
            sys.executable,
            "-m",
            "hypercorn",
            "tests.apps.shutdown_app:app",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            workers,
        ]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stdout.read().decode()) from None
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not start")


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])  # hypercorn: single process (-w 0)
def test_sigterm_drains_streams_after_the_grace_period(server, tmp_path) -> None:
    log = tmp_path / "log"
    port = free_port()
    grace = 1.0
    proc = start(server, port, log, grace)
    clients = []
    try:
        for path in ("/forever", "/forever-sync"):
            c = H1Client("127.0.0.1", port, timeout=15)
            c.request("GET", path)
            it = c.stream()
            next(it)  # headers
            next(it)  # first token
            clients.append((c, it))
        t_signal = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        ends = []
        for c, it in clients:
            for item in it:
                pass
            assert c.conn.their_state in (h11.DONE, h11.MUST_CLOSE)  # a complete, clean body
            ends.append(time.monotonic())
            c.close()
        for end in ends:
            assert grace * 0.8 < end - t_signal < grace + 3, f"stream ended {end - t_signal:.2f}s after SIGTERM"
        assert proc.wait(15) == 0 or proc.returncode in (0, -signal.SIGTERM)
        lines = log.read_text().splitlines()
        assert any("finally async shutdown" in line for line in lines), lines
        assert any("finally sync" in line for line in lines), lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_hypercorn_multiprocess_worker_still_cancels_generators_at_its_graceful_timeout(tmp_path) -> None:
    """hypercorn's default multi-process mode never shows the signal to its workers; it
    cancels open requests when its graceful_timeout (3 s) expires; the generators are
    closed then (documented in the README)."""
    log = tmp_path / "log"
    port = free_port()
    proc = start("hypercorn-workers", port, log, grace=30.0)
    try:
        c = H1Client("127.0.0.1", port, timeout=15)
        c.request("GET", "/forever")
        it = c.stream()
        next(it)
        next(it)
        proc.send_signal(signal.SIGTERM)
        with pytest.raises(Exception):
            for _ in it:
                pass
        c.close()
        proc.wait(15)
        lines = log.read_text().splitlines()
        assert any("finally async" in line for line in lines), lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
