"""Workload 1: one stream of small tokens as fast as possible (events/s, bytes/s)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..runner import rotate, run_client
from ..servers import Server
from ..stats import percentile


def _one(server: Server, tokens: int, core: int) -> dict[str, Any]:
    cpu0 = server.cpu_seconds()
    r = run_client(
        "stream",
        {
            "mode": "throughput",
            "port": server.port,
            "path": f"/fast?n={tokens}",
            "http2": server.kind.http2,
            "expect": tokens,
            "core": core,
        },
        timeout=600,
    )
    cpu = server.cpu_seconds() - cpu0
    delays = sorted(r["stamp_delays_ns"])
    return {
        "events_per_s": r["events_per_s"],
        "bytes_per_s": r["bytes_per_s"],
        "seconds": r["seconds"],
        "server_cpu": cpu / r["seconds"],
        "cpu_us_per_event": cpu / tokens * 1e6,
        "delay_p99_ms": percentile(delays, 99, presorted=True) / 1e6 if delays else None,
        "delay_max_ms": delays[-1] / 1e6 if delays else None,
    }


def measure(
    servers: list[Server], tokens: int, reps: int, core: int, progress: Callable[[str], None]
) -> dict[str, list[dict[str, Any]]]:
    """A warm-up stream per server, then ``reps`` rounds over all servers (each round
    starting with the next target, so drifting background load spreads evenly)."""
    results: dict[str, list[dict[str, Any]]] = {s.target.key: [] for s in servers}
    for s in servers:
        _one(s, min(tokens, 20_000), core)
    for rep in range(reps):
        for s in rotate(servers, rep):
            r = _one(s, tokens, core)
            results[s.target.key].append(r)
            progress(f"throughput {s.kind.key} {s.target.key} #{rep + 1}: {r['events_per_s']:,.0f} events/s")
    return results
