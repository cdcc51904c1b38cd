"""Resumable streams: per-event cost and resume latency.

    python -m benchmarks.resume [--quick] [--events N] [--json FILE]

Starts a private redis-server (persistence off) and uvicorn (h11, asyncio) server
processes, then measures:

* **per-event cost** of one SSE stream of small events from a generator that never
  waits, read by a raw-socket client: non-resumable, resumable on the MemoryStore,
  resumable on the RedisStore (the producing worker serves the client from memory
  while its writer copies the events to Redis in pipelined, packed batches). The
  figure is wall time from request to last byte divided by the events;
* **resume latency**: from opening a new connection with ``Last-Event-ID`` to the
  first replayed byte, p50/p99, on the worker that produced the stream (memory, or
  Redis store from memory) and on another worker (Redis store, read from Redis).

The server runs on the first CPU this process may use, the client on the second;
redis-server is not pinned. Prints a markdown table (and writes JSON if asked).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
MODES = ("plain", "memory", "redis")


# ---------------------------------------------------------------- the server side
def build_app(mode: str, redis_url: str | None, events: int) -> Any:
    """The benchmark app: ``GET /stream?n=`` streams ``n`` small events as fast as
    the generator can make them; resumable unless ``mode`` is "plain"."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from asgi_stream import StreamMiddleware, TokenStream
    from asgi_stream.resume import Limits, MemoryStore, ReplayStore

    limits = Limits(max_events=events + 16, max_bytes=1 << 30, ttl=600.0)
    store: ReplayStore | None = None
    if mode == "memory":
        store = MemoryStore(limits)
    elif mode == "redis":
        from asgi_stream.resume.redis import RedisStore

        assert redis_url
        store = RedisStore(redis_url, limits=limits)

    async def stream(request: Any) -> TokenStream:
        n = int(request.query_params.get("n", "1000"))

        async def gen() -> Any:
            for _ in range(n):
                yield "tok"

        return TokenStream(gen(), format="sse", resumable=mode != "plain")

    async def health(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def cpu(request: Any) -> PlainTextResponse:
        return PlainTextResponse(repr(time.process_time()))

    app = Starlette(routes=[Route("/stream", stream), Route("/health", health), Route("/cpu", cpu)])
    app.add_middleware(StreamMiddleware, resume_store=store, keepalive=None, resume_grace=600.0)
    return app


def serve(mode: str, port: int, redis_url: str | None, core: int, events: int) -> None:
    """Run the benchmark app until killed."""
    import uvicorn

    if core >= 0:
        os.sched_setaffinity(0, {core})
    uvicorn.run(
        build_app(mode, redis_url, events),
        host=HOST,
        port=port,
        loop="asyncio",
        http="h11",
        access_log=False,
        log_level="warning",
    )


# ---------------------------------------------------------------- processes
def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Wait until something accepts connections on ``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A private redis-server with persistence off."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.access(binary, os.X_OK):
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no", "--daemonize", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_port(port, proc)
    return proc, f"redis://{HOST}:{port}/0"


def start_server(mode: str, redis_url: str | None, core: int, events: int) -> tuple[subprocess.Popen[bytes], int]:
    """A server process for ``mode``."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "benchmarks.resume",
        "serve",
        mode,
        str(port),
        redis_url or "-",
        str(core),
        str(events),
    ]
    proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wait_port(port, proc)
    return proc, port


# ---------------------------------------------------------------- the client side
def request(path: str, headers: dict[str, str] | None = None) -> bytes:
    """An HTTP/1.1 GET request."""
    lines = [f"GET {path} HTTP/1.1", "Host: bench", "Accept: text/event-stream"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_stream(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[float, float, bytes]:
    """(seconds to the first body byte, seconds to the end, head + body bytes) of one
    chunked response, read until its last chunk."""
    t0 = time.perf_counter()
    with socket.create_connection((HOST, port)) as s:
        s.sendall(request(path, headers))
        buf = bytearray()
        first = None
        while True:
            data = s.recv(1 << 20)
            if not data:
                break
            buf += data
            if first is None:
                end = buf.find(b"\r\n\r\n")
                if end >= 0 and len(buf) > end + 4:
                    first = time.perf_counter() - t0
            if buf.endswith(b"\r\n0\r\n\r\n"):
                break
    return first or 0.0, time.perf_counter() - t0, bytes(buf)


def first_byte(port: int, path: str, headers: dict[str, str]) -> float:
    """Seconds from connecting to the first byte of the response body (the rest of
    the response is read, untimed, before the connection closes)."""
    t0 = time.perf_counter()
    with socket.create_connection((HOST, port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(request(path, headers))
        buf = b""
        took = None
        while not buf.endswith(b"\r\n0\r\n\r\n"):
            data = s.recv(65536)
            if not data:
                raise RuntimeError("connection closed before the end of the body")
            buf += data
            if took is None:
                end = buf.find(b"\r\n\r\n")
                if end >= 0 and len(buf) > end + 4:
                    took = time.perf_counter() - t0
                    if not buf.startswith(b"HTTP/1.1 200"):
                        raise RuntimeError(buf[:200].decode(errors="replace"))
        assert took is not None
        return took


def stream_id(raw: bytes) -> str:
    """The X-Stream-Id of a response."""
    for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"x-stream-id:"):
            return line.split(b":", 1)[1].strip().decode()
    raise RuntimeError("no X-Stream-Id")


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# ---------------------------------------------------------------- the measurements
def server_cpu(port: int) -> float:
    """The server process' CPU seconds so far."""
    with socket.create_connection((HOST, port)) as s:
        s.sendall(b"GET /cpu HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        raw = b""
        while data := s.recv(65536):
            raw += data
    return float(raw.split(b"\r\n\r\n", 1)[1])


def redis_cpu(url: str) -> float:
    """redis-server's CPU seconds so far (user + system)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        info = client.info("cpu")
    finally:
        client.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def per_event(ports: dict[str, int], events: int, reps: int, url: str) -> dict[str, Any]:
    """Per-event cost of each mode, the modes interleaved run by run: wall time from
    request to last byte, and CPU time of the server (plus redis-server's for the
    RedisStore). Medians and best runs: on a machine shared with other work, other
    load only ever adds, so the best run is the least disturbed one."""
    wall: dict[str, list[float]] = {m: [] for m in ports}
    cpu: dict[str, list[float]] = {m: [] for m in ports}
    for port in ports.values():  # warm-up
        read_stream(port, f"/stream?n={min(events, 2000)}")
    for _ in range(reps):
        for mode, port in ports.items():
            c0, r0 = server_cpu(port), redis_cpu(url) if mode == "redis" else 0.0
            _, total, raw = read_stream(port, f"/stream?n={events}")
            time.sleep(0.05)  # the writer's last round trip
            c1, r1 = server_cpu(port), redis_cpu(url) if mode == "redis" else 0.0
            if raw.count(b"data: tok") != events:
                raise RuntimeError(f"{mode}: incomplete stream")
            wall[mode].append(total / events)
            cpu[mode].append((c1 - c0 + r1 - r0) / events)
    out: dict[str, Any] = {}
    for m in ports:
        out[m] = {"runs_us": [x * 1e6 for x in wall[m]], "cpu_runs_us": [x * 1e6 for x in cpu[m]]}
        for name, values in (("wall", wall), ("cpu", cpu)):
            for stat, fn in (("median", statistics.median), ("best", min)):
                value, base = fn(values[m]), fn(values["plain"])
                out[m][f"{name}_{stat}_us"] = value * 1e6
                out[m][f"{name}_{stat}_ratio"] = value / base
    return out


def resume_latency(port: int, other: int | None, samples: int) -> dict[str, Any]:
    """p50/p99 of reconnect → first replayed byte, on the producing worker and (for
    a shared store) on another one."""
    _, _, raw = read_stream(port, "/stream?n=200")
    sid = stream_id(raw)
    targets = {"same worker": port}
    if other is not None:
        targets["other worker"] = other
    out: dict[str, Any] = {}
    for name, p in targets.items():
        # Each resume replays the stream's last 1 to 50 events.
        for i in range(20):  # warm-up (connections to Redis, code paths)
            first_byte(p, "/stream", {"Last-Event-ID": f"{sid}.{150 + i}"})
        lat = [first_byte(p, "/stream", {"Last-Event-ID": f"{sid}.{150 + i % 50}"}) * 1e3 for i in range(samples)]
        out[name] = {"p50_ms": percentile(lat, 0.5), "p99_ms": percentile(lat, 0.99), "samples": samples}
    return out


def store_cost(url: str, events: int, reps: int) -> dict[str, float]:
    """CPU µs per event of the stores alone, in this process (no HTTP): a producer
    appending as fast as it can, yielding every 256 events like the real one, and one
    consumer reading from the producing worker; for the RedisStore its writer's
    packed, pipelined copy to Redis included. Best of ``reps`` runs."""
    import anyio
    import anyio.lowlevel

    from asgi_stream.resume import Limits, MemoryStore, ReplayStore, StreamMeta
    from asgi_stream.resume.redis import RedisStore

    meta = StreamMeta("sse", "text/event-stream", "text/event-stream", "GET", "/")
    data = b"data: tok\n\n"

    async def one(store: ReplayStore, sid: str) -> float:
        writer = await store.open(sid, meta)
        t0 = time.process_time()
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.run)

            async def consume() -> None:
                async for _ in store.read(sid, 0):
                    pass

            tg.start_soon(consume)
            for seq in range(1, events + 1):
                writer.append(seq, data)
                if not seq & 255:
                    await anyio.lowlevel.checkpoint()
            await writer.finish("completed")
        return (time.process_time() - t0) / events * 1e6

    async def main() -> dict[str, float]:
        limits = Limits(max_events=events + 16, max_bytes=1 << 30)
        stores: dict[str, ReplayStore] = {
            "MemoryStore": MemoryStore(limits),
            "RedisStore": RedisStore(url, limits=limits, key_prefix="store-cost:"),
        }
        best = {name: float("inf") for name in stores}
        for rep in range(reps):
            for name, store in stores.items():
                best[name] = min(best[name], await one(store, f"{name[:8]:<8}{rep:08d}".replace(" ", "_")))
        for store in stores.values():
            await store.aclose()
        return best

    return anyio.run(main)


def redis_batches(url: str, events: int) -> dict[str, float]:
    """How the RedisStore's writer batched the benchmark's long streams: Redis Stream
    entries (one per pipelined round trip) per stream, and events per entry."""
    import redis

    client: Any = redis.Redis.from_url(url)
    try:
        lengths = []
        for key in client.scan_iter(match="asgi-stream:*:e", count=1000):
            last = client.xrevrange(key, "+", "-", count=1)
            if last and int(last[0][0].split(b"-")[0]) == events:
                lengths.append(client.xlen(key) - 1)  # minus the end marker
    finally:
        client.close()
    if not lengths:
        raise RuntimeError("the RedisStore wrote nothing to Redis")
    entries = statistics.median(lengths)
    return {"streams": len(lengths), "entries_per_stream": entries, "events_per_entry": events / entries}


def markdown(result: dict[str, Any]) -> str:
    """The results as the tables of docs/resume.md."""
    pe = result["per_event"]
    names = {"plain": "not resumable", "memory": "resumable, MemoryStore", "redis": "resumable, RedisStore"}
    lines = [
        (
            f"Per-event cost ({result['events']:,} events per stream, {result['reps']} runs; µs per event, "
            "and × the non-resumable stream):"
        ),
        "",
        "| stream | CPU, best run | CPU, median | wall, best run | wall, median |",
        "|---|---:|---:|---:|---:|",
    ]

    def cell(row: dict[str, float], key: str) -> str:
        return f"{row[key + '_us']:.2f} ({row[key + '_ratio']:.2f}×)"

    lines += [
        f"| {names[m]} | {cell(pe[m], 'cpu_best')} | {cell(pe[m], 'cpu_median')} "
        f"| {cell(pe[m], 'wall_best')} | {cell(pe[m], 'wall_median')} |"
        for m in pe
    ]
    lines += ["", "CPU: the server process', plus redis-server's for the RedisStore."]
    b = result["redis_batches"]
    lines += [
        "",
        (
            f"RedisStore writes: {b['entries_per_stream']:.0f} pipelined round trips per stream "
            f"(median), {b['events_per_entry']:.0f} events packed per Redis Stream entry."
        ),
    ]
    sc = result["store_cost"]
    lines += [
        "",
        (
            "The stores alone (in one process, no HTTP; producer → store → one consumer; best of "
            f"{result['reps']} runs): MemoryStore {sc['MemoryStore']:.2f} µs per event, "
            f"RedisStore {sc['RedisStore']:.2f} µs per event (its copy to Redis included)."
        ),
    ]
    lines += [
        "",
        f"Resume latency (new connection with Last-Event-ID → first replayed byte, {result['samples']} resumes):",
        "",
    ]
    lines += ["| store | served by | p50 | p99 |", "|---|---|---:|---:|"]
    for store, rows in result["resume"].items():
        for where, r in rows.items():
            lines.append(f"| {store} | {where} | {r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Entry point (see the module docstring)."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "serve":
        mode, port, url, core, events = args[1], int(args[2]), args[3], int(args[4]), int(args[5])
        serve(mode, port, None if url == "-" else url, core, events)
        return
    parser = argparse.ArgumentParser(prog="python -m benchmarks.resume", description=__doc__.split("\n\n")[1])
    parser.add_argument("--quick", action="store_true", help="fewer runs and samples (about 30 s)")
    parser.add_argument("--events", type=int, default=20_000, help="events per stream")
    parser.add_argument("--json", type=Path, help="also write the results here")
    opts = parser.parse_args(args)
    reps, samples = (3, 100) if opts.quick else (9, 400)
    cores = sorted(os.sched_getaffinity(0))
    server_core, client_core = (cores[0], cores[1]) if len(cores) > 1 else (-1, -1)
    if client_core >= 0:
        os.sched_setaffinity(0, {client_core})
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="resume-bench-") as tmp:
        try:
            redis_proc, url = start_redis(Path(tmp))
            procs.append(redis_proc)
            ports: dict[str, int] = {}
            for mode in MODES:
                proc, ports[mode] = start_server(mode, url if mode == "redis" else None, server_core, opts.events)
                procs.append(proc)
            other_proc, other_port = start_server("redis", url, server_core, opts.events)
            procs.append(other_proc)
            result: dict[str, Any] = {
                "events": opts.events,
                "reps": reps,
                "samples": samples,
                "cpus": len(cores),
                "per_event": per_event(ports, opts.events, reps, url),
                "redis_batches": redis_batches(url, opts.events),
                "store_cost": store_cost(url, opts.events, reps),
                "resume": {
                    "MemoryStore": resume_latency(ports["memory"], None, samples),
                    "RedisStore": resume_latency(ports["redis"], other_port, samples),
                },
            }
        finally:
            for proc in reversed(procs):
                stop(proc)
    print(markdown(result))
    if opts.json:
        opts.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
