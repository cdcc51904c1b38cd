"""Smoke test of ``python -m benchmarks.behaviour`` (the behaviour table against
``transformers serve``): its probes against the demo on the tiny model give the
answers docs/demo.md promises."""

from __future__ import annotations

from typing import Any

from benchmarks.behaviour import ROWS, probe, table


def test_behaviour_probes_on_the_tiny_model(live: Any) -> None:
    _, url = live()
    cells = probe(url, "tiny-random-llama")
    assert set(cells) == {"baseline answer", "stop string"} | {label for label, _ in ROWS}
    expected = {
        "`stop` spanning tokens, streamed": "honoured: truncated before it, finish `stop`",
        "`stop` spanning tokens, not streamed": "honoured, finish `stop`",
        "`stop` with 5 sequences (OpenAI allows 4)": "400, OpenAI error (param `stop`)",
        "`n: 2`, not streamed": "200, 2 choice(s) [0, 1]",
        "`n: 2`, streamed": "200, indices [0, 1], finishes ['length', 'length']",
        "`tools` (one function)": "400, OpenAI error (param `tools`)",
        '`response_format: {"type": "json_object"}`': "400, OpenAI error (param `response_format`)",
        "`presence_penalty: 1.5`": "400, OpenAI error (param `presence_penalty`)",
        "`logprobs: true, top_logprobs: 2`": "400, OpenAI error (param `top_logprobs`)",
        "`GET /v1/stream` (EventSource)": "200, resumable",
        "malformed: invalid JSON": "400, OpenAI error",
        "malformed: `messages` nested 1,000 deep (2 KB)": "400, OpenAI error",
        "malformed: no `messages`": "400, OpenAI error (param `messages`)",
        "malformed: `max_tokens: -1`": "400, OpenAI error (param `max_tokens`)",
        "malformed: `temperature: 5e-324`": "200",
    }
    for label, cell in expected.items():
        assert cells[label] == cell, (label, cells[label])
    assert cells["`POST /v1/responses`, streamed"].startswith("200, ")
    assert "sequence numbers ok, `event:` lines, same text as chat" in cells["`POST /v1/responses`, streamed"]
    assert cells["`POST /v1/responses`, not streamed"] == "200, status `incomplete`, same text as chat"
    assert table({"ours": cells}).count("\n") == len(cells) + 1
