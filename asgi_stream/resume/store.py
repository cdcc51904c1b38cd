"""The replay store protocol: where a resumable stream's events live.

A stream is written by exactly one producer (the worker running its generator) and
read by any number of consumers, on any worker that reaches the same store. Events are
framed bytes keyed by a sequence number starting at 1. Every store is bounded: events
and bytes kept per stream (oldest dropped first) and a TTL once the stream finished.
An event an attached consumer has not read yet is never dropped: the producer waits
for it instead (backpressure), so only a stream nobody is reading loses its oldest events.
"""

from __future__ import annotations

import abc
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import StreamError


class ResumeError(StreamError):
    """A resume request cannot be served."""


class StreamNotFound(ResumeError):
    """No such stream: unknown id, expired, or evicted."""


class ResumeGap(ResumeError):
    """The events after the cursor are no longer kept (the stream exceeded its bounds)."""


class StoreUnavailable(ResumeError):
    """The store cannot answer now — Redis is down, or came back empty and cannot tell an
    unknown stream from one not copied back yet: the client should retry."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        #: Seconds after which a retry may succeed.
        self.retry_after = retry_after


@dataclass
class StreamMeta:
    """What a consumer needs to answer a resume like the original response."""

    format: str
    media_type: str
    content_type: str
    method: str
    path: str
    created: float = field(default_factory=time.time)
    #: Who may resume ("" = whoever holds the id); see ``resume_owner``.
    owner: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for stores that serialise."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamMeta:
        """The inverse of :meth:`to_dict` (unknown keys ignored)."""
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Limits:
    """Bounds of every stream in a store."""

    #: Events kept per stream (the oldest are dropped beyond it).
    max_events: int = 10_000
    #: Bytes of events kept per stream (the oldest are dropped beyond it).
    max_bytes: int = 4 << 20
    #: Seconds a finished stream stays resumable.
    ttl: float = 300.0
    #: Seconds an unfinished stream stays if its producer vanished (crashed worker).
    running_ttl: float = 3600.0


class Writer(abc.ABC):
    """The producer's handle on one stream."""

    @abc.abstractmethod
    def append(self, seq: int, data: bytes) -> bool:
        """Add event ``seq`` (never blocks; remote stores batch writes). True when the
        stream is over its bounds with events an attached consumer has not read yet
        (they are kept): the producer awaits :meth:`wait_room` before the next event."""

    async def wait_room(self) -> None:
        """Return once the stream is back within its bounds (the attached consumers read
        on, or left). Stores that never hold the producer back return at once."""
        return None

    @abc.abstractmethod
    async def run(self) -> None:
        """Background work for the stream's lifetime (batched flushing); may return at once."""

    @abc.abstractmethod
    async def finish(self, outcome: str) -> None:
        """Mark the stream finished (flushing what is pending) and start its TTL."""

    @abc.abstractmethod
    async def wait_abandoned(self, grace: float) -> None:
        """Return once no consumer has been attached for ``grace`` seconds."""


class ReplayStore(abc.ABC):
    """Where resumable streams are kept."""

    limits: Limits

    @abc.abstractmethod
    async def open(self, stream_id: str, meta: StreamMeta) -> Writer:
        """Create a stream and return its writer."""

    @abc.abstractmethod
    async def meta(self, stream_id: str) -> StreamMeta | None:
        """The stream's metadata, or None when unknown or expired."""

    @abc.abstractmethod
    def read(self, stream_id: str, after: int) -> AsyncIterator[tuple[int, bytes]]:
        """Events with seq > ``after``: those kept, then live ones, until the stream
        finishes. Raises StreamNotFound, ResumeGap or StoreUnavailable."""

    async def aclose(self) -> None:
        """Release connections."""
