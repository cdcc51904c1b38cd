"""Stream: what every client-facing stream shares — its :class:`~asgi_stream.lifecycle.
Lifecycle`, the one cancel funnel, the send stage (:class:`~asgi_stream.wire.Wire`),
the guard's deadlines (keepalive, coalescing flush, send timeout, shutdown drain), the
record and the hooks.

:class:`~asgi_stream.pump.TokenPump` (TokenStream's engine) and
:class:`~asgi_stream.passthrough.Passthrough` (streaming responses the application
built) build on it. Every cancel source — the client leaving, a failing send, the send
timeout, shutdown, the application setting the token, the server cancelling the
request — calls :meth:`Stream.cancel`, which asks the lifecycle and performs the
effects of the transition; the stream reaches CLOSED exactly once, through
:meth:`Stream.close`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc

from . import _clock
from ._types import Send
from .cancel import CancelReason, CancelToken, on_loop
from .config import Hook, StreamConfig
from .errors import SendTimeoutError
from .flush import Batch, Coalesce
from .guard import Guard
from .hooks import call_hook, run_end_hooks
from .lifecycle import Ending, Event, Lifecycle, State, Transition
from .receive import ReceiveHub
from .record import StreamRecord
from .wire import BODY, Wire

logger = logging.getLogger("asgi_stream")

#: Seconds a send may still run after the client left before it is abandoned.
GONE_GRACE = 0.5
#: Yield to the event loop at least every 256 tokens, so a generator that never awaits
#: cannot starve other connections (and their disconnects).
YIELD_MASK = 255


class Stream:
    """Shared per-stream state and behaviour (not used directly by applications)."""

    __slots__ = (
        "_cancel_hooks",
        "_end_hooks",
        "_guard_scope",
        "_guard_sending",
        "batch",
        "config",
        "drain_at",
        "guard",
        "hub",
        "keepalive_bytes",
        "lifecycle",
        "on_abort",
        "raw_headers",
        "record",
        "scope",
        "start_send",
        "status",
        "task_group",
        "token",
        "wire",
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
        self.lifecycle = Lifecycle()
        #: Where body messages go; the start message goes to ``start_send`` (which may
        #: pass through more layers, see :mod:`asgi_stream.fastpath`).
        self.wire = Wire(send, gone=self._send_failed)
        self.start_send = send
        self.status = 200
        self.raw_headers: list[tuple[bytes, bytes]] = []
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
        #: The cancel scope of the task producing the stream, while it runs.
        self.scope: anyio.CancelScope | None = None
        self.task_group: anyio.abc.TaskGroup | None = None
        #: Called when the stream aborts (the request context stops relaying sends).
        self.on_abort: Callable[[], None] | None = None
        #: A send the guard started (keepalive, a due batch) is running, in this scope.
        self._guard_sending = False
        self._guard_scope: anyio.CancelScope | None = None
        self._cancel_hooks: list[Hook] = [h for h in (config.on_cancel,) if h is not None]
        self._end_hooks: list[Hook] = [h for h in (config.on_end,) if h is not None]

    # ----------------------------------------------------------------- sending
    async def start(self) -> None:
        """Send ``http.response.start`` once (lazily: with the first body bytes)."""
        wire = self.wire
        if wire.started:
            return
        wire.started = True
        self.record.headers_at = _clock.monotonic()
        self.lifecycle.handle(Event.HEADERS)
        message = {"type": "http.response.start", "status": self.status, "headers": self.raw_headers}
        await wire.send(message, self.start_send)

    async def send_body(self, data: bytes) -> None:
        """Send non-final body bytes (headers first if needed); never an empty chunk."""
        if not self.wire.started:
            await self.start()
        if data:
            await self.wire.send({"type": BODY, "body": data, "more_body": True})

    async def end_body(self, data: bytes = b"") -> None:
        """Send the final body message, exactly once (headers first if needed)."""
        wire = self.wire
        if wire.ended:
            return
        if not wire.started:
            await self.start()
        wire.ended = True
        await wire.send({"type": BODY, "body": data, "more_body": False})

    async def flush_batch(self) -> None:
        """Send everything the coalescing batch holds."""
        wire = self.wire
        if wire.sending:
            await wire.wait_idle()
        batch = self.batch
        if batch:
            await self.send_body(batch.take())

    async def offer(self, data: bytes, now: float) -> None:
        """Coalescing: a token that finds the link idle for ``max_delay`` goes out at once
        (waiting could only add latency); otherwise it joins the batch, which is sent when
        full or ``max_delay`` after its first token (by the guard if the pump is waiting)."""
        batch = self.batch
        assert batch is not None
        if not batch.parts and now - self.wire.last_send >= batch.max_delay:
            await self.send_body(data)
        elif batch.add(data, now):
            await self.flush_batch()
        elif len(batch.parts) == 1:
            self.guard.rearm(batch.started + batch.max_delay)

    # ----------------------------------------------------------------- the guard's side
    def next_deadline(self) -> float:
        """The next moment the guard has something to check: send timeout while a send
        is in progress; keepalive and coalescing flush while streaming; shutdown drain.
        Never a past moment it cannot act on (so the guard never spins)."""
        cfg = self.config
        wire = self.wire
        now = _clock.monotonic()
        lifecycle = self.lifecycle
        if lifecycle.ending is Ending.ABORT:
            if wire.sending:  # a send that outlives the abort stays bounded
                return min(self.aborted_deadline(), self._abandon_at())
            return self.aborted_deadline()
        streaming = lifecycle.ending is None  # not ending yet (CREATED counts: it is about to run)
        deadline = self.drain_at if self.drain_at is not None and streaming else math.inf
        if self._guard_sending:
            return deadline  # its own task times it; the guard watches the client
        keepalive = cfg.keepalive if self.keepalive_bytes is not None and streaming else None
        if wire.sending:
            if cfg.send_timeout:
                deadline = min(deadline, wire.last_send + cfg.send_timeout)
            if keepalive:
                deadline = min(deadline, now + keepalive)  # look again once the send is done
            return deadline
        if keepalive:
            due = wire.last_send + keepalive
            deadline = min(deadline, due if due > now or self.can_keepalive() else now + keepalive)
        if cfg.send_timeout:
            deadline = min(deadline, now + cfg.send_timeout)  # a send that starts later
        batch = self.batch
        if batch and streaming:
            deadline = min(deadline, batch.started + batch.max_delay)
        return deadline

    async def on_deadline(self, now: float) -> None:
        """Called by the guard when a deadline passed."""
        cfg = self.config
        wire = self.wire
        lifecycle = self.lifecycle
        if lifecycle.ending is Ending.ABORT:
            if wire.sending and now >= self._abandon_at():
                logger.info(
                    "asgi_stream: %s: a send had not returned %.1f s after it began, the stream "
                    "being over; abandoning it",
                    self.describe(),
                    now - wire.last_send,
                )
                self.abandon_send()
            await self.on_aborted_deadline(now)
            return
        running = lifecycle.ending is None
        if running and self.drain_at is not None and now >= self.drain_at:
            logger.info("asgi_stream: server shutting down; cancelling %s", self.describe())
            self.cancel(CancelReason.SHUTDOWN)
            return
        if wire.sending:
            if cfg.send_timeout and now - wire.last_send >= cfg.send_timeout:
                self._send_timed_out(now - wire.last_send)
            return
        if not running:
            return
        if self._guard_sending:
            return
        batch = self.batch
        if batch and now >= batch.started + batch.max_delay:
            self._guard_send(self.flush_batch)
        elif (
            self.keepalive_bytes is not None
            and cfg.keepalive
            and now - wire.last_send >= cfg.keepalive
            and self.can_keepalive()
        ):
            self._guard_send(self._send_keepalive)

    def _abandon_at(self) -> float:
        """When a send still running in an aborted stream is given up: at the send
        timeout, or shortly after the client left (a server completes or drops such a
        send at once; cancelling it at the very moment could cut off the server's own
        ending of the response, e.g. an HTTP/1.0 close)."""
        timeout = self.config.send_timeout
        at = self.wire.last_send + timeout if timeout else math.inf
        if self.gone_at is not None:
            at = min(at, self.gone_at + GONE_GRACE)
        return at

    def abandon_send(self) -> None:
        """Cancel a send that outlived the stream's abort (the final bytes a server
        would not take even after the client left)."""
        if self.scope is not None:
            self.scope.cancel()

    def aborted_deadline(self) -> float:
        """When an aborted stream has something to check (nothing, by default: its
        producer has been cancelled and ends by itself)."""
        return math.inf

    async def on_aborted_deadline(self, now: float) -> None:
        """The deadline of :meth:`aborted_deadline` passed."""

    def can_keepalive(self) -> bool:
        """Whether a keepalive comment may be written now (at an event boundary)."""
        return True

    async def _send_keepalive(self) -> None:
        assert self.keepalive_bytes is not None
        await self.send_body(self.keepalive_bytes)
        self.record.keepalives += 1

    def _guard_send(self, action: Callable[[], Awaitable[None]]) -> None:
        """A send the guard decided on (keepalive, a due batch) runs as a task of its
        own, so the guard goes on watching for the client leaving meanwhile."""
        if self.task_group is None:
            return
        self._guard_sending = True
        self.task_group.start_soon(self._guarded_send, action)

    async def _guarded_send(self, action: Callable[[], Awaitable[None]]) -> None:
        """Run a guard-initiated send inside the stream's scope rules: bounded by the
        send timeout, and abandoned when the stream ends."""
        timeout = self.config.send_timeout
        try:
            with anyio.move_on_after(timeout if timeout else math.inf) as scope:
                self._guard_scope = scope
                if self.lifecycle.ending is None:
                    await action()
            if scope.cancelled_caught and self.lifecycle.ending is None:
                self._send_timed_out(timeout or 0.0)
        finally:
            self._guard_scope = None
            self._guard_sending = False
            self.guard.rearm(_clock.monotonic())  # look again at the deadlines

    def _send_timed_out(self, waited: float) -> None:
        if self.lifecycle.closed or self.lifecycle.ending is Ending.ABORT:
            return
        logger.warning(
            "asgi_stream: %s made no send progress for %.1f s (send_timeout=%s): the client "
            "stopped reading or vanished; ending the stream and cancelling its generator",
            self.describe(),
            waited,
            self.config.send_timeout,
        )
        if self.record.error is None:
            self.record.error = SendTimeoutError(
                f"no send progress for {waited:.1f} s (send_timeout={self.config.send_timeout})"
            )
        self.cancel(CancelReason.SEND_TIMEOUT)

    def begin_drain(self, grace: float) -> None:
        """Server shutdown: cancel the stream ``grace`` seconds from now."""
        at = _clock.monotonic() + grace
        if self.drain_at is None or at < self.drain_at:
            self.drain_at = at
            self.guard.rearm(at)

    # ----------------------------------------------------------------- cancelling
    def cancel(self, reason: CancelReason) -> None:
        """The one cancel funnel: ask the lifecycle, then perform the transition's
        effects — the token first (threads and the GPU see it at once), then the
        stream's own (see :meth:`cancelled`), then the ``on_cancel`` hooks."""
        wire = self.wire
        if wire.ended and not wire.sending:
            return  # the body is complete on the wire: nothing left to cancel
        transition = self.lifecycle.handle(Event.CANCEL, reason=reason, client_gone=self.hub.disconnected)
        if transition is Transition.IGNORED:
            return
        if transition is Transition.MOVED:
            self.token.cancel(reason)  # the first reason wins if the app set it already
            reason = self.token.reason or reason
            self.record.cancel_reason = reason
            if reason is CancelReason.DISCONNECT:
                logger.debug("asgi_stream: client left %s; cancelling", self.describe())
        elif self.record.cancel_reason is None:
            self.record.cancel_reason = reason
        self.stop_producing(transition, reason)
        if transition is Transition.MOVED:
            for hook in self._cancel_hooks:
                self.run_hook(hook, "on_cancel")

    def stop_producing(self, transition: Transition, reason: CancelReason) -> None:
        """The stream's own effects of a cancel (MOVED: it was running or not started
        yet; ESCALATED: its final bytes must be abandoned): stop what produces it.

        A final send in progress is cancelled only when it is stuck (send timeout): after
        a disconnect it returns by itself, and the server may be completing it (an
        HTTP/1.0 close) — cancelling it then would leave the connection open."""
        if self.scope is not None and (transition is Transition.MOVED or reason is not CancelReason.DISCONNECT):
            self.scope.cancel()
        if self._guard_scope is not None and transition is Transition.MOVED:
            self._guard_scope.cancel()
        if self.on_abort is not None and self.lifecycle.ending is Ending.ABORT:
            self.on_abort()

    def server_cancelled(self) -> None:
        """The server cancelled the task driving this stream (e.g. its graceful
        shutdown timeout expired): treat it as a shutdown cancellation."""
        self.cancel(CancelReason.SHUTDOWN)

    def _send_failed(self) -> None:
        """A send raised OSError (ASGI 2.4): the client is gone."""
        self.hub.mark_disconnected()
        self.cancel(CancelReason.DISCONNECT)

    def on_hub_disconnect(self) -> None:
        """The hub saw ``http.disconnect``."""
        self.cancel(CancelReason.DISCONNECT)

    @property
    def gone_at(self) -> float | None:
        """When the client was found gone (None while it is not)."""
        return self.hub.disconnected_at

    def token_callback(self) -> Callable[[CancelToken], None]:
        """A CancelToken callback that ends this stream when the application (from any
        thread) sets the token; it hops to the event loop to do so."""
        return on_loop(self.cancel)

    @property
    def cancelled(self) -> bool:
        """Whether the stream has been cancelled (for any reason)."""
        return self.lifecycle.reason is not None

    def add_cancel_hook(self, hook: Hook) -> None:
        """Also call ``hook(record)`` on cancellation (per-stream ``on_cancel``)."""
        self._cancel_hooks.append(hook)

    # ----------------------------------------------------------------- the end
    async def close(self, ended_at: float | None = None) -> None:
        """ENDING → CLOSED, once: stop the guard, close the record with its outcome
        (``ended_at``: when the body ended, if earlier than now), run the ``on_end``
        hooks. Callers have closed the generator before."""
        lifecycle = self.lifecycle
        if lifecycle.closed:
            return
        if lifecycle.state is State.CREATED:  # its driver never ran: nothing was produced
            lifecycle.handle(Event.CANCEL, reason=CancelReason.APPLICATION)
        elif lifecycle.running:  # the producer returned without an ending (a passthrough app)
            lifecycle.handle(Event.FINISH)
        lifecycle.handle(Event.CLOSE)
        self.guard.stop()
        rec = self.record
        rec.ended_at = ended_at if ended_at is not None else _clock.monotonic()
        rec.outcome = lifecycle.outcome
        if lifecycle.error is not None:
            rec.error = lifecycle.error
        await run_end_hooks(self._end_hooks, rec)

    def add_end_hook(self, hook: Hook) -> None:
        """Also call ``hook(record)`` when the stream ends (per-stream ``on_end``)."""
        self._end_hooks.append(hook)

    # ----------------------------------------------------------------- hooks
    def run_hook(self, hook: Hook, name: str) -> None:
        """Call a hook now; an async hook runs as a task. Errors are logged, never raised."""
        call_hook(hook, self.record, self.task_group, name)

    def describe(self) -> str:
        """``stream #id GET /path (endpoint)`` for log lines."""
        r = self.record
        return f"stream #{r.id} {r.method} {r.path} ({r.endpoint})"
