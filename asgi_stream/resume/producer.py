"""Producer: runs a resumable stream's generator into the replay store, decoupled from
any connection.

The generator keeps running while no client is attached, for ``resume_grace``
seconds; then it is cancelled through the normal cancel path (token set, generator
closed, the GPU stops). It finishes into the store if a client comes back.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from ..cancel import CancelReason, CancelToken, on_loop
from ..config import Hook, StreamConfig
from ..context import _current
from ..errors import StreamError
from ..framing import Framer
from ..hooks import call_hook, run_end_hooks
from ..record import Outcome, StreamRecord
from ..source import TokenSource
from .store import Writer

logger = logging.getLogger("asgi_stream")

#: Yield to the event loop at least every this many events, so a generator that never
#: awaits cannot starve the loop (the store holds it back while a consumer is behind).
_YIELD_MASK = 255

INTERRUPTED = {"error": {"type": "interrupted", "message": "The stream was cancelled before it completed."}}


class Producer:
    """Drives one resumable stream's generator into its writer."""

    def __init__(
        self,
        *,
        content: Any,
        framer: Framer,
        writer: Writer,
        token: CancelToken,
        record: StreamRecord,
        config: StreamConfig,
        end: Any,
        end_hooks: list[Hook],
        cancel_hooks: list[Hook],
    ) -> None:
        self.framer = framer
        self.writer = writer
        self.token = token
        self.record = record
        self.config = config
        self.end = end
        self.end_hooks = end_hooks
        self.cancel_hooks = cancel_hooks
        self.source = TokenSource(
            content, name=f"resumable stream #{record.id} {record.path}", close_timeout=config.close_timeout
        )
        self.seq = 0
        self.scope: anyio.CancelScope | None = None
        self.task_group: anyio.abc.TaskGroup | None = None
        self.finished = False
        self._drain_at = math.inf
        #: The set this producer is registered in for shutdown drain (it leaves it at the end).
        self.registry: set[Any] | None = None

    # ------------------------------------------------------------ cancel sources
    def cancel(self, reason: CancelReason) -> None:
        """Cancel the generator (grace expired, shutdown, or the application)."""
        if self.finished or self.record.cancel_reason is not None:
            return
        self.token.cancel(reason)  # the first reason wins if the application set it
        self.record.cancel_reason = self.token.reason or reason
        if self.scope is not None:
            self.scope.cancel()
        for hook in self.cancel_hooks:
            call_hook(hook, self.record, self.task_group, "on_cancel")

    def begin_drain(self, grace: float) -> None:
        """Server shutdown: cancel the generator ``grace`` seconds from now."""
        if self.finished:
            return
        self._drain_at = min(self._drain_at, time.monotonic() + grace)
        if self.task_group is not None:
            self.task_group.start_soon(self._drain, self._drain_at)

    async def _drain(self, at: float) -> None:
        await anyio.sleep(max(0.0, at - time.monotonic()))
        self.cancel(CancelReason.SHUTDOWN)

    async def _watch_abandoned(self) -> None:
        await self.writer.wait_abandoned(self.config.resume_grace)
        if not self.finished:
            logger.info(
                "asgi_stream: no client came back to stream #%d within %.1f s; cancelling its generator",
                self.record.id,
                self.config.resume_grace,
            )
            self.cancel(CancelReason.ABANDONED)

    # ------------------------------------------------------------ the run
    async def run(self) -> None:
        """Produce until the generator ends or is cancelled; always finishes the store."""
        assert self.task_group is not None
        reset = _current.set(self)  # type: ignore[arg-type]  # current_stream() → record, token
        watchers = anyio.CancelScope()

        async def watch() -> None:
            with watchers:
                await self._watch_abandoned()

        self.token.add_callback(on_loop(self.cancel))
        self.task_group.start_soon(watch)
        self.task_group.start_soon(self.writer.run)
        outcome, error = Outcome.COMPLETED, None
        try:
            with anyio.CancelScope() as self.scope:
                if self.token.cancelled:
                    self.scope.cancel()
                try:
                    await self._produce()
                except Exception as exc:
                    outcome, error = Outcome.ERROR, exc
            if error is not None:
                self._append(self.framer.error(self.config.error_payload(error, self.record)))
                level = logging.WARNING if isinstance(error, StreamError) else logging.ERROR
                logger.log(level, "asgi_stream: resumable stream #%d failed", self.record.id, exc_info=error)
            elif self.scope.cancelled_caught or self.token.cancelled:
                outcome = Outcome.CANCELLED
                self._append(self.framer.error(INTERRUPTED))
        finally:
            with anyio.CancelScope(shield=True):
                await self.source.aclose()
                self.finished = True
                watchers.cancel()
                try:
                    await self.writer.finish(outcome.value)
                except Exception:
                    logger.exception("asgi_stream: could not finish resumable stream #%d in the store", self.record.id)
                rec = self.record
                rec.ended_at = time.monotonic()
                rec.outcome = outcome
                rec.error = error
                await run_end_hooks(self.end_hooks, rec)
                if self.registry is not None:
                    self.registry.discard(self)
            _current.reset(reset)

    async def _produce(self) -> None:
        frame = self.framer.frame
        anext = self.source.next
        checkpoint = anyio.lowlevel.checkpoint
        wait_room = self.writer.wait_room
        rec = self.record
        while True:
            try:
                token = await anext()
            except StopAsyncIteration:
                break
            data = frame(token)
            if data:
                if rec.first_token_at is None:
                    rec.first_token_at = time.monotonic()
                rec.events += 1
                rec.bytes += len(data)
                if self._append(data):  # an attached consumer is a whole window behind
                    await wait_room()
                elif not rec.events & _YIELD_MASK:
                    await checkpoint()
        tail = self.framer.finish()
        if self.end is not None:
            tail += self.framer.frame(self.end)
        self._append(tail)

    def _append(self, data: bytes | None) -> bool:
        """Store one event; True when the producer should wait for room."""
        if not data:
            return False
        self.seq += 1
        return self.writer.append(self.seq, data)
