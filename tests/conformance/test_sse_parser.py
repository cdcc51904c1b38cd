"""The conformance suite's SSE and NDJSON parsers, against the WHATWG spec's examples
and against every way a stream can be split into chunks."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_stream import Event
from asgi_stream.framing import SSEFramer
from conformance.ndjson import parse_ndjson
from conformance.sse import SSEParser, parse_sse


def _all_splits(data: bytes) -> list[list[bytes]]:
    """The whole stream, every 2-way split, and byte by byte."""
    out = [[data], [bytes([b]) for b in data]]
    out += [[data[:i], data[i:]] for i in range(1, len(data))]
    return out


def _summary(p: SSEParser) -> list[tuple[str, str, str]]:
    return [(e.type, e.data, e.last_event_id) for e in p.events]


# ---------------------------------------------------------------- spec examples
SPEC_1 = b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n"
SPEC_2 = b"data\n\ndata\ndata\n\ndata:\n"
SPEC_3 = b"data:test\n\ndata: test\n\n"
SPEC_STOCKS = b"data: YHOO\ndata: +2\ndata: 10\n\n"
SPEC_TYPES = b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\nevent: add\ndata: 113411\n\n"


def test_spec_example_comment_ids_and_single_space() -> None:
    for pieces in _all_splits(SPEC_1):
        p = parse_sse(pieces)
        assert _summary(p) == [
            ("message", "first event", "1"),
            ("message", "second event", ""),
            ("message", " third event", ""),
        ], pieces
        assert [c.text for c in p.comments] == [" test stream"]


def test_spec_example_empty_data_and_newline_and_unterminated_block() -> None:
    for pieces in _all_splits(SPEC_2):
        p = parse_sse(pieces)
        assert [e.data for e in p.events] == ["", "\n"]
        assert p.discarded_at_close == "\n"


def test_spec_example_space_after_colon_is_optional() -> None:
    assert [e.data for e in parse_sse(SPEC_3).events] == ["test", "test"]


def test_spec_example_multi_line_data_and_event_types() -> None:
    assert [e.data for e in parse_sse(SPEC_STOCKS).events] == ["YHOO\n+2\n10"]
    assert [(e.type, e.data) for e in parse_sse(SPEC_TYPES).events] == [
        ("add", "73857293"),
        ("remove", "2153"),
        ("add", "113411"),
    ]


# ---------------------------------------------------------------- line endings
def test_crlf_lf_and_cr_line_endings_in_any_split() -> None:
    stream = b"data: a\r\n\r\ndata: b\n\ndata: c\r\rdata: d\r\ndata: e\r\n\r\n"
    for pieces in _all_splits(stream):
        assert [e.data for e in parse_sse(pieces).events] == ["a", "b", "c", "d\ne"], pieces


def test_cr_at_chunk_end_dispatches_without_waiting_for_next_chunk() -> None:
    p = SSEParser()
    assert p.feed(b"data: x\r") == []
    assert [e.data for e in p.feed(b"\r")] == ["x"]  # CR CR: the second CR is the blank line
    p2 = SSEParser()
    p2.feed(b"data: y\r\n\r")
    assert [e.data for e in p2.events] == ["y"]
    assert p2.feed(b"\ndata: z\n\n")[0].data == "z"  # the LF after CR is not a second blank line
    assert [e.data for e in p2.events] == ["y", "z"]


# ---------------------------------------------------------------- fields
def test_bom_stripped_once_only_at_start() -> None:
    p = parse_sse([b"\xef\xbb", b"\xbfdata: 1\n\n\xef\xbb\xbfdata: 2\n\n"])
    assert [e.data for e in p.events] == ["1"]  # a later BOM makes the field name "\ufeffdata"
    assert p.ignored_fields == ["\ufeffdata"]


def test_id_with_nul_is_ignored_and_id_persists() -> None:
    p = parse_sse(b"id: 7\ndata: a\n\nid: x\x00y\ndata: b\n\ndata: c\n\n")
    assert [(e.data, e.last_event_id) for e in p.events] == [("a", "7"), ("b", "7"), ("c", "7")]


def test_retry_accepts_ascii_digits_only() -> None:
    assert parse_sse(b"retry: 1500\n\n").retry == 1500
    assert parse_sse(b"retry: 1500\nretry: 15x\nretry: -1\nretry: 1.5\nretry:\n\n").retry == 1500


def test_unknown_fields_ignored_and_event_type_resets() -> None:
    p = parse_sse(b"foo: bar\nevent: tick\n\ndata: a\n\nevent: x\ndata: b\n\n")
    # "event: tick" without data: nothing dispatched, and the type does not leak
    assert [(e.type, e.data) for e in p.events] == [("message", "a"), ("x", "b")]
    assert p.ignored_fields == ["foo"]


def test_field_without_colon_and_colon_in_value() -> None:
    p = parse_sse(b"data\ndata:a:b\ndata::\n\n")
    assert p.events[0].data == "\na:b\n:"


def test_unterminated_last_event_discarded() -> None:
    p = parse_sse(b"data: done\n\ndata: partial")
    assert [e.data for e in p.events] == ["done"]


def test_unfinished_is_what_follows_the_last_blank_line_in_any_split() -> None:
    for stream, rest in [
        (b"data: a\n\n", ""),
        (b"data: a\n\n: ka\n\n", ""),
        (b"data: a\n\ndata: b\nid: 2\ndata: par", "data: b\nid: 2\ndata: par"),
        (b"data: a\r\n\r\n: c\r\n", ": c\n"),
        (b"retry: 5\n", "retry: 5\n"),
    ]:
        for pieces in _all_splits(stream):
            p = SSEParser()
            for piece in pieces:
                p.feed(piece)
            assert p.unfinished == rest, pieces
            p.close()
            assert p.unfinished == rest, pieces  # closing processes nothing more


def test_a_comment_knows_its_place_among_the_events() -> None:
    p = parse_sse(b": a\n\ndata: 1\n\n: b\n\n: c\ndata: 2\n\n: d\n\n")
    assert [(c.text, c.events_before) for c in p.comments] == [(" a", 0), (" b", 1), (" c", 1), (" d", 2)]


# ---------------------------------------------------------------- UTF-8
def test_split_multibyte_character_decodes_across_chunks() -> None:
    stream = "data: 😀 é\n\n".encode()
    for pieces in _all_splits(stream):
        p = parse_sse(pieces)
        assert [e.data for e in p.events] == ["😀 é"]
        assert p.replacement_chars == 0


def test_invalid_utf8_becomes_replacement_character() -> None:
    p = parse_sse(b"data: \xf0\x9f\n\n")  # a truncated 4-byte sequence
    assert p.events[0].data == "\ufffd"
    assert p.replacement_chars == 1


def test_timestamps_of_the_completing_chunk() -> None:
    p = SSEParser()
    p.feed(b"data: a", t=1.0)
    p.feed(b"\n\n: ping\n", t=2.0)
    assert p.events[0].t == 2.0
    assert p.comments[0].t == 2.0 and p.comments[0].text == " ping"


# ---------------------------------------------------------------- round trip with the core framer
_texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


@settings(max_examples=150, deadline=None)
@given(
    events=st.lists(
        st.builds(
            Event,
            data=_texts,
            event=st.none() | st.from_regex(r"[a-z]{1,8}", fullmatch=True),
            id=st.none() | st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True),
        ),
        max_size=6,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_roundtrip_core_framer_any_split(events: list[Event], cuts: list[int]) -> None:
    framer = SSEFramer()
    stream = b"".join(framer.frame(e) for e in events)
    points = sorted({c for c in cuts if c < len(stream)})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)])]
    p = parse_sse(pieces)
    expected = []
    last_id = ""
    for e in events:
        if e.id is not None:
            last_id = e.id
        normalised = e.data.replace("\r\n", "\n").replace("\r", "\n")
        expected.append((e.event or "message", normalised, last_id))
    assert _summary(p) == expected


# ---------------------------------------------------------------- NDJSON
def test_ndjson_lines_across_chunks() -> None:
    body = '{"a":1}\n"é😀"\r\n\n[1,2]\n'.encode()
    for pieces in _all_splits(body):
        p = parse_ndjson(pieces)
        assert [v.value for v in p.values] == [{"a": 1}, "é😀", [1, 2]]
        assert p.errors == []


def test_ndjson_errors_are_reported() -> None:
    p = parse_ndjson(b'{"a":1}\nnot json\n"\xff"\n{"b":2}')
    assert [v.value for v in p.values] == [{"a": 1}]
    assert len(p.errors) == 3
    assert "invalid JSON" in p.errors[0] and "UTF-8" in p.errors[1] and "terminating LF" in p.errors[2]
