"""Server kinds and the launcher that runs one target app in its own pinned process."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from .machine import free_port
from .targets import Target


@dataclass(frozen=True)
class ServerKind:
    """An ASGI server configuration."""

    key: str
    label: str
    http2: bool = False
    needs: tuple[str, ...] = ()

    def available(self) -> bool:
        """Whether the modules this kind needs are installed."""
        return all(importlib.util.find_spec(m) is not None for m in self.needs)


SERVER_KINDS: tuple[ServerKind, ...] = (
    ServerKind("uvicorn-h11", "uvicorn h11/asyncio", needs=("uvicorn", "h11")),
    ServerKind("uvicorn-httptools", "uvicorn httptools/uvloop", needs=("uvicorn", "httptools", "uvloop")),
    ServerKind("hypercorn-h1", "hypercorn HTTP/1.1", needs=("hypercorn",)),
    ServerKind("hypercorn-h2", "hypercorn HTTP/2 (h2c)", http2=True, needs=("hypercorn", "h2")),
)
KIND_BY_KEY = {k.key: k for k in SERVER_KINDS}
REPO_ROOT = Path(__file__).resolve().parent.parent


class ServerError(RuntimeError):
    """A server did not start or died."""


@dataclass
class Server:
    """One running target server (a child process; ``pid`` is the server itself)."""

    target: Target
    kind: ServerKind
    core: int
    event_log: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    _ps: psutil.Process | None = None

    def start(self) -> None:
        """Launch the process (use :meth:`wait_ready` next)."""
        env = dict(os.environ, BENCH_EVENT_LOG=str(self.event_log), PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.serve",
                    self.target.app,
                    self.kind.key,
                    str(self.port),
                    str(self.core),
                ],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        self._ps = psutil.Process(self.proc.pid)

    @property
    def stderr_path(self) -> Path:
        """Where the server's stderr goes."""
        return self.event_log.with_suffix(".stderr")

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.proc is not None
        return self.proc.pid

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the server answers a request on its port (HTTP/1.1 ``/ttfb``)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"{self.describe()} exited: {self._stderr()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2.0) as s:
                    s.sendall(b"GET /ttfb HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                    data = b""
                    while chunk := s.recv(65536):
                        data += chunk
                if data.startswith(b"HTTP/1.1 200"):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise ServerError(f"{self.describe()} not ready within {timeout:.0f} s: {self._stderr()}")

    def cpu_seconds(self) -> float:
        """User + system CPU time the server has used so far (all its threads)."""
        assert self._ps is not None
        t = self._ps.cpu_times()
        return t.user + t.system

    def rss(self) -> int:
        """Resident set size now, in bytes."""
        assert self._ps is not None
        return int(self._ps.memory_info().rss)

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Kill the server (SIGKILL: nothing it does on shutdown is measured)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def _stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def describe(self) -> str:
        """``target on kind :port``."""
        return f"{self.target.key} on {self.kind.key} :{self.port}"


def start_all(targets: list[Target], kind: ServerKind, core: int, log_dir: Path) -> list[Server]:
    """Start one server per target (in parallel) and wait until all answer."""
    servers = [Server(t, kind, core, log_dir / f"{kind.key}-{t.key}.log") for t in targets]
    try:
        for s in servers:
            s.start()
        for s in servers:
            s.wait_ready()
    except BaseException:
        stop_all(servers)
        raise
    return servers


def stop_all(servers: list[Server]) -> None:
    """Kill every server."""
    for s in servers:
        s.stop()
