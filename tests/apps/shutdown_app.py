"""An app for shutdown tests, run by a real uvicorn/hypercorn subprocess.

Its generators never end on their own; they append lines to the file named by
ASGI_STREAM_TEST_LOG so the test can see what happened inside the server process.
"""

from __future__ import annotations

import os
import time

import anyio
from starlette.applications import Starlette
from starlette.routing import Route

from asgi_stream import StreamMiddleware, TokenStream, current_cancel_token

LOG = os.environ.get("ASGI_STREAM_TEST_LOG", os.devnull)
GRACE = float(os.environ.get("ASGI_STREAM_TEST_GRACE", "1.0"))


def log(line: str) -> None:
    with open(LOG, "a") as f:
        f.write(f"{time.monotonic():.6f} {line}\n")


async def forever(request):
    async def gen():
        try:
            i = 0
            while True:
                yield f"t{i}"
                i += 1
                await anyio.sleep(0.1)
        finally:
            log(f"finally async {current_cancel_token().reason.value if current_cancel_token().cancelled else 'none'}")

    return TokenStream(gen(), format="sse")


async def forever_sync(request):
    def gen():
        try:
            while True:
                yield "s"
                time.sleep(0.1)
        finally:
            log("finally sync")

    return TokenStream(gen(), format="sse")


app = Starlette(routes=[Route("/forever", forever), Route("/forever-sync", forever_sync)])
app.add_middleware(StreamMiddleware, shutdown_grace=GRACE)
