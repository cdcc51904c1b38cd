"""The cost of each streaming layer itself, in-process: no server, no socket.

``python -m benchmarks.hotpath tokens [--tokens N] [--runs R]``
    ns per token of one fast stream (workload 1's generator).
``python -m benchmarks.hotpath slow [--streams N] [--seconds S]``
    CPU µs per event and bytes of Python memory per stream with N concurrent slow
    streams (workload 2's generator, one event per 100 ms).

Apps run with a ``send`` that only counts messages and a ``receive`` that waits for a
disconnect that never comes. What remains is the layer's own Python work (framing,
wrappers, tasks, timers, bookkeeping): compare it with a server's per-event cost to
see how much of a gap measured over sockets the layer explains. Extra rows take
asgi-stream apart: without Starlette around it, and without the middleware.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

from .targets.common import query, source_for

Variant = tuple[str, Callable[[], Any]]


def _scope(n: int, path: str = "/fast", query: str | None = None) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": (query or f"n={n}").encode(),
        "root_path": "",
        "headers": [(b"host", b"bench"), (b"accept", b"text/event-stream")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


def variants() -> list[Variant]:
    """``(label, app factory)`` for every measured layer."""
    from starlette.applications import Starlette

    from asgi_stream import StreamMiddleware, TokenStream

    from .targets import asgi_stream_app, raw, sse_starlette_app, starlette_stream

    def bare_token_stream() -> Any:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            source = source_for(scope["path"], query(scope), framed=False)
            await TokenStream(source, format="sse")(scope, receive, send)

        return app

    per_token, coalescing = asgi_stream_app.PerToken(), asgi_stream_app.COALESCE
    return [
        ("raw ASGI", lambda: raw.app),
        ("Starlette StreamingResponse", lambda: starlette_stream.app),
        ("sse-starlette", lambda: sse_starlette_app.app),
        (
            "Starlette StreamingResponse + StreamMiddleware (passthrough)",
            lambda: StreamMiddleware(starlette_stream.app),
        ),
        ("asgi-stream per-token (Starlette app + StreamMiddleware)", lambda: asgi_stream_app.make_app(per_token)),
        ("asgi-stream coalescing (Starlette app + StreamMiddleware)", lambda: asgi_stream_app.make_app(coalescing)),
        (
            "  asgi-stream per-token, StreamMiddleware, no Starlette",
            lambda: StreamMiddleware(bare_token_stream(), default_format="sse"),
        ),
        ("  asgi-stream per-token, TokenStream alone", bare_token_stream),
        ("  Starlette app, empty middleware list (for scale)", lambda: Starlette()),
    ]


class _Peer:
    """The server side of one in-process request: counts sends, never disconnects."""

    __slots__ = ("first", "never", "sent")

    def __init__(self) -> None:
        self.first = True
        self.sent = 0
        self.never = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        if self.first:
            self.first = False
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.never.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent += 1


async def _run_once(app: Any, n: int) -> tuple[float, int]:
    peer = _Peer()
    gc.collect()
    t0 = time.perf_counter_ns()
    await app(_scope(n), peer.receive, peer.send)
    return (time.perf_counter_ns() - t0) / n, peer.sent


async def _slow_once(app: Any, streams: int, seconds: float, interval: float = 0.1) -> tuple[float, float]:
    """(CPU µs per event, Python bytes allocated per stream) for ``streams`` slow streams."""
    import tracemalloc

    loop = asyncio.get_running_loop()
    step = int(interval * 1e9)
    go = time.monotonic_ns() + int(0.5e9)
    peers = [_Peer() for _ in range(streams)]
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tasks = [
        loop.create_task(
            app(
                _scope(0, "/slow", f"n=1000000&interval={interval}&start={go + i * step // streams}"), p.receive, p.send
            )
        )
        for i, p in enumerate(peers)
    ]
    await asyncio.sleep(max(0.0, (go - time.monotonic_ns()) / 1e9) + interval)
    memory = (tracemalloc.get_traced_memory()[0] - base) / streams
    tracemalloc.stop()
    await asyncio.sleep(interval)  # tracing off: let the loop settle
    sent0, cpu0 = sum(p.sent for p in peers), time.process_time()
    await asyncio.sleep(seconds)
    sent1, cpu1 = sum(p.sent for p in peers), time.process_time()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return (cpu1 - cpu0) / max(1, sent1 - sent0) * 1e6, memory


def measure(tokens: int, runs: int) -> list[tuple[str, float, float, int]]:
    """``(label, median ns/token, min ns/token, sends)`` per variant."""
    out = []
    for label, factory in variants():
        if "for scale" in label:
            continue
        app = factory()
        asyncio.run(_run_once(app, 1000))  # warm-up (imports, caches)
        samples, sends = [], 0
        for _ in range(runs):
            ns, sends = asyncio.run(_run_once(app, tokens))
            samples.append(ns)
        out.append((label, statistics.median(samples), min(samples), sends))
    return out


def measure_slow(streams: int, seconds: float, runs: int) -> list[tuple[str, float, float]]:
    """``(label, CPU µs per event (min of runs), bytes per stream)`` per variant."""
    out = []
    for label, factory in variants():
        if "for scale" in label or "coalescing" in label:
            continue
        app = factory()
        results = [asyncio.run(_slow_once(app, streams, seconds)) for _ in range(runs)]
        out.append((label, min(r[0] for r in results), statistics.median(r[1] for r in results)))
    return out


def main(argv: list[str] | None = None) -> None:
    """Print the table."""
    # Starting thousands of streams at once keeps the loop busy for a while; the loop
    # watchdog would report that as a blocking generator.
    logging.getLogger("asgi_stream").setLevel(logging.ERROR)
    p = argparse.ArgumentParser(prog="python -m benchmarks.hotpath", description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("tokens", "slow"), nargs="?", default="tokens")
    p.add_argument("--tokens", type=int, default=200_000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--streams", type=int, default=2_000)
    p.add_argument("--seconds", type=float, default=3.0)
    args = p.parse_args(argv)
    if args.what == "slow":
        slow_rows = measure_slow(args.streams, args.seconds, args.runs)
        base, mem = slow_rows[0][1], slow_rows[0][2]
        print(
            f"| layer ({args.streams:,} streams) | CPU µs/event (min of {args.runs}) | × raw | Python KiB/stream | × raw |"
        )
        print("|---|---|---|---|---|")
        for label, cpu, memory in slow_rows:
            print(f"| {label} | {cpu:.1f} | {cpu / base:.2f}× | {memory / 1024:.1f} | {memory / mem:.2f}× |")
        return
    rows = measure(args.tokens, args.runs)
    base = rows[0][1]
    print(f"| layer | ns/token (median of {args.runs}) | min | over raw | ASGI sends |")
    print("|---|---|---|---|---|")
    for label, med, low, sends in rows:
        print(f"| {label} | {med:,.0f} | {low:,.0f} | {med - base:+,.0f} | {sends:,} |")


if __name__ == "__main__":
    main()
