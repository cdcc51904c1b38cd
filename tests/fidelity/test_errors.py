"""Defects 3 and 4: an application's exception reaches its error handling, the server
and the test client exactly as it was raised, streams or not."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from .support import Ends, add_line, variants


def _app(line: bool, routes: list[Route]) -> tuple[Ends, list[BaseException]]:
    """The app (with its ``Exception`` handler recording what it was given), as served."""
    handled: list[BaseException] = []

    async def on_error(request: Request, exc: Exception) -> PlainTextResponse:
        handled.append(exc)
        return PlainTextResponse("failed", status_code=500)

    app = add_line(Starlette(routes=routes, exception_handlers={Exception: on_error}), line)
    return Ends(app), handled


@pytest.mark.parametrize("line", variants(None))
def test_an_exception_after_the_stream_started_still_propagates(line: bool) -> None:
    """An in-band error event may be added; the exception must still reach the app's
    handler, the server (its log, an error tracker) and ``pytest.raises``."""
    boom = ValueError("the model crashed")

    async def chat(request):
        async def events():
            yield "data: Hel\n\n"
            raise boom

        return StreamingResponse(events(), media_type="text/event-stream")

    served, handled = _app(line, [Route("/chat", chat)])
    with TestClient(served) as client, pytest.raises(ValueError) as raised:
        client.get("/chat")
    assert raised.value is boom
    assert handled == [boom]
    assert served.raised == [boom]


def _raises_group(request):
    raise ExceptionGroup("my exception group", [ValueError("one member")])


def _raises_with_cause(request):
    try:
        {}["missing"]
    except KeyError as inner:
        raise RuntimeError("lookup failed") from inner


def _raises_with_context(request):
    try:
        {}["missing"]
    except KeyError:
        raise RuntimeError("lookup failed")  # noqa: B904  (the implicit context is the point)


ROUTES = [
    Route("/group", _raises_group),
    Route("/cause", _raises_with_cause),
    Route("/context", _raises_with_context),
]


@pytest.mark.parametrize("line", variants(None))
def test_a_one_member_exception_group_the_app_raised_stays_that_group(line: bool) -> None:
    served, handled = _app(line, ROUTES)
    with TestClient(served) as client, pytest.raises(ExceptionGroup, match="my exception group") as raised:
        client.get("/group")
    group = raised.value
    assert len(group.exceptions) == 1 and isinstance(group.exceptions[0], ValueError)
    assert handled == [group] and served.raised == [group]


@pytest.mark.parametrize("line", variants(None))
def test_the_cause_of_an_exception_survives(line: bool) -> None:
    served, handled = _app(line, ROUTES)
    with TestClient(served) as client, pytest.raises(RuntimeError, match="lookup failed") as raised:
        client.get("/cause")
    exc = raised.value
    assert isinstance(exc.__cause__, KeyError)
    assert exc.__suppress_context__ is True  # "The above exception was the direct cause"
    assert handled == [exc] and served.raised == [exc]


@pytest.mark.parametrize("line", variants(None))
def test_the_context_of_an_exception_survives(line: bool) -> None:
    served, handled = _app(line, ROUTES)
    with TestClient(served) as client, pytest.raises(RuntimeError, match="lookup failed") as raised:
        client.get("/context")
    exc = raised.value
    assert exc.__cause__ is None
    assert isinstance(exc.__context__, KeyError)
    assert exc.__suppress_context__ is False  # "During handling of the above exception"
    assert handled == [exc] and served.raised == [exc]
