"""Workload 4: time to first byte — request written → first event byte received."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..runner import rotate, run_client
from ..servers import Server
from ..stats import percentile


def measure(
    servers: list[Server], requests: int, reps: int, core: int, progress: Callable[[str], None]
) -> dict[str, list[dict[str, Any]]]:
    """``reps`` rounds of ``requests`` sequential requests on one kept-alive
    connection per server; p50 and p99 per round (after a few warm-up requests)."""
    results: dict[str, list[dict[str, Any]]] = {s.target.key: [] for s in servers}
    for rep in range(reps):
        for s in rotate(servers, rep):
            r = run_client(
                "stream",
                {
                    "mode": "ttfb",
                    "port": s.port,
                    "path": "/ttfb",
                    "requests": requests + 10,
                    "http2": s.kind.http2,
                    "core": core,
                },
                timeout=300,
            )
            samples = sorted(r["ttfb_ns"][10:])
            rec = {
                "p50_us": percentile(samples, 50, presorted=True) / 1e3,
                "p99_us": percentile(samples, 99, presorted=True) / 1e3,
            }
            results[s.target.key].append(rec)
            progress(f"ttfb {s.kind.key} {s.target.key} #{rep + 1}: p50 {rec['p50_us']:.0f} µs")
    return results
