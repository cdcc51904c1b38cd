"""TokenStream: the Response an endpoint returns to hand a token generator over."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
from starlette.background import BackgroundTask
from starlette.responses import Response

from . import _clock
from ._types import Receive, Scope, Send, TokenSource
from .cancel import CancelToken
from .config import UNSET, Hook, StreamConfig, Unset
from .fastpath import unwrap
from .flush import FlushPolicy
from .framing import make_framer
from .headers import stream_headers
from .negotiate import FORMATS, Format, media_type_for, negotiate
from .pump import TokenPump, drive, is_token_source
from .receive import ReceiveHub
from .record import StreamRecord
from .resume.replay import RESUMABLE_FORMATS, run_resumable
from .scope import CTX_KEY, endpoint_name, full_path, unwrap_task_group_error

_DEFAULT_CONFIG = StreamConfig()


class TokenStream(Response):
    """Stream tokens from a sync or async generator (or any iterable) to the client.

    Return it from a Starlette or FastAPI endpoint::

        return TokenStream(generate(prompt))

    The wire format is negotiated from ``Accept`` (SSE, NDJSON or plain text) unless
    ``format`` forces one. Options left unset inherit the StreamMiddleware's values;
    without the middleware the defaults of :class:`StreamConfig` apply.

    Args:
        content: the token source; tokens may be ``str``, UTF-8 ``bytes``, JSON values
            or :class:`~asgi_stream.Event`.
        format: ``"sse"``, ``"ndjson"`` or ``"text"`` to skip negotiation.
        cancel: a CancelToken the generator already holds; one is created otherwise
            (see ``cancel_token``). Setting it from anywhere ends the stream.
        end: a token sent after the last one when the stream completes (e.g.
            ``"[DONE]"`` for OpenAI-style clients).
        on_start / on_end / on_cancel: per-stream hooks, called in addition to the
            middleware's; each receives the :class:`~asgi_stream.StreamRecord`.
        resumable: keep the stream's events in the middleware's replay store so a client
            can resume with ``Last-Event-ID`` (SSE and NDJSON); the generator then runs
            decoupled from the connection for ``resume_grace`` seconds after the client
            leaves. Needs StreamMiddleware.
        name: a label for logs and metrics (default: the endpoint's name).
    """

    def __init__(
        self,
        content: TokenSource,
        *,
        format: Format | None = None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        cancel: CancelToken | None = None,
        end: object = None,
        keepalive: float | Unset | None = UNSET,
        flush: FlushPolicy | Unset = UNSET,
        send_timeout: float | Unset | None = UNSET,
        max_buffer: int | Unset = UNSET,
        anti_buffering: bool | Unset = UNSET,
        resumable: bool | Unset = UNSET,
        on_start: Hook | None = None,
        on_end: Hook | None = None,
        on_cancel: Hook | None = None,
        background: BackgroundTask | None = None,
        name: str | None = None,
    ) -> None:
        if not is_token_source(content):
            raise TypeError(f"TokenStream needs a sync or async iterable of tokens, got {type(content).__name__}")
        if format is not None and format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS} or None, got {format!r}")
        self.content = content
        self.format = format
        self.status_code = status_code
        self.background = background
        self.end = end
        self.name = name
        self.cancel_token = cancel if cancel is not None else CancelToken()
        self.media_type = None
        overrides: dict[str, object] = {
            "keepalive": keepalive,
            "flush": flush,
            "send_timeout": send_timeout,
            "max_buffer": max_buffer,
            "anti_buffering": anti_buffering,
            "resumable": resumable,
        }
        self._overrides = {k: v for k, v in overrides.items() if v is not UNSET}
        if self._overrides:
            _DEFAULT_CONFIG.replace(**self._overrides)  # invalid options fail here, not mid-request
        for hook_name, hook in (("on_start", on_start), ("on_end", on_end), ("on_cancel", on_cancel)):
            if hook is not None and not callable(hook):
                raise TypeError(f"{hook_name} must be a callable or None, got {hook!r}")
        if cancel is not None and not isinstance(cancel, CancelToken):
            raise TypeError(f"cancel must be a CancelToken or None, got {cancel!r}")
        self._hooks = (on_start, on_end, on_cancel)
        self.init_headers(headers)
        #: The record of the stream once it runs (None before).
        self.record: StreamRecord | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = scope.get(CTX_KEY)
        if ctx is not None and not ctx.claim_for_token_stream():
            ctx = None
        config = (ctx.config if ctx is not None else _DEFAULT_CONFIG).merged(**self._overrides)
        if self.format is not None:
            fmt, media, negotiated = self.format, media_type_for(self.format), False
        else:
            accept = _header(scope, b"accept")
            fmt, media = negotiate(accept, config.default_format)
            negotiated = True
        framer = make_framer(fmt, media)
        record = StreamRecord(
            method=scope.get("method", "GET"),
            path=full_path(scope),
            endpoint=self.name or endpoint_name(scope),
            format=fmt,
            accepted_at=ctx.accepted_at if ctx is not None else _clock.monotonic(),
        )
        self.record = record
        hub = ctx.hub if ctx is not None else ReceiveHub(receive)
        # When only pass-through wrappers (Starlette's exception handling) stand between
        # this response and the middleware, body messages skip them (fastpath.py); the
        # start message always takes the full way.
        direct = send
        relayed = False
        if ctx is not None:
            if unwrap(send, stop=ctx.app_send) is ctx.app_send:
                direct = unwrap(ctx.raw_send)
            else:
                relayed = True  # other layers stand between: see RequestContext.relay_for
        raw_headers = stream_headers(
            self.raw_headers,
            content_type=framer.content_type,
            anti_buffering=config.anti_buffering,
            vary_accept=negotiated,
            identity_encoding=fmt != "sse",
        )
        on_start, on_end, on_cancel = self._hooks
        head = scope.get("method") == "HEAD"
        if config.resumable and fmt in RESUMABLE_FORMATS and not head:
            if ctx is None:
                raise RuntimeError(
                    "TokenStream(resumable=True) needs StreamMiddleware: resumes are answered "
                    "by the middleware before any endpoint runs"
                )
            await run_resumable(
                store=ctx.middleware.replay_store(),
                content=self.content,
                framer=framer,
                media_type=media,
                config=config,
                record=record,
                token=self.cancel_token,
                end=self.end,
                end_hooks=[h for h in (config.on_end, on_end) if h is not None],
                cancel_hooks=[h for h in (config.on_cancel, on_cancel) if h is not None],
                scope=scope,
                hub=hub,
                send=direct,
                status=self.status_code,
                raw_headers=raw_headers,
                tg=ctx.tg,
                drain=ctx.attach_producer,
            )
            if self.background is not None:
                await self.background()
            return
        pump = TokenPump(
            source=self.content,
            framer=framer,
            end=self.end,
            config=config,
            record=record,
            token=self.cancel_token,
            hub=hub,
            send=direct,
        )
        pump.status = self.status_code
        pump.start_send = send
        pump.raw_headers = raw_headers
        if on_end is not None:
            pump.add_end_hook(on_end)
        if on_cancel is not None:
            pump.add_cancel_hook(on_cancel)
        if relayed and ctx is not None:
            ctx.relay_for(pump)
        if ctx is not None:
            await self._run_in_context(ctx, pump, hub, head, on_start)
        else:
            with unwrap_task_group_error():
                async with anyio.create_task_group() as tg:
                    await drive(pump, tg, hub, head=head, on_start=on_start)
        if self.background is not None:
            await self.background()

    async def _run_in_context(
        self, ctx: Any, pump: TokenPump, hub: ReceiveHub, head: bool, on_start: Hook | None
    ) -> None:
        ctx.attach(pump)
        try:
            await drive(pump, ctx.tg, hub, head=head, on_start=on_start)
        finally:
            ctx.detach(pump)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None
