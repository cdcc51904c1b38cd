"""Server-side observation for the suite: what each labelled stream's generator did.

A target app keeps one :class:`StreamLog` per request label (the ``label`` query
parameter, also the TokenStream's ``name``): when each token was produced, when the
generator's ``finally`` ran and why, and the middleware's view (outcome, cancel
reason) from the ``on_end`` / ``on_cancel`` hooks. Times are ``time.monotonic()``,
which on Linux is one clock for every process, so a client can compare them with
its own arrival times. The registry is served as JSON on ``/_hooks/streams``.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .asgi_tap import TapLog

#: Keep at most this many logs (oldest dropped): a long-running target stays small.
MAX_LOGS = 2000
#: The gauge of running generators the target apps serve on ``/metrics``.
GAUGE = "conformance_generations_running"


@dataclass(slots=True)
class StreamLog:
    """What happened to one labelled stream on the server."""

    label: str
    variant: str
    started_at: float = field(default_factory=time.monotonic)
    #: When the generator's body began to run (None until then).
    entered_at: float | None = None
    #: ``time.monotonic()`` just before each token was yielded.
    produced_at: list[float] = field(default_factory=list)
    #: Bytes of token payload produced (before framing).
    produced_bytes: int = 0
    #: When the generator's ``finally`` ran (None while it runs).
    finally_at: float | None = None
    #: "exhausted" (ran to the end), "closed" (GeneratorExit / cancellation) or "error".
    finally_reason: str | None = None
    #: Whether the stream's CancelToken was set when the generator finished.
    token_cancelled: bool | None = None
    #: From the middleware's hooks.
    outcome: str | None = None
    cancel_reason: str | None = None
    cancelled_at: float | None = None
    ended_at: float | None = None
    events: int | None = None
    bytes: int | None = None
    keepalives: int | None = None

    def enter(self) -> None:
        """Note that the generator's body began to run (it now counts as running)."""
        self.entered_at = time.monotonic()

    def produced(self, nbytes: int = 0) -> None:
        """Note that a token is about to be yielded."""
        self.produced_at.append(time.monotonic())
        self.produced_bytes += nbytes

    def finished(self, reason: str, token_cancelled: bool | None) -> None:
        """Note that the generator's ``finally`` ran."""
        self.finally_at = time.monotonic()
        self.finally_reason = reason
        self.token_cancelled = token_cancelled


class Registry:
    """Thread-safe label → :class:`StreamLog` map (sync generators run on threads)."""

    def __init__(self) -> None:
        self._logs: dict[str, StreamLog] = {}
        #: What the ASGI server told each labelled request (see :mod:`conformance.asgi_tap`).
        self._taps: dict[str, TapLog] = {}
        self._lock = threading.Lock()

    def open_tap(self, label: str) -> TapLog:
        """A fresh :class:`TapLog` for ``label`` (the AsgiTap's factory)."""
        tap = TapLog()
        with self._lock:
            self._taps.pop(label, None)
            self._taps[label] = tap
            while len(self._taps) > MAX_LOGS:
                self._taps.pop(next(iter(self._taps)))
        return tap

    def open(self, label: str, variant: str) -> StreamLog:
        """A fresh log for ``label`` (replacing an older one of the same label)."""
        log = StreamLog(label=label, variant=variant)
        with self._lock:
            self._logs.pop(label, None)
            self._logs[label] = log
            while len(self._logs) > MAX_LOGS:
                self._logs.pop(next(iter(self._logs)))
        return log

    def get(self, label: str) -> StreamLog | None:
        """The log of a label, or None."""
        with self._lock:
            return self._logs.get(label)

    def running(self) -> int:
        """Generators whose body runs and whose ``finally`` has not: what a gauge of
        running generations (vLLM's ``num_requests_running``) would count."""
        with self._lock:
            return sum(1 for v in self._logs.values() if v.entered_at is not None and v.finally_at is None)

    def prometheus(self) -> str:
        """The Prometheus text page with that gauge, :data:`GAUGE`."""
        return (
            f"# HELP {GAUGE} Generators running (started, finally not run yet).\n"
            f"# TYPE {GAUGE} gauge\n{GAUGE} {self.running()}\n"
        )

    def on_end(self, record: Any) -> None:
        """StreamMiddleware ``on_end`` hook: copy the record's outcome into the log."""
        log = self.get(getattr(record, "endpoint", ""))
        if log is None:
            return
        log.outcome = _value(record.outcome)
        log.cancel_reason = _value(record.cancel_reason) or log.cancel_reason
        log.ended_at = record.ended_at
        log.events = record.events
        log.bytes = record.bytes
        log.keepalives = record.keepalives

    def on_cancel(self, record: Any) -> None:
        """StreamMiddleware ``on_cancel`` hook: when and why the stream was cancelled."""
        log = self.get(getattr(record, "endpoint", ""))
        if log is None:
            return
        log.cancelled_at = time.monotonic()
        log.cancel_reason = _value(record.cancel_reason)

    def snapshot(self, labels: list[str] | None = None) -> dict[str, Any]:
        """JSON-ready view of the given labels (all if None), plus the server's clock."""
        with self._lock:
            items = list(self._logs.items()) if labels is None else [(k, self._logs.get(k)) for k in labels]
            streams = {k: (asdict(v) if v is not None else None) for k, v in items}
            for k, v in streams.items():
                tap = self._taps.get(k)
                if v is not None and tap is not None:
                    v["asgi"] = asdict(tap)
        return {"now": time.monotonic(), "pid": os.getpid(), "rss": rss_bytes(), "streams": streams}


def rss_bytes() -> int:
    """Resident set size of this process in bytes (Linux ``/proc``; 0 if unknown)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _value(x: Any) -> Any:
    return getattr(x, "value", x)
