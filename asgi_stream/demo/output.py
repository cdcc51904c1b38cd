"""A job's text as the client sees it: stop sequences applied with hold-back.

When a stop sequence completes, the text before it is the last the client gets, the
job is stopped (:meth:`~asgi_stream.demo.engine.Job.stop`: no further decode step
starts, the stream itself is not cancelled) and the finish reason is ``"stop"``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from .engine import Job
from .stop import StopMatcher


class JobText:
    """The visible text of one job, read as an async iterable of non-empty pieces."""

    __slots__ = ("job", "matcher")

    def __init__(self, job: Job, stops: Sequence[str] = ()) -> None:
        self.job = job
        self.matcher = StopMatcher(stops) if stops else None

    @property
    def finish_reason(self) -> str:
        """OpenAI's finish reason once the text is over: ``"stop"`` (end of sequence or a
        stop sequence) or ``"length"`` (the token limit)."""
        if self.matcher is not None and self.matcher.stopped:
            return "stop"
        return "length" if self.job.stats.finish_reason == "length" else "stop"

    @property
    def stop_sequence(self) -> str | None:
        """The stop sequence that ended the text, if one did."""
        return None if self.matcher is None else self.matcher.matched

    def __aiter__(self) -> AsyncIterator[str]:
        if self.matcher is None:
            return self.job.__aiter__()
        return self._filtered(self.matcher)

    async def _filtered(self, matcher: StopMatcher) -> AsyncIterator[str]:
        job = self.job
        iterator = job.__aiter__()
        async for piece in iterator:
            text = matcher.push(piece)
            if text:
                yield text
            if matcher.stopped:
                job.stop()
                async for _ in iterator:  # what the engine produced before it stopped
                    pass
                return
        tail = matcher.flush()
        if tail:
            yield tail
