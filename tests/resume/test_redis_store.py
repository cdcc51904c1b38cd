"""RedisStore against a real redis-server: replay and live tail from another "worker"
(a second store on the same Redis), packing, bounds, TTLs, unknown ids, gaps,
consumer heartbeats, and Redis going away."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import pytest
import redis

from asgi_stream.resume import Limits, ResumeGap, StoreUnavailable, StreamMeta, StreamNotFound
from asgi_stream.resume.redis import RedisStore

from ..support.waiting import wait_for_async

META = StreamMeta("sse", "text/event-stream", "text/event-stream; charset=utf-8", "GET", "/chat")
SID = "S" * 15


def ev(i: int) -> bytes:
    return f"data: event {i}\n\n".encode()


def sid(n: int = 0) -> str:
    return f"{SID}{n}"


def in_redis(url: str, key_prefix: str, stream_id: str, seq: int) -> Callable[[], bool]:
    """Redis holds the stream's events up to ``seq``: the writer has flushed them."""
    client = redis.Redis.from_url(url)
    key = f"{key_prefix}{{{stream_id}}}:e"

    def flushed() -> bool:
        last = client.xrevrange(key, count=1)
        return bool(last) and int(last[0][0].split(b"-")[0]) >= seq

    return flushed


def attached(url: str, key_prefix: str, stream_id: str) -> Callable[[], bool]:
    """A consumer on some worker has announced itself in Redis (its heartbeat key)."""
    client = redis.Redis.from_url(url)
    key = f"{key_prefix}{{{stream_id}}}:c"
    return lambda: bool(client.exists(key))


async def collect(store: RedisStore, stream_id: str, after: int, limit: float = 10.0) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    with anyio.fail_after(limit):
        async for item in store.read(stream_id, after):
            out.append(item)
    return out


def test_another_worker_replays_then_tails_exactly_once(redis_server, key_prefix) -> None:
    async def main() -> None:
        producer = RedisStore(redis_server.url, key_prefix=key_prefix, heartbeat=0.2)
        other = RedisStore(redis_server.url, key_prefix=key_prefix, heartbeat=0.2)
        got: list[tuple[int, bytes]] = []
        async with anyio.create_task_group() as tg:
            writer = await producer.open(sid(), META)
            tg.start_soon(writer.run)
            for i in range(1, 11):
                writer.append(i, ev(i))
            await wait_for_async(in_redis(redis_server.url, key_prefix, sid(), 10))  # the other replays these first

            assert await other.meta(sid()) == META

            async def consume() -> None:
                got.extend(await collect(other, sid(), 3))

            tg.start_soon(consume)
            for i in range(11, 31):
                writer.append(i, ev(i))
                await anyio.sleep(0.01)
            await writer.finish("completed")
        assert got == [(i, ev(i)) for i in range(4, 31)]
        # finished: a late reader gets the rest and the end, at once
        assert await collect(other, sid(), 28, limit=2.0) == [(29, ev(29)), (30, ev(30))]
        assert await collect(other, sid(), 30, limit=2.0) == []
        await producer.aclose()
        await other.aclose()

    anyio.run(main)


def test_events_produced_during_a_round_trip_share_one_entry(redis_server, key_prefix) -> None:
    client = redis.Redis.from_url(redis_server.url)

    async def main() -> None:
        store = RedisStore(redis_server.url, key_prefix=key_prefix)
        async with anyio.create_task_group() as tg:
            writer = await store.open(sid(), META)
            tg.start_soon(writer.run)
            for i in range(1, 1001):  # no await in between: one batch
                writer.append(i, ev(i))
            await writer.finish("completed")
        await store.aclose()

    anyio.run(main)
    entries = client.xrange(f"{key_prefix}{{{sid()}}}:e")
    assert [e[0] for e in entries] == [b"1000-0", b"1000-1"]
    assert entries[0][1][b"f"] == b"1" and entries[0][1][b"d"] == b"".join(ev(i) for i in range(1, 1001))
    assert entries[1][1] == {b"end": b"completed"}


@pytest.mark.parametrize("interval", [0.0, 0.25])
def test_flush_interval_bounds_the_round_trips(redis_server, key_prefix, interval) -> None:
    client = redis.Redis.from_url(redis_server.url)

    async def main() -> None:
        store = RedisStore(redis_server.url, key_prefix=key_prefix, flush_interval=interval)
        async with anyio.create_task_group() as tg:
            writer = await store.open(sid(), META)
            tg.start_soon(writer.run)
            for i in range(1, 51):  # one event every 20 ms, for a second
                writer.append(i, ev(i))
                await anyio.sleep(0.02)
            await writer.finish("completed")
        await store.aclose()

    anyio.run(main)
    entries = client.xlen(f"{key_prefix}{{{sid()}}}:e") - 1  # the end marker aside
    if interval:
        assert entries <= 1.0 / interval + 2  # ~4 batches, plus the last one at finish
    else:
        assert entries >= 25  # about one per event: nothing holds them back


def test_bounds_trim_redis_like_memory_and_old_cursors_get_a_gap(redis_server, key_prefix) -> None:
    client = redis.Redis.from_url(redis_server.url)

    async def main() -> None:
        limits = Limits(max_events=5, max_bytes=10_000)
        producer = RedisStore(redis_server.url, key_prefix=key_prefix, limits=limits)
        other = RedisStore(redis_server.url, key_prefix=key_prefix, limits=limits)
        async with anyio.create_task_group() as tg:
            writer = await producer.open(sid(), META)
            tg.start_soon(writer.run)
            for i in range(1, 41):
                writer.append(i, ev(i))
                await anyio.sleep(0.005)  # many round trips
            await writer.finish("completed")
        kept = client.xrange(f"{key_prefix}{{{sid()}}}:e")
        first_kept = int(kept[0][1][b"f"])
        assert len(kept) <= 7 and first_kept >= 30  # the last five (+ their batch) and the end
        with pytest.raises(ResumeGap):
            await collect(other, sid(), 2)
        assert await collect(other, sid(), 35) == [(i, ev(i)) for i in range(36, 41)]
        # memory on the producing worker answers the same
        with pytest.raises(ResumeGap):
            await collect(producer, sid(), 2)
        await producer.aclose()
        await other.aclose()

    anyio.run(main)


def test_byte_bound_applies_to_redis_too(redis_server, key_prefix) -> None:
    async def main() -> None:
        limits = Limits(max_events=1000, max_bytes=40 * len(ev(10)))
        producer = RedisStore(redis_server.url, key_prefix=key_prefix, limits=limits)
        other = RedisStore(redis_server.url, key_prefix=key_prefix, limits=limits)
        async with anyio.create_task_group() as tg:
            writer = await producer.open(sid(), META)
            tg.start_soon(writer.run)
            for i in range(10, 110):
                writer.append(i - 9, ev(i))
                await anyio.sleep(0.002)
            await writer.finish("completed")
        with pytest.raises(ResumeGap):
            await collect(other, sid(), 10)
        tail = await collect(other, sid(), 80)
        assert [s for s, _ in tail] == list(range(81, 101))
        await producer.aclose()
        await other.aclose()

    anyio.run(main)


def test_ttls_running_then_finished_then_gone(redis_server, settled) -> None:
    key_prefix = settled
    client = redis.Redis.from_url(redis_server.url)
    meta_key, events_key = f"{key_prefix}{{{sid()}}}:m", f"{key_prefix}{{{sid()}}}:e"

    async def main() -> None:
        limits = Limits(ttl=1.0, running_ttl=60.0)
        producer = RedisStore(redis_server.url, key_prefix=key_prefix, limits=limits)
        other = RedisStore(redis_server.url, key_prefix=key_prefix, limits=limits)
        async with anyio.create_task_group() as tg:
            writer = await producer.open(sid(), META)
            tg.start_soon(writer.run)
            writer.append(1, ev(1))
            await wait_for_async(in_redis(redis_server.url, key_prefix, sid(), 1))
            assert 50_000 < client.pttl(meta_key) <= 60_000
            assert 50_000 < client.pttl(events_key) <= 60_000
            await writer.finish("completed")
        assert 0 < client.pttl(meta_key) <= 1000 and 0 < client.pttl(events_key) <= 1000
        assert client.hget(meta_key, "state") == b"done"
        await wait_for_async(lambda: not client.exists(meta_key, events_key), message="the keys outlived their TTL")
        assert await other.meta(sid()) is None
        with pytest.raises(StreamNotFound):
            await collect(other, sid(), 0)
        await producer.aclose()
        await other.aclose()

    anyio.run(main)


def test_a_stream_evicted_from_the_producers_memory_goes_on_in_redis(redis_server, key_prefix) -> None:
    async def main() -> None:
        producer = RedisStore(redis_server.url, key_prefix=key_prefix, max_streams=1)
        other = RedisStore(redis_server.url, key_prefix=key_prefix)
        async with anyio.create_task_group() as tg:
            writer = await producer.open(sid(1), META)
            tg.start_soon(writer.run)
            for i in range(1, 11):
                writer.append(i, ev(i))
            await wait_for_async(in_redis(redis_server.url, key_prefix, sid(1), 10))
            await producer.open(sid(2), META)  # evicts the running stream from memory
            assert not producer.local.holds(sid(1))
            for i in range(11, 21):
                writer.append(i, ev(i))
                await anyio.sleep(0.01)
            await writer.finish("completed")
        expected = [(i, ev(i)) for i in range(1, 21)]
        assert await collect(other, sid(1), 0) == expected
        assert await collect(producer, sid(1), 0) == expected  # this worker now reads Redis too
        await producer.aclose()
        await other.aclose()

    anyio.run(main)


def test_unknown_stream(redis_server, settled) -> None:
    key_prefix = settled

    async def main() -> None:
        store = RedisStore(redis_server.url, key_prefix=key_prefix)
        assert await store.meta(sid(7)) is None
        with pytest.raises(StreamNotFound):
            await collect(store, sid(7), 0)
        await store.aclose()

    anyio.run(main)


def test_a_cursor_past_the_end_of_a_finished_stream_ends_at_once(redis_server, key_prefix) -> None:
    async def main() -> None:
        producer = RedisStore(redis_server.url, key_prefix=key_prefix, heartbeat=0.2)
        other = RedisStore(redis_server.url, key_prefix=key_prefix, heartbeat=0.2)
        async with anyio.create_task_group() as tg:
            writer = await producer.open(sid(), META)
            tg.start_soon(writer.run)
            writer.append(1, ev(1))
            await writer.finish("completed")
        assert await collect(other, sid(), 99, limit=3.0) == []
        await producer.aclose()
        await other.aclose()

    anyio.run(main)


def test_a_consumer_on_another_worker_keeps_the_producer_alive(redis_server, key_prefix) -> None:
    grace, heartbeat = 0.6, 0.15

    async def main() -> None:
        producer = RedisStore(redis_server.url, key_prefix=key_prefix, heartbeat=heartbeat)
        other = RedisStore(redis_server.url, key_prefix=key_prefix, heartbeat=heartbeat)
        writer = await producer.open(sid(), META)
        abandoned_at: list[float] = []
        left_at: list[float] = []

        async def watch() -> None:
            await writer.wait_abandoned(grace)
            abandoned_at.append(time.monotonic())

        async def remote_consumer() -> None:
            with anyio.move_on_after(2.0):  # attached for 2 s, over three graces
                async for _ in other.read(sid(), 0):
                    pass
            left_at.append(time.monotonic())

        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.run)
            tg.start_soon(remote_consumer)
            await wait_for_async(attached(redis_server.url, key_prefix, sid()))
            tg.start_soon(watch)
            for i in range(1, 100):
                writer.append(i, ev(i))
                if abandoned_at:
                    break
                await anyio.sleep(0.05)
            await writer.finish("cancelled")
        assert left_at and abandoned_at
        waited = abandoned_at[0] - left_at[0]
        assert grace <= waited + 0.05 and waited < grace + heartbeat + 1.0, waited
        await producer.aclose()
        await other.aclose()

    anyio.run(main)


def test_no_consumer_anywhere_is_abandoned_after_the_grace(redis_server, key_prefix) -> None:
    async def main() -> None:
        store = RedisStore(redis_server.url, key_prefix=key_prefix, heartbeat=0.1)
        writer = await store.open(sid(), META)
        t0 = time.monotonic()
        with anyio.fail_after(5):
            await writer.wait_abandoned(0.4)
        waited = time.monotonic() - t0
        assert 0.4 <= waited < 1.5
        await writer.finish("cancelled")
        await store.aclose()

    anyio.run(main)


def test_a_restarted_redis_gets_the_kept_window_again(own_redis, key_prefix) -> None:
    async def main() -> None:
        producer = RedisStore(own_redis.url, key_prefix=key_prefix, heartbeat=0.1, timeout=0.5)
        other = RedisStore(own_redis.url, key_prefix=key_prefix, heartbeat=0.1, timeout=0.5)
        got: list[tuple[int, bytes]] = []
        async with anyio.create_task_group() as tg:
            writer = await producer.open(sid(), META)
            tg.start_soon(writer.run)
            for i in range(1, 11):
                writer.append(i, ev(i))
            await wait_for_async(in_redis(own_redis.url, key_prefix, sid(), 10))
            await anyio.to_thread.run_sync(own_redis.kill)
            for i in range(11, 21):  # produced while Redis is gone
                writer.append(i, ev(i))
                await anyio.sleep(0.01)
            await anyio.to_thread.run_sync(own_redis.start)  # empty: its data died with it
            for i in range(21, 31):
                writer.append(i, ev(i))
                await anyio.sleep(0.05)

            async def consume() -> None:
                got.extend(await collect(other, sid(), 4))

            tg.start_soon(consume)
            await wait_for_async(attached(own_redis.url, key_prefix, sid()))  # tailing live
            await writer.finish("completed")
        assert got == [(i, ev(i)) for i in range(5, 31)]
        await producer.aclose()
        await other.aclose()

    anyio.run(main)


def test_a_restart_between_two_round_trips_is_noticed(own_redis, key_prefix) -> None:
    # No call fails while Redis is away (the writer is idle), and the client reconnects
    # silently: the writer must still see that Redis lost the stream and copy it again.
    async def main() -> None:
        producer = RedisStore(own_redis.url, key_prefix=key_prefix, heartbeat=30.0)
        other = RedisStore(own_redis.url, key_prefix=key_prefix, heartbeat=0.2)
        async with anyio.create_task_group() as tg:
            writer = await producer.open(sid(), META)
            tg.start_soon(writer.run)
            for i in range(1, 11):
                writer.append(i, ev(i))
            await wait_for_async(in_redis(own_redis.url, key_prefix, sid(), 10))
            await anyio.to_thread.run_sync(own_redis.kill)
            await anyio.to_thread.run_sync(own_redis.start)
            for i in range(11, 21):
                writer.append(i, ev(i))
                await anyio.sleep(0.01)
            await writer.finish("completed")
            ended = redis.Redis.from_url(own_redis.url)
            await wait_for_async(  # copied again, end included
                lambda: ended.hget(f"{key_prefix}{{{sid()}}}:m", "state") == b"done", message="never copied again"
            )
        assert await other.meta(sid()) == META
        assert await collect(other, sid(), 0) == [(i, ev(i)) for i in range(1, 21)]
        await producer.aclose()
        await other.aclose()

    anyio.run(main)


@pytest.mark.parametrize("when", ["running", "at-the-end"])
def test_a_redis_that_forgot_the_stream_gets_it_again(redis_server, key_prefix, when, caplog) -> None:
    # No error at all: the keys just vanish (FLUSHALL here; maxmemory eviction, a
    # failover to an empty replica alike). The next round trip notices.
    client = redis.Redis.from_url(redis_server.url)

    async def main() -> None:
        producer = RedisStore(redis_server.url, key_prefix=key_prefix, heartbeat=0.2)
        other = RedisStore(redis_server.url, key_prefix=key_prefix, heartbeat=0.2)
        async with anyio.create_task_group() as tg:
            writer = await producer.open(sid(), META)
            tg.start_soon(writer.run)
            for i in range(1, 11):
                writer.append(i, ev(i))
            await wait_for_async(in_redis(redis_server.url, key_prefix, sid(), 10))
            for key in client.scan_iter(match=f"{key_prefix}*"):
                client.delete(key)
            if when == "running":
                for i in range(11, 21):
                    writer.append(i, ev(i))
                    await anyio.sleep(0.01)
            else:
                for i in range(11, 21):
                    writer.append(i, ev(i))
            await writer.finish("completed")
            with anyio.fail_after(5):  # until the writer copied it again, end included
                while await other.meta(sid()) != META or client.hget(f"{key_prefix}{{{sid()}}}:m", "state") != b"done":
                    await anyio.sleep(0.05)
        assert await collect(other, sid(), 0) == [(i, ev(i)) for i in range(1, 21)]
        await producer.aclose()
        await other.aclose()

    anyio.run(main)
    assert "Redis lost stream" in caplog.text


def test_an_unreachable_redis_is_a_prompt_store_unavailable(own_redis, key_prefix) -> None:
    async def main() -> None:
        own_redis.command(b"SET", f"{key_prefix}settled".encode(), b"1")
        store = RedisStore(own_redis.url, key_prefix=key_prefix, timeout=0.5, heartbeat=0.1, patience=0.5)
        assert await store.meta(sid()) is None
        await anyio.to_thread.run_sync(own_redis.pause)  # hangs: no answer, no error
        try:
            t0 = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await store.meta(sid())
            assert time.monotonic() - t0 < 2.0
            with pytest.raises(StoreUnavailable):  # backing off: at once
                await store.meta(sid())
            # a stream opened now still works locally
            with anyio.fail_after(3):
                writer = await store.open(sid(1), META)
                writer.append(1, ev(1))
                await writer.finish("completed")
                assert await collect(store, sid(1), 0) == [(1, ev(1))]
        finally:
            await anyio.to_thread.run_sync(own_redis.resume)
        await wait_for_async(lambda: store.available, message="still backing off")
        # Reachable again: for recovery_window an unknown stream may be one not copied
        # back yet (a retry), then it is unknown.
        with anyio.fail_after(store.recovery_window + 5):
            while True:
                try:
                    assert await store.meta(sid()) is None
                    break
                except StoreUnavailable:
                    await anyio.sleep(0.1)
        await store.aclose()

    anyio.run(main)


def test_bad_arguments_are_clear_errors() -> None:
    import redis.asyncio

    with pytest.raises(ValueError, match="timeout"):
        RedisStore("redis://127.0.0.1:1", timeout=0)
    with pytest.raises(ValueError, match="heartbeat"):
        RedisStore("redis://127.0.0.1:1", heartbeat=-1)
    with pytest.raises(ValueError, match="decode_responses"):
        RedisStore(redis.asyncio.Redis(port=1, decode_responses=True))
    with pytest.raises(TypeError, match="redis://"):
        RedisStore(6379)


def test_a_client_given_by_the_application_is_used_and_left_open(redis_server, key_prefix) -> None:
    import redis.asyncio

    async def main() -> None:
        client = redis.asyncio.Redis.from_url(redis_server.url)
        store = RedisStore(client, key_prefix=key_prefix)
        async with anyio.create_task_group() as tg:
            writer = await store.open(sid(), META)
            tg.start_soon(writer.run)
            writer.append(1, ev(1))
            await writer.finish("completed")
        await store.aclose()
        assert await client.hget(f"{key_prefix}{{{sid()}}}:m", "state") == b"done"  # still open
        await client.aclose()

    anyio.run(main)
