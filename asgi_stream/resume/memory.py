"""MemoryStore: the default replay store, in this process, on one event loop.

Bounded three ways: per stream (``limits``: events and bytes), in bytes for the whole
store (``max_total_bytes``) and in number of streams (``max_streams``). What goes first
when a bound is hit, in this order:

1. finished streams no client is reading, oldest first (a later resume gets 204);
2. the events of running streams no client is reading (a later resume gets 410 for a
   cursor before what is kept, the live tail for a newer one);
3. events every attached client has already read (kept only for later resumes);
4. never an event an attached client has not read: the producer waits for that client.

Streams expire on a timer: one task per store (not per stream), running only while the
store holds streams, stopped by :meth:`MemoryStore.aclose` or with the event loop.
"""

from __future__ import annotations

import functools
import heapq
import math
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable

import anyio

from ._background import BackgroundTask
from .store import Limits, ReplayStore, ResumeGap, StreamMeta, StreamNotFound, Writer

#: first_seq of an evicted stream: every cursor is before its kept window.
_EVICTED = 1 << 62
#: A seq no reader reaches.
_NEVER = 1 << 63
#: Seconds between looks at an expired stream that a client is still reading.
_RECHECK = 1.0


class _Stream:
    __slots__ = (
        "_attach",
        "_changed",
        "_room",
        "done",
        "events",
        "expires",
        "first_seq",
        "last_seq",
        "meta",
        "nbytes",
        "outcome",
        "owner",
        "readers",
        "room_at",
        "sid",
        "start",
    )

    def __init__(self, owner: MemoryStore, sid: str, meta: StreamMeta, expires: float) -> None:
        #: The store while it holds the stream (None once dropped); it counts our bytes.
        self.owner: MemoryStore | None = owner
        self.sid = sid
        self.meta = meta
        #: Kept events are events[start:]; events[start] has sequence number first_seq.
        self.events: list[bytes] = []
        self.start = 0
        self.first_seq = 1
        #: The seq of the newest event appended (kept or not).
        self.last_seq = 0
        self.nbytes = 0
        self.done = False
        self.outcome = ""
        self.expires = expires
        #: The attached consumers: their unread events are never dropped.
        self.readers: list[_Tail] = []
        #: The producer waits for room until a reader has taken this seq (_NEVER: no one waits).
        self.room_at = _NEVER
        self._changed: anyio.Event | None = None
        self._attach: anyio.Event | None = None
        self._room: anyio.Event | None = None

    @property
    def consumers(self) -> int:
        return len(self.readers)

    def notify(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    async def changed(self) -> None:
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()

    def attach_changed(self) -> None:
        event, self._attach = self._attach, None
        if event is not None:
            event.set()

    async def wait_attach_change(self) -> None:
        if self._attach is None:
            self._attach = anyio.Event()
        await self._attach.wait()

    # ------------------------------------------------------------ bounds
    def taken(self) -> int:
        """The newest seq every attached reader has taken (all of them when none is attached)."""
        readers = self.readers
        if not readers:
            return self.last_seq
        if len(readers) == 1:
            return readers[0].after
        return min(r.after for r in readers)

    def _pop_oldest(self) -> None:
        events = self.events
        size = len(events[self.start])
        events[self.start] = b""
        self.start += 1
        self.first_seq += 1
        self.nbytes -= size
        if self.owner is not None:
            self.owner._total -= size

    def _compact(self) -> None:
        if self.start > 1024 and self.start * 2 > len(self.events):
            del self.events[: self.start]
            self.start = 0

    def trim(self, limits: Limits) -> bool:
        """Drop the oldest events beyond the stream's bounds that no attached reader still
        needs. True when it stays over them: a reader is behind, the producer waits."""
        kept = len(self.events) - self.start
        oldest = self.last_seq - kept + 1  # by count: holds after an eviction too
        needed = self.taken() + 1
        while kept > limits.max_events or (self.nbytes > limits.max_bytes and kept > 1):
            if oldest >= needed:
                return True
            self._pop_oldest()
            kept -= 1
            oldest += 1
        self._compact()
        return False

    def drop_taken(self, enough: Callable[[], bool]) -> None:
        """Drop the oldest events every attached reader has taken (all of them when none
        is attached), until ``enough()``: relief for the store-wide byte bound."""
        kept = len(self.events) - self.start
        oldest = self.last_seq - kept + 1
        taken = self.taken()
        while kept and oldest <= taken and not enough():
            self._pop_oldest()
            kept -= 1
            oldest += 1
        self._compact()

    def unread(self) -> bool:
        """Whether an attached reader has events left to take."""
        return bool(self.readers) and self.taken() < self.last_seq

    def low_water(self, limits: Limits) -> int:
        """The seq every reader must have taken so that trimming brings the stream down to
        three quarters of its bounds: the producer then goes on for a while without waking
        at every event."""
        events, i = self.events, self.start
        kept = len(events) - i
        nbytes = self.nbytes
        max_events = limits.max_events - limits.max_events // 4
        max_bytes = limits.max_bytes - limits.max_bytes // 4
        seq = self.last_seq - kept  # the seq before events[i]
        while kept > 1 and (kept > max_events or nbytes > max_bytes):
            nbytes -= len(events[i])
            i += 1
            kept -= 1
            seq += 1
        return seq

    def wake_room(self) -> None:
        self.room_at = _NEVER
        room, self._room = self._room, None
        if room is not None:
            room.set()

    async def wait_room(self) -> None:
        if self._room is None:
            self._room = anyio.Event()
        await self._room.wait()


class _Tail:
    """One consumer of a stream: the kept events after its cursor, then the live ones,
    until the stream finishes. Attached from creation until closed (or at its end):
    while attached, the events it has not taken are never dropped."""

    __slots__ = ("after", "stream")

    def __init__(self, stream: _Stream, after: int) -> None:
        self.stream: _Stream | None = stream
        #: The seq of the last event taken.
        self.after = after
        stream.readers.append(self)
        stream.attach_changed()

    def __aiter__(self) -> _Tail:
        return self

    async def __anext__(self) -> tuple[int, bytes]:
        stream = self.stream
        if stream is None:
            raise StopAsyncIteration
        while True:
            after = self.after
            if after + 1 < stream.first_seq:
                self._detach()
                raise ResumeGap(f"events {after + 1}..{stream.first_seq - 1} of the stream are no longer kept")
            index = stream.start + after + 1 - stream.first_seq
            if index < len(stream.events):
                self.after = after = after + 1
                if after >= stream.room_at:
                    stream.wake_room()
                return after, stream.events[index]
            if stream.done:
                self._detach()
                raise StopAsyncIteration
            await stream.changed()

    async def aclose(self) -> None:
        """Detach (the producer no longer waits for this consumer)."""
        self._detach()

    def _detach(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.readers.remove(self)
            stream.attach_changed()
            stream.wake_room()


async def _not_found(stream_id: str) -> AsyncIterator[tuple[int, bytes]]:
    raise StreamNotFound(f"stream {stream_id!r} is unknown or expired")
    yield  # pragma: no cover - makes this an async generator


class MemoryStore(ReplayStore):
    """Keeps streams in memory: resumes work on the worker that produced the stream.

    Args:
        limits: the bounds of every stream (events, bytes, TTLs).
        max_streams: streams kept. Beyond it, opening one evicts the oldest finished
            stream no client is reading, then the oldest running one no client is
            reading; a stream with a client attached is never evicted (each is a live
            connection), so the count may exceed the bound by those.
        max_total_bytes: bytes of events kept by the whole store; the order in which
            events go when it is hit is in the module's documentation. An attached
            client's unread events stay: past the bound, each producer waits until its
            own clients have read what it produced (at most about one event more per
            stream with a client attached).
        clock: seconds, monotonic (``time.monotonic``; tests inject their own).
    """

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        max_streams: int = 10_000,
        max_total_bytes: int = 256 << 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, value in (("max_streams", max_streams), ("max_total_bytes", max_total_bytes)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.limits = limits or Limits()
        self.max_streams = max_streams
        self.max_total_bytes = max_total_bytes
        self.clock = clock
        self._streams: OrderedDict[str, _Stream] = OrderedDict()
        #: Bytes of the kept events of every stream the store holds.
        self._total = 0
        #: (expires, sid) of every stream, lazily deleted: an entry is stale when the
        #: stream is gone or its expiry moved.
        self._expiries: list[tuple[float, str]] = []
        self._sweeper: BackgroundTask | None = None
        self._sweeper_wake: anyio.Event | None = None
        self._sweeper_at = math.inf
        #: A dropped stream whose producer still runs keeps nothing (nobody can read it);
        #: RedisStore keeps its newest events, for the copy to Redis.
        self._keep_evicted = False

    # ------------------------------------------------------------ introspection
    @property
    def streams(self) -> int:
        """The number of streams kept."""
        return len(self._streams)

    @property
    def total_bytes(self) -> int:
        """The bytes of events kept, all streams together."""
        return self._total

    @property
    def sweeping(self) -> bool:
        """Whether the expiry task is running (on the current event loop)."""
        return self._sweeper is not None and self._sweeper.alive_here()

    # ------------------------------------------------------------ expiry
    def _set_expiry(self, stream: _Stream, at: float) -> None:
        stream.expires = at
        heapq.heappush(self._expiries, (at, stream.sid))
        if len(self._expiries) > 2 * len(self._streams) + 64:  # stale entries piled up
            self._expiries = [(s.expires, sid) for sid, s in self._streams.items()]
            heapq.heapify(self._expiries)
        if at < self._sweeper_at and self._sweeper_wake is not None:
            self._sweeper_wake.set()

    def expire(self) -> float | None:
        """Drop every stream whose time is up (``ttl`` after it finished, ``running_ttl``
        after it opened if it never did). A stream a client is still reading is kept
        until that client leaves. Returns the seconds until the next expiry (None: the
        store is empty). The store's timer calls this; so may a custom scheduler."""
        now = self.clock()
        expiries, streams = self._expiries, self._streams
        while expiries and expiries[0][0] <= now:
            at, sid = heapq.heappop(expiries)
            stream = streams.get(sid)
            if stream is None or stream.expires != at:
                continue
            if stream.readers:
                self._set_expiry(stream, now + _RECHECK)
                continue
            self._drop(sid)
        if not streams:
            expiries.clear()
            return None
        return max(0.0, expiries[0][0] - now) if expiries else None

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or not self._sweeper.alive_here():
            sweep = functools.partial(_sweeper, weakref.ref(self))
            self._sweeper = BackgroundTask(sweep, name="asgi-stream MemoryStore expiry")

    async def aclose(self) -> None:
        """Stop the expiry task (the store stays usable: the next stream starts it again)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    # ------------------------------------------------------------ bounds
    def _evict_for_count(self) -> None:
        streams = self._streams
        while len(streams) >= self.max_streams:
            victim = next((sid for sid, s in streams.items() if s.done and not s.readers), None)
            if victim is None:
                victim = next((sid for sid, s in streams.items() if not s.readers), None)
            if victim is None:
                return  # every stream has a client attached
            self._drop(victim)

    def _relieve(self, appending: _Stream) -> bool:
        """The store is over ``max_total_bytes``: free bytes in the documented order.
        True when ``appending`` must wait for its own clients (unread events are all
        that is left)."""
        cap = self.max_total_bytes
        low = cap - cap // 8  # free a little more than needed: not once per event

        def enough() -> bool:
            return self._total <= low

        streams = self._streams
        for sid in [sid for sid, s in streams.items() if s.done and not s.readers]:
            self._drop(sid)
            if enough():
                return False
        for s in list(streams.values()):
            if not s.readers:
                s.drop_taken(enough)
                if enough():
                    return False
        for s in list(streams.values()):
            if s.readers:
                s.drop_taken(enough)
                if enough():
                    return False
        return self._total > cap and appending.unread()

    def _drop(self, sid: str) -> None:
        stream = self._streams.pop(sid, None)
        if stream is not None:
            self._total -= stream.nbytes
            stream.owner = None
            stream.nbytes = 0
            stream.done = True
            stream.events.clear()
            stream.start = 0
            stream.first_seq = _EVICTED  # any cursor is now before the kept window
            stream.notify()
            stream.wake_room()

    def _get(self, sid: str) -> _Stream | None:
        stream = self._streams.get(sid)
        if stream is not None and stream.expires <= self.clock() and not stream.readers:
            self._drop(sid)
            return None
        return stream

    # ------------------------------------------------------------ the protocol
    async def open(self, stream_id: str, meta: StreamMeta) -> Writer:
        """Create a stream."""
        self.expire()
        self._evict_for_count()
        stream = _Stream(self, stream_id, meta, 0.0)
        self._streams[stream_id] = stream
        self._set_expiry(stream, self.clock() + self.limits.running_ttl)
        self._ensure_sweeper()
        return _MemoryWriter(self, stream)

    def holds(self, stream_id: str) -> bool:
        """Whether this store has the stream (live or recently finished)."""
        return self._get(stream_id) is not None

    async def meta(self, stream_id: str) -> StreamMeta | None:
        """Metadata of a live or recently finished stream."""
        stream = self._get(stream_id)
        return stream.meta if stream is not None else None

    def read(self, stream_id: str, after: int) -> AsyncIterator[tuple[int, bytes]]:
        """Replay then tail one stream. The consumer is attached at once (before its first
        read), so the producer never drops an event it has not taken; StreamNotFound or
        ResumeGap come with the first read."""
        stream = self._get(stream_id)
        if stream is None:
            return _not_found(stream_id)
        return _Tail(stream, after)


async def _sweeper(ref: weakref.ref[MemoryStore]) -> None:
    """The expiry timer of one store: sleeps until the next expiry (woken early when an
    earlier one appears), returns when the store is empty or gone."""
    try:
        while True:
            store = ref()
            if store is None:
                return
            delay = store.expire()
            if delay is None:
                return
            wake = store._sweeper_wake = anyio.Event()
            store._sweeper_at = store.clock() + delay
            del store  # hold no reference while asleep
            with anyio.move_on_after(delay):
                await wake.wait()
    finally:
        store = ref()
        if store is not None:
            store._sweeper_wake, store._sweeper_at = None, math.inf


class _MemoryWriter(Writer):
    def __init__(self, store: MemoryStore, stream: _Stream) -> None:
        self.store = store
        self.stream = stream

    @property
    def consumers(self) -> int:
        """Consumers reading the stream now."""
        return self.stream.consumers

    async def wait_attach_change(self) -> None:
        """Return when a consumer attaches or detaches."""
        await self.stream.wait_attach_change()

    @property
    def evicted(self) -> bool:
        """Whether the store dropped the stream (expired or evicted) while it was written."""
        return self.stream.first_seq >= _EVICTED

    @property
    def last_seq(self) -> int:
        """The seq of the newest event appended."""
        return self.stream.last_seq

    def first_kept(self) -> int:
        """The seq of the oldest event still kept (counted back from the newest, so it
        holds even after the store evicted the stream)."""
        stream = self.stream
        return stream.last_seq - (len(stream.events) - stream.start) + 1

    def kept_after(self, after: int) -> tuple[int, list[bytes]]:
        """``(first seq, events)``: the kept events with seq > ``after``, oldest first."""
        first_kept = self.first_kept()
        first = max(after + 1, first_kept)
        return first, self.stream.events[self.stream.start + first - first_kept :]

    def append(self, seq: int, data: bytes) -> bool:
        stream = self.stream
        stream.last_seq = seq
        store = stream.owner
        if store is None and not self.store._keep_evicted:
            return False  # evicted: nobody can read it any more
        stream.events.append(data)
        size = len(data)
        stream.nbytes += size
        limits = self.store.limits
        full = False
        if len(stream.events) - stream.start > limits.max_events or stream.nbytes > limits.max_bytes:
            full = stream.trim(limits)
        if store is not None:
            store._total += size
            if store._total > store.max_total_bytes:
                full = store._relieve(stream) or full
        stream.notify()
        return full

    async def wait_room(self) -> None:
        """Wait until the attached consumers have read enough for the stream to be back
        within its bounds, and the store within ``max_total_bytes`` or this stream's
        clients have read all of it (at once when none is attached: unread events are
        only ever kept for an attached client)."""
        stream, store, limits = self.stream, self.store, self.store.limits
        while True:
            if stream.trim(limits):
                stream.room_at = stream.low_water(limits)
            elif stream.owner is not None and store._total > store.max_total_bytes and store._relieve(stream):
                stream.room_at = stream.last_seq
            else:
                return
            await stream.wait_room()

    async def run(self) -> None:
        return None

    async def finish(self, outcome: str) -> None:
        stream = self.stream
        stream.done = True
        stream.outcome = outcome
        if stream.owner is not None:
            self.store._set_expiry(stream, self.store.clock() + self.store.limits.ttl)
        stream.notify()

    async def wait_abandoned(self, grace: float) -> None:
        stream = self.stream
        while True:
            while stream.consumers > 0:
                await stream.wait_attach_change()
            with anyio.move_on_after(grace) as scope:
                await stream.wait_attach_change()
            if scope.cancelled_caught and stream.consumers == 0:
                return
