"""TokenPump: TokenStream's engine — pull a token, frame it, flush it, repeat.

The hot path (an async generator, per-token flush) allocates nothing beyond the framed
bytes and the ASGI message, and creates no task, timer or thread per token: the
guard task (keepalive, deadlines, disconnect) runs beside it and is re-armed only
when a coalescing batch opens. Every send takes the one send path,
:meth:`asgi_stream.wire.Wire.send`.

The pump's life follows its :class:`~asgi_stream.lifecycle.Lifecycle`: ``run`` starts
it (unless a cancel came first), produces inside a cancel scope that every cancel
source reaches through :meth:`~asgi_stream.stream.Stream.cancel`, then performs the
ending the lifecycle decided, closes the generator and closes the stream — in that
order, exactly once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from . import _clock, watchdog
from .cancel import CancelReason
from .context import _current
from .errors import StreamError
from .framing import Framer, SSEFramer
from .lifecycle import Ending, Event, Transition
from .receive import ReceiveHub
from .source import TokenSource
from .stream import Stream
from .wire import BODY

logger = logging.getLogger("asgi_stream")

Next = Callable[[], Awaitable[Any]]


class TokenPump(Stream):
    """Drives one token source to the client."""

    __slots__ = ("end", "framer", "source", "task_id")

    def __init__(self, *, source: Any, framer: Framer, end: Any = None, **kwargs: Any) -> None:
        super().__init__(keepalive_bytes=framer.keepalive, **kwargs)
        self.framer = framer
        self.end = end
        self.source = TokenSource(source, name=self.describe(), close_timeout=self.config.close_timeout)
        #: The id of the task the pump runs in (set by ``run``).
        self.task_id: int | None = None

    async def run(self, *, head: bool = False) -> None:
        """Run the stream to CLOSED. Raises the generator's exception if it failed
        before the first byte (so the application's error handling applies), or
        mid-stream in a format without an in-band error channel (the body is aborted)."""
        lifecycle = self.lifecycle
        if self.on_abort is not None:  # relayed (see RequestContext.relay_for)
            self.task_id = anyio.get_current_task().id
        reset = _current.set(self)
        dog = watchdog.watch(self, self.config.block_warning) if self.config.block_warning else None
        failure: BaseException | None = None
        try:
            if lifecycle.handle(Event.START) is not Transition.MOVED:
                await self.source.prime()  # cancelled before it ran: let its `finally` run
            elif head:
                lifecycle.handle(Event.FINISH)
            else:
                await self._produce()
            failure = await self._end()
        except anyio.get_cancelled_exc_class():
            # Cancelled from outside (the server gave up waiting at shutdown): the token
            # still reaches threads and the GPU, and the record still gets its outcome.
            self.server_cancelled()
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await self.source.aclose()
                await self.close()
            _current.reset(reset)
            if dog is not None:
                dog.discard(self)
        if failure is not None:
            raise failure

    async def _produce(self) -> None:
        with anyio.CancelScope() as scope:
            self.scope = scope
            try:
                await self._pump()
            except Exception as exc:
                self.lifecycle.handle(Event.FAIL, error=exc)
        self.scope = None

    # ------------------------------------------------------------ the pump
    async def _pump(self) -> None:
        anext = self.source.next
        frame = self.framer.frame
        rec = self.record
        # Until the first bytes exist nothing is sent (headers are lazy), so an error
        # raised here still reaches the application's exception handlers.
        while True:
            try:
                token = await anext()
            except StopAsyncIteration:
                self.lifecycle.handle(Event.FINISH)
                return
            data = frame(token)
            if data:
                break
        rec.first_token_at = _clock.monotonic()
        rec.events += 1
        rec.bytes += len(data)
        await self.start()
        if self.batch is None:
            await self.wire.send({"type": BODY, "body": data, "more_body": True})
            await self._per_token(anext, frame)
        else:
            await self.offer(data, _clock.monotonic())
            await self._coalesce(anext, frame)
        self.lifecycle.handle(Event.FINISH)

    async def _per_token(self, anext: Next, frame: Callable[[Any], bytes]) -> None:
        # The one place Wire.send is unrolled: a coroutine layer per token costs about
        # 1,500 instructions (a fifth of the middleware's per-token cost). Its state is
        # restored by this loop's ``finally``: any exit from an interrupted send leaves
        # the loop, so no trace of it remains (see Wire.send).
        wire = self.wire
        send = wire.raw
        clock = _clock.monotonic
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
                if wire.sending:
                    await wire.wait_idle()
                wire.sending = True
                wire.last_send = clock()
                try:
                    await send({"type": BODY, "body": data, "more_body": True})
                except Exception as exc:  # the client is gone (see Wire.gone)
                    await wire.gone(exc)
                wire.sending = False
                events += 1
                nbytes += len(data)
                if not events & self.yield_mask:
                    await checkpoint()
        finally:
            wire.done()
            rec.events += events
            rec.bytes += nbytes

    async def _coalesce(self, anext: Next, frame: Callable[[Any], bytes]) -> None:
        clock = _clock.monotonic
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

    # ------------------------------------------------------------ cancelling
    def stop_producing(self, transition: Transition, reason: CancelReason) -> None:
        """Cancel the pump's scope; a generator suspended at a ``yield`` (the pump is in
        a send) is closed right away by another task, so its ``finally`` runs even if
        that send is stuck. One that is running is closed by the pump when it stops."""
        super().stop_producing(transition, reason)
        if transition is Transition.MOVED and self.task_group is not None and self.source.idle():
            self.task_group.start_soon(self._close_if_idle)

    async def _close_if_idle(self) -> None:
        if self.source.idle():  # look again: the pump may have re-entered the generator
            await self.source.aclose()

    # ------------------------------------------------------------ endings
    async def _end(self) -> BaseException | None:
        """Perform the ending the lifecycle decided; returns an exception to raise."""
        lifecycle = self.lifecycle
        ending = lifecycle.ending
        batch = self.batch
        if ending is Ending.COMPLETE:
            tail = self.framer.finish()
            if self.end is not None:
                tail += self.framer.frame(self.end)
            if batch:
                tail = batch.take() + tail
            await self._final(tail)
        elif ending is Ending.CLEAN:
            # The client is still there (shutdown, the application): end the body
            # cleanly, with the events already framed (it may reconnect).
            await self._final(batch.take() if batch else b"")
        elif ending is Ending.ERROR:
            exc = lifecycle.error
            assert exc is not None
            self.token.cancel(CancelReason.ERROR)
            if not self.wire.started:
                return exc  # before the first byte: the application's error handling
            framed = self.framer.error(self.config.error_payload(exc, self.record))
            if framed is None:
                # Plain text has no in-band error channel: abort the response so the client
                # sees a truncated body (HTTP/1.1: no final chunk; HTTP/2: RST_STREAM).
                return exc
            level = logging.WARNING if isinstance(exc, StreamError) else logging.ERROR
            logger.log(level, "asgi_stream: %s failed mid-stream; sent an error event", self.describe(), exc_info=exc)
            await self._final((batch.take() if batch else b"") + framed)
        return None

    async def _final(self, data: bytes) -> None:
        """The final body message, inside a scope an abort (disconnect, send timeout)
        cancels; the guard bounds it by the send timeout."""
        with anyio.CancelScope() as scope:
            self.scope = scope
            if self.lifecycle.ending is not Ending.ABORT:
                await self.end_body(data)
        self.scope = None


async def drive(
    pump: TokenPump,
    tg: anyio.abc.TaskGroup,
    hub: ReceiveHub,
    *,
    head: bool = False,
    on_start: Callable[[Any], Any] | None = None,
) -> None:
    """Run a stream: the pump in its own task of ``tg``, the guard in the caller's.

    The pump gets a fresh, shallow task: every token of a slow stream wakes it, and a
    wake-up resumes every coroutine frame between the task and the generator — the
    request's task sits under the whole middleware and routing stack. The guard wakes
    rarely, so it runs here. An exception the pump raises (a generator failing before
    its first token) is re-raised here, where the application's error handling sees it.
    """
    pump.task_group = tg
    hub.on_disconnect(pump.on_hub_disconnect)  # a client already gone cancels it at once
    token = pump.token
    token.add_callback(pump.token_callback())
    if token.cancelled and token.reason is not CancelReason.BUFFER_OVERFLOW:
        pump.cancel(token.reason or CancelReason.APPLICATION)  # set before the stream ran
    for hook in (pump.config.on_start, on_start):
        if hook is not None:
            pump.run_hook(hook, "on_start")
    if head:
        await pump.run(head=True)
        return
    done: anyio.Event | None = None  # created only if the guard ends first
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
            if done is not None:
                done.set()

    tg.start_soon(run_pump)
    try:
        await pump.guard.run()
        if not finished:
            done = anyio.Event()
            await done.wait()
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
