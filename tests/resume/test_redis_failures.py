"""Redis going away under two workers behind nginx: killed, restarted, hung.

What must hold (docs/resume.md, "Failure modes"): the producing worker keeps serving
its own clients from memory; another worker answers a resume with 503, or ends a
tail it is serving with an ``event: error`` after ``patience`` seconds; every worker
stays healthy and nothing hangs; once Redis is back, streams are resumable on every
worker again (the producer copies its kept window to the fresh Redis)."""

from __future__ import annotations

import json
import threading
import time

from ..support.sse import sse_data as datas
from ..support.sse import sse_events
from ..support.waiting import wait_for
from .app import token
from .helpers import Read, read, told_to_retry

SSE = [("accept", "text/event-stream")]


def expected(n: int) -> list[str]:
    return [token(i) for i in range(n)] + ["[DONE]"]


def in_background(*args, **kwargs) -> tuple[Read, threading.Thread]:
    result = Read(None)

    def run() -> None:
        try:
            read(*args, into=result, **kwargs)
        except Exception as exc:
            result.events.append(f"client error: {exc!r}".encode())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return result, thread


def timed(fn):  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    value = fn()
    return value, time.monotonic() - t0


def test_redis_killed_mid_stream(cluster, own_redis) -> None:
    n = 60
    c = cluster(own_redis.url, patience=2.0, finish_retry=30.0)
    path = f"/chat?n={n}&interval=0.05&tag=killed"
    local, t_local = in_background(c.port, path, SSE)
    wait_for(lambda: len(local.events) >= 5, 10, message=c.diagnostics)
    producer = local.worker
    other = next(w for w in c.workers if w.name != producer)
    remote, t_remote = in_background(other.port, path, SSE + [("last-event-id", local.last_id)])
    wait_for(lambda: len(remote.events) >= 3, 10, message=c.diagnostics)
    assert remote.worker == other.name

    own_redis.kill()
    killed = time.monotonic()

    # The other worker ends its tail with an in-band error after its patience.
    t_remote.join(2.0 + 10)
    assert not t_remote.is_alive(), "the tail on the other worker hangs"
    assert time.monotonic() - killed < 2.0 + 8
    assert remote.complete
    error = sse_events(remote.events)[-1]
    assert error.type == "error" and "StoreUnavailable" in error.data, remote.events[-1]
    got = datas(remote.events[:-1])
    assert got == expected(n)[5 : 5 + len(got)]  # a correct prefix of the rest

    # Resumes on the other worker: 503, promptly (an EventSource is told to come back
    # instead: it would stop on a 503). New streams work on both workers.
    answer, took = timed(lambda: read(other.port, path, [("last-event-id", local.last_id)]))
    assert answer.response.status == 503 and took < 3.0 and answer.response.header_map["retry-after"]
    assert json.loads(b"".join(answer.events) or answer.response.body)["error"]["type"] == "store_unavailable"
    answer, took = timed(lambda: read(other.port, path, SSE + [("last-event-id", local.last_id)]))
    assert told_to_retry(answer) and took < 3.0
    for w in c.workers:
        fresh, took = timed(lambda w=w: read(w.port, "/chat?n=5&interval=0", SSE))
        assert fresh.response.status == 200 and datas(fresh.events) == expected(5) and took < 5.0
        health = read(w.port, "/health")
        assert health.response.status == 200

    # The producing worker's own client never noticed.
    t_local.join(15)
    assert local.complete and datas(local.events) == expected(n)

    # Redis comes back (empty): the finished stream's writer copies its window and end
    # there again, so the other worker can serve the resume once more.
    own_redis.start()
    sid = local.stream_id

    def resumed_elsewhere():
        r = read(other.port, path, SSE + [("last-event-id", f"{sid}.20")])
        assert r.response.status == 200, r.response  # a retry until it is back, never 204
        return None if told_to_retry(r) else r

    again = wait_for(resumed_elsewhere, 15, interval=0.3, message=c.diagnostics)
    assert datas(again.events) == expected(n)[20:]
    assert all(w.proc.poll() is None for w in c.workers)


def test_redis_restarted_mid_stream_is_ridden_out(cluster, own_redis) -> None:
    n = 60
    c = cluster(own_redis.url, patience=3.0)
    path = f"/chat?n={n}&interval=0.05&tag=restarted"
    local, t_local = in_background(c.port, path, SSE)
    wait_for(lambda: len(local.events) >= 5, 10, message=c.diagnostics)
    other = next(w for w in c.workers if w.name != local.worker)
    remote, t_remote = in_background(other.port, path, SSE + [("last-event-id", local.last_id)])
    wait_for(lambda: len(remote.events) >= 3, 10, message=c.diagnostics)

    own_redis.kill()
    own_redis.start()  # on the same port, with nothing in it

    t_local.join(20)
    t_remote.join(20)
    assert local.complete and datas(local.events) == expected(n)
    assert remote.complete and datas(remote.events) == expected(n)[5:], c.diagnostics()


def test_a_hung_redis_hangs_nothing(cluster, own_redis) -> None:
    n = 50
    c = cluster(own_redis.url, patience=2.0)
    path = f"/chat?n={n}&interval=0.05&tag=hung"
    local, t_local = in_background(c.port, path, SSE)
    wait_for(lambda: len(local.events) >= 5, 10, message=c.diagnostics)
    other = next(w for w in c.workers if w.name != local.worker)
    own_redis.pause()
    try:
        t0 = time.monotonic()
        for w in c.workers:
            health, took = timed(lambda w=w: read(w.port, "/health"))
            assert health.response.status == 200 and took < 1.0
        answer, took = timed(lambda: read(other.port, path, [("last-event-id", local.last_id)]))
        assert answer.response.status == 503 and took < 1.0 + 2.0  # the store's timeout, plus slack
        t_local.join(max(1.0, 8.0 - (time.monotonic() - t0)))
        assert local.complete and datas(local.events) == expected(n)
    finally:
        own_redis.resume()

    # After the hang: resumable everywhere again.
    def cross_worker_resume():
        first = read(c.port, "/chat?n=20&interval=0.02&tag=after", SSE, limit=4)
        elsewhere = next(w for w in c.workers if w.name != first.worker)
        rest = read(elsewhere.port, "/chat?n=20&interval=0.02&tag=after", SSE + [("last-event-id", first.last_id)])
        return (first, rest) if rest.response.status == 200 and not told_to_retry(rest) else None

    pair = wait_for(cross_worker_resume, 15, interval=0.3, message=c.diagnostics)
    first, rest = pair
    assert datas(first.events + rest.events) == expected(20)


def test_the_producing_worker_crashing(cluster, redis_server) -> None:
    n = 200
    c = cluster(redis_server.url, patience=2.0)
    path = f"/chat?n={n}&interval=0.05&tag=crash"
    local, _ = in_background(c.port, path, SSE)
    wait_for(lambda: len(local.events) >= 5, 10, message=c.diagnostics)
    producer = c.worker(local.worker)
    other = next(w for w in c.workers if w is not producer)
    cursor = local.last_id
    remote, t_remote = in_background(other.port, path, SSE + [("last-event-id", cursor)])
    wait_for(lambda: len(remote.events) >= 5, 10, message=c.diagnostics)

    producer.proc.kill()  # SIGKILL: no goodbye, the generator and its writer are gone
    killed = time.monotonic()
    t_remote.join(15)
    assert not t_remote.is_alive(), "the tail on the surviving worker hangs"
    # The producer's heartbeat expires (1.25 s here), then the consumer's patience (2 s).
    assert time.monotonic() - killed < 1.25 + 2.0 + 4.0
    error = sse_events(remote.events)[-1]
    assert error.type == "error" and "StoreUnavailable" in error.data, remote.events[-1]
    first = int(cursor.rsplit(".", 1)[1])
    got = datas(remote.events[:-1])
    assert got == expected(n)[first : first + len(got)]

    # A later resume replays what reached Redis, then ends the same way; the worker is fine.
    again = read(other.port, path, SSE + [("last-event-id", cursor)], timeout=15)
    assert again.response.status == 200 and again.complete
    replayed = datas(again.events[:-1])
    assert replayed == expected(n)[first : first + len(replayed)] and len(replayed) >= len(got)
    error = sse_events(again.events)[-1]
    assert error.type == "error" and "StoreUnavailable" in error.data, again.events[-1]
    assert read(other.port, "/health").response.status == 200
