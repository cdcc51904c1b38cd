"""Single-stream clients: throughput (workload 1) and time to first byte (workload 4).

``python -m benchmarks.clients.stream '{"mode": "throughput", "port": 8000, "path": "/fast?n=1000", "core": 1}'``
"""

from __future__ import annotations

import time
from typing import Any

from .wire import Dechunker, H2Client, SSEScanner, client_main, connect, h1_request, split_head

_RECV = 1 << 18


def throughput(port: int, path: str, http2: bool = False, expect: int | None = None) -> dict[str, Any]:
    """Read one stream to its end as fast as possible; count events and bytes."""
    sock = connect(port, rcvbuf=None)
    scanner = SSEScanner()
    recv, clock = sock.recv, time.monotonic_ns
    wire = 0
    try:
        if http2:
            h2 = H2Client(sock)
            t0 = clock()
            sid = h2.request(path)
            done = False
            while not done:
                data = recv(_RECV)
                if not data:
                    raise RuntimeError("connection closed mid-stream")
                now = clock()
                wire += len(data)
                for kind, flags, stream, payload in h2.frames(data):
                    if stream != sid:
                        continue
                    if kind == 0 and payload:
                        scanner.feed(payload, now)
                    if flags & 0x1:
                        done = True
        else:
            t0 = clock()
            sock.sendall(h1_request(path, close=True))
            data = b""
            while (parts := split_head(data)) is None:
                chunk = recv(_RECV)
                if not chunk:
                    raise RuntimeError(f"connection closed before the response head: {data[:200]!r}")
                data += chunk
            wire = len(data)
            body = Dechunker()
            scanner.feed(body.feed(parts[1]), clock())
            while not body.done:
                data = recv(_RECV)
                if not data:
                    raise RuntimeError("connection closed mid-stream (no final chunk)")
                now = clock()
                wire += len(data)
                scanner.feed(body.feed(data), now)
        t1 = clock()
    finally:
        sock.close()
    seconds = (t1 - t0) / 1e9
    if expect is not None and scanner.events != expect:
        raise RuntimeError(f"expected {expect} events, got {scanner.events}")
    return {
        "events": scanner.events,
        "wire_bytes": wire,
        "seconds": seconds,
        "events_per_s": scanner.events / seconds,
        "bytes_per_s": wire / seconds,
        "stamp_delays_ns": scanner.delays_ns,
    }


def ttfb(port: int, path: str, requests: int, http2: bool = False) -> dict[str, Any]:
    """Sequential requests on one kept-alive connection; for each, the time from
    writing the request to receiving the first event's first byte."""
    sock = connect(port)
    recv, clock = sock.recv, time.monotonic_ns
    samples: list[int] = []
    try:
        if http2:
            h2 = H2Client(sock)
            for _ in range(requests):
                t0 = clock()
                sid = h2.request(path)
                first = None
                done = False
                while not done:
                    data = recv(_RECV)
                    if not data:
                        raise RuntimeError("connection closed")
                    now = clock()
                    for kind, flags, stream, payload in h2.frames(data):
                        if stream != sid:
                            continue
                        if first is None and kind == 0 and b"data:" in payload:
                            first = now
                        if flags & 0x1:
                            done = True
                if first is None:
                    raise RuntimeError("stream ended without an event")
                samples.append(first - t0)
        else:
            request = h1_request(path)
            for _ in range(requests):
                t0 = clock()
                sock.sendall(request)
                data, first, body = b"", None, None
                while body is None or not body.done:
                    chunk = recv(_RECV)
                    if not chunk:
                        raise RuntimeError("connection closed")
                    now = clock()
                    if body is None:
                        data += chunk
                        parts = split_head(data)
                        if parts is None:
                            continue
                        body, chunk = Dechunker(), parts[1]
                    if b"data:" in body.feed(chunk) and first is None:
                        first = now
                if first is None:
                    raise RuntimeError("response ended without an event")
                samples.append(first - t0)
    finally:
        sock.close()
    return {"ttfb_ns": samples}


def run(mode: str, **kwargs: Any) -> dict[str, Any]:
    """Dispatch on ``mode``: ``throughput`` or ``ttfb``."""
    if mode == "throughput":
        return throughput(**kwargs)
    if mode == "ttfb":
        return ttfb(**kwargs)
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    client_main(run)
