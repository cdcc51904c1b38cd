"""Context-local access to the running stream, for code deep inside a generator."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .cancel import CancelToken
    from .record import StreamRecord
    from .stream import Stream

_current: ContextVar[Stream | None] = ContextVar("asgi_stream_current", default=None)


def current_stream() -> StreamRecord | None:
    """The record of the stream whose generator is running in this context (async
    generators, and sync generators in their worker thread), or None outside one."""
    stream = _current.get()
    return stream.record if stream is not None else None


def current_cancel_token() -> CancelToken | None:
    """The cancel token of the stream running in this context, or None outside one."""
    stream = _current.get()
    return stream.token if stream is not None else None
