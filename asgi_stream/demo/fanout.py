"""Several jobs streamed as one response (``n > 1``): one feeder task per job, run in
the request's own task group, hands ``(index, piece)`` pairs to the stream as each
job produces them. Backpressure is kept (an unbuffered hand-over: a slow client
slows the feeders, and each job's channel merges text meanwhile); when the stream
ends for any reason the feeders are cancelled, and cancelling the stream cancels
every job.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream
from starlette.responses import Response

from .._types import Receive, Scope, Send
from ..cancel import CancelReason, CancelToken
from ..response import TokenStream
from .engine import Job
from .openai import FINISHED
from .output import JobText


class Failed:
    """A feeder's job failed: the merged stream raises ``error`` (in band)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def linked_token(jobs: Sequence[Job]) -> CancelToken:
    """A token that, once set, cancels every job with the same reason."""
    token = CancelToken()

    def cancel_all(t: CancelToken) -> None:
        for job in jobs:
            job.cancel_token.cancel(t.reason or CancelReason.APPLICATION)

    token.add_callback(cancel_all)
    return token


async def raise_failures(pairs: AsyncIterator[tuple[int, Any]]) -> AsyncIterator[tuple[int, Any]]:
    """Pass ``(index, piece)`` pairs through, raising a :class:`Failed` job's error."""
    async for index, piece in pairs:
        if isinstance(piece, Failed):
            raise piece.error
        yield index, piece


class FanOut(Response):
    """A response streaming ``texts`` (one per job) through the TokenStream that
    ``make_stream(pairs)`` builds around the merged ``(index, piece)`` pairs."""

    def __init__(
        self,
        texts: Sequence[JobText],
        make_stream: Callable[[AsyncIterator[tuple[int, Any]]], TokenStream],
    ) -> None:
        self.texts = texts
        self.make_stream = make_stream
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sender, receiver = anyio.create_memory_object_stream[tuple[int, Any]](0)
        stream = self.make_stream(raise_failures(_receive_all(receiver)))
        async with anyio.create_task_group() as tg:
            for index, text in enumerate(self.texts):
                tg.start_soon(_feed, index, text, sender.clone())
            sender.close()
            try:
                await stream(scope, receive, send)
            finally:
                tg.cancel_scope.cancel()
                receiver.close()


async def _receive_all(receiver: MemoryObjectReceiveStream[tuple[int, Any]]) -> AsyncIterator[tuple[int, Any]]:
    async for pair in receiver:
        yield pair


async def _feed(index: int, text: JobText, sender: Any) -> None:
    async with sender:
        try:
            try:
                async for piece in text:
                    await sender.send((index, piece))
            except Exception as exc:  # reported in band by the stream
                await sender.send((index, Failed(exc)))
                return
            await sender.send((index, FINISHED))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the stream is over
