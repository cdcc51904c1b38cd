"""What every target app shares: the token generators of each workload, query-string
parsing, and the event log the disconnect workload reads.

Every target streams the *same* generators, so the only difference between targets
is the layer that frames and sends the tokens. Generators use ``asyncio.sleep`` and
``time.sleep`` directly: all servers measured here run on asyncio (or uvloop).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qsl

#: The small token of the throughput workload (``data: tok\n\n`` on the wire: 11 bytes).
TOKEN = "tok"
#: Every this many tokens, the throughput generator yields ``#<monotonic_ns>`` instead,
#: so the client can check how long tokens wait between production and arrival.
STAMP_EVERY = 1024
#: Environment variable naming the file generators append their timestamps to.
EVENT_LOG_ENV = "BENCH_EVENT_LOG"

_log_fd: int | None = None


def query(scope: dict[str, Any]) -> dict[str, str]:
    """The request's query parameters (last value wins)."""
    return dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))


def log_event(kind: str, trial: str, ns: int) -> None:
    """Append ``kind trial ns`` to the event log (one atomic ``write`` per line)."""
    global _log_fd
    if _log_fd is None:
        path = os.environ.get(EVENT_LOG_ENV)
        if not path:
            return
        _log_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_log_fd, f"{kind} {trial} {ns}\n".encode())


# ---------------------------------------------------------------- workload 1: throughput
async def fast_tokens(n: int, framed: bool = False) -> AsyncIterator[str]:
    """``n`` small tokens as fast as possible; every STAMP_EVERY-th carries its time
    (``#<monotonic_ns>``). ``framed`` yields each already framed as an SSE event (for
    targets whose layer does not frame)."""
    now = time.monotonic_ns
    token, stamp = ("data: " + TOKEN + "\n\n", "data: #%d\n\n") if framed else (TOKEN, "#%d")
    for start in range(0, n, STAMP_EVERY):
        yield stamp % now()
        for _ in range(min(STAMP_EVERY, n - start) - 1):
            yield token


# ---------------------------------------------------------------- workload 2: slow streams
async def slow_tokens(n: int, interval: float, start_ns: int | None = None, framed: bool = False) -> AsyncIterator[str]:
    """A first event at once, then ``n`` events, event k due at ``start_ns + k * interval``
    (``time.monotonic_ns``; default: one interval from now). Each event's data is its due
    time, so the client measures its lateness."""
    now = time.monotonic_ns
    fmt = "data: %d\n\n" if framed else "%d"
    step = int(interval * 1e9)
    yield fmt % now()
    start = start_ns if start_ns is not None else now() + step
    for k in range(n):
        due = start + k * step
        delay = due - now()
        if delay > 0:
            await asyncio.sleep(delay / 1e9)
        yield fmt % due


# ---------------------------------------------------------------- workload 3: disconnect
def _probe_cancel_token(trial: str) -> None:
    """In an asgi-stream target, log when the stream's CancelToken is set."""
    module = sys.modules.get("asgi_stream")
    if module is None:
        return
    token = module.current_cancel_token()
    if token is not None:
        token.add_callback(lambda t: log_event("token", trial, int((t.cancelled_at or 0.0) * 1e9)))


async def blocking_async(trial: str, block: float, framed: bool = False) -> AsyncIterator[str]:
    """A token at once, then one token after every ``block`` seconds of awaiting; logs
    each step's end and the moment its ``finally`` runs."""
    _probe_cancel_token(trial)
    wrap = "data: {}\n\n".format if framed else str
    try:
        yield wrap("0")
        k = 0
        while True:
            await asyncio.sleep(block)
            log_event("step", trial, time.monotonic_ns())
            k += 1
            yield wrap(str(k))
    finally:
        log_event("closed", trial, time.monotonic_ns())


def blocking_sync(trial: str, block: float, framed: bool = False) -> Iterator[str]:
    """:func:`blocking_async` as a sync generator blocked in ``time.sleep``."""
    _probe_cancel_token(trial)
    wrap = "data: {}\n\n".format if framed else str
    try:
        yield wrap("0")
        k = 0
        while True:
            time.sleep(block)
            log_event("step", trial, time.monotonic_ns())
            k += 1
            yield wrap(str(k))
    finally:
        log_event("closed", trial, time.monotonic_ns())


# ---------------------------------------------------------------- workload 4: TTFB
async def one_token(framed: bool = False) -> AsyncIterator[str]:
    """A single token, at once."""
    yield "data: x\n\n" if framed else "x"


def source_for(path: str, params: dict[str, str], *, framed: bool) -> Any:
    """The generator a request asks for, or None for an unknown path.

    ``/fast?n=`` · ``/slow?n=&interval=&start=`` · ``/block?trial=&block=&mode=async|sync`` · ``/ttfb``
    """
    if path == "/fast":
        n = int(params.get("n", "1000"))
        return fast_tokens(n, framed)
    if path == "/slow":
        n, interval = int(params.get("n", "100")), float(params.get("interval", "0.1"))
        start = int(params["start"]) if "start" in params else None
        return slow_tokens(n, interval, start, framed)
    if path == "/block":
        trial, block = params.get("trial", "?"), float(params.get("block", "0.5"))
        if params.get("mode") == "sync":
            return blocking_sync(trial, block, framed)
        return blocking_async(trial, block, framed)
    if path == "/ttfb":
        return one_token(framed)
    return None
