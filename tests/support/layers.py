"""ASGI layers the tests put around an app to see what the server sees."""

from __future__ import annotations

import time
from typing import Any


class Ends:
    """The outermost layer: what the server sees of each HTTP request (when the
    application call returned, and what it raised)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.ended: list[float] = []
        self.raised: list[BaseException] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        except BaseException as exc:
            self.raised.append(exc)
            raise
        finally:
            self.ended.append(time.monotonic())


class Sends:
    """The outermost layer: the server's ``send()`` calls, to see one blocked (the
    client stopped reading and the buffers are full) and when each body was sent."""

    def __init__(self, app: Any) -> None:
        self.app = app
        #: When the send in flight began (None between sends).
        self.since: float | None = None
        #: Each non-empty body the server was given, with when its send() began.
        self.bodies: list[tuple[float, bytes]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def watched(message: Any) -> None:
            self.since = time.monotonic()
            if message["type"] == "http.response.body" and message.get("body"):
                self.bodies.append((self.since, bytes(message["body"])))
            try:
                await send(message)
            finally:
                self.since = None

        await self.app(scope, receive, watched if scope["type"] == "http" else send)

    def blocked(self, for_at_least: float = 0.2) -> bool:
        """A send has been in flight for ``for_at_least`` seconds."""
        since = self.since
        return since is not None and time.monotonic() - since >= for_at_least
