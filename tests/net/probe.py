"""How long a server takes to notice a client that vanished (no FIN, no RST).

Run in a fresh network namespace, as root (``unshare -n``), loopback only::

    unshare -n python -m tests.net.probe [--budget S] [--only NAME ...]

It brings ``lo`` up, starts one server per case on a free port, opens one SSE stream to
each, and once each stream is under way drops every packet of that client's connection
(nftables, else iptables) — the client vanished. It prints one JSON object: per case,
the seconds from the drop to the generator's ``finally`` (``null``: not within
``--budget``). Exit status 3 with ``{"skip": reason}`` when the namespace cannot filter
packets.

Cases (``PeerTimeouts(user_timeout=2, keepalive_idle=1, keepalive_interval=1,
keepalive_count=2)`` where the helper is used):

* ``uvicorn-helper``: tokens every 50 ms, ``uvicorn.Config(app, fd=sock.fileno())``;
* ``hypercorn-helper``: the same on hypercorn, ``fd://`` bind;
* ``uvicorn-helper-idle``: nothing sent at all (a long prefill, no SSE keepalive):
  only TCP keepalive probes can tell;
* ``uvicorn-default``: tokens every 50 ms on a plain listening socket.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from asgi_stream.net import PeerTimeouts, listen_socket

FAST = PeerTimeouts(user_timeout=2.0, keepalive_idle=1.0, keepalive_interval=1.0, keepalive_count=2)
CASES = ("uvicorn-helper", "hypercorn-helper", "uvicorn-helper-idle", "uvicorn-default")


@dataclass
class Case:
    name: str
    idle: bool = False
    started: asyncio.Event = field(default_factory=asyncio.Event)
    finally_at: float | None = None
    dropped_at: float | None = None
    events: int = 0


def make_app(case: Case) -> Any:
    import anyio
    from starlette.applications import Starlette
    from starlette.routing import Route

    from asgi_stream import StreamMiddleware, TokenStream

    async def endpoint(request: Any) -> TokenStream:
        async def tokens() -> Any:
            case.started.set()
            try:
                if case.idle:
                    await anyio.sleep_forever()
                i = 0
                while True:
                    yield f"token {i} "
                    i += 1
                    await anyio.sleep(0.05)
            finally:
                case.finally_at = time.monotonic()

        return TokenStream(tokens(), format="sse", keepalive=None if case.idle else 15.0)

    app = Starlette(routes=[Route("/stream", endpoint)])
    app.add_middleware(StreamMiddleware, handle_signals=False)
    return app


class Firewall:
    """Drops a connection's packets, both ways, on loopback (the namespace's own rules)."""

    def __init__(self) -> None:
        self.tool = "nft" if shutil.which("nft") else "iptables" if shutil.which("iptables") else None
        if self.tool is None:
            raise RuntimeError("neither nft nor iptables is installed (apt-get install nftables)")
        if self.tool == "nft":
            self._run("nft", "add", "table", "inet", "vanish")
            self._run("nft", "add", "chain", "inet", "vanish", "out", "{ type filter hook output priority 0 ; }")

    @staticmethod
    def _run(*argv: str) -> None:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")

    def drop(self, port: int) -> None:
        for direction in ("dport", "sport"):
            if self.tool == "nft":
                self._run("nft", "add", "rule", "inet", "vanish", "out", "tcp", direction, str(port), "drop")
            else:
                self._run("iptables", "-A", "OUTPUT", "-p", "tcp", f"--{direction}", str(port), "-j", "DROP")


async def serve(case: Case, stop: asyncio.Event) -> int:
    """Start the case's server; returns its port."""
    app = make_app(case)
    if case.name.startswith("hypercorn"):
        from hypercorn.asyncio import serve as hypercorn_serve
        from hypercorn.config import Config

        sock = listen_socket("127.0.0.1", 0, FAST)
        port = sock.getsockname()[1]
        config = Config()
        config.bind = [f"fd://{sock.detach()}"]
        config.loglevel = "WARNING"
        tasks.append(asyncio.ensure_future(hypercorn_serve(app, config, shutdown_trigger=stop.wait)))  # type: ignore[arg-type]
        return port
    import uvicorn

    if case.name.endswith("default"):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", http="h11"))
        tasks.append(asyncio.ensure_future(server.serve(sockets=[sock])))
    else:
        sock = listen_socket("127.0.0.1", 0, FAST)
        config = uvicorn.Config(app, fd=sock.fileno(), log_level="warning", lifespan="off", http="h11")
        server = uvicorn.Server(config)
        tasks.append(asyncio.ensure_future(server.serve()))
    sockets.append(sock)  # kept open while the server runs
    return int(sock.getsockname()[1])


#: The servers' tasks and sockets (references kept for the probe's lifetime).
tasks: list[asyncio.Future[Any]] = []
sockets: list[socket.socket] = []


async def open_stream(port: int, case: Case) -> tuple[asyncio.StreamWriter, int]:
    """A client: GET the stream; returns once it is under way (3 tokens, or the generator
    started for the idle case), with the client's own port."""
    for _ in range(200):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            break
        except OSError:
            await asyncio.sleep(0.02)
    else:
        raise RuntimeError(f"{case.name}: nothing listens on {port}")
    writer.write(b"GET /stream HTTP/1.1\r\nhost: probe\r\naccept: text/event-stream\r\n\r\n")
    await writer.drain()
    if case.idle:
        await asyncio.wait_for(case.started.wait(), 10)
    else:
        seen = b""
        while seen.count(b"data:") < 3:
            chunk = await asyncio.wait_for(reader.read(65536), 10)
            if not chunk:
                raise RuntimeError(f"{case.name}: the server closed the stream")
            seen += chunk
        case.events = seen.count(b"data:")
    return writer, writer.get_extra_info("sockname")[1]


async def run(names: list[str], budget: float) -> dict[str, Any]:
    firewall = Firewall()
    stop = asyncio.Event()
    cases = [Case(name, idle=name.endswith("idle")) for name in names]
    ports = [await serve(case, stop) for case in cases]
    clients = []
    for case, port in zip(cases, ports):
        writer, client_port = await open_stream(port, case)
        clients.append(writer)  # kept open: the peer does not close, it vanishes
        firewall.drop(client_port)
        case.dropped_at = time.monotonic()
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline and any(c.finally_at is None for c in cases):
        await asyncio.sleep(0.05)
    result = {
        c.name: {
            "detected_after_s": None if c.finally_at is None else round(c.finally_at - (c.dropped_at or 0), 3),
            "events_before_drop": c.events,
        }
        for c in cases
    }
    stop.set()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.net.probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=12.0, help="seconds to wait for every detection")
    parser.add_argument("--only", nargs="*", choices=CASES, help="cases to run (default: all)")
    args = parser.parse_args()
    try:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True, capture_output=True)
        result = asyncio.run(run(args.only or list(CASES), args.budget))
    except (RuntimeError, FileNotFoundError, subprocess.CalledProcessError) as exc:
        print(json.dumps({"skip": str(exc)}))
        sys.exit(3)
    print(json.dumps(result), flush=True)
    os._exit(0)  # the servers' streams are not torn down one by one: the namespace goes


if __name__ == "__main__":
    main()
