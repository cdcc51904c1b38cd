"""StreamConfig: every option of a stream, set app-wide on the middleware and
overridable per TokenStream."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .flush import FlushPolicy, PerToken
from .negotiate import FORMATS, Format
from .record import StreamRecord

#: A hook receives the stream's record; it may be sync or async.
Hook = Callable[[StreamRecord], "Awaitable[Any] | Any"]
#: Builds the JSON error payload sent in-band when a stream fails after its first byte.
ErrorPayload = Callable[[BaseException, StreamRecord], dict[str, Any]]

DEFAULT_STREAM_MEDIA_TYPES = frozenset(
    {"text/event-stream", "application/x-ndjson", "application/jsonl", "application/ndjson"}
)


def default_error_payload(exc: BaseException, record: StreamRecord) -> dict[str, Any]:
    """``{"error": {"type", "message"}}`` without leaking internals: the exception's
    text is shown only for asgi-stream's own errors (framing, unsupported token)."""
    from .errors import StreamError

    if isinstance(exc, StreamError):
        return {"error": {"type": type(exc).__name__, "message": str(exc)}}
    return {"error": {"type": "internal_error", "message": "The stream failed on the server."}}


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """Options of a stream. See the README's options table for what each one does."""

    default_format: Format = "text"
    keepalive: float | None = 15.0
    flush: FlushPolicy = field(default_factory=PerToken)
    send_timeout: float | None = 30.0
    max_buffer: int = 1 << 20
    shutdown_grace: float = 10.0
    close_timeout: float = 5.0
    block_warning: float | None = 0.5
    anti_buffering: bool = True
    resumable: bool = False
    resume_grace: float = 30.0
    resume_owner: Callable[[Any], str | None] | None = None
    error_payload: ErrorPayload = default_error_payload
    on_start: Hook | None = None
    on_end: Hook | None = None
    on_cancel: Hook | None = None

    def __post_init__(self) -> None:
        if self.default_format not in FORMATS:
            raise ValueError(f"default_format must be one of {FORMATS}, got {self.default_format!r}")
        for name in ("keepalive", "send_timeout", "block_warning"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 seconds or None, got {value!r}")
        if not self.resume_grace >= 0:
            raise ValueError(f"resume_grace must be >= 0 seconds, got {self.resume_grace!r}")
        if not self.shutdown_grace >= 0:
            raise ValueError(f"shutdown_grace must be >= 0 seconds, got {self.shutdown_grace!r}")
        if not (isinstance(self.max_buffer, int) and self.max_buffer > 0):
            raise ValueError(f"max_buffer must be a positive int, got {self.max_buffer!r}")

    def merged(self, **overrides: Any) -> StreamConfig:
        """A copy with the given (non-UNSET) fields replaced."""
        changes = {k: v for k, v in overrides.items() if v is not UNSET}
        return dataclasses.replace(self, **changes) if changes else self


class _Unset:
    """Marker for "not given": distinct from None, which often means "disabled"."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Any = _Unset()
