"""A response over time, as the reports keep and plot it: offsets in seconds since
the request of the headers, every body piece (with its size on the wire), every
event and every comment, and the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: At most this many points of each kind are kept (a long stream stays a small report).
MAX_POINTS = 4000


def _r(x: float) -> float:
    return round(x, 4)


@dataclass(slots=True)
class Timeline:
    """One observed response."""

    label: str
    protocol: str
    media_type: str
    status: int | None
    headers_at: float | None
    end_at: float
    complete: bool
    cut: bool
    #: What an event is: "event" (SSE), "line" (NDJSON) or "chunk" (text).
    unit: str
    #: (offset, bytes on the wire) of each HTTP/1.1 chunk / read or HTTP/2 DATA frame.
    chunks: list[tuple[float, int]] = field(default_factory=list)
    events: list[float] = field(default_factory=list)
    comments: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (offsets rounded to 0.1 ms, long lists capped)."""
        return {
            "label": self.label,
            "protocol": self.protocol,
            "media_type": self.media_type,
            "status": self.status,
            "headers_at": None if self.headers_at is None else _r(self.headers_at),
            "end_at": _r(self.end_at),
            "complete": self.complete,
            "cut": self.cut,
            "unit": self.unit,
            "chunks": [[_r(t), n] for t, n in self.chunks[:MAX_POINTS]],
            "events": [_r(t) for t in self.events[:MAX_POINTS]],
            "comments": [_r(t) for t in self.comments[:MAX_POINTS]],
            "truncated": max(len(self.chunks), len(self.events), len(self.comments)) > MAX_POINTS,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Timeline:
        """The inverse of :meth:`as_dict`."""
        return cls(
            label=d.get("label", ""),
            protocol=d.get("protocol", ""),
            media_type=d.get("media_type", ""),
            status=d.get("status"),
            headers_at=d.get("headers_at"),
            end_at=float(d.get("end_at") or 0.0),
            complete=bool(d.get("complete")),
            cut=bool(d.get("cut")),
            unit=d.get("unit", "event"),
            chunks=[(float(t), int(n)) for t, n in d.get("chunks", [])],
            events=[float(t) for t in d.get("events", [])],
            comments=[float(t) for t in d.get("comments", [])],
        )
