"""NDJSON lines survive every line splitter: U+0085, U+2028 and U+2029 — legal raw inside
a JSON string, but line breaks to ``str.splitlines``, httpx's ``iter_lines`` and others —
go out escaped, in every NDJSON path (tokens, JSON values, events, error lines,
resumable streams), so one token is always one line."""

from __future__ import annotations

import json

import anyio
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.responses import StreamingResponse
from starlette.routing import Route

from asgi_stream import Event, StreamMiddleware, TokenStream
from asgi_stream.framing import NDJSONFramer

SEPARATORS = "\x85\u2028\u2029"
TRICKY = ["a\u2028b", "\u2029", "x\x85y", "\u2028\u2029\x85", "é\u2028", "plain", "tab\tnl\ncr\r"]

#: Text a UTF-8 wire can carry (no lone surrogates), rich in the separators.
_any_text = st.text(st.characters(codec="utf-8"), max_size=8)
texts = st.builds(
    lambda a, s, b: a + s + b,
    _any_text,
    st.text(st.sampled_from(SEPARATORS + '\n\r\x0b\x0c\x1c\x1d\x1e"\\é'), max_size=4),
    _any_text,
).filter(bool)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=12,
)


def one_line(data: bytes) -> str:
    """The framed bytes as text, checked to be exactly one line for every splitter."""
    text = data.decode("utf-8")
    assert text.endswith("\n")
    assert not any(sep in text for sep in SEPARATORS), text
    assert len(text.splitlines()) == 1, text
    return text


@pytest.mark.parametrize("token", TRICKY)
def test_str_tokens_are_escaped(token: str) -> None:
    line = one_line(NDJSONFramer().frame(token))
    assert json.loads(line) == token


def test_every_ndjson_path_escapes() -> None:
    class Delta(BaseModel):
        text: str

    framer = NDJSONFramer()
    for data in [
        {"k\u2028": "v\u2029", "n": ["\x85"]},
        ["\u2028"],
        Delta(text="a\u2028b"),
        Event(data="a\u2029b", event="e\u2028", id="i\x85"),
        Event(data={"x": "\u2028"}),
        Event(data="a\u2028b".encode()),
    ]:
        line = one_line(framer.frame(data))
        json.loads(line)
    error = one_line(framer.error({"error": {"type": "x", "message": "bad\u2028thing\x85"}}))
    assert json.loads(error)["error"]["message"] == "bad\u2028thing\x85"
    # A bytes token split inside U+2028 (E2 80 A8): held back, then escaped whole.
    assert framer.frame(b"\xe2\x80") == b""
    assert json.loads(one_line(framer.frame(b"\xa8!"))) == "\u2028!"


@settings(max_examples=300, deadline=None)
@given(texts)
def test_any_text_token_is_one_line_for_splitlines(token: str) -> None:
    assert json.loads(one_line(NDJSONFramer().frame(token))) == token


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_value_is_one_line_for_splitlines(value: object) -> None:
    framer = NDJSONFramer()
    assert json.loads(one_line(framer.frame({"v": value}))) == {"v": value}
    if value is not None:  # an Event without data has no line
        assert json.loads(one_line(framer.frame(Event(data=value)))) == {"data": value}


def _app(tokens: list[object], *, resumable: bool = False) -> Starlette:
    async def endpoint(request):
        return TokenStream(iter(tokens), format="ndjson", resumable=resumable)

    async def fails(request):
        async def body():
            yield b'{"ok":1}\n'
            raise RuntimeError("boom")

        return StreamingResponse(body(), media_type="application/x-ndjson")

    app = Starlette(routes=[Route("/tokens", endpoint), Route("/fails", fails)])
    app.add_middleware(StreamMiddleware, error_payload=lambda exc, rec: {"error": {"message": "a\u2028b\x85c"}})
    return app


@settings(max_examples=25, deadline=None)
@given(st.lists(texts, min_size=1, max_size=6), st.booleans())
def test_httpx_iter_lines_round_trips(tokens: list[str], resumable: bool) -> None:
    """In process over httpx's ASGI transport: each line one token, in order."""

    async def main() -> list[str]:
        transport = httpx.ASGITransport(app=_app(tokens, resumable=resumable))
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://t") as client,
            client.stream("GET", "/tokens") as response,
        ):
            return [line async for line in response.aiter_lines()]

    lines = anyio.run(main)
    assert [json.loads(line) for line in lines] == tokens


def test_httpx_iter_lines_over_a_real_server(server) -> None:
    srv = server(_app(TRICKY))
    with httpx.stream("GET", f"{srv.url}/tokens", timeout=10) as response:
        lines = list(response.iter_lines())
    assert [json.loads(line) for line in lines] == TRICKY


def test_the_error_line_of_a_passthrough_stream_is_escaped(server) -> None:
    srv = server(_app([]))
    with httpx.stream("GET", f"{srv.url}/fails", timeout=10) as response:
        lines = list(response.iter_lines())
    assert [json.loads(line) for line in lines] == [{"ok": 1}, {"error": {"message": "a\u2028b\x85c"}}]
