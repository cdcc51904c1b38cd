"""MemoryStore: the default replay store, in this process, on one event loop."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator

import anyio

from .store import Limits, ReplayStore, ResumeGap, StreamMeta, StreamNotFound, Writer

#: first_seq of an evicted stream: every cursor is before its kept window.
_EVICTED = 1 << 62


class _Stream:
    __slots__ = (
        "_attach",
        "_changed",
        "consumers",
        "done",
        "events",
        "expires",
        "first_seq",
        "last_seq",
        "meta",
        "nbytes",
        "outcome",
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
        self.consumers = 0
        self._changed: anyio.Event | None = None
        self._attach: anyio.Event | None = None

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

    async def read(self, stream_id: str, after: int) -> AsyncIterator[tuple[int, bytes]]:
        """Replay then tail one stream."""
        stream = self._get(stream_id)
        if stream is None:
            raise StreamNotFound(f"stream {stream_id!r} is unknown or expired")
        stream.consumers += 1
        stream.attach_changed()
        try:
            while True:
                if after + 1 < stream.first_seq:
                    raise ResumeGap(f"events {after + 1}..{stream.first_seq - 1} of the stream are no longer kept")
                index = stream.start + after + 1 - stream.first_seq
                if index < len(stream.events):
                    after += 1
                    yield after, stream.events[index]
                    continue
                if stream.done:
                    return
                await stream.changed()
        finally:
            stream.consumers -= 1
            stream.attach_changed()


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

    def append(self, seq: int, data: bytes) -> None:
        stream, limits = self.stream, self.store.limits
        stream.last_seq = seq
        stream.events.append(data)
        stream.nbytes += len(data)
        kept = len(stream.events) - stream.start
        while kept > limits.max_events or (stream.nbytes > limits.max_bytes and kept > 1):
            stream.nbytes -= len(stream.events[stream.start])
            stream.events[stream.start] = b""
            stream.start += 1
            stream.first_seq += 1
            kept -= 1
        if stream.start > 1024 and stream.start * 2 > len(stream.events):
            del stream.events[: stream.start]
            stream.start = 0
        stream.notify()

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
