"""Many concurrent slow streams (workload 2): one epoll loop, non-blocking sockets.

Every stream's schedule starts at a common *go* time a little in the future, each
with its own phase (spread evenly over one interval), so all streams are open before
the periodic load starts and the load is even. Streams are connected in batches (each
batch waits for its response heads and first event). Then the client announces the
measurement window on stdout (``WINDOW <start_ns> <end_ns>``) so the harness can
sample the server, and records, for every event due inside the window, its lateness:
arrival time minus the due time the event carries. Events due in the window that
have not arrived ``grace`` seconds after it count as missing (infinitely late).
Prints a JSON summary as its last line.
"""

from __future__ import annotations

import errno
import re
import resource
import select
import socket
import sys
import time
from typing import Any

from ..stats import percentile
from .wire import Dechunker, client_main, h1_request, split_head

_EVENT = re.compile(rb"data: (\d+)\r?\n")


class _Conn:
    __slots__ = ("body", "carry", "first", "head", "sent", "sock", "start")

    def __init__(self, sock: socket.socket, start: int) -> None:
        self.sock = sock
        self.start = start
        self.head = b""
        self.body: Dechunker | None = None
        self.carry = b""
        self.first = False
        self.sent = False


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(
    port: int,
    streams: int,
    interval: float,
    events: int,
    warmup: float,
    duration: float,
    grace: float = 1.0,
    batch: int = 250,
    ramp_timeout: float = 120.0,
    ramp_budget: float = 0.0012,
) -> dict[str, Any]:
    """Open the streams, measure lateness over the window, return the summary.

    ``ramp_budget``: seconds allowed per stream to open them all before *go*.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if streams + 64 > hard:
        raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} is too low for {streams} streams")
    ep = select.epoll()
    conns: dict[int, _Conn] = {}
    clock = time.monotonic_ns
    step = int(interval * 1e9)
    go = clock() + int((1.0 + streams * ramp_budget) * 1e9)
    window = [0, 0]  # start, end (ns); 0 until the ramp is over
    lateness: list[int] = []
    started = 0  # streams whose first event arrived

    def on_readable(conn: _Conn) -> None:
        nonlocal started
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        now = clock()
        if not data:
            raise RuntimeError("the server closed a stream")
        if conn.body is None:
            conn.head += data
            parts = split_head(conn.head)
            if parts is None:
                return
            conn.head, data = b"", parts[1]
            conn.body = Dechunker()
        buf = conn.carry + conn.body.feed(data)
        cut = buf.rfind(b"\n") + 1
        conn.carry = buf[cut:]
        start, end = window
        for m in _EVENT.finditer(buf, 0, cut):
            if not conn.first:
                conn.first = True
                started += 1
                continue
            due = int(m.group(1))
            if start <= due < end:
                lateness.append(now - due)

    def poll(timeout: float) -> None:
        for fd, mask in ep.poll(timeout):
            conn = conns[fd]
            if not conn.sent:
                err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, f"connect failed: {errno.errorcode.get(err, err)}")
                conn.sock.send(h1_request(f"/slow?n={events}&interval={interval}&start={conn.start}"))
                conn.sent = True
                ep.modify(fd, select.EPOLLIN)
            elif mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                on_readable(conn)

    # ---- ramp: connect in batches, each waiting for its response heads
    ramp_started = time.monotonic()
    ramp_started_ns = clock()
    while len(conns) < streams:
        for _ in range(min(batch, streams - len(conns))):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.connect_ex(("127.0.0.1", port))
            phase = len(conns) * step // streams
            conns[sock.fileno()] = _Conn(sock, go + phase)
            ep.register(sock.fileno(), select.EPOLLOUT)
        while started < len(conns):
            if time.monotonic() - ramp_started > ramp_timeout:
                raise RuntimeError(f"only {started} of {streams} streams started within {ramp_timeout:.0f} s")
            poll(0.05)
    ramp_seconds = time.monotonic() - ramp_started

    # ---- the window
    window[0] = max(clock(), go) + int(warmup * 1e9)
    window[1] = window[0] + int(duration * 1e9)
    sys.stdout.write(f"WINDOW {window[0]} {window[1]}\n")
    sys.stdout.flush()
    cpu0 = cpu1 = None
    stop = window[1] + int(grace * 1e9)
    while (now := clock()) < stop:
        if cpu0 is None and now >= window[0]:
            cpu0 = _cpu()
        if cpu1 is None and now >= window[1]:
            cpu1 = _cpu()
        poll(0.01)
    client_cpu = ((cpu1 if cpu1 is not None else _cpu()) - (cpu0 or 0.0)) / duration
    for conn in conns.values():
        conn.sock.close()
    ep.close()

    expected = 0
    for conn in conns.values():
        first_k = max(0, -(-(window[0] - conn.start) // step))
        last_k = min(events - 1, (window[1] - 1 - conn.start) // step)
        expected += max(0, last_k - first_k + 1)
    received = len(lateness)
    missing = max(0, expected - received)
    lateness.sort()
    samples = lateness + [float("inf")] * missing  # still sorted

    def pct(q: float) -> float:
        return percentile(samples, q, presorted=True) / 1e6 if samples else float("nan")

    return {
        "streams": streams,
        "ramp_s": ramp_seconds,
        "ramp_past_go": ramp_seconds > (go - ramp_started_ns) / 1e9,
        "expected": expected,
        "received": received,
        "missing": missing,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": (samples[-1] / 1e6) if samples else float("nan"),
        "client_cpu": client_cpu,
    }


if __name__ == "__main__":
    client_main(run)
