"""Resumable streams: Last-Event-ID resume over a replay store (memory or Redis)."""

from .ids import event_id, new_stream_id, parse_event_id
from .memory import MemoryStore
from .store import (
    Limits,
    ReplayStore,
    ResumeError,
    ResumeGap,
    StoreUnavailable,
    StreamMeta,
    StreamNotFound,
    Writer,
)


def __getattr__(name: str) -> object:
    if name == "RedisStore":  # imported lazily: redis is an optional dependency
        from .redis import RedisStore

        return RedisStore
    raise AttributeError(name)


__all__ = [
    "Limits",
    "MemoryStore",
    "RedisStore",
    "ReplayStore",
    "ResumeError",
    "ResumeGap",
    "StoreUnavailable",
    "StreamMeta",
    "StreamNotFound",
    "Writer",
    "event_id",
    "new_stream_id",
    "parse_event_id",
]
