"""The per-token fast path skips only Starlette's pass-through send wrappers: any other
layer between StreamMiddleware and the endpoint still sees every body message."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from asgi_stream import StreamMiddleware, TokenStream
from asgi_stream.fastpath import _transparent_codes, unwrap
from conformance.clients import H1Client


class CountingMiddleware:
    """A user's pure-ASGI middleware that looks at every message sent."""

    def __init__(self, app, seen):
        self.app = app
        self.seen = seen

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message):
            self.seen.append(message["type"])
            await send(message)

        await self.app(scope, receive, counting_send)


def test_starlette_wrappers_are_recognised() -> None:
    assert len(_transparent_codes()) == 2  # ServerErrorMiddleware._send and the route's sender

    async def plain(message):
        pass

    assert unwrap(plain) is plain


def test_a_user_middleware_inside_still_sees_every_token(server) -> None:
    seen: list[str] = []

    async def endpoint(request):
        return TokenStream(iter(["a", "b", "c"]), format="sse")

    app = Starlette(
        routes=[Route("/", endpoint)],
        middleware=[Middleware(StreamMiddleware), Middleware(CountingMiddleware, seen=seen)],
    )
    srv = server(app)
    with H1Client("127.0.0.1", srv.port) as c:
        r = c.fetch("GET", "/")
    assert r.body == b"data: a\n\ndata: b\n\ndata: c\n\n"
    assert seen.count("http.response.body") == 4  # three tokens and the end


def test_a_user_middleware_outside_sees_the_start_and_the_fast_path_skips_only_starlette(server) -> None:
    seen: list[str] = []

    async def endpoint(request):
        return TokenStream(iter(["a", "b", "c"]), format="sse")

    app = Starlette(
        routes=[Route("/", endpoint)],
        middleware=[Middleware(CountingMiddleware, seen=seen), Middleware(StreamMiddleware)],
    )
    srv = server(app)
    with H1Client("127.0.0.1", srv.port) as c:
        r = c.fetch("GET", "/")
    assert r.body == b"data: a\n\ndata: b\n\ndata: c\n\n"
    # The outer middleware is not a known pass-through wrapper: it sees everything too.
    assert seen == ["http.response.start"] + ["http.response.body"] * 4
