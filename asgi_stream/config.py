"""StreamConfig: every option of a stream, set app-wide on the middleware and
overridable per TokenStream."""

from __future__ import annotations

import dataclasses
import enum
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, TypedDict

from ._types import Scope
from .flush import Coalesce, FlushPolicy, PerToken
from .negotiate import FORMATS, Format
from .record import StreamRecord

#: A hook receives the stream's record; it may be sync or return an awaitable (awaited).
Hook = Callable[[StreamRecord], object]
#: Builds the JSON error payload sent in-band when a stream fails after its first byte.
ErrorPayload = Callable[[BaseException, StreamRecord], Mapping[str, object]]
#: Who may resume a stream: a key derived from the request (a user id), or None.
ResumeOwner = Callable[[Scope], "str | None"]

DEFAULT_STREAM_MEDIA_TYPES = frozenset(
    {"text/event-stream", "application/x-ndjson", "application/jsonl", "application/ndjson"}
)


def default_error_payload(exc: BaseException, record: StreamRecord) -> dict[str, object]:
    """``{"error": {"type", "message"}}`` without leaking internals: the exception's
    text is shown only for asgi-stream's own errors (framing, unsupported token)."""
    from .errors import StreamError

    if isinstance(exc, StreamError):
        return {"error": {"type": type(exc).__name__, "message": str(exc)}}
    return {"error": {"type": "internal_error", "message": "The stream failed on the server."}}


class Unset(enum.Enum):
    """The type of :data:`UNSET`: "not given", distinct from None (which often means
    "disabled"). A TokenStream option left UNSET inherits the middleware's value."""

    UNSET = "UNSET"

    def __bool__(self) -> Literal[False]:
        return False

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = Unset.UNSET


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """Options of a stream — the one place their defaults live. See the README's options
    table for what each does. Invalid values fail here, at construction, with the name
    of the option."""

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
    resume_owner: ResumeOwner | None = None
    error_payload: ErrorPayload = default_error_payload
    on_start: Hook | None = None
    on_end: Hook | None = None
    on_cancel: Hook | None = None

    def __post_init__(self) -> None:
        if self.default_format not in FORMATS:
            raise ValueError(f"default_format must be one of {FORMATS}, got {self.default_format!r}")
        for name in ("keepalive", "send_timeout", "block_warning"):
            _seconds(name, getattr(self, name), optional=True, positive=True)
        for name in ("shutdown_grace", "resume_grace"):
            _seconds(name, getattr(self, name), optional=False, positive=False)
        _seconds("close_timeout", self.close_timeout, optional=False, positive=True)
        if isinstance(self.max_buffer, bool) or not isinstance(self.max_buffer, int) or self.max_buffer <= 0:
            raise ValueError(f"max_buffer must be a positive int (bytes), got {self.max_buffer!r}")
        if not isinstance(self.flush, PerToken | Coalesce):
            raise TypeError(f"flush must be PerToken() or Coalesce(...), got {self.flush!r}")
        for name in ("anti_buffering", "resumable"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("resume_owner", "on_start", "on_end", "on_cancel"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise TypeError(f"{name} must be a callable or None, got {value!r}")
        if not callable(self.error_payload):
            raise TypeError(f"error_payload must be a callable, got {self.error_payload!r}")

    def replace(self, **options: object) -> StreamConfig:
        """A copy with the given options replaced; UNSET values are ignored. Unknown
        names fail with the list of valid ones."""
        changes = {k: v for k, v in options.items() if v is not UNSET}
        if not changes:
            return self
        unknown = set(changes) - _FIELDS
        if unknown:
            raise TypeError(f"unknown stream option(s) {sorted(unknown)}; valid: {sorted(_FIELDS)}")
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    merged = replace


class StreamOptions(TypedDict, total=False):
    """The keyword options of :class:`StreamMiddleware` (the fields of StreamConfig)."""

    default_format: Format
    keepalive: float | None
    flush: FlushPolicy
    send_timeout: float | None
    max_buffer: int
    shutdown_grace: float
    close_timeout: float
    block_warning: float | None
    anti_buffering: bool
    resumable: bool
    resume_grace: float
    resume_owner: ResumeOwner | None
    error_payload: ErrorPayload
    on_start: Hook | None
    on_end: Hook | None
    on_cancel: Hook | None


_FIELDS = frozenset(f.name for f in dataclasses.fields(StreamConfig))


def _seconds(name: str, value: object, *, optional: bool, positive: bool) -> None:
    if value is None and optional:
        return
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value
    if ok and (value > 0 if positive else value >= 0):  # type: ignore[operator]
        return
    bound = "> 0" if positive else ">= 0"
    raise ValueError(f"{name} must be a number of seconds {bound}{' or None' if optional else ''}, got {value!r}")
