"""TokenPump: TokenStream's engine — pull a token, frame it, flush it, repeat.

The hot path (an async generator, per-token flush) allocates nothing beyond the framed
bytes and the ASGI message, and creates no task, timer or thread per token: the
guard task (keepalive, deadlines, disconnect) runs beside it and is re-armed only
when a coalescing batch opens.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel

from . import watchdog
from .cancel import CancelReason
from .context import _current
from .errors import StreamError
from .framing import Framer, SSEFramer
from .record import Outcome
from .source import TokenSource
from .stream import Stream

logger = logging.getLogger("asgi_stream")

_BODY = "http.response.body"


class TokenPump(Stream):
    """Drives one token source to the client."""

    __slots__ = ("end", "framer", "source")

    def __init__(self, *, source: Any, framer: Framer, end: Any = None, **kwargs: Any) -> None:
        super().__init__(keepalive_bytes=framer.keepalive, **kwargs)
        self.framer = framer
        self.end = end
        self.source = TokenSource(source, name=self.describe(), close_timeout=self.config.close_timeout)

    async def run(self, *, head: bool = False) -> None:
        """Stream the source; returns when the stream is over (completed, cancelled or
        failed in band). Raises the generator's exception if it failed before the first
        byte, so the application's error handling applies."""
        reset = _current.set(self)
        dog = watchdog.watch(self, self.config.block_warning) if self.config.block_warning else None
        try:
            if head:
                await self.send_body(b"", more_body=False)
                await self.finish_record(Outcome.COMPLETED)
                return
            await self._run()
        except anyio.get_cancelled_exc_class():
            # Cancelled from outside (the server gave up waiting at shutdown): the token
            # still reaches threads and the GPU, and the record still gets its outcome.
            self.server_cancelled()
            raise
        finally:
            await self.source.aclose()
            if not self.finished:
                with anyio.CancelScope(shield=True):
                    await self.finish_record(self.outcome_for_cancel())
            _current.reset(reset)
            if dog is not None:
                dog.discard(self)

    async def _run(self) -> None:
        anext = self.source.next
        error: BaseException | None = None
        with anyio.CancelScope() as scope:
            self.cancel_scope = scope
            if self.token.cancelled:
                self.cancel(self.token.reason or CancelReason.APPLICATION)
            try:
                await self._pump(anext)
            except Exception as exc:
                error = exc
        if self._cancelled:
            await self._end_cancelled()
        elif error is not None:
            await self._fail(error)

    # ------------------------------------------------------------ the pump
    async def _pump(self, anext: Callable[[], Awaitable[Any]]) -> None:
        frame = self.framer.frame
        rec = self.record
        # Until the first bytes exist: nothing is sent (headers are lazy), so an error
        # raised here still reaches the application's exception handlers.
        while True:
            try:
                token = await anext()
            except StopAsyncIteration:
                await self._finish_ok()
                return
            data = frame(token)
            if data:
                break
        events, nbytes = 1, len(data)
        batch = self.batch
        try:
            if batch is None:
                await self.send_body(data, first_token=True)
                await self._per_token(anext, frame)
            else:
                await self.offer(data, time.monotonic())
                await self._coalesce(anext, frame)
        finally:
            rec.events += events
            rec.bytes += nbytes
        await self._finish_ok()

    async def _per_token(self, anext: Callable[[], Awaitable[Any]], frame: Callable[[Any], bytes]) -> None:
        send = self.send
        clock = time.monotonic
        checkpoint = anyio.lowlevel.checkpoint
        rec = self.record
        events = nbytes = 0
        sse = type(self.framer) is SSEFramer
        try:
            while True:
                try:
                    token = await anext()
                except StopAsyncIteration:
                    return
                # The common case inline: an SSE text token without control characters (so
                # without CR/LF: one data line); the framer handles everything else.
                if sse and type(token) is str and token and token.isprintable():
                    try:
                        data = ("data: " + token + "\n\n").encode()
                    except UnicodeEncodeError:
                        data = frame(token)  # raises the clear FramingError
                else:
                    data = frame(token)
                    if not data:
                        continue
                if self.busy:
                    await self.wait_idle()
                self.busy = True
                self.last_send = clock()
                try:
                    await send({"type": _BODY, "body": data, "more_body": True})
                except Exception:
                    # ASGI 2.4 servers raise OSError when the client is gone. hypercorn's
                    # HTTP/3 raises aioquic's FrameUnexpected instead once the client has
                    # cancelled the request (STOP_SENDING), and never sends http.disconnect
                    # (docs/conformance.md). Either way nothing more can be sent: end the
                    # stream as a disconnect (an escaping error left ``busy`` set, and the
                    # error path then waited for it forever).
                    self.hub.mark_disconnected()
                    self.cancel(CancelReason.DISCONNECT)
                    await checkpoint()
                self.busy = False
                events += 1
                nbytes += len(data)
                if not events & self.yield_mask:
                    await checkpoint()
        finally:
            rec.events += events
            rec.bytes += nbytes

    async def _coalesce(self, anext: Callable[[], Awaitable[Any]], frame: Callable[[Any], bytes]) -> None:
        batch = self.batch
        assert batch is not None
        clock = time.monotonic
        checkpoint = anyio.lowlevel.checkpoint
        rec = self.record
        events = nbytes = 0
        try:
            while True:
                try:
                    token = await anext()
                except StopAsyncIteration:
                    return
                data = frame(token)
                if not data:
                    continue
                events += 1
                nbytes += len(data)
                await self.offer(data, clock())
                if not events & self.yield_mask:
                    await checkpoint()
        finally:
            rec.events += events
            rec.bytes += nbytes

    def close_source_early(self) -> None:
        """On cancel: a generator suspended at a ``yield`` (the pump is in a send) is
        closed right away by another task, so its ``finally`` runs even if that send is
        stuck; one that is running is closed by the pump as soon as it stops."""
        if self.task_group is not None and self.source.idle():
            self.task_group.start_soon(self.source.aclose)

    async def send_body(self, data: bytes, *, more_body: bool = True, first_token: bool = False) -> None:
        """Send body bytes; records the first token's time."""
        if (first_token or self.batch is not None) and data and self.record.first_token_at is None:
            self.record.first_token_at = time.monotonic()
        await super().send_body(data, more_body=more_body)

    async def _send_keepalive(self) -> None:
        assert self.keepalive_bytes is not None
        await Stream.send_body(self, self.keepalive_bytes)
        self.record.keepalives += 1

    # ------------------------------------------------------------ endings
    async def _finish_ok(self) -> None:
        tail = self.framer.finish()
        if self.end is not None:
            tail += self.framer.frame(self.end)
        batch = self.batch
        if batch:
            tail = batch.take() + tail
        await self.send_body(tail, more_body=False)
        await self.finish_record(Outcome.COMPLETED)

    async def _fail(self, exc: BaseException) -> None:
        if not self.started:
            await self.finish_record(Outcome.ERROR, exc)
            self.token.cancel(CancelReason.ERROR)
            raise exc
        framed = self.framer.error(self.config.error_payload(exc, self.record))
        self.token.cancel(CancelReason.ERROR)
        if framed is None:
            # Plain text has no in-band error channel: abort the response so the client
            # sees a truncated body (HTTP/1.1: no final chunk; HTTP/2: RST_STREAM).
            await self.finish_record(Outcome.ERROR, exc)
            raise exc
        level = logging.WARNING if isinstance(exc, StreamError) else logging.ERROR
        logger.log(level, "asgi_stream: %s failed mid-stream; sent an error event", self.describe(), exc_info=exc)
        with anyio.move_on_after(self.config.send_timeout or math.inf):
            batch = self.batch
            pending = batch.take() if batch else b""
            await self.send_body(pending + framed, more_body=False)
        await self.finish_record(Outcome.ERROR, exc)

    async def _end_cancelled(self) -> None:
        if (
            self.token.reason in (CancelReason.SHUTDOWN, CancelReason.APPLICATION)
            and self.started
            and not self.hub.disconnected
        ):
            # The client is still there: end the body cleanly (it may reconnect).
            with anyio.move_on_after(1.0):
                await self.send_body(b"", more_body=False)
        await self.finish_record(self.outcome_for_cancel())


async def drive(pump: TokenPump, tg: Any, hub: Any, *, head: bool = False, on_start: Any = None) -> None:
    """Run a stream: the pump in its own task of ``tg``, the guard in the caller's.

    The pump gets a fresh, shallow task: every token of a slow stream wakes it, and a
    wake-up resumes every coroutine frame between the task and the generator — the
    request's task sits under the whole middleware and routing stack. The guard wakes
    rarely, so it runs here. An exception the pump raises (a generator failing before
    its first token) is re-raised here, where the application's error handling sees it.
    """
    pump.task_group = tg
    hub.on_disconnect(pump._on_hub_disconnect)
    pump.token.add_callback(pump.token_callback())
    for hook in (pump.config.on_start, on_start):
        if hook is not None:
            pump.run_hook(hook, "on_start")
    if head:
        await pump.run(head=True)
        return
    done: list[anyio.Event | None] = [None]  # created only if the guard ends first
    failure: list[Exception] = []
    finished = False

    async def run_pump() -> None:
        nonlocal finished
        try:
            await pump.run()
        except Exception as exc:
            failure.append(exc)
        finally:
            finished = True
            pump.guard.stop()
            if done[0] is not None:
                done[0].set()

    tg.start_soon(run_pump)
    try:
        await pump.guard.run()
        if not finished:
            event = done[0] = anyio.Event()
            await event.wait()
    except anyio.get_cancelled_exc_class():
        pump.server_cancelled()
        raise
    if failure:
        raise failure[0]


def is_token_source(content: object) -> bool:
    """Whether ``content`` is something TokenStream can iterate (sync or async)."""
    return (
        hasattr(content, "__aiter__")
        or hasattr(content, "__anext__")
        or (hasattr(content, "__iter__") and not isinstance(content, (str, bytes, bytearray, dict)))
    )
