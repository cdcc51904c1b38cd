"""Bad configuration is refused up front with a clear message."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette

from asgi_stream import Coalesce, StreamMiddleware, TokenChannel, TokenStream


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"default_format": "xml"}, "default_format"),
        ({"keepalive": 0}, "keepalive"),
        ({"keepalive": -1}, "keepalive"),
        ({"send_timeout": 0}, "send_timeout"),
        ({"shutdown_grace": -1}, "shutdown_grace"),
        ({"max_buffer": 0}, "max_buffer"),
        ({"resume_grace": -1}, "resume_grace"),
        ({"block_warning": 0}, "block_warning"),
    ],
)
def test_middleware_options_are_validated(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        StreamMiddleware(Starlette(), **kwargs)


@pytest.mark.parametrize("kwargs", [{"max_delay": 0}, {"max_delay": -1}, {"max_bytes": 0}, {"max_bytes": 1.5}])
def test_coalesce_is_validated(kwargs) -> None:
    with pytest.raises(ValueError, match="Coalesce"):
        Coalesce(**kwargs)


@pytest.mark.parametrize("content", [None, 42, "a string", b"bytes", {"a": 1}])
def test_token_stream_needs_an_iterable_of_tokens(content) -> None:
    with pytest.raises(TypeError, match="iterable of tokens"):
        TokenStream(content)


def test_token_stream_format_is_validated() -> None:
    with pytest.raises(ValueError, match="format"):
        TokenStream(iter(["x"]), format="xml")


def test_channel_buffer_is_validated() -> None:
    with pytest.raises(ValueError, match="max_buffer"):
        TokenChannel(max_buffer=0)
