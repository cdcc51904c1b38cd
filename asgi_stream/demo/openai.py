"""OpenAI-compatible response bodies: streaming chunks and whole completions.

Streaming follows OpenAI's wire shape: SSE ``data: {chunk}`` events, then
``data: [DONE]``. The assistant role rides on the first content chunk of each
choice, so the first event on the wire carries the first token (TTFT measures a real
token). With ``n > 1`` the choices' chunks interleave as their tokens arrive, each
chunk naming its choice by ``index``; every choice ends with its own chunk carrying
``finish_reason``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from .engine import Job
from .output import JobText

CHAT = "chat"
TEXT = "text"


def usage(jobs: Sequence[Job]) -> dict[str, int]:
    """OpenAI's usage object for finished jobs sharing one prompt (counted once)."""
    prompt = jobs[0].stats.prompt_tokens
    completion = sum(job.stats.completion_tokens for job in jobs)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class ChunkFactory:
    """Builds the chunks of one streamed completion (chat or legacy text)."""

    def __init__(self, kind: str, request_id: int, model: str) -> None:
        self.kind = kind
        self.base = {
            "id": f"{'chatcmpl' if kind == CHAT else 'cmpl'}-{request_id}",
            "object": "chat.completion.chunk" if kind == CHAT else "text_completion",
            "created": int(time.time()),
            "model": model,
        }

    def choice(
        self, text: str | None, *, index: int = 0, first: bool = False, finish: str | None = None
    ) -> dict[str, Any]:
        """One chunk with one choice."""
        if self.kind == CHAT:
            delta: dict[str, Any] = {}
            if first:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}
        return {**self.base, "choices": [choice]}

    def usage_chunk(self, jobs: Sequence[Job]) -> dict[str, Any]:
        """The extra last chunk asked for by ``stream_options.include_usage``."""
        return {**self.base, "choices": [], "usage": usage(jobs)}


async def stream_chunks(
    kind: str, job: Job, model: str, *, include_usage: bool, stop: Sequence[str] = ()
) -> AsyncIterator[dict[str, Any]]:
    """The chunk objects of a streamed one-choice completion (TokenStream adds ``[DONE]``)."""
    factory = ChunkFactory(kind, job.id, model)
    text = JobText(job, stop)
    first = True
    async for piece in text:
        yield factory.choice(piece, first=first)
        first = False
    yield factory.choice("" if first else None, first=first, finish=text.finish_reason)
    if include_usage:
        yield factory.usage_chunk([job])


#: What a choice's feeder sends when its text is over.
FINISHED = object()


async def merged_chunks(
    kind: str,
    jobs: Sequence[Job],
    texts: Sequence[JobText],
    pieces: AsyncIterator[tuple[int, Any]],
    model: str,
    *,
    include_usage: bool,
) -> AsyncIterator[dict[str, Any]]:
    """The chunks of an ``n > 1`` completion, from ``(index, piece)`` pairs as the
    choices produce them (``piece`` is :data:`FINISHED` at the end of a choice)."""
    factory = ChunkFactory(kind, jobs[0].id, model)
    started = [False] * len(jobs)
    remaining = len(jobs)
    async for index, piece in pieces:
        first = not started[index]
        started[index] = True
        if piece is FINISHED:
            yield factory.choice("" if first else None, index=index, first=first, finish=texts[index].finish_reason)
            remaining -= 1
            if not remaining:
                break
        else:
            yield factory.choice(piece, index=index, first=first)
    if include_usage and not remaining:
        yield factory.usage_chunk(jobs)


def completion_body(kind: str, jobs: Sequence[Job], model: str, results: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The whole (non-streamed) completion object: one choice per ``(text, finish_reason)``."""
    choices: list[dict[str, Any]] = []
    for index, (text, finish) in enumerate(results):
        if kind == CHAT:
            choices.append(
                {
                    "index": index,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": finish,
                }
            )
        else:
            choices.append({"index": index, "text": text, "logprobs": None, "finish_reason": finish})
    obj, prefix = ("chat.completion", "chatcmpl") if kind == CHAT else ("text_completion", "cmpl")
    return {
        "id": f"{prefix}-{jobs[0].id}",
        "object": obj,
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage(jobs),
    }
