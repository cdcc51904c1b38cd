"""Bad configuration is refused up front with a clear message."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette

from asgi_stream import UNSET, Coalesce, StreamConfig, StreamMiddleware, TokenChannel, TokenStream


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


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"flush": "coalesce"}, TypeError, "flush must be PerToken"),
        ({"on_start": 42}, TypeError, "on_start must be a callable"),
        ({"on_end": "log"}, TypeError, "on_end must be a callable"),
        ({"error_payload": None}, TypeError, "error_payload must be a callable"),
        ({"resume_owner": "user"}, TypeError, "resume_owner must be a callable"),
        ({"max_buffer": "big"}, ValueError, "max_buffer"),
        ({"max_buffer": True}, ValueError, "max_buffer"),
        ({"keepalive": "15"}, ValueError, "keepalive"),
        ({"keepalive": float("nan")}, ValueError, "keepalive"),
        ({"close_timeout": 0}, ValueError, "close_timeout"),
        ({"anti_buffering": "yes"}, TypeError, "anti_buffering must be True or False"),
        ({"keep_alive": 5}, TypeError, r"unknown stream option\(s\) \['keep_alive'\]"),
    ],
)
def test_wrong_types_fail_at_construction_with_the_options_name(kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        StreamMiddleware(Starlette(), **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"flush": "coalesce"}, "flush must be PerToken"),
        ({"keepalive": 0}, "keepalive"),
        ({"max_buffer": "big"}, "max_buffer"),
        ({"on_start": 42}, "on_start must be a callable"),
        ({"cancel": "token"}, "cancel must be a CancelToken"),
    ],
)
def test_token_stream_options_fail_when_it_is_built_not_mid_request(kwargs, message) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        TokenStream(iter(["x"]), **kwargs)


def test_one_source_of_defaults_a_config_and_keyword_overrides() -> None:
    config = StreamConfig(keepalive=5.0, flush=Coalesce(max_delay=0.01))
    mw = StreamMiddleware(Starlette(), config, send_timeout=3.0)
    assert (mw.config.keepalive, mw.config.send_timeout, mw.config.flush) == (5.0, 3.0, Coalesce(max_delay=0.01))
    assert StreamMiddleware(Starlette()).config == StreamConfig()
    with pytest.raises(TypeError, match="config must be a StreamConfig"):
        StreamMiddleware(Starlette(), {"keepalive": 5})  # type: ignore[arg-type]


def test_unset_is_a_typed_sentinel() -> None:
    assert not UNSET and repr(UNSET) == "UNSET"
    assert StreamConfig().replace(keepalive=UNSET) == StreamConfig()
