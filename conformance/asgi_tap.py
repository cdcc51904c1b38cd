"""AsgiTap: what the ASGI server itself told a target app, recorded per labelled request.

It wraps the whole target app (outside StreamMiddleware), so it sees the server's own
``receive()`` and ``send()``: when ``http.disconnect`` arrived, whether a ``send()``
raised (and what), how many body sends the server accepted, and when the app's ASGI
call returned. A case compares that with what its client did on the wire, which is
how the suite tells a server that never reports a disconnect from an app that
ignores one. Only requests with a ``label`` query parameter are recorded (not the hook
endpoint's own).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import anyio

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


@dataclass(slots=True)
class TapLog:
    """The server's side of one request, as the app experienced it."""

    #: (time, message type) of every message ``receive()`` returned.
    received: list[tuple[float, str]] = field(default_factory=list)
    #: When ``receive()`` first returned ``http.disconnect`` (None: never).
    disconnect_at: float | None = None
    #: Body sends the server accepted, and when the last one returned.
    body_sends: int = 0
    last_send_at: float | None = None
    #: The first exception a ``send()`` raised: ``Type: message``, and when.
    send_error: str | None = None
    send_error_at: float | None = None
    #: When the app's ASGI call returned (or raised: ``app_error``).
    returned_at: float | None = None
    app_error: str | None = None


class AsgiTap:
    """Wrap ``app``; ``open_log(label)`` gives the :class:`TapLog` of a new request.

    For a labelled request the tap reads the server's ``receive()`` itself, from the
    start, and hands the messages to the app in order as it asks for them: so the
    moment ``http.disconnect`` arrives is known even for an app that never reads.
    """

    def __init__(self, app: ASGIApp, open_log: Callable[[str], TapLog]) -> None:
        self.app = app
        self.open_log = open_log

    def __getattr__(self, name: str) -> Any:
        # Behave like the wrapped app for introspection (routes, state…).
        return getattr(self.app, name)

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        label = _label(scope) if scope.get("type") == "http" else None
        if label is None:
            await self.app(scope, receive, send)
            return
        log = self.open_log(label)
        inbox, outbox = anyio.create_memory_object_stream[Message](math.inf)

        async def read_server() -> None:
            with inbox:
                while True:
                    message = await receive()
                    now = time.monotonic()
                    kind = str(message.get("type"))
                    log.received.append((now, kind))
                    inbox.send_nowait(message)
                    if kind == "http.disconnect":
                        log.disconnect_at = now
                        return

        async def tapped_receive() -> Message:
            try:
                return await outbox.receive()
            except anyio.EndOfStream:  # after http.disconnect: it stays disconnected
                return {"type": "http.disconnect"}

        async def tapped_send(message: Message) -> None:
            try:
                await send(message)
            except Exception as exc:
                if log.send_error is None:
                    log.send_error = f"{type(exc).__name__}: {exc}"
                    log.send_error_at = time.monotonic()
                raise
            if message.get("type") == "http.response.body":
                log.body_sends += 1
                log.last_send_at = time.monotonic()

        error: Exception | None = None
        with outbox:
            async with anyio.create_task_group() as tg:
                tg.start_soon(read_server)
                try:
                    await self.app(scope, tapped_receive, tapped_send)
                except Exception as exc:  # re-raised as it is, not in an exception group
                    error = exc
                    log.app_error = f"{type(exc).__name__}: {exc}"
                finally:
                    log.returned_at = time.monotonic()
                    tg.cancel_scope.cancel()
        if error is not None:
            raise error


def _label(scope: MutableMapping[str, Any]) -> str | None:
    query = scope.get("query_string", b"")
    if b"label=" not in query or str(scope.get("path", "")).startswith("/_hooks/"):
        return None
    values = parse_qs(query.decode("latin-1")).get("label")
    return values[0] if values else None
