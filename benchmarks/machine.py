"""The machine: CPU placement of servers and clients, and a description for reports."""

from __future__ import annotations

import os
import platform
import socket
from dataclasses import dataclass
from importlib import metadata


@dataclass(frozen=True)
class Placement:
    """Which CPU the servers get and which the clients (and the harness) share."""

    server_core: int
    client_core: int

    @property
    def shared(self) -> bool:
        """True when only one CPU is available and everything shares it."""
        return self.server_core == self.client_core


def placement() -> Placement:
    """Server on the first CPU this process may use, clients on the second."""
    cores = sorted(os.sched_getaffinity(0))
    return Placement(cores[0], cores[1] if len(cores) > 1 else cores[0])


def pin(core: int) -> None:
    """Pin the calling process to one CPU."""
    os.sched_setaffinity(0, {core})


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / (1 << 20)
    except OSError:
        pass
    return None


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def source_state(repo: str) -> dict[str, object]:
    """The commit measured and whether the library or the harness had local changes."""
    import subprocess

    def git(*args: str) -> str:
        proc = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    changed = git("status", "--porcelain", "--", "asgi_stream", "benchmarks/targets", "benchmarks/clients")
    return {"commit": commit or None, "local_changes": bool(changed) if commit else None}


def describe() -> dict[str, object]:
    """Machine, OS, Python and the versions of everything measured."""
    mem = _memory_gib()
    return {
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem, 1) if mem else None,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "versions": {
            name: _version(name)
            for name in (
                "asgi-stream",
                "uvicorn",
                "hypercorn",
                "starlette",
                "sse-starlette",
                "anyio",
                "h11",
                "h2",
                "httptools",
                "uvloop",
            )
        },
    }
