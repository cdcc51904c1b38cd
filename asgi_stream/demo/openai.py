"""OpenAI-compatible response bodies: streaming chunks and whole completions.

Streaming follows OpenAI's wire shape: SSE ``data: {chunk}`` events, then
``data: [DONE]``. The assistant role rides on the first content chunk, so the first
event on the wire carries the first token (TTFT measures a real token).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from .engine import Job

CHAT = "chat"
TEXT = "text"


def _finish_reason(job: Job) -> str:
    reason = job.stats.finish_reason
    return reason if reason in ("stop", "length") else "stop"


def usage(job: Job) -> dict[str, int]:
    """OpenAI's usage object for a finished job."""
    stats = job.stats
    return {
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "total_tokens": stats.prompt_tokens + stats.completion_tokens,
    }


class ChunkFactory:
    """Builds the chunks of one streamed completion (chat or legacy text)."""

    def __init__(self, kind: str, job: Job, model: str) -> None:
        self.kind = kind
        self.job = job
        self.base = {
            "id": f"{'chatcmpl' if kind == CHAT else 'cmpl'}-{job.id}",
            "object": "chat.completion.chunk" if kind == CHAT else "text_completion",
            "created": int(time.time()),
            "model": model,
        }

    def choice(self, text: str | None, *, first: bool = False, finish: str | None = None) -> dict[str, Any]:
        """One chunk with one choice."""
        if self.kind == CHAT:
            delta: dict[str, Any] = {}
            if first:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        return {**self.base, "choices": [choice]}

    def usage_chunk(self) -> dict[str, Any]:
        """The extra last chunk asked for by ``stream_options.include_usage``."""
        return {**self.base, "choices": [], "usage": usage(self.job)}


async def stream_chunks(kind: str, job: Job, model: str, *, include_usage: bool) -> AsyncIterator[dict[str, Any]]:
    """The chunk objects of a streamed completion (TokenStream adds ``[DONE]``)."""
    factory = ChunkFactory(kind, job, model)
    first = True
    async for piece in job:
        yield factory.choice(piece, first=first)
        first = False
    yield factory.choice("" if first else None, first=first, finish=_finish_reason(job))
    if include_usage:
        yield factory.usage_chunk()


def completion_body(kind: str, job: Job, model: str, text: str) -> dict[str, Any]:
    """The whole (non-streamed) completion object."""
    if kind == CHAT:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": None,
            "finish_reason": _finish_reason(job),
        }
        obj, prefix = "chat.completion", "chatcmpl"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": _finish_reason(job)}
        obj, prefix = "text_completion", "cmpl"
    return {
        "id": f"{prefix}-{job.id}",
        "object": obj,
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": usage(job),
    }
