"""Content negotiation: an ``Accept`` header → a stream format (RFC 9110 §12.5.1).

Formats are ``sse`` (text/event-stream), ``ndjson`` (application/x-ndjson, also
application/jsonl and application/ndjson) and ``text`` (text/plain). The most
specific matching media range sets each offer's q-value; q=0 excludes it. When the
header names none of them explicitly (absent, ``*/*``, or only other types) the
default format wins.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal, NamedTuple

Format = Literal["sse", "ndjson", "text"]
FORMATS: tuple[Format, ...] = ("sse", "ndjson", "text")

#: Offered media types, in server preference order within a format.
_OFFERS: tuple[tuple[str, Format], ...] = (
    ("text/event-stream", "sse"),
    ("application/x-ndjson", "ndjson"),
    ("application/jsonl", "ndjson"),
    ("application/ndjson", "ndjson"),
    ("application/jsonlines", "ndjson"),
    ("text/plain", "text"),
)
_DEFAULT_MEDIA: dict[str, str] = {"sse": "text/event-stream", "ndjson": "application/x-ndjson", "text": "text/plain"}


class Negotiated(NamedTuple):
    """The outcome: the format and the exact media type to answer with."""

    format: Format
    media_type: str


class _Range(NamedTuple):
    type: str
    subtype: str
    q: float


def _parse(header: str) -> list[_Range]:
    ranges = []
    for item in header.split(","):
        item = item.strip()
        if not item:
            continue
        media, *params = item.split(";")
        type_, _, subtype = media.strip().lower().partition("/")
        if not subtype:
            if type_ != "*":
                continue  # malformed: ignore rather than fail the request
            subtype = "*"
        q = 1.0
        for param in params:
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(max(float(value.strip()), 0.0), 1.0)
                except ValueError:
                    q = 0.0  # RFC: an invalid weight makes the range unusable
        ranges.append(_Range(type_, subtype, q))
    return ranges


def _match(ranges: list[_Range], media: str) -> tuple[float, int]:
    """(q, specificity) of the most specific range matching ``media``; (0, -1) if none."""
    type_, _, subtype = media.partition("/")
    best = (0.0, -1)
    for r in ranges:
        if r.type == type_ and r.subtype == subtype:
            spec = 2
        elif r.type == type_ and r.subtype == "*":
            spec = 1
        elif r.type == "*" and r.subtype == "*":
            spec = 0
        else:
            continue
        if spec > best[1]:
            best = (r.q, spec)
    return best


@lru_cache(maxsize=512)
def negotiate(accept: str | None, default: Format = "text") -> Negotiated:
    """Pick the stream format for an ``Accept`` header value."""
    if default not in _DEFAULT_MEDIA:
        raise ValueError(f"unknown default format {default!r}; expected one of {FORMATS}")
    if not accept:
        return Negotiated(default, _DEFAULT_MEDIA[default])
    ranges = _parse(accept)
    best_key: tuple[float, int, int, int] | None = None
    chosen = Negotiated(default, _DEFAULT_MEDIA[default])
    for rank, (media, fmt) in enumerate(_OFFERS):
        q, spec = _match(ranges, media)
        if q <= 0.0:
            continue
        # Highest q first; then a range naming the type exactly; then the default; then order.
        key = (q, 1 if spec == 2 else 0, 1 if fmt == default else 0, -rank)
        if best_key is None or key > best_key:
            best_key = key
            chosen = Negotiated(fmt, media if spec == 2 else _DEFAULT_MEDIA[fmt])
    return chosen


def media_type_for(fmt: Format) -> str:
    """The canonical media type of a format."""
    try:
        return _DEFAULT_MEDIA[fmt]
    except KeyError:
        raise ValueError(f"unknown stream format {fmt!r}; expected one of {FORMATS}") from None
