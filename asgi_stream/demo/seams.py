"""A teaching aid for the web page: show a client a read that ends mid-character.

On a fast local link every send of a stream tends to arrive as one read, so the page
would never see what a slow network or a proxy does to a stream: a read boundary that
falls inside an event, and inside a multi-byte UTF-8 character. A request carrying
``X-Split-Sends: 1`` gets each response body message that holds a multi-byte
character sent as two, cut right after the first byte of that character, the second
half ``pause`` seconds later. The bytes and their order are unchanged; only where the
reads end moves — exactly what a streaming ``TextDecoder`` and an incremental SSE
parser must handle. Requests without the header pass through untouched.
"""

from __future__ import annotations

from typing import Any

import anyio

from .._types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-split-sends"


def mid_character(data: bytes) -> int | None:
    """The offset just after the lead byte of the first multi-byte character in
    ``data`` (a cut there splits that character), or None."""
    for i, byte in enumerate(data):
        if byte >= 0xC0:
            return i + 1
    return None


class SplitSends:
    """ASGI middleware: split body sends mid-character for requests that ask for it."""

    def __init__(self, app: ASGIApp, *, pause: float = 0.05) -> None:
        self.app = app
        self.pause = pause

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not any(
            name == HEADER and value.strip() == b"1" for name, value in scope.get("headers", ())
        ):
            await self.app(scope, receive, send)
            return
        pause = self.pause

        async def split_send(message: Message) -> None:
            if message["type"] == "http.response.body":
                body: Any = message.get("body", b"")
                cut = mid_character(body)
                if cut is not None and cut < len(body):
                    await send({"type": "http.response.body", "body": body[:cut], "more_body": True})
                    await anyio.sleep(pause)
                    message = {**message, "body": body[cut:]}
            await send(message)

        await self.app(scope, receive, split_send)
