"""MemoryStore bounds the whole store and expires on a timer.

* ``max_total_bytes`` bounds the events of all streams together; what goes first is
  documented: finished streams nobody reads, then events of running streams nobody
  reads, then events every attached client has read — never an attached client's
  unread events (that client's producer waits instead);
* ``max_streams`` never evicts a stream a client is reading;
* streams expire on a timer, one task per store, which ends when the store is empty,
  on ``aclose()``, or with the event loop.

Expiry logic runs on an injected clock (``expire()``); the timer itself on real time
with short TTLs, polled with a generous deadline."""

from __future__ import annotations

import asyncio
import gc

import anyio
import pytest

from asgi_stream.resume import Limits, MemoryStore, StreamMeta

from ..support.waiting import wait_for, wait_for_async

META = StreamMeta("sse", "text/event-stream", "text/event-stream", "GET", "/chat")


def sid(i: int) -> str:
    return f"{i:016d}"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def fill(writer, n: int, size: int, first: int = 1) -> list[bool]:
    return [writer.append(seq, bytes([65 + seq % 26]) * size) for seq in range(first, first + n)]


# ------------------------------------------------------------ expiry, injected clock
def test_finished_streams_expire_without_any_new_stream_opening() -> None:
    clock = Clock()
    store = MemoryStore(Limits(ttl=10.0, running_ttl=100.0), clock=clock)

    async def main() -> None:
        done = await store.open(sid(1), META)
        running = await store.open(sid(2), META)
        await fill(done, 3, 100)
        await fill(running, 3, 100)
        await done.finish("completed")
        assert store.expire() == pytest.approx(10.0)
        clock.now += 10.5
        assert store.expire() == pytest.approx(100.0 - 10.5)
        assert store.streams == 1 and store.total_bytes == 300
        assert await store.meta(sid(1)) is None and await store.meta(sid(2)) is not None
        clock.now += 90
        assert store.expire() is None and store.streams == 0 and store.total_bytes == 0
        assert running.evicted
        await store.aclose()

    anyio.run(main)


def test_a_stream_a_client_is_reading_does_not_expire_under_it() -> None:
    clock = Clock()
    store = MemoryStore(Limits(ttl=10.0), clock=clock)

    async def main() -> None:
        writer = await store.open(sid(1), META)
        await fill(writer, 3, 10)
        await writer.finish("completed")
        reader = store.read(sid(1), 0)
        assert (await reader.__anext__())[0] == 1
        clock.now += 60
        store.expire()
        assert store.streams == 1
        assert [seq async for seq, _ in reader] == [2, 3]  # the client reads to the end
        clock.now += 1.5
        store.expire()
        assert store.streams == 0
        await store.aclose()

    anyio.run(main)


# ------------------------------------------------------------ the timer
def sweepers() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "asgi-stream MemoryStore expiry"]


def test_streams_expire_on_a_timer_with_one_task_per_store_that_ends_when_the_store_is_empty() -> None:
    store = MemoryStore(Limits(ttl=0.05, running_ttl=30.0))

    async def main() -> None:
        writers = [await store.open(sid(i), META) for i in range(50)]
        assert len(sweepers()) == 1 and store.sweeping
        for w in writers:
            w.append(1, b"x")
            await w.finish("completed")
        # Nothing touches the store from here on: only its timer can drop them.
        await wait_for_async(lambda: store.streams == 0)
        await wait_for_async(lambda: not sweepers())
        assert not store.sweeping and store.total_bytes == 0
        # A later stream starts it again; a running TTL far away is slept through, and a
        # stream finishing meanwhile wakes the timer early.
        w = await store.open(sid(99), META)
        assert len(sweepers()) == 1
        await anyio.wait_all_tasks_blocked()  # the timer sleeps towards the far TTL
        await w.finish("completed")
        await wait_for_async(lambda: store.streams == 0)

    anyio.run(main)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_aclose_stops_the_timer_and_a_loop_that_ends_takes_it_along(backend: str) -> None:
    store = MemoryStore(Limits(ttl=3600.0))

    async def first() -> None:
        await store.open(sid(1), META)
        assert store.sweeping
        await store.aclose()
        await wait_for_async(lambda: not store.sweeping)
        await store.open(sid(2), META)
        assert store.sweeping  # the store stays usable
        # The loop ends here with the timer still waiting: the loop cancels it.

    anyio.run(first, backend=backend)
    gc.collect()
    assert store._sweeper is not None and store._sweeper.done, "the timer outlived its event loop"

    async def second() -> None:  # a new loop gets its own timer
        await store.open(sid(3), META)
        assert store.sweeping
        await store.aclose()

    anyio.run(second, backend=backend)


def test_the_timer_runs_in_a_real_server_and_ends_with_it() -> None:

    from starlette.applications import Starlette
    from starlette.routing import Route

    from asgi_stream import StreamMiddleware, TokenStream
    from conformance.clients import H1Client

    from ..support.servers import serve

    store = MemoryStore(Limits(ttl=0.1))

    async def endpoint(request):
        return TokenStream(iter(["a", "b"]), resumable=True, format="sse")

    app = Starlette(routes=[Route("/chat", endpoint)])
    app.add_middleware(StreamMiddleware, resume_store=store)
    with serve(app, "uvicorn") as srv:
        with H1Client("127.0.0.1", srv.port) as c:
            assert c.fetch("GET", "/chat").status == 200  # finished: expires in 0.1 s
        wait_for(lambda: store.streams == 0, message="the finished stream was not expired by the timer")
        with H1Client("127.0.0.1", srv.port) as c:  # one more, still kept when the server stops
            assert c.fetch("GET", "/chat").status == 200
        assert store.streams == 1
    assert store._sweeper is not None and store._sweeper.done, "the timer outlived the server"


# ------------------------------------------------------------ the store-wide byte bound
def test_finished_streams_nobody_reads_go_first_oldest_first() -> None:
    store = MemoryStore(Limits(max_bytes=10_000), max_total_bytes=5_000)

    async def main() -> None:
        finished = []
        for i in range(4):
            w = await store.open(sid(i), META)
            await fill(w, 10, 100)  # 1,000 bytes each
            await w.finish("completed")
            finished.append(w)
        live = await store.open(sid(9), META)
        reader = store.read(sid(9), 0)
        assert await fill(live, 25, 100) == [False] * 25  # 2,500 bytes: over the bound
        assert store.total_bytes <= 5_000
        assert await store.meta(sid(0)) is None and await store.meta(sid(1)) is None
        assert await store.meta(sid(2)) is not None and await store.meta(sid(3)) is not None
        assert [seq async for seq, _ in _take(reader, 25)] == list(range(1, 26))  # all kept
        await reader.aclose()
        await store.aclose()

    anyio.run(main)


def test_then_the_events_of_running_streams_nobody_reads_then_events_already_read() -> None:
    store = MemoryStore(Limits(max_bytes=100_000), max_total_bytes=8_000)

    async def main() -> None:
        detached = await store.open(sid(1), META)
        await fill(detached, 30, 100)  # 3,000 bytes nobody reads
        attached = await store.open(sid(2), META)
        reader = store.read(sid(2), 0)
        await fill(attached, 40, 100)  # 4,000 bytes, read below
        assert [seq async for seq, _ in _take(reader, 40)] == list(range(1, 41))
        other = await store.open(sid(3), META)
        other_reader = store.read(sid(3), 0)
        assert await fill(other, 15, 100) == [False] * 15  # 8,500 bytes > 8,000
        # The detached stream lost its oldest events (it stays known: a newer cursor tails).
        assert detached.first_kept() > 1 and store.streams == 3
        assert attached.first_kept() == 1  # not needed yet: the detached stream paid first
        assert store.total_bytes <= 8_000
        taken = [seq async for seq, _ in _take(other_reader, 15)]
        for seq in range(16, 76):  # 6,000 bytes more, read as they come
            assert other.append(seq, b"o" * 100) is False
            taken += [s async for s, _ in _take(other_reader, 1)]
            assert store.total_bytes <= 8_000
        assert detached.first_kept() == 31  # nothing left of the stream nobody reads
        assert attached.first_kept() > 1  # then what the attached clients had read went
        # Nothing anybody attached had not read was dropped.
        assert taken == list(range(1, 76))
        await reader.aclose()
        await other_reader.aclose()
        await store.aclose()

    anyio.run(main)


def test_past_the_bound_a_producer_waits_for_its_own_client_and_nothing_unread_is_lost() -> None:
    store = MemoryStore(Limits(max_bytes=1 << 20), max_total_bytes=10_000)

    async def main() -> None:
        writers = [await store.open(sid(i), META) for i in range(3)]
        readers = [store.read(sid(i), 0) for i in range(3)]
        got: list[list[int]] = [[], [], []]
        peak = 0

        async def produce(i: int) -> None:
            nonlocal peak
            for seq in range(1, 101):
                if writers[i].append(seq, b"x" * 500):
                    await writers[i].wait_room()
                peak = max(peak, store.total_bytes)
            await writers[i].finish("completed")

        async def consume(i: int) -> None:
            async for seq, _ in readers[i]:
                got[i].append(seq)
                await anyio.sleep(0)

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for i in range(3):
                    tg.start_soon(produce, i)
                    tg.start_soon(consume, i)
        assert got == [list(range(1, 101))] * 3
        # 3 × 100 × 500 = 150,000 bytes went through a 10,000-byte store: at most one
        # unread event per attached stream beyond the bound.
        assert peak <= 10_000 + 3 * 500
        await store.aclose()

    anyio.run(main)


def test_a_producer_waiting_for_room_is_released_when_its_client_leaves() -> None:
    store = MemoryStore(max_total_bytes=1_000)

    async def main() -> None:
        writer = await store.open(sid(1), META)
        reader = store.read(sid(1), 0)
        assert await fill(writer, 3, 400) == [False, False, True]
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.wait_room)
            await anyio.wait_all_tasks_blocked()
            await reader.aclose()
        assert store.total_bytes <= 1_000
        await store.aclose()

    anyio.run(main)


# ------------------------------------------------------------ the count bound
def test_max_streams_never_evicts_a_stream_a_client_is_reading() -> None:
    store = MemoryStore(max_streams=2)

    async def main() -> None:
        a = await store.open(sid(1), META)
        b = await store.open(sid(2), META)
        readers = [store.read(sid(1), 0), store.read(sid(2), 0)]
        await store.open(sid(3), META)  # both attached: the count goes over
        assert store.streams == 3
        a.append(1, b"a")
        b.append(1, b"b")
        assert [await r.__anext__() for r in readers] == [(1, b"a"), (1, b"b")]
        await readers[0].aclose()
        await store.open(sid(4), META)  # stream 1 (no client now) goes; 2 stays
        assert await store.meta(sid(1)) is None and await store.meta(sid(2)) is not None
        await readers[1].aclose()
        await store.aclose()

    anyio.run(main)


def test_bad_bounds_are_refused() -> None:
    for kwargs in ({"max_streams": 0}, {"max_total_bytes": -1}, {"max_total_bytes": "big"}, {"max_streams": True}):
        with pytest.raises(ValueError):
            MemoryStore(**kwargs)  # type: ignore[arg-type]


async def _take(reader, n):
    for _ in range(n):
        yield await reader.__anext__()
