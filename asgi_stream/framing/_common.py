"""Token normalisation shared by the framers: UTF-8 rules, JSON encoding, type errors."""

from __future__ import annotations

import codecs
import json
from typing import Any

from ..errors import FramingError, UnsupportedTokenError

#: Compact JSON, non-ASCII kept as UTF-8, NaN/Infinity refused (they are not JSON).
_json_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode

JSON_TYPES = (dict, list, tuple, int, float)  # bool is an int


def encode_utf8(text: str) -> bytes:
    """Encode text as UTF-8, turning a lone surrogate into a clear FramingError."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FramingError(
            f"text contains a lone surrogate {text[exc.start]!r} at index {exc.start}; "
            "the wire is UTF-8 and cannot carry it"
        ) from None


def to_json(value: Any) -> str:
    """Encode a JSON value (or a pydantic model) compactly, or raise FramingError."""
    dump = getattr(value, "model_dump_json", None)
    if dump is not None:
        return str(dump())
    try:
        return _json_encode(value)
    except ValueError as exc:
        raise FramingError(f"token is not valid JSON: {exc}") from None
    except TypeError as exc:
        raise UnsupportedTokenError(f"token is not JSON-serialisable: {exc}") from None


def is_json_value(value: Any) -> bool:
    """Whether a token is framed as JSON (dicts, lists, numbers, pydantic models)."""
    return isinstance(value, JSON_TYPES) or hasattr(value, "model_dump_json")


def unsupported(value: Any) -> UnsupportedTokenError:
    """The TypeError for a token type no framer accepts."""
    return UnsupportedTokenError(
        f"a stream yielded a value of type {type(value).__module__}.{type(value).__qualname__}; "
        "yield str, UTF-8 bytes, a JSON value (dict, list, number) or asgi_stream.Event"
    )


class Utf8Joiner:
    """Incremental UTF-8 decoding of bytes tokens: a character split across tokens is held
    back until complete, so it is never emitted broken."""

    __slots__ = ("_decoder",)

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")

    def feed(self, data: bytes | bytearray | memoryview) -> str:
        """Decode what is complete so far; may return an empty string."""
        try:
            return self._decoder.decode(data)
        except UnicodeDecodeError as exc:
            raise FramingError(f"bytes token is not valid UTF-8: {exc.reason} at byte {exc.start}") from None

    def finish(self) -> None:
        """Raise FramingError if the stream ended inside a multi-byte character."""
        try:
            self._decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise FramingError("the stream ended inside a multi-byte UTF-8 character") from None


def decode_whole(data: bytes | bytearray | memoryview) -> str:
    """Decode a complete UTF-8 payload (an Event's bytes data)."""
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FramingError(f"event data is not valid UTF-8: {exc.reason} at byte {exc.start}") from None
