"""The churn test's client side: waves of aborted connections against a real server.

Each wave opens ``size`` connections at once (non-blocking sockets, one selector, no
threads), sends ``GET /<kind>`` and leaves in one of four ways:

* ``fin`` — after the first token arrived, ``close()`` (FIN);
* ``rst`` — after the first token, close with ``SO_LINGER`` 0 (RST);
* ``half`` — after the first token, ``shutdown(SHUT_WR)``, read on a moment, then close;
* ``rst_early`` — RST right after sending the request, before any response (the
  endpoint is still in its own await).

The server (:mod:`tests.fault.churn_app` under uvicorn) is then polled until every
request has returned and every generator started has been closed.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import socket
import struct
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.targets import Endpoint, ServerProcess, start_uvicorn, wait_ready

MODES = ("fin", "rst", "half", "rst_early")
SERVERS = ("h11", "httptools")
APP = "tests.fault.churn_app:app"
#: Connections per kind, mode and server: the full figure, or what CI runs.
FULL = 2000
DEFAULT = int(os.environ.get("FAULT_CHURN_CONNECTIONS", "200"))
WAVE = 100


def path_of(kind: str) -> str:
    """The stream of a kind on the churn app."""
    return f"/api/{kind}" if kind.startswith("fastapi") else f"/{kind}"


@dataclass
class Server:
    """A churn app under uvicorn, in its own process (stopped by PID)."""

    http: str
    proc: ServerProcess
    endpoint: Endpoint
    workdir: Path
    dirty: bool = False

    def stats(self, collect: bool = False) -> dict[str, Any]:
        """The server's own view (see churn_app.stats)."""
        query = "?gc=1" if collect else ""
        with socket.create_connection((self.endpoint.host, self.endpoint.port), timeout=10) as sock:
            sock.sendall(f"GET /_churn/stats{query} HTTP/1.1\r\nhost: churn\r\nconnection: close\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"stats answered {head[:80]!r}")
        return dict(json.loads(body))

    def stop(self) -> None:
        """Stop the server by PID (streams a known failure left running are not drained)."""
        self.proc.stop(timeout=1.0)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start(http: str) -> Server:
    """Start the churn app on uvicorn with ``http`` (h11 or httptools)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"churn-{http}-"))
    proc, endpoint = start_uvicorn(workdir, APP, name=f"uvicorn-{http}", http=http)
    try:
        wait_ready(proc, endpoint, "/_churn/stats")
    except BaseException:
        proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return Server(http, proc, endpoint, workdir)


@contextlib.contextmanager
def running(http: str) -> Iterator[Server]:
    server = start(http)
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------- a wave
def _rst(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@dataclass
class Wave:
    """What one wave saw from the client side."""

    opened: int = 0
    first_token: int = 0
    refused: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


def wave(endpoint: Endpoint, kind: str, mode: str, size: int = WAVE, timeout: float = 20.0) -> Wave:
    """Open ``size`` connections to the kind's stream and leave them as ``mode`` says."""
    result = Wave()
    started = time.monotonic()
    request = (
        f"GET {path_of(kind)} HTTP/1.1\r\nhost: churn\r\naccept: text/event-stream\r\nuser-agent: churn\r\n\r\n"
    ).encode()
    sel = selectors.DefaultSelector()
    received: dict[socket.socket, bytes] = {}
    pending = 0
    for _ in range(size):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex((endpoint.host, endpoint.port))
        sel.register(sock, selectors.EVENT_WRITE, "connect")
        pending += 1
    done: list[socket.socket] = []
    deadline = started + timeout
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(0.05):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if key.data == "connect":
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    result.refused += 1
                    sel.unregister(sock)
                    sock.close()
                    pending -= 1
                    continue
                result.opened += 1
                sock.sendall(request)
                if mode == "rst_early":
                    sel.unregister(sock)
                    _rst(sock)
                    pending -= 1
                    continue
                received[sock] = b""
                sel.modify(sock, selectors.EVENT_READ, "read")
                continue
            try:
                chunk = sock.recv(65536)
            except OSError as exc:
                chunk = b""
                result.errors.append(repr(exc))
            data = received[sock] = received[sock] + chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if not chunk or (sep and b"t0" in body):
                if chunk:
                    result.first_token += 1
                elif len(result.errors) < 5:
                    result.errors.append(f"closed early: {data[:120]!r}")
                sel.unregister(sock)
                done.append(sock)
                pending -= 1
    for key in list(sel.get_map().values()):  # timed out
        sock = key.fileobj
        assert isinstance(sock, socket.socket)
        sel.unregister(sock)
        done.append(sock)
        result.errors.append("no first token within the wave timeout")
    sel.close()
    if mode == "half":
        for sock in done:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
        time.sleep(0.05)  # keep reading a moment (the kernel buffers it), then leave
    for sock in done:
        _rst(sock) if mode == "rst" else sock.close()
    result.seconds = time.monotonic() - started
    return result


def settle(
    server: Server, kind: str, *, collect: bool, stall: float = 2.0, cap: float = 30.0
) -> tuple[dict[str, Any], float]:
    """Poll until no request of the kind is in flight and every generator of the kind
    started was closed (other kinds' leaks, if any, do not count).

    Gives up when nothing changed for ``stall`` seconds while the server kept answering
    (its event loop runs: what is left is stuck, not slow), or after ``cap`` seconds.
    """
    started = time.monotonic()
    last: tuple[int, int] | None = None
    changed_at, polls = started, 0
    while True:
        stats = server.stats(collect=collect)
        opened, closed = stats["started"].get(kind, 0), stats["closed"].get(kind, 0)
        left = (stats["inflight"].get(kind, 0), opened - closed)
        now = time.monotonic()
        if left == (0, 0):
            return stats, now - started
        if left != last:
            last, changed_at, polls = left, now, 0
        polls += 1
        if (now - changed_at > stall and polls >= 10) or now - started > cap:
            return stats, now - started
        time.sleep(0.05)
