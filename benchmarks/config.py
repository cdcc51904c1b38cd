"""Run modes: how much each workload measures. Fixed numbers, so a mode always runs
the same measurements in the same order."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mode:
    """Sizes and repetitions of one benchmark run."""

    name: str
    #: Server kinds for workloads 1 (throughput) and 4 (TTFB).
    kinds: tuple[str, ...]
    #: Workload 1: tokens in the one fast stream; repetitions of workloads 1 and 4.
    tokens: int
    reps: int
    #: Workload 4: sequential requests per repetition.
    ttfb_requests: int
    #: Workload 2: concurrent stream counts, server kinds, repetitions, seconds.
    slow_streams: tuple[int, ...]
    slow_kinds: tuple[str, ...]
    slow_reps: int
    slow_interval: float
    slow_warmup: float
    slow_duration: float
    #: Workload 2: a fresh server process per run (clean RSS) or the shared ones.
    slow_fresh_server: bool
    #: Workload 3: server kinds, blocking steps (s), trials per (target, generator
    #: kind, step) and round, rounds, how long to wait for a generator to close (s).
    disconnect_kinds: tuple[str, ...]
    disconnect_blocks: tuple[float, ...]
    disconnect_trials: int
    disconnect_reps: int
    disconnect_timeout: float


_ALL_KINDS = ("uvicorn-h11", "uvicorn-httptools", "hypercorn-h1", "hypercorn-h2")

MODES = {
    "smoke": Mode(
        name="smoke",
        kinds=_ALL_KINDS,
        tokens=3_000,
        reps=1,
        ttfb_requests=20,
        slow_streams=(40,),
        slow_kinds=("uvicorn-h11",),
        slow_reps=1,
        slow_interval=0.1,
        slow_warmup=0.3,
        slow_duration=1.0,
        slow_fresh_server=False,
        disconnect_kinds=("uvicorn-h11",),
        disconnect_blocks=(0.2,),
        disconnect_trials=1,
        disconnect_reps=1,
        disconnect_timeout=1.0,
    ),
    "quick": Mode(
        name="quick",
        kinds=_ALL_KINDS,
        tokens=100_000,
        reps=3,
        ttfb_requests=200,
        slow_streams=(2_000,),
        slow_kinds=("uvicorn-h11",),
        slow_reps=3,
        slow_interval=0.1,
        slow_warmup=1.0,
        slow_duration=4.0,
        slow_fresh_server=True,
        disconnect_kinds=("uvicorn-h11",),
        disconnect_blocks=(0.5, 5.0),
        disconnect_trials=4,
        disconnect_reps=1,
        disconnect_timeout=10.0,
    ),
    "full": Mode(
        name="full",
        kinds=_ALL_KINDS,
        tokens=200_000,
        reps=5,
        ttfb_requests=500,
        slow_streams=(2_000, 10_000),
        slow_kinds=("uvicorn-h11",),
        slow_reps=3,
        slow_interval=0.1,
        slow_warmup=2.0,
        slow_duration=6.0,
        slow_fresh_server=True,
        disconnect_kinds=("uvicorn-h11",),
        disconnect_blocks=(0.5, 5.0),
        disconnect_trials=10,
        disconnect_reps=3,
        disconnect_timeout=10.0,
    ),
}
