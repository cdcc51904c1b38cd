"""Edges of the resume path on one in-process server: a generator that never awaits,
and a reconnect after the stream's last event (what every EventSource does)."""

from __future__ import annotations

import anyio.lowlevel
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from asgi_stream import StreamMiddleware, TokenStream
from asgi_stream.resume import Limits, MemoryStore

from ..support.sse import sse_data
from .helpers import read

SSE = [("accept", "text/event-stream")]


def make_app(store, n: int, *, awaits: bool, interval: float = 0.0) -> Starlette:
    async def endpoint(request):
        async def gen():
            for i in range(n):
                yield f"t{i}"
                if interval:
                    await anyio.sleep(interval)
                elif awaits:
                    await anyio.lowlevel.checkpoint()

        return TokenStream(gen(), resumable=True, end="[DONE]")

    app = Starlette(routes=[Route("/chat", endpoint)])
    app.add_middleware(StreamMiddleware, resume_store=store, resume_grace=5.0)
    return app


def test_a_generator_that_never_awaits_does_not_outrun_its_first_client(server) -> None:
    # 20,000 events and a window of 5,000: the producer must let the client's consumer
    # run while it produces, or the consumer starts behind the window (a 500).
    srv = server(make_app(MemoryStore(Limits(max_events=5_000)), 20_000, awaits=False))
    got = read(srv.port, "/chat", SSE)
    assert got.response.status == 200 and got.complete
    assert len(got.events) == 20_001
    assert got.messages[-1].data == "[DONE]"


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_reconnecting_after_the_last_event_gets_204(server, store, request) -> None:
    if store == "redis":
        from asgi_stream.resume.redis import RedisStore

        redis_server = request.getfixturevalue("redis_server")
        replay_store = RedisStore(redis_server.url, key_prefix=request.getfixturevalue("key_prefix"))
    else:
        replay_store = MemoryStore()
    srv = server(make_app(replay_store, 5, awaits=True))
    whole = read(srv.port, "/chat", SSE)
    assert len(whole.events) == 6
    end = read(srv.port, "/chat", SSE + [("last-event-id", whole.last_id)])
    assert end.response.status == 204 and end.events == []
    before_end = read(srv.port, "/chat", SSE + [("last-event-id", f"{whole.stream_id}.5")])
    assert before_end.response.status == 200 and before_end.events == whole.events[5:]


@pytest.mark.parametrize("kind", ["uvicorn", "hypercorn", "hypercorn-trio"])
def test_memory_store_resumes_live_on_every_server(server, kind) -> None:
    srv = server(make_app(MemoryStore(), 30, awaits=True, interval=0.02), kind)
    first = read(srv.port, "/chat", SSE, limit=5)  # then the client drops
    rest = read(srv.port, "/chat", SSE + [("last-event-id", first.last_id)])
    assert rest.response.status == 200 and rest.complete
    assert sse_data(first.events + rest.events) == [f"t{i}" for i in range(30)] + ["[DONE]"]
