"""The exception hierarchy: everything asgi-stream raises derives from StreamError."""

from __future__ import annotations


class StreamError(Exception):
    """Base class of every error raised by asgi-stream."""


class FramingError(StreamError, ValueError):
    """A token or event cannot be represented on the wire as asked.

    Examples: an SSE ``id`` containing a newline or NUL, a lone surrogate in text
    (the wire is always UTF-8), a NaN inside a JSON token.
    """


class UnsupportedTokenError(StreamError, TypeError):
    """A generator yielded a value of a type no framer accepts."""


class BufferOverflowError(StreamError):
    """A push-style producer outran its consumer beyond the stream's buffer cap."""


class SendTimeoutError(StreamError, TimeoutError):
    """A send to the client made no progress within the stream's send timeout."""
