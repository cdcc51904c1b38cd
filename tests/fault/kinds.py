"""The apps under test: one per generator kind, each wrapped in StreamMiddleware.

Every kind streams the same three tokens with the same await points: the endpoint's
own await (an auth/DB call) before it returns the response, then ``before_first``,
``between`` (after the first token), a plain step, and ``after_last``. Each attaches a
BackgroundTask. TokenStream kinds take the run's CancelToken.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from fastapi import BackgroundTasks, Depends, FastAPI
from fastapi.sse import EventSourceResponse as FastAPIEventSourceResponse
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from asgi_stream import CancelToken, Coalesce, StreamMiddleware, TokenChannel, TokenStream
from asgi_stream.resume import MemoryStore

from .harness import Boom, Run

TOKENS = ("tok0", "tok1", "tok2")
#: (point before the token, token); ``after_last`` follows the last one.
PLAN = (("before_first", TOKENS[0]), ("between", TOKENS[1]), (None, TOKENS[2]))

TOKEN_STREAM_KINDS = ("async", "sync", "channel", "coalesce", "resumable", "text")
PASSTHROUGH_KINDS = ("sr_async", "sr_sync", "sse_starlette", "fastapi_async", "fastapi_sync")
KINDS = TOKEN_STREAM_KINDS + PASSTHROUGH_KINDS
#: Kinds whose generator runs in a thread (closed after its current step).
THREAD_KINDS = frozenset({"sync", "channel", "sr_sync", "fastapi_sync"})
#: Documented: a sync iterator inside a StreamingResponse is closed by the garbage collector.
GC_CLOSED_KINDS = frozenset({"sr_sync"})

#: Keyword options of the middleware in every run.
OPTIONS: dict[str, Any] = {
    "keepalive": 15.0,
    "send_timeout": 30.0,
    "shutdown_grace": 0.5,
    "close_timeout": 5.0,
    "block_warning": None,
    "handle_signals": False,
}


async def agen(run: Run, wrap: Callable[[str], Any] = str) -> AsyncIterator[Any]:
    """The async generator every async kind streams."""
    run.gen_started()
    try:
        for point, token in PLAN:
            await run.step(point)
            yield wrap(token)
        await run.step("after_last")
        run.gen_done()
    finally:
        run.gen_finally()


def sgen(run: Run, wrap: Callable[[str], Any] = str) -> Iterator[Any]:
    """The sync generator every sync kind streams (its steps run in a thread)."""
    run.gen_started()
    try:
        for point, token in PLAN:
            run.step_sync(point)
            yield wrap(token)
        run.step_sync("after_last")
        run.gen_done()
    finally:
        run.gen_finally()


def channel_for(run: Run) -> TokenChannel:
    """A TokenChannel fed by a producer thread that watches the token between steps."""
    assert run.token is not None
    token = run.token
    channel = TokenChannel(cancel=token)

    def produce() -> None:
        # as the transformers integration does: stop on the token, always close the channel
        run.gen_started()
        error: BaseException | None = None
        try:
            for point, item in PLAN:
                run.step_sync(point, wake_on=token)
                if token.cancelled or not channel.put(item):
                    return
                run.settle_loop()
            run.step_sync("after_last", wake_on=token)
            if not token.cancelled:
                run.gen_done()
        except Boom as exc:
            error = exc
        finally:
            run.gen_finally()
            channel.close(error)

    run.start_thread(produce, "fault: channel producer")
    return channel


def sse(token: str) -> str:
    return f"data: {token}\n\n"


def _token_stream(run: Run, background: BackgroundTask) -> Response:
    kind = run.kind
    token = run.token
    if kind == "async":
        return TokenStream(agen(run), cancel=token, background=background)
    if kind == "sync":
        return TokenStream(sgen(run), cancel=token, background=background)
    if kind == "channel":
        return TokenStream(channel_for(run), cancel=token, background=background)
    if kind == "coalesce":
        return TokenStream(agen(run), cancel=token, background=background, flush=Coalesce())
    if kind == "resumable":
        return TokenStream(agen(run), cancel=token, background=background, resumable=True)
    if kind == "text":
        return TokenStream(agen(run), cancel=token, background=background, format="text")
    raise ValueError(kind)


def _passthrough(run: Run, background: BackgroundTask) -> Response:
    kind = run.kind
    if kind == "sr_async":
        return StreamingResponse(agen(run, sse), media_type="text/event-stream", background=background)
    if kind == "sr_sync":
        return StreamingResponse(sgen(run, sse), media_type="text/event-stream", background=background)
    if kind == "sse_starlette":
        from sse_starlette import EventSourceResponse

        return EventSourceResponse(agen(run, lambda t: {"data": t}), background=background)
    raise ValueError(kind)


def starlette_app(run: Run) -> Starlette:
    """A Starlette app whose one endpoint awaits (auth) and returns the kind's response."""

    async def endpoint(request: Request) -> Response:
        run.token = CancelToken()
        await run.step("endpoint")
        background = BackgroundTask(run.background)
        if run.kind in TOKEN_STREAM_KINDS:
            return _token_stream(run, background)
        return _passthrough(run, background)

    app = Starlette(routes=[Route("/", endpoint)])
    options = dict(OPTIONS, on_end=run.record_end)
    if run.kind == "resumable":
        options["resume_store"] = MemoryStore()
    app.add_middleware(StreamMiddleware, **options)
    return app


def fastapi_app(run: Run) -> FastAPI:
    """A FastAPI app with an SSE path operation (``fastapi.sse.EventSourceResponse``)
    that yields the tokens; its auth dependency is the endpoint's await point."""
    app = FastAPI()

    async def auth() -> None:
        await run.step("endpoint")

    if run.kind == "fastapi_async":

        @app.get("/", response_class=FastAPIEventSourceResponse, dependencies=[Depends(auth)])
        async def stream_async(background_tasks: BackgroundTasks) -> AsyncIterator[str]:
            background_tasks.add_task(run.background)
            run.gen_started()  # the path operation is the generator: no inner one to close
            try:
                for point, token in PLAN:
                    await run.step(point)
                    yield token
                await run.step("after_last")
                run.gen_done()
            finally:
                run.gen_finally()

    else:

        @app.get("/", response_class=FastAPIEventSourceResponse, dependencies=[Depends(auth)])
        def stream_sync(background_tasks: BackgroundTasks) -> Iterator[str]:
            background_tasks.add_task(run.background)
            run.gen_started()
            try:
                for point, token in PLAN:
                    run.step_sync(point)
                    yield token
                run.step_sync("after_last")
                run.gen_done()
            finally:
                run.gen_finally()

    app.add_middleware(StreamMiddleware, **dict(OPTIONS, on_end=run.record_end))
    return app


def build_app(run: Run) -> Any:
    """The app of ``run.kind``."""
    if run.kind.startswith("fastapi"):
        return fastapi_app(run)
    return starlette_app(run)


__all__ = ["GC_CLOSED_KINDS", "KINDS", "PASSTHROUGH_KINDS", "THREAD_KINDS", "TOKENS", "build_app"]
