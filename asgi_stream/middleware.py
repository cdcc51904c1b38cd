"""StreamMiddleware: the pure-ASGI middleware that gives every stream of an app the
wire guarantees. One line: ``app.add_middleware(StreamMiddleware)``."""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from . import shutdown
from ._types import ASGIApp, Message, Receive, Scope, Send
from .cancel import CancelToken
from .config import DEFAULT_STREAM_MEDIA_TYPES, UNSET, StreamConfig
from .integrations import fastapi as fastapi_integration
from .passthrough import Passthrough, media_type_of
from .receive import ReceiveHub
from .record import StreamRecord
from .resume.memory import MemoryStore
from .resume.replay import cursor_of, serve_resume
from .resume.store import ReplayStore
from .scope import CTX_KEY, collapse_excgroups, endpoint_name, full_path
from .stream import Stream

logger = logging.getLogger("asgi_stream")

_UNDECIDED, _PASS, _TOKEN, _STREAM = range(4)


class StreamMiddleware:
    """Pure-ASGI middleware for correct, fast token streaming.

    Endpoints return :class:`~asgi_stream.TokenStream`; responses that already stream
    (``StreamingResponse`` with an SSE or NDJSON media type) get the guarantees that
    need no token boundaries. Every keyword is an app-wide default that a TokenStream
    may override; see the README's options table.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        default_format: str = "text",
        keepalive: float | None = 15.0,
        flush: Any = UNSET,
        send_timeout: float | None = 30.0,
        max_buffer: int = 1 << 20,
        shutdown_grace: float = 10.0,
        close_timeout: float = 5.0,
        block_warning: float | None = 0.5,
        anti_buffering: bool = True,
        resumable: bool = False,
        resume_store: ReplayStore | None = None,
        resume_grace: float = 30.0,
        resume_owner: Any = None,
        error_payload: Any = UNSET,
        on_start: Any = None,
        on_end: Any = None,
        on_cancel: Any = None,
        stream_media_types: frozenset[str] | set[str] = DEFAULT_STREAM_MEDIA_TYPES,
        handle_signals: bool = True,
    ) -> None:
        self.app = app
        self.config = StreamConfig().merged(
            default_format=default_format,
            keepalive=keepalive,
            flush=flush,
            send_timeout=send_timeout,
            max_buffer=max_buffer,
            shutdown_grace=shutdown_grace,
            close_timeout=close_timeout,
            block_warning=block_warning,
            anti_buffering=anti_buffering,
            resumable=resumable,
            resume_grace=resume_grace,
            resume_owner=resume_owner,
            error_payload=error_payload,
            on_start=on_start,
            on_end=on_end,
            on_cancel=on_cancel,
        )
        self.stream_media_types = frozenset(m.lower() for m in stream_media_types)
        #: Where resumable streams are kept (created on first use when not given).
        if resume_store is None and resumable:
            resume_store = MemoryStore()
        self.resume_store: ReplayStore | None = resume_store
        self.handle_signals = handle_signals
        #: Streams (and resumable producers) in flight, for shutdown drain and introspection.
        self.active: set[Any] = set()
        self.draining = False
        self._loop: anyio.lowlevel.EventLoopToken | None = None
        fastapi_integration.install_if_imported()  # FastAPI's own SSE / JSON Lines streams

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._loop is None:
            self._register()
        ctx = RequestContext(self, scope, receive, send)
        scope[CTX_KEY] = ctx
        cursor = cursor_of(scope)
        store = self.replay_store() if cursor is not None else None
        with collapse_excgroups():
            async with anyio.create_task_group() as tg:
                ctx.tg = tg
                if cursor is not None and store is not None:
                    ctx.mode = _TOKEN
                    await serve_resume(
                        store=store,
                        stream_id=cursor[0],
                        after=cursor[1],
                        config=self.config,
                        scope=scope,
                        hub=ctx.hub,
                        send=send,
                        tg=tg,
                    )
                else:
                    await ctx.run_app(self.app)

    def replay_store(self) -> ReplayStore:
        """The replay store for resumable streams (a MemoryStore unless one was given)."""
        if self.resume_store is None:
            self.resume_store = MemoryStore()
        return self.resume_store

    # ------------------------------------------------------------ shutdown
    def _register(self) -> None:
        self._loop = anyio.lowlevel.current_token()
        if self.handle_signals:
            shutdown.watch(self, self._loop)

    def begin_shutdown(self) -> None:
        """Start draining: every open stream is cancelled ``shutdown_grace`` seconds
        from now (new streams too). Called on SIGINT/SIGTERM and ``lifespan.shutdown``;
        call it yourself from a custom server's shutdown hook."""
        if self.draining:
            return
        self.draining = True
        streams = list(self.active)
        if streams:
            logger.info(
                "asgi_stream: shutdown: %d open stream(s) get %.1f s to finish",
                len(streams),
                self.config.shutdown_grace,
            )
        for stream in streams:
            stream.begin_drain(self.config.shutdown_grace)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def receive_wrapper() -> Message:
            message = await receive()
            if message.get("type") == "lifespan.shutdown":
                self.begin_shutdown()
            return message

        async def send_wrapper(message: Message) -> None:
            if message.get("type") == "lifespan.startup.complete" and self._loop is None:
                self._register()
            await send(message)

        await self.app(scope, receive_wrapper, send_wrapper)


class RequestContext:
    """Per-request state the middleware shares with TokenStream through the scope."""

    __slots__ = (
        "accepted_at",
        "app_send",
        "config",
        "hub",
        "middleware",
        "mode",
        "parent",
        "raw_send",
        "scope",
        "stream",
        "tg",
    )

    def __init__(self, middleware: StreamMiddleware, scope: Scope, receive: Receive, send: Send) -> None:
        self.middleware = middleware
        self.config = middleware.config
        self.scope = scope
        parent = scope.get(CTX_KEY)
        self.parent: RequestContext | None = parent
        if parent is not None:
            # A StreamMiddleware further out (this app is mounted in another that has one):
            # share its receive hub and let it pass everything through untouched.
            parent.mode = _PASS
            self.hub = parent.hub
            self.accepted_at = parent.accepted_at
        else:
            self.hub = ReceiveHub(receive)
            self.accepted_at = time.monotonic()
        self.raw_send = send
        #: The send handed to the application (bound once, so TokenStream can tell by
        #: identity that nothing stands between it and the middleware).
        self.app_send: Send = self.send
        self.tg: anyio.abc.TaskGroup | None = None
        self.stream: Stream | None = None
        self.mode = _UNDECIDED

    async def run_app(self, app: ASGIApp) -> None:
        """Run the application in the request's task group, whose cancel scope a
        passthrough stream's disconnect (or send timeout, or shutdown) cancels."""
        error: BaseException | None = None
        try:
            await app(self.scope, self.hub.receive, self.app_send)
        except anyio.get_cancelled_exc_class():
            if isinstance(self.stream, Passthrough):
                self.stream.server_cancelled()  # a no-op when the stream cancelled itself
            raise
        except Exception as exc:
            error = exc
        finally:
            stream = self.stream
            if self.mode == _STREAM and isinstance(stream, Passthrough):
                with anyio.CancelScope(shield=stream.cancelled):
                    try:
                        if error is not None and await stream.fail(error):
                            error = None
                        await stream.end()
                    finally:
                        stream.guard.stop()
                        self.middleware.active.discard(stream)
        if error is not None:
            raise error

    def claim_for_token_stream(self) -> bool:
        """TokenStream takes over this response (False if another response started)."""
        if self.mode != _UNDECIDED:
            return False
        self.mode = _TOKEN
        return True

    def attach(self, stream: Stream) -> None:
        """Register a stream of this request (shutdown drain, introspection)."""
        self.stream = stream
        stream.task_group = self.tg
        mw = self.middleware
        mw.active.add(stream)
        if mw.draining:
            stream.begin_drain(mw.config.shutdown_grace)

    def attach_producer(self, producer: Any) -> None:
        """Register a resumable stream's producer for shutdown drain (it removes itself)."""
        mw = self.middleware
        mw.active.add(producer)
        producer.registry = mw.active
        if mw.draining:
            producer.begin_drain(mw.config.shutdown_grace)

    def detach(self, stream: Stream) -> None:
        """The stream is over."""
        self.middleware.active.discard(stream)

    async def send(self, message: Message) -> None:
        """The ``send`` handed to the application."""
        mode = self.mode
        if mode in (_PASS, _TOKEN):
            await self.raw_send(message)
        elif mode == _STREAM:
            assert isinstance(self.stream, Passthrough)
            await self.stream.on_message(message)
        elif message.get("type") == "http.response.start":
            media_type = media_type_of(message)
            if media_type in self.middleware.stream_media_types and not _has_content_length(message):
                await self._start_passthrough(message, media_type)
            else:
                self.mode = _PASS
                await self.raw_send(message)
        else:
            await self.raw_send(message)

    async def _start_passthrough(self, message: Message, media_type: str) -> None:
        scope = self.scope
        record = StreamRecord(
            method=scope.get("method", "GET"),
            path=full_path(scope),
            endpoint=endpoint_name(scope),
            format="sse" if media_type == "text/event-stream" else "ndjson",
            accepted_at=self.accepted_at,
        )
        stream = Passthrough(
            media_type=media_type,
            config=self.config,
            record=record,
            token=CancelToken(),
            hub=self.hub,
            send=self.raw_send,
        )
        assert self.tg is not None
        stream.cancel_scope = self.tg.cancel_scope
        self.mode = _STREAM
        self.attach(stream)
        self.hub.on_disconnect(stream._on_hub_disconnect)
        if self.config.on_start is not None:
            stream.run_hook(self.config.on_start, "on_start")
        assert self.tg is not None
        if scope.get("method") != "HEAD":
            self.tg.start_soon(stream.guard.run)
        await stream.start(message)


def _has_content_length(message: Message) -> bool:
    return any(k.lower() == b"content-length" for k, _ in message.get("headers", ()))
