"""Disconnect trials (workload 3): open every trial's stream concurrently, wait for its
first event, close the socket ``offset`` seconds later, and report when each socket
was closed (``time.monotonic_ns``, the clock the servers log with)."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

from .wire import client_main, h1_request, split_head


async def _trial(port: int, path: str, offset: float) -> int:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, h1_request(path))
        data = b""
        while True:
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                raise RuntimeError(f"{path}: closed before the first event")
            data += chunk
            parts = split_head(data)
            if parts is not None and b"data:" in parts[1]:
                break
        first = time.monotonic()
        await asyncio.sleep(max(0.0, first + offset - time.monotonic()))
        closed = time.monotonic_ns()
    finally:
        sock.close()
    return closed


async def _all(port_paths: list[tuple[str, int, str, float]]) -> dict[str, int]:
    results = await asyncio.gather(*(_trial(port, path, offset) for _, port, path, offset in port_paths))
    return {trial: closed for (trial, *_), closed in zip(port_paths, results, strict=True)}


def run(trials: list[list[Any]]) -> dict[str, Any]:
    """``trials``: ``[trial_id, port, path, offset_seconds]`` each; returns
    ``{"closed_ns": {trial_id: ns}}``."""
    return {"closed_ns": asyncio.run(_all([tuple(t) for t in trials]))}  # type: ignore[misc]


if __name__ == "__main__":
    client_main(run)
