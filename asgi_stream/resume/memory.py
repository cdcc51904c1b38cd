"""MemoryStore: the default replay store, in this process, on one event loop."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator

import anyio

from .store import Limits, ReplayStore, ResumeGap, StreamMeta, StreamNotFound, Writer

#: first_seq of an evicted stream: every cursor is before its kept window.
_EVICTED = 1 << 62
#: A seq no reader reaches.
_NEVER = 1 << 63


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
        "readers",
        "room_at",
        "start",
    )

    def __init__(self, meta: StreamMeta, expires: float) -> None:
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
    def trim(self, limits: Limits) -> bool:
        """Drop the oldest events beyond the bounds that no attached reader still needs.
        True when the stream stays over its bounds: a reader is behind, the producer waits."""
        events = self.events
        kept = len(events) - self.start
        oldest = self.last_seq - kept + 1  # by count: holds after an eviction too
        readers = self.readers
        needed = min(r.after for r in readers) + 1 if readers else self.last_seq + 1
        while kept > limits.max_events or (self.nbytes > limits.max_bytes and kept > 1):
            if oldest >= needed:
                return True
            self.nbytes -= len(events[self.start])
            events[self.start] = b""
            self.start += 1
            self.first_seq += 1
            kept -= 1
            oldest += 1
        if self.start > 1024 and self.start * 2 > len(events):
            del events[: self.start]
            self.start = 0
        return False

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

    Bounded per stream (``limits``) and in number of streams (``max_streams``: the
    oldest finished, then oldest running, are evicted).
    """

    def __init__(self, limits: Limits | None = None, *, max_streams: int = 10_000) -> None:
        self.limits = limits or Limits()
        self.max_streams = max_streams
        self._streams: OrderedDict[str, _Stream] = OrderedDict()

    def _sweep(self) -> None:
        now = time.monotonic()
        for sid in [sid for sid, s in self._streams.items() if s.expires <= now]:
            self._drop(sid)
        while len(self._streams) >= self.max_streams:
            victim = next((sid for sid, s in self._streams.items() if s.done), None)
            self._drop(victim or next(iter(self._streams)))

    def _drop(self, sid: str) -> None:
        stream = self._streams.pop(sid, None)
        if stream is not None:
            stream.done = True
            stream.events.clear()
            stream.start = 0
            stream.first_seq = _EVICTED  # any cursor is now before the kept window
            stream.notify()
            stream.wake_room()

    def _get(self, sid: str) -> _Stream | None:
        stream = self._streams.get(sid)
        if stream is not None and stream.expires <= time.monotonic():
            self._drop(sid)
            return None
        return stream

    async def open(self, stream_id: str, meta: StreamMeta) -> Writer:
        """Create a stream."""
        self._sweep()
        stream = _Stream(meta, time.monotonic() + self.limits.running_ttl)
        self._streams[stream_id] = stream
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
        stream.events.append(data)
        stream.nbytes += len(data)
        limits = self.store.limits
        full = False
        if len(stream.events) - stream.start > limits.max_events or stream.nbytes > limits.max_bytes:
            full = stream.trim(limits)
        stream.notify()
        return full

    async def wait_room(self) -> None:
        """Wait until the attached consumers have read enough for the stream to be back
        within its bounds (at once when none is attached: nothing unread is kept)."""
        stream, limits = self.stream, self.store.limits
        while stream.trim(limits):
            stream.room_at = stream.low_water(limits)
            await stream.wait_room()

    async def run(self) -> None:
        return None

    async def finish(self, outcome: str) -> None:
        stream = self.stream
        stream.done = True
        stream.outcome = outcome
        stream.expires = time.monotonic() + self.store.limits.ttl
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
