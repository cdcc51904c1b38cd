"""A worker that has never produced a resumable stream (no store yet) still answers a
cursor of ours itself — 204, the endpoint not run — and leaves every other
``Last-Event-ID`` to the application."""

from __future__ import annotations

import anyio
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from asgi_stream import StreamMiddleware, TokenStream

from .asgi import call, http_scope

SID = "AAAAAAAAAAAAAAAA"


def make_app(calls: list[str], **options: object) -> Starlette:
    async def endpoint(request):
        calls.append(request.headers.get("last-event-id", ""))
        return TokenStream(iter(["a", "b"]), resumable=True, format="sse")

    app = Starlette(routes=[Route("/chat", endpoint)])
    app.add_middleware(StreamMiddleware, **options)
    return app


@pytest.mark.parametrize("via", ["header", "query"])
def test_a_fresh_worker_answers_a_cursor_of_ours_with_204_without_running_the_endpoint(via: str) -> None:
    """No resume_store given and no resumable=True on the middleware: the store comes
    with the first resumable stream, yet a resume before it must not reach the endpoint."""
    calls: list[str] = []
    app = make_app(calls)
    if via == "header":
        scope = http_scope(headers=[(b"last-event-id", f"{SID}.3".encode())])
    else:
        scope = http_scope(query=f"last_event_id={SID}.3".encode())
    answer = anyio.run(call, app, scope)
    assert answer.status == 204 and answer.body == b""
    assert calls == [], "the endpoint ran: a second generation for a resume"


def test_after_the_first_resume_the_worker_still_streams_and_resumes() -> None:
    calls: list[str] = []
    app = make_app(calls)

    async def main() -> None:
        gone = await call(app, http_scope(headers=[(b"last-event-id", f"{SID}.1".encode())]))
        assert gone.status == 204
        first = await call(app, http_scope())
        assert first.status == 200
        sid = first.headers[b"x-stream-id"].decode()
        again = await call(app, http_scope(headers=[(b"last-event-id", f"{sid}.1".encode())]))
        assert again.status == 200 and again.body == f"data: b\nid: {sid}.2\n\n".encode()

    anyio.run(main)
    assert calls == [""]


@pytest.mark.parametrize("value", ["42", "evt-7", "abc.def", f"{SID}.x", f"{SID[:15]}.3", f"{SID}A.3", f"{SID}.", ""])
def test_ids_that_are_not_ours_reach_the_endpoint_on_a_fresh_worker(value: str) -> None:
    calls: list[str] = []
    answer = anyio.run(call, make_app(calls), http_scope(headers=[(b"last-event-id", value.encode())]))
    assert answer.status == 200 and calls == [value]
