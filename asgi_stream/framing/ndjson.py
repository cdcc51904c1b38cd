"""NDJSON / JSON Lines framing: one compact JSON value per ``\\n``-terminated line.

``str`` tokens become JSON strings, JSON values are encoded as they are, an
:class:`Event` becomes ``{"event": ..., "id": ..., "data": ...}`` (fields that are set).
Non-ASCII is kept as UTF-8, except U+0085, U+2028 and U+2029: legal raw inside a JSON
string, they are line breaks to ``str.splitlines``, httpx's ``iter_lines`` and other line
splitters, so they go out escaped (``\\u2028``) and every line stays one line for every
client. Comments and ``retry`` have no NDJSON form and are skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..events import Event
from ._common import Utf8Joiner, decode_whole, encode_utf8, is_json_value, to_json, unsupported

MEDIA_TYPE = "application/x-ndjson"
JSONL_MEDIA_TYPE = "application/jsonl"

#: Line breaks for ``str.splitlines`` that JSON leaves raw (it escapes only U+0000-U+001F).
_SEPARATORS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def ndjson_line(text: str) -> bytes:
    """One NDJSON line for an encoded JSON text: U+0085, U+2028 and U+2029 escaped (they
    occur only inside JSON strings, where the escape means the same character), ``\\n``
    appended, UTF-8. An ASCII text is one C-speed check."""
    if not text.isascii() and ("\u2028" in text or "\u2029" in text or "\x85" in text):
        text = text.translate(_SEPARATORS)
    return encode_utf8(text + "\n")


class NDJSONFramer:
    """Frames tokens as NDJSON lines."""

    keepalive: bytes | None = None
    supports_comments = False

    __slots__ = ("_utf8", "content_type", "media_type")

    def __init__(self, media_type: str = MEDIA_TYPE) -> None:
        self.media_type = media_type
        self.content_type = media_type
        self._utf8: Utf8Joiner | None = None

    def frame(self, token: Any) -> bytes:
        """One line for one token, or empty bytes when there is nothing to send."""
        if type(token) is str:
            if not token:
                return b""
            return ndjson_line(to_json(token))
        if isinstance(token, Event):
            return self._event(token)
        if isinstance(token, (bytes, bytearray, memoryview)):
            if self._utf8 is None:
                self._utf8 = Utf8Joiner()
            return self.frame(self._utf8.feed(token))
        if isinstance(token, str):
            return self.frame(str(token))
        if is_json_value(token):
            return ndjson_line(to_json(token))
        raise unsupported(token)

    @staticmethod
    def _event(event: Event) -> bytes:
        obj: dict[str, Any] = {}
        if event.event is not None:
            obj["event"] = event.event
        if event.id is not None:
            obj["id"] = event.id
        data = event.data
        if data is not None:
            if isinstance(data, (bytes, bytearray, memoryview)):
                data = decode_whole(data)
            elif not isinstance(data, str) and not is_json_value(data):
                raise unsupported(data)
            obj["data"] = data
        if not obj:
            return b""
        return ndjson_line(to_json(obj))

    def finish(self) -> bytes:
        """Checks that no UTF-8 character was left incomplete."""
        if self._utf8 is not None:
            self._utf8.finish()
        return b""

    def error(self, payload: Mapping[str, object]) -> bytes:
        """The error line, ``{"error": {...}}``."""
        return ndjson_line(to_json(payload))
