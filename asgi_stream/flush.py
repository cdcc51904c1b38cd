"""Flush policies: when framed bytes become an ASGI send.

* :class:`PerToken` (default): every token is its own ``http.response.body`` send,
  issued before the generator is asked for the next token.
* :class:`Coalesce`: tokens ready within ``max_delay`` of the first unsent one, up to
  ``max_bytes``, are joined into one send; no token is held longer than ``max_delay``,
  and a token that finds the link idle for ``max_delay`` is sent at once.

Backpressure is the same under both: the generator is pulled only after the previous
send returned, so a slow reader slows the generator instead of growing a queue.
Push-style producers (threads) feed a :class:`~asgi_stream.channel.TokenChannel`,
which merges whatever arrived while a send was blocked into the next send.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PerToken:
    """Send each token as soon as it is framed."""


@dataclass(frozen=True, slots=True)
class Coalesce:
    """Merge tokens into fewer, larger sends, bounded in time and size."""

    max_delay: float = 0.02
    max_bytes: int = 16 * 1024

    def __post_init__(self) -> None:
        if not (self.max_delay > 0):
            raise ValueError(f"Coalesce.max_delay must be > 0 seconds, got {self.max_delay!r}")
        if not (isinstance(self.max_bytes, int) and self.max_bytes > 0):
            raise ValueError(f"Coalesce.max_bytes must be a positive int, got {self.max_bytes!r}")


FlushPolicy = PerToken | Coalesce


class Batch:
    """Sans-I/O accumulator for :class:`Coalesce`: framed parts and the first part's time."""

    __slots__ = ("max_bytes", "max_delay", "parts", "size", "started")

    def __init__(self, policy: Coalesce) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.started = 0.0
        self.max_delay = policy.max_delay
        self.max_bytes = policy.max_bytes

    def add(self, data: bytes, now: float) -> bool:
        """Append framed bytes; True when the batch must be flushed now."""
        if not self.parts:
            self.started = now
        self.parts.append(data)
        self.size += len(data)
        return self.size >= self.max_bytes or now - self.started >= self.max_delay

    @property
    def deadline(self) -> float | None:
        """When the oldest pending part must be on the wire, or None if empty."""
        return self.started + self.max_delay if self.parts else None

    def take(self) -> bytes:
        """Everything pending, joined; empties the batch."""
        data = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
        self.parts = []
        self.size = 0
        return data

    def __bool__(self) -> bool:
        return bool(self.parts)
