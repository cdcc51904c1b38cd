"""Nothing left behind: after streams produced on one in-process server and resumed on
another (RedisStore), with clients dropping on the way, both servers are back to the
tasks they had before, and the generators' finally blocks ran."""

from __future__ import annotations

import asyncio

import anyio
from starlette.applications import Starlette
from starlette.routing import Route

from asgi_stream import StreamMiddleware, TokenStream
from asgi_stream.resume.redis import RedisStore

from ..support.waiting import wait_for
from .helpers import read

SSE = [("accept", "text/event-stream")]


def make_app(redis_url: str, prefix: str, finals: list[str], records: list | None = None) -> Starlette:
    async def endpoint(request):
        async def gen():
            try:
                for i in range(20):
                    yield f"t{i}"
                    await anyio.sleep(0.02)
            finally:
                finals.append("done")

        return TokenStream(gen(), resumable=True, end="[DONE]")

    app = Starlette(routes=[Route("/chat", endpoint)])
    app.add_middleware(
        StreamMiddleware,
        resume_store=RedisStore(redis_url, key_prefix=prefix, heartbeat=0.2, flush_interval=0.01),
        resume_grace=0.5,
        on_end=records.append if records is not None else None,
    )
    return app


def tasks(srv) -> int:
    future = asyncio.run_coroutine_threadsafe(_count(), srv.loop)
    return future.result(5)


async def _count() -> int:
    return len(asyncio.all_tasks())


def test_no_task_outlives_its_streams(server, redis_server, key_prefix) -> None:
    finals: list[str] = []
    records: list = []
    a = server(make_app(redis_server.url, key_prefix, finals, records))
    b = server(make_app(redis_server.url, key_prefix, finals, records))
    read(a.port, "/chat", SSE)  # warm-up: connections to Redis exist from here on
    read(b.port, "/chat", SSE)
    wait_for(lambda: len(records) == 2, 10, message="the warm-up streams' records")  # their last act
    base_a, base_b = tasks(a), tasks(b)

    for _ in range(3):
        first = read(a.port, "/chat", SSE, limit=3)  # dropped
        rest = read(b.port, "/chat", SSE + [("last-event-id", first.last_id)], limit=5)  # dropped too
        assert rest.response.status == 200
    abandoned = read(a.port, "/chat", SSE, limit=2)  # never comes back: cancelled after the grace
    assert abandoned.events
    finished = read(a.port, "/chat", SSE)
    end = read(b.port, "/chat", SSE + [("last-event-id", finished.last_id)])
    assert end.response.status == 204

    wait_for(lambda: len(finals) == 2 + 5, 10, message=lambda: finals)
    wait_for(
        lambda: tasks(a) <= base_a and tasks(b) <= base_b, 10, message=lambda: (tasks(a), base_a, tasks(b), base_b)
    )
