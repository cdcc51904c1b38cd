"""Plain-text framing: the tokens' text, concatenated, in UTF-8.

JSON tokens are written as one compact JSON line each; events contribute their
data; comments are skipped. Plain text has no in-band error channel: a failing
stream is aborted (see :mod:`asgi_stream.stream`), so a client never mistakes a
truncated answer for a complete one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..events import Event
from ._common import Utf8Joiner, decode_whole, encode_utf8, is_json_value, to_json, unsupported

MEDIA_TYPE = "text/plain"


class TextFramer:
    """Frames tokens as raw UTF-8 text."""

    media_type = MEDIA_TYPE
    content_type = MEDIA_TYPE + "; charset=utf-8"
    keepalive: bytes | None = None
    supports_comments = False

    __slots__ = ("_utf8",)

    def __init__(self) -> None:
        self._utf8: Utf8Joiner | None = None

    def frame(self, token: Any) -> bytes:
        """The token's text as UTF-8 bytes (empty when nothing is complete yet)."""
        if type(token) is str:
            return encode_utf8(token) if token else b""
        if isinstance(token, (bytes, bytearray, memoryview)):
            if self._utf8 is None:
                self._utf8 = Utf8Joiner()
            return self.frame(self._utf8.feed(token))
        if isinstance(token, Event):
            data = token.data
            if data is None:
                return b""
            if isinstance(data, str):
                return encode_utf8(data)
            if isinstance(data, (bytes, bytearray, memoryview)):
                return encode_utf8(decode_whole(data))
            if is_json_value(data):
                return encode_utf8(to_json(data) + "\n")
            raise unsupported(data)
        if isinstance(token, str):
            return self.frame(str(token))
        if is_json_value(token):
            return encode_utf8(to_json(token) + "\n")
        raise unsupported(token)

    def finish(self) -> bytes:
        """Checks that no UTF-8 character was left incomplete."""
        if self._utf8 is not None:
            self._utf8.finish()
        return b""

    def error(self, payload: Mapping[str, object]) -> bytes | None:
        """Plain text cannot carry an error in band: None tells the stream to abort."""
        return None
