"""Per-stream metrics: Prometheus text at ``/metrics`` and recent streams as JSON.

Each app owns its own ``CollectorRegistry``, so several apps in one process (tests,
several mounts) never collide. Two sources meet per stream: the stream's end (its
:class:`~asgi_stream.StreamRecord`: outcome, TTFT on the wire) and the generation's
end (its :class:`~asgi_stream.integrations.transformers.GenerationStats`: tokens,
queue wait, decode steps after cancellation). They may arrive in either order.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from ..record import Outcome, StreamRecord
from .engine import Job

PREFIX = "asgi_stream_demo"


class EngineState(Protocol):
    """What the gauges read from an engine."""

    @property
    def queue_depth(self) -> int: ...

    @property
    def running(self) -> int: ...


_TIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_OUTCOMES = {
    Outcome.COMPLETED: "completed",
    Outcome.CANCELLED: "cancelled",
    Outcome.TIMED_OUT: "cancelled",
    Outcome.ERROR: "error",
}


class DemoMetrics:
    """The demo's metrics and its log of recent streams."""

    def __init__(self, *, keep: int = 200) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.streams = Counter(
            f"{PREFIX}_streams", "Streams by endpoint and outcome.", ["endpoint", "outcome"], registry=r
        )
        self.rejected = Counter(
            f"{PREFIX}_rejected", "Requests refused before streaming, by status.", ["status"], registry=r
        )
        self.ttft = Histogram(
            f"{PREFIX}_ttft_seconds",
            "Request arrival to first token on the wire.",
            ["endpoint"],
            buckets=_TIME_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            f"{PREFIX}_queue_wait_seconds", "Admission to start of generation.", buckets=_TIME_BUCKETS, registry=r
        )
        self.tokens = Histogram(
            f"{PREFIX}_stream_tokens",
            "Tokens generated per stream.",
            buckets=(1, 4, 16, 64, 256, 1024, 4096),
            registry=r,
        )
        self.tokens_total = Counter(f"{PREFIX}_generated_tokens", "Tokens generated.", registry=r)
        self.tps = Histogram(
            f"{PREFIX}_tokens_per_second",
            "Decode speed per stream.",
            buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
            registry=r,
        )
        self.steps_after_cancel = Histogram(
            f"{PREFIX}_decode_steps_after_cancel",
            "Decode steps completed after a stream was cancelled.",
            buckets=(0, 1, 2, 3, 5, 10),
            registry=r,
        )
        self.cancel_to_stop = Histogram(
            f"{PREFIX}_cancel_to_stop_seconds",
            "Cancel token set to generation stopped.",
            buckets=_TIME_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            f"{PREFIX}_queue_depth", "Admitted requests waiting for a generation slot.", registry=r
        )
        self.generations_running = Gauge(
            f"{PREFIX}_generations_running",
            "Generations running now: sequences in the batch, or the worker's job.",
            registry=r,
        )
        self._watched = False
        self._lock = threading.Lock()
        self._keep = keep
        self._recent: OrderedDict[int, dict[str, Any]] = OrderedDict()

    # ------------------------------------------------------------ log entries
    def _entry(self, job: Job, endpoint: str) -> dict[str, Any]:
        entry = self._recent.get(job.id)
        if entry is None:
            entry = {"id": job.id, "endpoint": endpoint, "outcome": None, "generation_done": False}
            self._recent[job.id] = entry
            while len(self._recent) > self._keep:
                self._recent.popitem(last=False)
        return entry

    def track(self, job: Job, endpoint: str) -> None:
        """A job was admitted for ``endpoint``."""
        with self._lock:
            self._entry(job, endpoint)

    def stream_ended(self, job: Job, endpoint: str, record: StreamRecord) -> None:
        """A TokenStream ended (its ``on_end`` hook)."""
        outcome = _OUTCOMES.get(record.outcome, "error") if record.outcome is not None else "error"
        self.request_ended(job, endpoint, outcome, record.ttft, record.cancel_reason)

    def request_ended(self, job: Job, endpoint: str, outcome: str, ttft: float | None, reason: Any = None) -> None:
        """A request (streamed or not) ended with ``outcome``."""
        self.streams.labels(endpoint, outcome).inc()
        if ttft is not None:
            self.ttft.labels(endpoint).observe(ttft)
        with self._lock:
            entry = self._entry(job, endpoint)
            entry.update(
                outcome=outcome,
                ttft_s=ttft,
                cancel_reason=getattr(reason, "value", reason),
                ended_at=time.time(),
            )

    def generation_done(self, job: Job) -> None:
        """The engine finished (or skipped) a job: its compute is over."""
        stats = job.stats
        if job.queue_wait is not None:
            self.queue_wait.observe(job.queue_wait)
        self.tokens.observe(stats.completion_tokens)
        self.tokens_total.inc(stats.completion_tokens)
        if stats.tokens_per_second is not None:
            self.tps.observe(stats.tokens_per_second)
        if stats.cancelled_at is not None:
            self.steps_after_cancel.observe(stats.steps_after_cancel)
            if stats.cancel_to_stop is not None:
                self.cancel_to_stop.observe(stats.cancel_to_stop)
        with self._lock:
            entry = self._entry(job, "?")
            entry.update(
                generation_done=True,
                finish_reason=stats.finish_reason,
                prompt_tokens=stats.prompt_tokens,
                completion_tokens=stats.completion_tokens,
                decode_steps=stats.steps,
                steps_after_cancel=stats.steps_after_cancel,
                interrupted=stats.interrupted,
                queue_wait_s=job.queue_wait,
                tokens_per_s=stats.tokens_per_second,
                cancel_to_stop_ms=None if stats.cancel_to_stop is None else stats.cancel_to_stop * 1000,
            )

    def recent(self) -> list[dict[str, Any]]:
        """Recent streams, newest last (copies)."""
        with self._lock:
            return [dict(e) for e in self._recent.values()]

    def watch(self, engine: EngineState) -> None:
        """Read ``queue_depth`` and ``generations_running`` from ``engine`` at every scrape."""
        self.queue_depth.set_function(lambda: engine.queue_depth)
        self.generations_running.set_function(lambda: engine.running)
        self._watched = True

    def render(self, queue_depth: int | None = None) -> bytes:
        """The Prometheus text exposition (``queue_depth``: for an unwatched engine)."""
        if queue_depth is not None and not self._watched:
            self.queue_depth.set(queue_depth)
        return generate_latest(self.registry)
