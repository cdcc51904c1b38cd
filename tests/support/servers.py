"""Run an ASGI app on a real server, in this process, on a free loopback port.

In-process (a background thread with its own event loop) so tests can look at the
server side directly: generator finally blocks, tasks, threads, records.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class Running:
    """A server that is up: where it listens and the loop it runs on."""

    host: str
    port: int
    loop: Any = None  # asyncio loop (None for trio)
    thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def _bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def serve(app: Any, server: str = "uvicorn", **options: Any) -> Iterator[Running]:
    """Serve ``app`` with ``server`` (uvicorn, hypercorn, hypercorn-trio) until the block ends."""
    if server == "uvicorn":
        with _uvicorn(app, **options) as running:
            yield running
    elif server in ("hypercorn", "hypercorn-trio"):
        with _hypercorn(app, trio=server.endswith("trio"), **options) as running:
            yield running
    else:
        raise ValueError(server)


@contextlib.contextmanager
def _uvicorn(app: Any, **options: Any) -> Iterator[Running]:
    import uvicorn

    sock = _bound_socket()
    options.setdefault("http", "h11")
    config = uvicorn.Config(app, log_level="warning", lifespan=options.pop("lifespan", "auto"), **options)
    server = uvicorn.Server(config)
    loop_box: list[Any] = []

    use_uvloop = options.get("loop") == "uvloop"

    def run() -> None:
        if use_uvloop:
            import uvloop

            loop = uvloop.new_event_loop()
        else:
            loop = asyncio.new_event_loop()
        loop_box.append(loop)
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.serve(sockets=[sock]))
        finally:
            _close_loop(loop)

    thread = threading.Thread(target=run, daemon=True, name="test uvicorn")
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield Running("127.0.0.1", sock.getsockname()[1], loop_box[0], thread)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """What ``asyncio.run`` does on the way out: cancel the tasks the served app left
    behind (sse-starlette's per-loop shutdown watcher, say) and let them end, finalise
    async generators, close. A task left pending on a closed loop is reported ("Task was
    destroyed but it is pending!") whenever the garbage collector finds it, in whatever
    later test is running then."""
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


@contextlib.contextmanager
def _hypercorn(app: Any, *, trio: bool, h2: bool = False) -> Iterator[Running]:
    from hypercorn.config import Config

    sock = _bound_socket()
    config = Config()
    config.bind = [f"fd://{os.dup(sock.fileno())}"]  # hypercorn closes the fd it is given
    config.loglevel = "WARNING"
    config.accesslog = None
    started = threading.Event()
    stop = threading.Event()
    box: list[Any] = []

    if trio:
        import trio as trio_mod
        from hypercorn.trio import serve as trio_serve

        async def main_trio() -> None:
            async def trigger() -> None:
                while not stop.is_set():
                    await trio_mod.sleep(0.05)

            started.set()
            await trio_serve(app, config, shutdown_trigger=trigger)

        def run() -> None:
            trio_mod.run(main_trio)

    else:
        from hypercorn.asyncio import serve as aio_serve

        async def main_aio() -> None:
            box.append(asyncio.get_running_loop())

            async def trigger() -> None:
                while not stop.is_set():
                    await asyncio.sleep(0.05)

            started.set()
            await aio_serve(app, config, shutdown_trigger=trigger)

        def run() -> None:
            asyncio.run(main_aio())

    thread = threading.Thread(target=run, daemon=True, name="test hypercorn")
    thread.start()
    started.wait(10)
    _wait_listening(sock.getsockname()[1])
    try:
        yield Running("127.0.0.1", sock.getsockname()[1], box[0] if box else None, thread)
    finally:
        stop.set()
        thread.join(10)
        sock.close()


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {port}")
