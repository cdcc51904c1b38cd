"""Workload 2: N concurrent slow streams (one event per interval): lateness of each
event against its schedule, server CPU and peak RSS over the measurement window."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..runner import client_command, client_env, rotate
from ..servers import REPO_ROOT, Server, ServerKind
from ..targets import Target

_RAMP_TIMEOUT = 120.0


def measure_one(
    server: Server,
    streams: int,
    interval: float,
    warmup: float,
    duration: float,
    core: int,
) -> dict[str, Any]:
    """One run against a running server; samples its CPU and RSS over the window."""
    events = math.ceil((_RAMP_TIMEOUT + warmup + duration + 30) / interval)
    args = {
        "port": server.port,
        "events": events,
        "streams": streams,
        "interval": interval,
        "warmup": warmup,
        "duration": duration,
        "ramp_timeout": _RAMP_TIMEOUT,
        "core": core,
    }
    proc = subprocess.Popen(
        client_command("slow", args),
        cwd=REPO_ROOT,
        env=client_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if not line.startswith("WINDOW"):
            _, err = proc.communicate(timeout=30)
            return {"error": (line + err.decode(errors="replace"))[-2000:]}
        start_ns, end_ns = (int(x) for x in line.split()[1:3])
        time.sleep(max(0.0, (start_ns - time.monotonic_ns()) / 1e9))
        cpu0 = server.cpu_seconds()
        rss_peak = server.rss()
        while time.monotonic_ns() < end_ns:
            time.sleep(min(0.25, max(0.0, (end_ns - time.monotonic_ns()) / 1e9)))
            rss_peak = max(rss_peak, server.rss())
        cpu1 = server.cpu_seconds()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        return {"error": err.decode(errors="replace")[-2000:]}
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    result["server_cpu"] = (cpu1 - cpu0) / duration
    result["rss_mb"] = rss_peak / (1 << 20)
    if result["missing"] and result["server_cpu"] < 0.05:
        # Events went missing while the server sat idle: record where it was.
        result["stall_dump"] = stack_dump(server.pid)
    return result


def stack_dump(pid: int) -> str:
    """``py-spy dump`` of a process (when py-spy is installed), for stalled runs."""
    exe = shutil.which("py-spy")
    if exe is None:
        return "py-spy not installed"
    proc = subprocess.run([exe, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30, check=False)
    return (proc.stdout + proc.stderr)[-8000:]


def measure(
    targets: list[Target],
    kind: ServerKind,
    counts: tuple[int, ...],
    reps: int,
    interval: float,
    warmup: float,
    duration: float,
    cores: tuple[int, int],
    log_dir: Path,
    progress: Callable[[str], None],
    servers: list[Server] | None = None,
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """For each stream count: ``reps`` rounds over the targets. With ``servers`` None,
    every run gets a fresh server process (so its peak RSS is its own)."""
    server_core, client_core = cores
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for n in counts:
        per_target: dict[str, list[dict[str, Any]]] = {t.key: [] for t in targets}
        for rep in range(reps):
            for target in rotate(list(targets), rep):
                shared = next((s for s in servers or () if s.target.key == target.key), None)
                server = shared or Server(target, kind, server_core, log_dir / f"slow-{n}-{rep}-{target.key}.log")
                if shared is None:
                    server.start()
                try:
                    if shared is None:
                        server.wait_ready()
                    r = measure_one(server, n, interval, warmup, duration, client_core)
                finally:
                    if shared is None:
                        server.stop()
                r["rep"] = rep
                per_target[target.key].append(r)
                if "error" in r:
                    progress(f"slow {n} {target.key} #{rep + 1}: FAILED {r['error'][-300:]}")
                else:
                    progress(
                        f"slow {n} {target.key} #{rep + 1}: p99 {r['p99_ms']:.1f} ms, "
                        f"CPU {r['server_cpu'] * 100:.0f}%, RSS {r['rss_mb']:.0f} MB, missing {r['missing']}"
                    )
        out[str(n)] = per_target
    return out
