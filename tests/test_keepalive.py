"""Keepalive: idle-based SSE comments, never while tokens flow; prefill covered."""

from __future__ import annotations

import itertools
import time

import anyio
from starlette.applications import Starlette
from starlette.responses import StreamingResponse
from starlette.routing import Route

from asgi_stream import StreamMiddleware, TokenStream
from conformance.clients import H1Client, H1Response
from conformance.sse import SSEParser as SpecParser

from .support.layers import Sends
from .support.waiting import wait_for

KEEPALIVE = 0.15


def app_with(endpoint, **mw):
    app = Starlette(routes=[Route("/", endpoint)])
    app.add_middleware(StreamMiddleware, **{"keepalive": KEEPALIVE, **mw})
    return app


def collect(port: int, accept: str = "text/event-stream") -> H1Response:
    with H1Client("127.0.0.1", port) as c:
        return c.fetch("GET", "/", [("accept", accept)])


def test_long_prefill_gets_headers_and_comments_before_the_first_token(server) -> None:
    async def endpoint(request):
        async def gen():
            await anyio.sleep(0.8)  # "prefill"
            yield "first"

        return TokenStream(gen())

    t0 = time.monotonic()
    r = collect(server(app_with(endpoint)).port)
    assert r.t_headers - t0 < 0.6, "headers waited for the first token despite keepalive"
    comments = [c for c in r.chunks if c.data == b": keepalive\n\n"]
    assert 3 <= len(comments) <= 6
    gaps = [b.t - a.t for a, b in zip(comments, comments[1:])]
    assert all(KEEPALIVE * 0.7 < g < KEEPALIVE + 0.25 for g in gaps), gaps
    parser = SpecParser()
    parser.feed(r.body)
    assert [e.data for e in parser.events] == ["first"]


KEEPALIVE_BODY = b": keepalive\n\n"


def _only_after_idle(sends: Sends) -> list[bytes]:
    """The bodies in order, after checking that each keepalive came at least KEEPALIVE
    after the send before it (an idle timer restarted by every send: a loaded machine
    may stall the generator past it, the line never sends one sooner)."""
    for (t_before, _), (t, body) in itertools.pairwise(sends.bodies):
        if body == KEEPALIVE_BODY:
            assert t - t_before >= KEEPALIVE - 0.01, f"a keepalive {t - t_before:.3f} s after the send before it"
    return [body for _, body in sends.bodies]


def test_no_keepalive_while_tokens_flow(server) -> None:
    async def endpoint(request):
        async def gen():
            for i in range(20):
                yield f"t{i}"
                await anyio.sleep(KEEPALIVE / 3)

        return TokenStream(gen())

    sends = Sends(app_with(endpoint))
    r = collect(server(sends).port)
    bodies = _only_after_idle(sends)  # none while tokens flow faster than the interval
    data = [body for body in bodies if body != KEEPALIVE_BODY]
    assert data == [f"data: t{i}\n\n".encode() for i in range(20)]
    assert r.body == b"".join(bodies)


def test_keepalive_resumes_after_tokens_stop_and_restarts_on_each_send(server) -> None:
    async def endpoint(request):
        async def gen():
            yield "a"
            await anyio.sleep(0.5)
            yield "b"
            await anyio.sleep(0.1)
            yield "c"

        return TokenStream(gen())

    sends = Sends(app_with(endpoint))
    r = collect(server(sends).port)
    kinds = _only_after_idle(sends)  # restarted on each send: none 0.1 s after "b", unless it stalled
    assert r.body == b"".join(kinds)
    assert kinds[0] == b"data: a\n\n"
    i_b = kinds.index(b"data: b\n\n")
    assert kinds[1:i_b].count(KEEPALIVE_BODY) >= 2 and set(kinds[1:i_b]) == {KEEPALIVE_BODY}
    assert [k for k in kinds[i_b:] if k != KEEPALIVE_BODY] == [b"data: b\n\n", b"data: c\n\n"]


def test_ndjson_and_text_send_no_keepalive_bytes(server) -> None:
    async def endpoint(request):
        async def gen():
            await anyio.sleep(0.5)
            yield "x"

        return TokenStream(gen())

    srv = server(app_with(endpoint))
    assert collect(srv.port, "application/x-ndjson").body == b'"x"\n'
    assert collect(srv.port, "text/plain").body == b"x"


def test_keepalive_disabled(server) -> None:
    async def endpoint(request):
        async def gen():
            await anyio.sleep(0.5)
            yield "x"

        return TokenStream(gen(), keepalive=None)

    assert collect(server(app_with(endpoint)).port).body == b"data: x\n\n"


def test_streaming_response_gets_keepalive_only_at_line_boundaries(server) -> None:
    async def endpoint(request):
        async def body():
            yield "data: one\n\n"
            await anyio.sleep(0.4)
            yield "data: tw"  # a partial line: no comment may be injected here
            await anyio.sleep(0.4)
            yield "o\n"
            await anyio.sleep(0.4)  # between lines of one event: a comment line is fine
            yield "data: more\n\n"

        return StreamingResponse(body(), media_type="text/event-stream")

    r = collect(server(app_with(endpoint)).port)
    parser = SpecParser()
    parser.feed(r.body)
    assert [e.data for e in parser.events] == ["one", "two\nmore"]
    datas = [c.data for c in r.chunks]
    i_partial = datas.index(b"data: tw")
    assert datas[i_partial + 1] == b"o\n"  # nothing between the halves of a line
    assert b": keepalive\n\n" in datas[:i_partial]
    assert b": keepalive\n" in datas[i_partial + 2 :]


def _cpu_during(seconds: float) -> float:
    start = time.process_time()
    time.sleep(seconds)
    return time.process_time() - start


def test_guard_does_not_spin_while_a_send_is_blocked(server) -> None:
    async def endpoint(request):
        async def gen():
            while True:
                yield "z" * 4096

        return TokenStream(gen(), format="sse", keepalive=0.05, send_timeout=3.0)

    sends = Sends(app_with(endpoint))
    srv = server(sends)
    c = H1Client("127.0.0.1", srv.port, rcvbuf=4096)
    c.request("GET", "/")  # and never read: the server's sends block
    try:
        wait_for(sends.blocked, message="the server's sends never blocked")
        assert _cpu_during(1.0) < 0.3  # an idle wait, not a busy loop
    finally:
        c.abort()


def test_guard_does_not_spin_when_a_keepalive_cannot_be_written(server) -> None:
    async def endpoint(request):
        async def body():
            yield "data: partial"  # mid-line: no comment may be written for a while
            await anyio.sleep(1.5)
            yield " line\n\n"

        return StreamingResponse(body(), media_type="text/event-stream")

    srv = server(app_with(endpoint, keepalive=0.05))
    with H1Client("127.0.0.1", srv.port) as c:
        c.request("GET", "/")
        c.read_chunks(1, deadline=time.monotonic() + 10)  # "data: partial": the stream is mid-line
        cpu = _cpu_during(0.8)
        r = c.read_response(deadline=time.monotonic() + 10)
    assert cpu < 0.3
    assert r.body == b"data: partial line\n\n"
