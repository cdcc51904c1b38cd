"""The unit of evidence: one body piece as it came off the wire."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Chunk:
    """One HTTP/1.1 chunk (or one socket read of a close-delimited body), or one
    HTTP/2 DATA frame. ``t`` is ``time.monotonic()`` when its last byte arrived."""

    t: float
    data: bytes
    stream_id: int | None = None

    def __len__(self) -> int:
        return len(self.data)


def body_of(chunks: list[Chunk]) -> bytes:
    """The chunks' bytes joined."""
    return b"".join(c.data for c in chunks)


def gaps(chunks: list[Chunk]) -> list[float]:
    """Seconds between consecutive chunks' arrival times."""
    return [b.t - a.t for a, b in zip(chunks, chunks[1:])]
