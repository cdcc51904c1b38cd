"""Sans-I/O framers: SSE per the WHATWG spec (property-based round trip through an
independent spec parser), NDJSON, plain text."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_stream import Event, FramingError, UnsupportedTokenError
from asgi_stream.framing import NDJSONFramer, SSEFramer, TextFramer
from conformance.sse import SSEParser as SpecParser
from conformance.sse import parse_sse as parse

# Text without lone surrogates (those are tested separately: they must be refused).
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)))
tricky = st.sampled_from(["\r", "\n", "\r\n", "\0", "😀", "é", " ", ":", "data: x", "\ufeff", "\u2028", "\x85"])
payloads = st.lists(st.one_of(text, tricky), min_size=1, max_size=8).map("".join)
field_text = payloads.filter(lambda s: "\r" not in s and "\n" not in s)


def normalise_newlines(s: str) -> str:
    return s.replace("\r\n", "\n").replace("\r", "\n")


# ---------------------------------------------------------------- SSE properties
@settings(max_examples=400, deadline=None)
@given(st.lists(payloads, min_size=1, max_size=6), st.integers(min_value=1, max_value=7))
def test_sse_data_round_trips_through_spec_parser(tokens: list[str], cut: int) -> None:
    framer = SSEFramer()
    wire = b"".join(framer.frame(t) for t in tokens)
    # Split the wire at arbitrary byte positions (clients see arbitrary chunking).
    parser_chunks = [wire[i : i + cut] for i in range(0, len(wire), cut)]

    parser = SpecParser()
    for chunk in parser_chunks:
        parser.feed(chunk)
    expected = [normalise_newlines(t) for t in tokens if t]
    assert [e.data for e in parser.events] == expected
    assert all(e.type == "message" for e in parser.events)
    wire.decode("utf-8")  # always valid UTF-8 (raises otherwise)


@settings(max_examples=300, deadline=None)
@given(
    data=payloads,
    event=st.one_of(st.none(), field_text.filter(bool)),
    id_=st.one_of(st.none(), field_text.filter(lambda s: "\0" not in s)),
    retry=st.one_of(st.none(), st.integers(min_value=0, max_value=10**9)),
    comment=st.one_of(st.none(), payloads),
)
def test_sse_event_objects_round_trip(
    data: str, event: str | None, id_: str | None, retry: int | None, comment: str | None
) -> None:
    wire = SSEFramer().frame(Event(data=data, event=event, id=id_, retry=retry, comment=comment))
    assert wire.endswith(b"\n\n")
    parsed = parse(wire)
    assert [e.data for e in parsed.events] == [normalise_newlines(data)]
    assert parsed.events[0].type == (event or "message")
    assert parsed.events[0].last_event_id == (id_ or "")
    assert parsed.retry == retry
    if comment is not None:
        assert [c.text for c in parsed.comments] == [" " + line for line in normalise_newlines(comment).split("\n")]


@given(st.text(min_size=0, max_size=5), st.sampled_from(["\ud800", "\udfff", "\udc00"]), st.text(max_size=5))
def test_lone_surrogates_are_refused_clearly(prefix: str, surrogate: str, suffix: str) -> None:
    token = prefix + surrogate + suffix
    for framer in (SSEFramer(), NDJSONFramer(), TextFramer()):
        with pytest.raises(FramingError, match="lone surrogate"):
            framer.frame(token)


# ---------------------------------------------------------------- SSE specifics
def test_sse_multiline_data_becomes_several_data_lines() -> None:
    assert SSEFramer().frame("a\nb\r\nc\rd") == b"data: a\ndata: b\ndata: c\ndata: d\n\n"
    assert SSEFramer().frame("x\n") == b"data: x\ndata: \n\n"


def test_sse_json_and_event_fields() -> None:
    f = SSEFramer()
    assert f.frame({"a": "é", "b": [1, 2]}) == 'data: {"a":"é","b":[1,2]}\n\n'.encode()
    assert (
        f.frame(Event(data="x", event="delta", id="7", retry=1500)) == b"event: delta\nid: 7\nretry: 1500\ndata: x\n\n"
    )
    assert f.frame(Event(comment="ping")) == b": ping\n\n"
    assert f.frame(Event(id="only")) == b"id: only\n\n"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"event": "a\nb"}, "event"),
        ({"event": "a\rb"}, "event"),
        ({"id": "1\n2"}, "id"),
        ({"id": "a\0b"}, "NUL"),
        ({"retry": -1}, "retry"),
        ({"retry": 1.5}, "retry"),
        ({"retry": True}, "retry"),
        ({"retry": "100"}, "retry"),
    ],
)
def test_invalid_event_fields_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(FramingError, match=message):
        Event(data="x", **kwargs)


def test_bytes_tokens_hold_back_split_characters() -> None:
    emoji = "😀".encode()
    for framer in (SSEFramer(), NDJSONFramer(), TextFramer()):
        first = framer.frame(emoji[:2])
        second = framer.frame(emoji[2:])
        assert first == b""
        assert "😀".encode() in second
        assert framer.finish() == b""


def test_stream_ending_inside_a_character_is_an_error() -> None:
    framer = SSEFramer()
    framer.frame(b"ok\xe2\x82")
    with pytest.raises(FramingError, match="multi-byte"):
        framer.finish()


def test_invalid_utf8_bytes_are_refused() -> None:
    with pytest.raises(FramingError, match="not valid UTF-8"):
        SSEFramer().frame(b"\xff\xfe")


def test_empty_tokens_produce_nothing() -> None:
    for framer in (SSEFramer(), NDJSONFramer(), TextFramer()):
        assert framer.frame("") == b""
        assert framer.frame(b"") == b""


@pytest.mark.parametrize("framer", [SSEFramer(), NDJSONFramer(), TextFramer()])
@pytest.mark.parametrize("token", [None, object(), {1, 2}, 1j])
def test_unsupported_token_types_name_the_type(framer, token) -> None:
    with pytest.raises(UnsupportedTokenError, match=type(token).__qualname__):
        framer.frame(token)


def test_nan_is_not_json() -> None:
    with pytest.raises(FramingError, match="not valid JSON"):
        SSEFramer().frame({"x": float("nan")})


def test_error_frames() -> None:
    payload = {"error": {"type": "t", "message": "m"}}
    assert SSEFramer().error(payload) == b'event: error\ndata: {"error":{"type":"t","message":"m"}}\n\n'
    assert NDJSONFramer().error(payload) == b'{"error":{"type":"t","message":"m"}}\n'
    assert TextFramer().error(payload) is None


# ---------------------------------------------------------------- NDJSON / text
@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(payloads, st.dictionaries(text, st.one_of(text, st.integers(), st.booleans()), max_size=3)),
        min_size=1,
        max_size=5,
    )
)
def test_ndjson_one_compact_value_per_line(tokens: list) -> None:
    framer = NDJSONFramer()
    wire = b"".join(framer.frame(t) for t in tokens)
    lines = wire.split(b"\n")
    assert lines[-1] == b""
    values = [json.loads(line) for line in lines[:-1]]
    assert values == [t for t in tokens if t != ""]


def test_ndjson_keeps_non_ascii_as_utf8_and_events_as_objects() -> None:
    f = NDJSONFramer()
    assert f.frame("é😀") == '"é😀"\n'.encode()
    assert f.frame(Event(data={"k": 1}, event="delta", id="3")) == b'{"event":"delta","id":"3","data":{"k":1}}\n'
    assert f.frame(Event(comment="ignored")) == b""


def test_text_framer_concatenates() -> None:
    f = TextFramer()
    assert f.frame("hé") + f.frame(Event(data="llo")) + f.frame({"a": 1}) == 'héllo{"a":1}\n'.encode()


@settings(max_examples=100, deadline=None)
@given(st.lists(payloads, min_size=1, max_size=6))
def test_token_stream_hot_path_frames_like_the_framer(tokens: list[str]) -> None:
    """The pump's inline fast path for SSE text must produce exactly the framer's bytes."""
    import anyio

    from asgi_stream import TokenStream

    sent: list[bytes] = []

    async def main() -> None:
        async def gen():
            for t in tokens:
                yield t

        async def receive():
            await anyio.sleep(3600)

        async def send(message):
            if message["type"] == "http.response.body":
                sent.append(message.get("body", b""))

        scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
        await TokenStream(gen(), format="sse")(scope, receive, send)

    anyio.run(main)
    framer = SSEFramer()
    assert b"".join(sent) == b"".join(framer.frame(t) for t in tokens)
