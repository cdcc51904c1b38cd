"""Sans-I/O framers: tokens in, bytes out. One module per wire format."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from .ndjson import JSONL_MEDIA_TYPE, NDJSONFramer
from .sse import SSEFramer
from .text import TextFramer


class Framer(Protocol):
    """What the stream needs from a wire format."""

    media_type: str
    content_type: str
    keepalive: bytes | None
    supports_comments: bool

    def frame(self, token: Any) -> bytes:
        """Bytes for one token (empty: nothing to send)."""

    def finish(self) -> bytes:
        """Bytes to close a successful stream; raises FramingError on an incomplete state."""

    def error(self, payload: Mapping[str, object]) -> bytes | None:
        """A framed error, or None when the format has no in-band error channel."""


def make_framer(fmt: str, media_type: str | None = None) -> Framer:
    """A fresh framer for a negotiated format (``sse``, ``ndjson`` or ``text``)."""
    if fmt == "sse":
        return SSEFramer()
    if fmt == "ndjson":
        return NDJSONFramer(media_type or "application/x-ndjson")
    if fmt == "text":
        return TextFramer()
    raise ValueError(f"unknown stream format {fmt!r}; expected 'sse', 'ndjson' or 'text'")


__all__ = ["JSONL_MEDIA_TYPE", "Framer", "NDJSONFramer", "SSEFramer", "TextFramer", "make_framer"]
