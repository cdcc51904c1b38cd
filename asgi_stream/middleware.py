"""StreamMiddleware: the pure-ASGI middleware that gives every stream of an app the
wire guarantees. One line: ``app.add_middleware(StreamMiddleware)``."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Unpack

import anyio
import anyio.abc
import anyio.lowlevel

from . import _clock, shutdown
from ._types import ASGIApp, Message, Receive, Scope, Send
from .cancel import CancelToken
from .config import DEFAULT_STREAM_MEDIA_TYPES, StreamConfig, StreamOptions
from .integrations import fastapi as fastapi_integration
from .lifecycle import Ending
from .passthrough import Passthrough, media_type_of, spec_version
from .pump import TokenPump
from .receive import ReceiveHub
from .record import StreamRecord
from .resume.memory import MemoryStore
from .resume.replay import cursor_of, serve_resume
from .resume.store import ReplayStore
from .scope import CTX_KEY, endpoint_name, full_path, unwrap_task_group_error
from .stream import Stream

if TYPE_CHECKING:
    from .resume.producer import Producer

logger = logging.getLogger("asgi_stream")

_UNDECIDED, _PASS, _TOKEN, _STREAM = range(4)
_DEFAULTS = StreamConfig()


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
        config: StreamConfig | None = None,
        *,
        resume_store: ReplayStore | None = None,
        stream_media_types: Iterable[str] = DEFAULT_STREAM_MEDIA_TYPES,
        handle_signals: bool = True,
        **options: Unpack[StreamOptions],
    ) -> None:
        """``config`` (a :class:`StreamConfig`) and/or keyword ``options`` (its fields:
        ``keepalive=5``, ``flush=Coalesce()``, …) set the app-wide stream options; invalid
        ones fail here. ``resume_store`` keeps resumable streams (a MemoryStore is made
        when ``resumable=True`` or a resume arrives), ``stream_media_types`` are the
        media types a passthrough stream is recognised by, ``handle_signals`` chains
        SIGINT/SIGTERM for shutdown drain."""
        self.app = app
        if config is not None and not isinstance(config, StreamConfig):
            raise TypeError(f"config must be a StreamConfig, got {config!r}")
        self.config = (config or _DEFAULTS).replace(**options)
        resumable = self.config.resumable
        self.stream_media_types = frozenset(m.lower() for m in stream_media_types)
        #: Where resumable streams are kept (created on first use when not given).
        if resume_store is None and resumable:
            resume_store = MemoryStore()
        self.resume_store: ReplayStore | None = resume_store
        self.handle_signals = handle_signals
        #: Streams (and resumable producers) in flight, for shutdown drain and introspection.
        self.active: set[Stream | Producer] = set()
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
        try:
            await self._serve(ctx, scope, send)
        finally:
            ctx.done = True
            if scope.get(CTX_KEY) is ctx:  # leave the scope as it came
                if ctx.parent is not None:
                    scope[CTX_KEY] = ctx.parent
                else:
                    del scope[CTX_KEY]

    async def _serve(self, ctx: RequestContext, scope: Scope, send: Send) -> None:
        cursor = cursor_of(scope)
        store = self.replay_store() if cursor is not None else None
        with unwrap_task_group_error():
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
        "_relay_scope",
        "accepted_at",
        "app_send",
        "config",
        "done",
        "forward",
        "hub",
        "middleware",
        "mode",
        "parent",
        "raw_send",
        "relaying",
        "scope",
        "stream",
        "tg",
    )

    def __init__(self, middleware: StreamMiddleware, scope: Scope, receive: Receive, send: Send) -> None:
        self.middleware = middleware
        self.config = middleware.config
        self.scope = scope
        parent = scope.get(CTX_KEY)
        if parent is not None and parent.done:
            parent = None  # a scope dict used again: that request is over
        self.parent: RequestContext | None = parent
        # Its own hub over the receive it was given: layers between a StreamMiddleware
        # further out and this one (a mounted app with its own line) keep seeing and
        # rewriting what the application reads.
        self.hub = ReceiveHub(receive)
        if parent is not None:
            parent.mode = _PASS  # the inner line handles the streams; the outer passes through
            self.accepted_at = parent.accepted_at
        else:
            self.accepted_at = _clock.monotonic()
        self.done = False
        self.raw_send = send
        #: The send handed to the application (bound once, so TokenStream can tell by
        #: identity that nothing stands between it and the middleware).
        self.app_send: Send = self.send
        self.tg: anyio.abc.TaskGroup | None = None
        self.stream: Stream | None = None
        self.mode = _UNDECIDED
        #: Where the application's messages go once a passthrough stream started.
        self.forward: Send | None = None
        self.relaying = False
        self._relay_scope: anyio.CancelScope | None = None

    async def run_app(self, app: ASGIApp) -> None:
        """Run the application in the request's task group. A passthrough stream ends
        the way the application ends it (see :mod:`asgi_stream.passthrough`); whatever
        the application raises propagates as it would without the middleware."""
        try:
            await app(self.scope, self.hub.receive, self.app_send)
        except anyio.get_cancelled_exc_class():
            if isinstance(self.stream, Passthrough):
                self.stream.server_cancelled()  # ignored when the stream cancelled it itself
            raise
        except Exception as exc:
            stream = self.stream
            if self.mode == _STREAM and isinstance(stream, Passthrough):
                await stream.app_failed(exc)
            raise
        finally:
            stream = self.stream
            if self.mode == _STREAM and isinstance(stream, Passthrough):
                await stream.app_returned()
                self.middleware.active.discard(stream)

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

    def attach_producer(self, producer: Producer) -> None:
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
        forward = self.forward
        if forward is not None:  # a passthrough stream: every chunk takes this path
            await forward(message)
            return
        mode = self.mode
        if mode == _PASS or (mode == _TOKEN and not self.relaying):
            await self.raw_send(message)
        elif mode == _TOKEN:
            await self._relay(message)
        elif message.get("type") == "http.response.start":
            media_type = media_type_of(message)
            if media_type in self.middleware.stream_media_types and not _has_content_length(message):
                await self._start_passthrough(message, media_type)
            else:
                self.mode = _PASS
                await self.raw_send(message)
        else:
            await self.raw_send(message)

    def relay_for(self, stream: Stream) -> None:
        """Sends of a TokenStream reach this context through other layers. When such a
        layer sends from a task of its own (``BaseHTTPMiddleware`` does), relay its
        sends so that a stream that aborts releases it too: a send blocked on a stuck
        client is cancelled, later ones are dropped. (Layers that send from the
        stream's own task are covered by the stream's cancel scope.)"""
        self.relaying = True
        stream.on_abort = self._abort_relay

    async def _relay(self, message: Message) -> None:
        stream = self.stream
        if stream is not None and stream.lifecycle.ending is Ending.ABORT:
            return  # the client is gone or stuck: nothing more reaches it
        if (
            message.get("type") == "http.response.body"
            and isinstance(stream, TokenPump)
            and stream.task_id == anyio.get_current_task().id
        ):
            self.relaying = False  # the same task: nothing to relay from now on
            await self.raw_send(message)
            return
        with anyio.CancelScope() as scope:
            self._relay_scope = scope
            try:
                await self.raw_send(message)
            finally:
                self._relay_scope = None

    def _abort_relay(self) -> None:
        if self._relay_scope is not None:
            self._relay_scope.cancel()

    async def _start_passthrough(self, message: Message, media_type: str) -> None:
        scope = self.scope
        record = StreamRecord(
            method=scope.get("method", "GET"),
            path=full_path(scope),
            endpoint=endpoint_name(scope),
            format="sse" if media_type == "text/event-stream" else "ndjson",
            accepted_at=self.accepted_at,
        )
        assert self.tg is not None
        stream = Passthrough(
            media_type=media_type,
            app_scope=self.tg.cancel_scope,
            raise_gone=spec_version(scope) >= (2, 4),
            config=self.config,
            record=record,
            token=CancelToken(),
            hub=self.hub,
            send=self.raw_send,
        )
        self.mode = _STREAM
        self.forward = stream.on_message
        self.attach(stream)
        self.hub.on_disconnect(stream.on_hub_disconnect)
        stream.token.add_callback(stream.token_callback())
        if self.config.on_start is not None:
            stream.run_hook(self.config.on_start, "on_start")
        if scope.get("method") != "HEAD":
            self.tg.start_soon(stream.guard.run)
        await stream.begin(message)


def _has_content_length(message: Message) -> bool:
    return any(k.lower() == b"content-length" for k, _ in message.get("headers", ()))
