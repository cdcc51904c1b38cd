"""Server-Sent Events framing per the WHATWG HTML standard (§9.2 "Server-sent events").

Sans-I/O: tokens in, bytes out. Data containing LF, CRLF or lone CR becomes several
``data:`` lines (the spec's line terminators are exactly those three); every event
ends with a blank line; the output is always UTF-8.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..events import Event
from ._common import Utf8Joiner, decode_whole, encode_utf8, is_json_value, to_json, unsupported

MEDIA_TYPE = "text/event-stream"
KEEPALIVE = b": keepalive\n\n"


def data_lines(text: str) -> str:
    """``data:`` lines for a payload, splitting on CRLF, CR and LF (and only those)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "data: " + text.replace("\n", "\ndata: ") + "\n"


def comment_lines(text: str) -> str:
    """Comment lines (``: text``) for arbitrary text; line breaks start new comment lines."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return ": " + text.replace("\n", "\n: ") + "\n"


def encode_event(event: Event) -> bytes:
    """Frame one :class:`Event` (fields already validated at construction)."""
    parts = []
    if event.comment is not None:
        parts.append(comment_lines(event.comment))
    if event.event is not None:
        parts.append("event: " + event.event + "\n")
    if event.id is not None:
        parts.append("id: " + event.id + "\n")
    if event.retry is not None:
        parts.append(f"retry: {event.retry}\n")
    data = event.data
    if data is not None:
        if isinstance(data, str):
            parts.append(data_lines(data))
        elif isinstance(data, (bytes, bytearray, memoryview)):
            parts.append(data_lines(decode_whole(data)))
        elif is_json_value(data):
            parts.append("data: " + to_json(data) + "\n")
        else:
            raise unsupported(data)
    parts.append("\n")
    return encode_utf8("".join(parts))


class SSEFramer:
    """Frames tokens as SSE events: ``str`` → ``data:`` lines, JSON values → one JSON
    ``data:`` line, ``bytes`` → decoded incrementally, :class:`Event` → all its fields."""

    media_type = MEDIA_TYPE
    content_type = MEDIA_TYPE + "; charset=utf-8"
    keepalive: bytes | None = KEEPALIVE
    #: Whether a comment line may be injected between two chunks of this format.
    supports_comments = True

    __slots__ = ("_utf8",)

    def __init__(self) -> None:
        self._utf8: Utf8Joiner | None = None

    def frame(self, token: Any) -> bytes:
        """Bytes for one token; empty when there is nothing to send (empty text, or a
        partial UTF-8 character waiting for its next byte)."""
        if type(token) is str:
            if "\n" in token or "\r" in token:
                return encode_utf8(data_lines(token) + "\n")
            if token:
                try:
                    return ("data: " + token + "\n\n").encode()
                except UnicodeEncodeError:
                    return encode_utf8(token)  # raises the clear FramingError
            return b""
        if isinstance(token, Event):
            return encode_event(token)
        if isinstance(token, (bytes, bytearray, memoryview)):
            if self._utf8 is None:
                self._utf8 = Utf8Joiner()
            return self.frame(self._utf8.feed(token))
        if isinstance(token, str):  # str subclasses
            return self.frame(str(token))
        if is_json_value(token):
            return encode_utf8("data: " + to_json(token) + "\n\n")
        raise unsupported(token)

    def finish(self) -> bytes:
        """Called once at the end of a successful stream; checks no character is cut."""
        if self._utf8 is not None:
            self._utf8.finish()
        return b""

    def error(self, payload: Mapping[str, object]) -> bytes:
        """An ``event: error`` carrying the JSON payload."""
        return encode_utf8("event: error\ndata: " + to_json(payload) + "\n\n")
