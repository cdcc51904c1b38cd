"""Resume cursors: exactly asgi-stream's own id format (``<16 URL-safe characters>.<1-12
ASCII digits>``) is a cursor; parsing is total over whatever bytes a client sends, and
anything else is left to the application — never a 5xx."""

from __future__ import annotations

import re

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import Route

from asgi_stream import StreamMiddleware, TokenStream
from asgi_stream.resume import MemoryStore, event_id, new_stream_id, parse_event_id
from asgi_stream.resume.replay import cursor_of

from .asgi import call, http_scope

SID = "AAAAAAAAAAAAAAAA"
OURS = re.compile(r"[A-Za-z0-9_-]{16}\.[0-9]{1,12}")


def make_app(calls: list[str], **options: object) -> Starlette:
    async def endpoint(request):
        calls.append(request.headers.get("last-event-id", ""))
        return TokenStream(iter(["a", "b"]), resumable=True, format="sse")

    app = Starlette(routes=[Route("/chat", endpoint)])
    app.add_middleware(StreamMiddleware, **options)
    return app


# ------------------------------------------------------------ parsing
def test_our_ids_parse() -> None:
    sid = new_stream_id()
    assert parse_event_id(event_id(sid, 7)) == (sid, 7)
    assert parse_event_id(f"{sid}.0") == (sid, 0)
    assert parse_event_id(f" {sid}.12\t") == (sid, 12)  # HTTP's optional whitespace
    assert parse_event_id(f"{sid}.{10**12 - 1}") == (sid, 10**12 - 1)


@pytest.mark.parametrize(
    "value",
    [
        f"{SID}.²",  # Latin-1 superscript two: str.isdigit() says yes, int() says no
        f"{SID}.3²",
        f"{SID}.٣",  # Arabic-Indic three: int() would accept it
        f"{SID}.３",  # fullwidth three
        f"{SID}.3\n",  # a regex ending in $ matches before a trailing newline
        f"{SID}\n.3",
        f"{SID}.3\x85",  # NEL: str.strip() would remove it
        f"{SID}.\u00a03",
        f"{SID}.{10**12}",  # 13 digits
        f"{SID}.-3",
        f"{SID}.+3",
        f"{SID}.3.4",
        f"{SID}.3 4",
        f"{SID[:-1]}é.3",
        f"{SID}.3" + " " * 100,
        None,
    ],
)
def test_malformed_cursors_are_not_ours(value: str | None) -> None:
    assert parse_event_id(value) is None


def test_a_superscript_cursor_reaches_the_endpoint_instead_of_a_500() -> None:
    """The header as a server hands it over: raw bytes, Latin-1."""
    calls: list[str] = []
    app = make_app(calls, resume_store=MemoryStore())
    answer = anyio.run(call, app, http_scope(headers=[(b"last-event-id", SID.encode() + b".\xb2")]))
    assert answer.status == 200 and len(calls) == 1


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_parsing_is_total_and_exact(value: str) -> None:
    parsed = parse_event_id(value)
    if parsed is None:
        assert not OURS.fullmatch(value.strip(" \t"))
    else:
        sid, seq = parsed
        bare = value.strip(" \t")
        assert OURS.fullmatch(bare)
        assert bare.rpartition(".")[0] == sid and int(bare.rpartition(".")[2]) == seq


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.binary(max_size=80))
def test_cursor_of_is_total_over_header_and_query_bytes(header: bytes, query: bytes) -> None:
    scope = http_scope(headers=[(b"last-event-id", header)], query=b"last_event_id=" + query)
    cursor = cursor_of(scope)
    assert cursor is None or (len(cursor[0]) == 16 and 0 <= cursor[1] < 10**12)
    assert cursor_of(http_scope(query=query)) is None or b"last_event_id=" in query


_APP_CALLS: list[str] = []
_APP = make_app(_APP_CALLS, resume_store=MemoryStore())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=64),
        st.builds(lambda tail: SID.encode() + b"." + tail, st.binary(max_size=8)),
    )
)
def test_no_last_event_id_gets_a_5xx(header: bytes) -> None:
    answer = anyio.run(call, _APP, http_scope(headers=[(b"last-event-id", header)]))
    assert answer.status in (200, 204), (header, answer)
    assert answer.ended
