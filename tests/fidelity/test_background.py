"""Defect 1: a response's background task still runs after the client leaves."""

from __future__ import annotations

import time

import anyio
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse
from starlette.routing import Route

from ..support.servers import serve
from ..support.waiting import wait_for
from .support import BUDGET, add_line, open_stream, variants


@pytest.mark.parametrize("line", variants(None))
def test_background_task_runs_exactly_once_after_the_client_leaves(line: bool) -> None:
    saved: list[float] = []
    closed: list[float] = []

    def save_transcript() -> None:
        saved.append(time.monotonic())

    async def chat(request):
        async def events():
            try:
                yield "data: Hel\n\n"
                await anyio.sleep(60)  # still generating when the user closes the tab
                yield "data: lo\n\n"
            finally:
                closed.append(time.monotonic())

        return StreamingResponse(events(), media_type="text/event-stream", background=BackgroundTask(save_transcript))

    app = add_line(Starlette(routes=[Route("/chat", chat)]), line)
    with serve(app) as srv:
        client = open_stream(srv.port, "/chat")
        client.close()
        wait_for(lambda: saved, BUDGET, message="save_transcript never ran after the client left")
        assert closed, "the generator was not closed"
    # The server has stopped: no request of it is left to run the task again.
    assert len(saved) == 1
