"""Real processes for the resume tests: redis-server, uvicorn workers, nginx.

Each is started on a free loopback port with its real PID kept, and stopped with
SIGTERM then SIGKILL. Nothing here daemonises.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.targets import find_nginx, free_port, listening_socket

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[2]


def find_binary(name: str, *candidates: str) -> str | None:
    """An executable by absolute candidate paths first, then ``$PATH``."""
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    return shutil.which(name)


REDIS_SERVER = find_binary("redis-server", "/usr/bin/redis-server", "/usr/local/bin/redis-server")
NGINX = find_nginx()


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def _spawn(
    argv: list[str], log_path: Path, *, env: dict[str, str] | None = None, pass_fds: tuple[int, ...] = ()
) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            pass_fds=pass_fds,
            cwd=ROOT,
            start_new_session=True,
        )


# ---------------------------------------------------------------- redis
class RedisServer:
    """``redis-server`` in the foreground on a free port, persistence off."""

    def __init__(self, workdir: Path) -> None:
        assert REDIS_SERVER is not None
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        """Start (or restart, on the same port) and wait until it answers PING."""
        for attempt in range(3):
            argv = [
                REDIS_SERVER, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--dir", str(self.workdir), "--protected-mode", "no",
            ]  # fmt: skip
            self.proc = _spawn(argv, self.workdir / "redis.log")
            if self._wait_ping(10.0):
                return
            stop_process(self.proc)
            if attempt < 2 and "Address already in use" in (self.workdir / "redis.log").read_text(errors="replace"):
                self.port = free_port()
        raise RuntimeError(f"redis-server did not start: {(self.workdir / 'redis.log').read_text()[-1000:]}")

    def _wait_ping(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False
            try:
                if self.command(b"PING") == b"+PONG":
                    return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def command(self, *args: bytes) -> bytes:
        """Send one command; returns the first reply line (enough for tests)."""
        payload = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
        with socket.create_connection((HOST, self.port), timeout=2.0) as s:
            s.sendall(payload)
            return s.recv(65536).split(b"\r\n")[0]

    def kill(self) -> None:
        """SIGKILL: Redis vanishes, its data with it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def pause(self) -> None:
        """SIGSTOP: Redis hangs (accepts nothing, answers nothing)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop for good."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
            except OSError:
                pass
        stop_process(self.proc)


# ---------------------------------------------------------------- workers and nginx
@dataclass
class Worker:
    """One uvicorn worker process running ``tests.resume.app``."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    events_path: Path

    def events(self) -> list[dict[str, Any]]:
        """The JSON lines the app logged."""
        try:
            text = self.events_path.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def output(self) -> str:
        """The process' stdout/stderr so far."""
        return self.log_path.read_text(errors="replace")


def start_worker(name: str, workdir: Path, env: dict[str, str]) -> Worker:
    """uvicorn (h11, asyncio) serving the test app on an inherited socket."""
    sock = listening_socket()
    try:
        argv = [
            sys.executable, "-m", "uvicorn", "tests.resume.app:app", "--fd", str(sock.fileno()),
            "--http", "h11", "--loop", "asyncio", "--log-level", "warning", "--no-access-log",
            "--timeout-graceful-shutdown", "2",
        ]  # fmt: skip
        events_path = workdir / f"{name}.events.jsonl"
        child_env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "RESUME_WORKER": name,
            "RESUME_LOG": str(events_path),
            **env,
        }
        log_path = workdir / f"{name}.log"
        proc = _spawn(argv, log_path, env=child_env, pass_fds=(sock.fileno(),))
        return Worker(name, sock.getsockname()[1], proc, log_path, events_path)
    finally:
        sock.close()


NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process on;
{user}pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream workers {{
        {servers}
        keepalive 8;
    }}
    server {{
        listen {host}:{port};
        location / {{
            proxy_pass http://workers;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header Last-Event-ID $http_last_event_id;
            proxy_buffering on;
            proxy_read_timeout 30s;
            proxy_next_upstream off;
        }}
    }}
}}
"""


@dataclass
class Cluster:
    """nginx (round robin) in front of uvicorn workers sharing one replay store."""

    workdir: Path
    workers: list[Worker] = field(default_factory=list)
    nginx: subprocess.Popen[bytes] | None = None
    port: int = 0

    def worker(self, name: str) -> Worker:
        """The worker called ``name``."""
        return next(w for w in self.workers if w.name == name)

    def events(self) -> list[dict[str, Any]]:
        """Every worker's log lines, in time order."""
        return sorted((e for w in self.workers for e in w.events()), key=lambda e: e["t"])

    def stop(self) -> None:
        """Stop nginx and every worker."""
        stop_process(self.nginx)
        for w in self.workers:
            stop_process(w.proc)

    def diagnostics(self) -> str:
        """Logs, for assertion messages."""
        parts = [f"--- {w.name} (pid {w.proc.pid}, rc {w.proc.poll()})\n{w.output()[-3000:]}" for w in self.workers]
        err = self.workdir / "nginx" / "error.log"
        if err.exists():
            parts.append("--- nginx\n" + err.read_text(errors="replace")[-2000:])
        return "\n".join(parts)


def wait_http(
    port: int, path: str = "/health", timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until ``GET path`` on the port answers 200."""
    deadline = time.monotonic() + timeout
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=2.0) as s:
                s.sendall(request)
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"nothing answered on port {port}")


def start_cluster(workdir: Path, env: dict[str, str], names: tuple[str, ...] = ("A", "B")) -> Cluster:
    """Workers and nginx in front of them (round robin: consecutive requests through
    nginx alternate between the workers)."""
    assert NGINX is not None
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(workdir)
    try:
        for name in names:
            cluster.workers.append(start_worker(name, workdir, env))
        for w in cluster.workers:
            wait_http(w.port, proc=w.proc)
        ndir = workdir / "nginx"
        ndir.mkdir(exist_ok=True)
        servers = "\n        ".join(f"server {HOST}:{w.port};" for w in cluster.workers)
        for _ in range(3):
            cluster.port = free_port()
            conf = NGINX_CONF.format(
                dir=ndir, host=HOST, port=cluster.port, servers=servers,
                user="user root;\n" if os.geteuid() == 0 else "",
            )  # fmt: skip
            (ndir / "nginx.conf").write_text(conf)
            cluster.nginx = _spawn(
                [NGINX, "-p", str(ndir), "-c", str(ndir / "nginx.conf"), "-e", str(ndir / "error.log")],
                ndir / "stdout.log",
            )
            try:
                wait_http(cluster.port, timeout=10.0, proc=cluster.nginx)
                break
            except RuntimeError:
                stop_process(cluster.nginx)
        else:
            raise RuntimeError("nginx did not start: " + cluster.diagnostics())
        return cluster
    except BaseException:
        cluster.stop()
        raise
