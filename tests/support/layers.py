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
