"""A Redis that came back empty cannot tell an unknown stream from one its producer has
not copied back yet. During that time a resume must be told to come back, never told
the stream is gone: a 204 (or any non-200) ends an EventSource for good.

* the store raises StoreUnavailable (a retry) instead of answering "unknown", until
  ``recovery_window`` seconds after Redis came back empty (or this worker reached it
  again); after that, an unknown stream is unknown (204);
* over HTTP: ``503`` + ``Retry-After`` for other clients, and for an EventSource (a
  request accepting ``text/event-stream``) a ``200`` carrying only ``retry:`` — the one
  answer that makes every EventSource reconnect (measured: chromium and the npm
  ``eventsource`` package close on 503 exactly as on 204).

Real redis-server throughout (restarted empty: SIGKILL, then started on its port)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import anyio
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from asgi_stream import StreamMiddleware, TokenStream
from asgi_stream.resume import StoreUnavailable, StreamMeta
from conformance.clients import H1Client

from ..support.sse import parse
from ..support.waiting import wait_for
from .helpers import only_retry, read, told_to_retry
from .test_eventsource import CLIENT_JS, _node_eventsource
from .test_redis_failures import expected, in_background

redis_mod = pytest.importorskip("redis")
from asgi_stream.resume.redis import RedisStore  # noqa: E402

META = StreamMeta("sse", "text/event-stream", "text/event-stream", "GET", "/chat")
SSE = [("accept", "text/event-stream")]


def start_node(url: str, timeout_s: float) -> subprocess.Popen[str]:
    """The npm EventSource client, in the background; its stderr says "open N" as it goes."""
    node_dir = _node_eventsource()
    return subprocess.Popen(
        ["node", str(CLIENT_JS), str(node_dir), url, str(int(timeout_s * 1000))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def sid(i: int = 0) -> str:
    return f"recovery{i:08d}"


async def meta_or_retry(store: RedisStore, stream_id: str) -> StreamMeta | str | None:
    try:
        return await store.meta(stream_id)
    except StoreUnavailable:
        return "retry"


def test_after_an_empty_restart_a_stream_not_copied_back_yet_is_a_retry_not_unknown(own_redis, key_prefix) -> None:
    async def main() -> None:
        producer = RedisStore(own_redis.url, key_prefix=key_prefix, heartbeat=0.2, timeout=1.0)
        other = RedisStore(own_redis.url, key_prefix=key_prefix, heartbeat=0.2, timeout=1.0)
        writer = await producer.open(sid(1), META)
        for i in range(1, 6):
            writer.append(i, b"data: %d\n\n" % i)
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.run)
            with anyio.fail_after(10):
                while await meta_or_retry(other, sid(1)) != META:
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()  # the producer stops copying for now

        own_redis.kill()
        own_redis.start()  # empty
        t0 = time.monotonic()
        with anyio.fail_after(10):  # past the failed call and its back-off: Redis answers again
            while True:
                try:
                    await other.call(other.redis.ping)
                    break
                except StoreUnavailable:
                    await anyio.sleep(0.05)
        # Neither the stream that exists nor one that never did is "unknown" now.
        assert await meta_or_retry(other, sid(1)) == "retry"
        assert await meta_or_retry(other, sid(2)) == "retry"
        assert other.recovery_window == pytest.approx(2 * 0.2 + 2.0 + 1.0 + 0.02)

        async with anyio.create_task_group() as tg:  # the producer goes on: it repairs
            writer.append(6, b"data: 6\n\n")
            tg.start_soon(writer.run)
            with anyio.fail_after(10):
                while (got := await meta_or_retry(other, sid(1))) != META:
                    assert got == "retry", "answered unknown before the producer's repair"
                    await anyio.sleep(0.05)
            await writer.finish("completed")
        # A stream that never existed is unknown once the window has passed, not before.
        answers = []
        with anyio.fail_after(other.recovery_window + 10):
            while (got := await meta_or_retry(other, sid(2))) is not None:
                answers.append(got)
                await anyio.sleep(0.1)
        assert time.monotonic() - t0 >= other.recovery_window - 0.5
        assert set(answers) == {"retry"}
        await producer.aclose()
        await other.aclose()

    anyio.run(main)


def test_keys_vanishing_without_an_error_start_the_window_too(redis_server, key_prefix) -> None:
    """FLUSHALL-like loss (here: this prefix's keys deleted, marker included)."""
    client = redis_mod.Redis.from_url(redis_server.url)

    async def main() -> None:
        store = RedisStore(redis_server.url, key_prefix=key_prefix, heartbeat=0.2, timeout=1.0)
        assert await meta_or_retry(store, sid(3)) == "retry"  # a Redis nobody wrote to yet: the marker is new
        with anyio.fail_after(store.recovery_window + 10):
            while await meta_or_retry(store, sid(3)) == "retry":
                await anyio.sleep(0.1)
        assert await store.meta(sid(3)) is None  # settled: unknown is unknown
        for key in client.scan_iter(match=f"{key_prefix}*"):
            client.delete(key)
        assert await meta_or_retry(store, sid(3)) == "retry"
        await store.aclose()

    anyio.run(main)


# ------------------------------------------------------------ over HTTP
def app_on(redis_url: str, prefix: str) -> Starlette:
    store = RedisStore(redis_url, key_prefix=prefix, heartbeat=0.2, timeout=1.0)

    async def endpoint(request):
        return TokenStream(iter(["a"]), resumable=True)

    app = Starlette(routes=[Route("/chat", endpoint)])
    app.add_middleware(StreamMiddleware, resume_store=store)
    return app


def test_the_http_answers_while_redis_cannot_tell(server, redis_server, key_prefix) -> None:
    srv = server(app_on(redis_server.url, key_prefix))
    cursor = [("last-event-id", f"{sid(4)}.3")]
    with H1Client("127.0.0.1", srv.port) as c:
        es = c.fetch("GET", "/chat", SSE + cursor)
    assert es.status == 200 and es.header_map["content-type"].startswith("text/event-stream")
    assert only_retry(es.body), es.body  # reconnect, same cursor
    with H1Client("127.0.0.1", srv.port) as c:
        other = c.fetch("GET", "/chat", [("accept", "application/x-ndjson"), *cursor])
    assert other.status == 503 and int(other.header_map["retry-after"]) >= 1
    assert json.loads(other.body)["error"]["type"] == "store_unavailable"

    def settled():
        with H1Client("127.0.0.1", srv.port) as c:
            r = c.fetch("GET", "/chat", SSE + cursor)
        return r if r.status == 204 else None

    wait_for(settled, 20, interval=0.2, message="the unknown stream never got its 204")


def test_an_unreachable_store_tells_an_eventsource_to_come_back(server, own_redis, key_prefix) -> None:
    srv = server(app_on(own_redis.url, key_prefix))
    own_redis.kill()
    with H1Client("127.0.0.1", srv.port) as c:
        es = c.fetch("GET", "/chat", SSE + [("last-event-id", f"{sid(5)}.3")])
    assert es.status == 200 and parse(es.body).retry is not None, es.body
    with H1Client("127.0.0.1", srv.port) as c:
        other = c.fetch("GET", "/chat", [("last-event-id", f"{sid(5)}.3")])
    assert other.status == 503 and "retry-after" in other.header_map


def test_an_eventsource_resuming_across_an_empty_restart_gets_the_rest(cluster, own_redis) -> None:
    """The producing worker is stopped (SIGSTOP) while Redis restarts empty, so it cannot
    copy the stream back yet; an EventSource resumes on the other worker meanwhile: it
    is told to come back (its first connection opens and ends), the producer goes on,
    and the EventSource gets exactly the rest, then stops on the 204 after the end."""
    n = 40
    c = cluster(own_redis.url, patience=10.0, timeout=3.0)  # recovery window: 2*0.25 + 2 + 3 s
    path = f"/chat?n={n}&interval=0.05&tag=recovery"
    local, _ = in_background(c.port, path, SSE)
    wait_for(lambda: len(local.events) >= 5, 10, message=c.diagnostics)
    producer = c.worker(local.worker)
    other = next(w for w in c.workers if w is not producer)
    cursor = local.last_id
    seq = int(cursor.rsplit(".", 1)[1])
    url = f"http://127.0.0.1:{other.port}{path}&last_event_id={cursor}"

    os.kill(producer.proc.pid, signal.SIGSTOP)
    try:
        own_redis.kill()
        own_redis.start()
        first = read(other.port, f"{path}&last_event_id={cursor}", SSE)
        assert first.response.status == 200, "answered as if the stream were gone"
        assert told_to_retry(first), first.events
        node = start_node(url, 40)
        line = node.stderr.readline()  # blocks until its first connection opened (or it exited)
        assert line.startswith("open"), (line, node.communicate(timeout=30))
    finally:
        os.kill(producer.proc.pid, signal.SIGCONT)
    out, err = node.communicate(timeout=60)
    assert node.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["reason"] == "closed", (result, c.diagnostics())
    assert [m["data"] for m in result["messages"]] == expected(n)[seq:]
    assert result["opens"] >= 2
    assert result["errors"][-1]["code"] == 204  # it stopped on the end, not before
