"""StreamRecord: what happened to one stream, handed to hooks and metrics."""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field
from typing import Any

from .cancel import CancelReason

_ids = itertools.count(1)


class Outcome(str, enum.Enum):
    """How a stream ended."""

    COMPLETED = "completed"
    CANCELLED = "cancelled"
    ERROR = "error"
    TIMED_OUT = "timed_out"


@dataclass(slots=True, eq=False)
class StreamRecord:
    """Per-stream facts. Times are ``time.monotonic()`` seconds.

    ``ttft`` counts from the moment the request reached the middleware (so time an
    endpoint spends queueing for a model counts), to the first token's send.
    """

    method: str
    path: str
    endpoint: str
    format: str
    accepted_at: float
    id: int = field(default_factory=lambda: next(_ids))
    headers_at: float | None = None
    first_token_at: float | None = None
    ended_at: float | None = None
    events: int = 0
    bytes: int = 0
    keepalives: int = 0
    outcome: Outcome | None = None
    cancel_reason: CancelReason | None = None
    error: BaseException | None = None
    #: Free-form labels an endpoint or integration may add (model name, request id…).
    labels: dict[str, Any] = field(default_factory=dict)

    @property
    def ttft(self) -> float | None:
        """Seconds from request arrival to the first token on the wire."""
        return None if self.first_token_at is None else self.first_token_at - self.accepted_at

    @property
    def duration(self) -> float | None:
        """Seconds from request arrival to the end of the stream."""
        return None if self.ended_at is None else self.ended_at - self.accepted_at

    @property
    def events_per_second(self) -> float | None:
        """Events sent per second between the first token and the end."""
        if self.ended_at is None or self.first_token_at is None or self.events < 2:
            return None
        span = self.ended_at - self.first_token_at
        return (self.events - 1) / span if span > 0 else None
