"""In-process ASGI calls for the resume tests: no server, no socket."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio


@dataclass
class Answer:
    """What an in-process request got back."""

    status: int | None = None
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytes = b""
    ended: bool = False


def http_scope(
    path: str = "/chat",
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    query: bytes = b"",
    method: str = "GET",
) -> dict[str, Any]:
    """A minimal HTTP/1.1 request scope."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": list(headers or []),
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def call(app: Any, scope: dict[str, Any], *, timeout: float = 10.0, limit: int | None = None) -> Answer:
    """Run one request to the end (or until ``limit`` body bytes arrived, then disconnect)."""
    answer = Answer()
    gone = anyio.Event()
    first = True

    async def receive() -> dict[str, Any]:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer.status = message["status"]
            answer.headers = {k.lower(): v for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            answer.body += message.get("body", b"")
            if not message.get("more_body", False):
                answer.ended = True
                gone.set()
            elif limit is not None and len(answer.body) >= limit:
                gone.set()

    with anyio.fail_after(timeout):
        await app(scope, receive, send)
    return answer
