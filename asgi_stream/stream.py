"""Stream: the state every streamed response shares — the send side (headers, body
sends serialised between the pump and the guard, keepalive, coalescing batch), the
cancel scope and token, the record, and the hooks.

:class:`~asgi_stream.pump.TokenPump` (TokenStream's engine) and
:class:`~asgi_stream.passthrough.Passthrough` (foreign streaming responses) build on it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from ._types import Send
from .cancel import CancelReason, CancelToken, on_loop
from .config import Hook, StreamConfig
from .errors import SendTimeoutError
from .flush import Batch, Coalesce
from .guard import Guard
from .hooks import call_hook, run_end_hooks
from .receive import ReceiveHub
from .record import Outcome, StreamRecord

logger = logging.getLogger("asgi_stream")

_BODY = "http.response.body"
#: Yield to the event loop at least every 256 tokens, so a generator that never awaits
#: cannot starve other connections (and their disconnects).
YIELD_MASK = 255


class Stream:
    """Shared per-stream state and behaviour (not used directly by applications)."""

    __slots__ = (
        "_cancel_hooks",
        "_cancelled",
        "_end_hooks",
        "_idle",
        "batch",
        "busy",
        "cancel_scope",
        "completed",
        "config",
        "drain_at",
        "finished",
        "guard",
        "hub",
        "keepalive_bytes",
        "last_send",
        "raw_headers",
        "record",
        "send",
        "start_send",
        "started",
        "status",
        "task_group",
        "token",
        "yield_mask",
    )

    def __init__(
        self,
        *,
        config: StreamConfig,
        record: StreamRecord,
        token: CancelToken,
        hub: ReceiveHub,
        send: Send,
        keepalive_bytes: bytes | None,
    ) -> None:
        self.config = config
        self.record = record
        self.token = token
        self.hub = hub
        #: Where body messages go; the start message goes to ``start_send`` (which may
        #: pass through more layers, see :mod:`asgi_stream.fastpath`).
        self.send = send
        self.start_send = send
        self.status = 200
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.started = False
        self.busy = False
        #: The final body message went out: nothing can be cancelled any more.
        self.completed = False
        self.finished = False
        self.last_send = time.monotonic()
        self.keepalive_bytes = keepalive_bytes if config.keepalive else None
        self.batch: Batch | None = None
        if isinstance(config.flush, Coalesce):
            self.batch = Batch(config.flush)
            self.batch.max_bytes = min(self.batch.max_bytes, config.max_buffer)
        self.drain_at: float | None = None
        #: The pump yields to the loop when ``events & yield_mask == 0``: every 256 tokens,
        #: or every token (0) once the watchdog saw this stream's generator block the loop.
        self.yield_mask = YIELD_MASK
        self.guard = Guard(self, hub)
        self.cancel_scope: anyio.CancelScope | None = None
        self.task_group: anyio.abc.TaskGroup | None = None
        self._idle: anyio.Event | None = None
        self._cancelled = False
        self._cancel_hooks: list[Hook] = [h for h in (config.on_cancel,) if h is not None]
        self._end_hooks: list[Hook] = [h for h in (config.on_end,) if h is not None]

    # ----------------------------------------------------------------- sending
    async def wait_idle(self) -> None:
        """Wait until the send in progress (from the other task) completes."""
        while self.busy:
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()

    def _set_idle(self) -> None:
        self.busy = False
        idle, self._idle = self._idle, None
        if idle is not None:
            idle.set()

    async def send_start(self) -> None:
        """Send ``http.response.start`` once (lazily: at the first body bytes)."""
        if self.started:
            return
        self.started = True
        self.record.headers_at = time.monotonic()
        await self._raw_send(
            {"type": "http.response.start", "status": self.status, "headers": self.raw_headers}, self.start_send
        )

    async def send_body(self, data: bytes, *, more_body: bool = True) -> None:
        """Send body bytes, serialised with the other task; never an empty chunk."""
        if self.busy:
            await self.wait_idle()
        self.busy = True
        try:
            if not self.started:
                await self.send_start()
            self.last_send = time.monotonic()
            if not more_body:
                self.completed = True
                self.guard.stop()
                await self._raw_send({"type": _BODY, "body": data, "more_body": False})
            elif data:
                await self._raw_send({"type": _BODY, "body": data, "more_body": True})
        finally:
            self._set_idle()

    async def _raw_send(self, message: dict[str, Any], send: Send | None = None) -> None:
        try:
            await (send or self.send)(message)
        except Exception as exc:
            # ASGI 2.4 servers raise OSError when the client has gone; hypercorn's HTTP/3
            # raises aioquic's FrameUnexpected from a body send after the client's
            # STOP_SENDING (see TokenPump._per_token). A failing start message is still
            # the application's error (e.g. invalid headers).
            if not isinstance(exc, OSError) and message.get("type") != _BODY:
                raise
            self.hub.mark_disconnected()
            self.cancel(CancelReason.DISCONNECT)
            await anyio.lowlevel.checkpoint()  # deliver the cancellation here

    async def flush_batch(self) -> None:
        """Send everything the coalescing batch holds."""
        if self.busy:
            await self.wait_idle()
        batch = self.batch
        if batch:
            await self.send_body(batch.take())

    async def offer(self, data: bytes, now: float) -> None:
        """Coalescing: a token that finds the link idle for ``max_delay`` goes out at once
        (waiting could only add latency); otherwise it joins the batch, which is sent when
        full or ``max_delay`` after its first token (by the guard if the pump is waiting)."""
        batch = self.batch
        assert batch is not None
        if not batch.parts and now - self.last_send >= batch.max_delay:
            await self.send_body(data)
        elif batch.add(data, now):
            await self.flush_batch()
        elif len(batch.parts) == 1:
            self.guard.rearm(batch.started + batch.max_delay)

    # ----------------------------------------------------------------- guard side
    def next_deadline(self) -> float:
        """The next moment the guard has something to check: send timeout while a send
        is blocked; keepalive and coalescing flush otherwise; shutdown drain always.
        Never a past moment it cannot act on (so the guard never spins)."""
        cfg = self.config
        now = time.monotonic()
        deadline = self.drain_at if self.drain_at is not None else math.inf
        keepalive = cfg.keepalive if self.keepalive_bytes is not None else None
        if self.busy:
            if cfg.send_timeout:
                deadline = min(deadline, self.last_send + cfg.send_timeout)
            if keepalive:
                deadline = min(deadline, now + keepalive)  # look again once the send is done
            return deadline
        if keepalive:
            due = self.last_send + keepalive
            deadline = min(deadline, due if due > now or self.can_keepalive() else now + keepalive)
        if cfg.send_timeout:
            deadline = min(deadline, now + cfg.send_timeout)  # a send that starts later
        batch = self.batch
        if batch:
            deadline = min(deadline, batch.started + batch.max_delay)
        return deadline

    async def on_deadline(self, now: float) -> None:
        """Called by the guard when a deadline passed."""
        cfg = self.config
        if self.drain_at is not None and now >= self.drain_at:
            logger.info("asgi_stream: server shutting down; cancelling %s", self.describe())
            self.cancel(CancelReason.SHUTDOWN)
            return
        if self.busy:
            if cfg.send_timeout and now - self.last_send >= cfg.send_timeout:
                self._send_timed_out(now - self.last_send)
            return
        batch = self.batch
        if batch and now >= batch.started + batch.max_delay:
            await self._guarded_send(self.flush_batch)
        elif (
            self.keepalive_bytes is not None
            and cfg.keepalive
            and now - self.last_send >= cfg.keepalive
            and self.can_keepalive()
        ):
            await self._guarded_send(self._send_keepalive)

    def can_keepalive(self) -> bool:
        """Whether a keepalive comment may be written now (at an event boundary)."""
        return True

    async def _send_keepalive(self) -> None:
        assert self.keepalive_bytes is not None
        await self.send_body(self.keepalive_bytes)
        self.record.keepalives += 1

    async def _guarded_send(self, action: Callable[[], Awaitable[None]]) -> None:
        timeout = self.config.send_timeout
        with anyio.move_on_after(timeout if timeout else math.inf) as scope:
            await action()
        if scope.cancelled_caught:
            self._send_timed_out(timeout or 0.0)

    def _send_timed_out(self, waited: float) -> None:
        logger.warning(
            "asgi_stream: %s made no send progress for %.1f s (send_timeout=%s): the client "
            "stopped reading or vanished; ending the stream and cancelling its generator",
            self.describe(),
            waited,
            self.config.send_timeout,
        )
        self.record.error = SendTimeoutError(
            f"no send progress for {waited:.1f} s (send_timeout={self.config.send_timeout})"
        )
        self.cancel(CancelReason.SEND_TIMEOUT)

    def begin_drain(self, grace: float) -> None:
        """Server shutdown: cancel the stream ``grace`` seconds from now."""
        at = time.monotonic() + grace
        if self.drain_at is None or at < self.drain_at:
            self.drain_at = at
            self.guard.rearm(at)

    # ----------------------------------------------------------------- cancelling
    def cancel(self, reason: CancelReason) -> None:
        """Cancel the stream: set the token first (threads and the GPU see it at once),
        then cancel the task that drives the generator, then run ``on_cancel`` hooks."""
        if self.finished or self._cancelled or self.completed:
            return
        self._cancelled = True
        self.token.cancel(reason)  # the first reason wins if the app set it already
        reason = self.token.reason or reason
        self.record.cancel_reason = reason
        if reason is CancelReason.DISCONNECT:
            logger.debug("asgi_stream: client left %s; cancelling", self.describe())
        if self.cancel_scope is not None:
            self.cancel_scope.cancel()
        self.close_source_early()
        for hook in self._cancel_hooks:
            self.run_hook(hook, "on_cancel")

    def close_source_early(self) -> None:
        """Close the generator now if it is idle, without waiting for the driving task
        (which may be stuck in a send the server shields from cancellation)."""

    def server_cancelled(self) -> None:
        """The server cancelled the task driving this stream (e.g. its graceful
        shutdown timeout expired): treat it as a shutdown cancellation."""
        if not self.completed:
            self.cancel(CancelReason.SHUTDOWN)

    def _on_hub_disconnect(self) -> None:
        self.cancel(CancelReason.DISCONNECT)

    def token_callback(self) -> Callable[[CancelToken], None]:
        """A CancelToken callback that ends this stream when the application (from any
        thread) sets the token; it hops to the event loop to do so."""
        return on_loop(self.cancel)

    @property
    def cancelled(self) -> bool:
        """Whether the stream has been cancelled (for any reason)."""
        return self._cancelled

    def add_cancel_hook(self, hook: Hook) -> None:
        """Also call ``hook(record)`` on cancellation (per-stream ``on_cancel``)."""
        self._cancel_hooks.append(hook)

    # ----------------------------------------------------------------- hooks
    def run_hook(self, hook: Hook, name: str) -> None:
        """Call a hook now; an async hook runs as a task. Errors are logged, never raised."""
        call_hook(hook, self.record, self.task_group, name)

    async def finish_record(self, outcome: Outcome, error: BaseException | None = None) -> None:
        """Close the record with its outcome and run ``on_end`` hooks."""
        self.finished = True
        self.guard.stop()
        rec = self.record
        rec.ended_at = time.monotonic()
        rec.outcome = outcome
        if error is not None:
            rec.error = error
        await run_end_hooks(self._end_hooks, rec)

    def add_end_hook(self, hook: Hook) -> None:
        """Also call ``hook(record)`` when the stream ends (per-stream ``on_end``)."""
        self._end_hooks.append(hook)

    def outcome_for_cancel(self) -> Outcome:
        """The outcome matching the cancel reason."""
        if self.token.reason is CancelReason.SEND_TIMEOUT:
            return Outcome.TIMED_OUT
        if self.token.reason is CancelReason.ERROR:
            return Outcome.ERROR
        return Outcome.CANCELLED

    def describe(self) -> str:
        """``stream #id GET /path (endpoint)`` for log lines."""
        r = self.record
        return f"stream #{r.id} {r.method} {r.path} ({r.endpoint})"
