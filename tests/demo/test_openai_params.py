"""OpenAI parameters real clients send, through the official ``openai`` client over
uvicorn: ``stop`` (hold-back across token boundaries, the stop text never sent,
generation stopped, ``finish_reason: "stop"``), ``n`` (per-choice ``index``) and
``seed``."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from asgi_stream.demo.engine import PACED_TOKENS
from asgi_stream.demo.schemas import Limits
from asgi_stream.demo.stop import truncate

from ..support.waiting import wait_for
from .conftest import chunk_texts, stats_entry

LONG = 4000
MESSAGES = [{"role": "user", "content": "Say something"}]


@pytest.fixture
def client_for(live: Any) -> Any:
    def make(**options: Any) -> tuple[Any, openai.OpenAI, str]:
        app, url = live(**options)
        return app, openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60), url

    return make


def _stream_chat(client: openai.OpenAI, **kwargs: Any) -> tuple[dict[int, str], dict[int, str], Any]:
    texts: dict[int, str] = {}
    finish: dict[int, str] = {}
    usage = None
    for chunk in client.chat.completions.create(model="tiny", messages=MESSAGES, stream=True, **kwargs):
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                assert choice.index not in finish  # one finish per choice
                finish[choice.index] = choice.finish_reason
    return texts, finish, usage


def test_stop_sequences_across_token_boundaries(client_for: Any) -> None:
    _, client, url = client_for(limits=Limits(max_tokens=LONG))
    full = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=120, temperature=0)
    text = full.choices[0].message.content
    assert text is not None and len(text) > 60
    # A stop sequence several tokens long (byte-level tokenizer: one token per byte),
    # so it spans token boundaries, and one that never occurs.
    stop = text[40:46]
    expected, matched = truncate(text, [stop, "\x00never"])
    assert matched == stop and len(expected) <= 40

    pieces: list[str] = []
    finish = None
    for chunk in client.chat.completions.create(
        model="tiny", messages=MESSAGES, stream=True, max_tokens=LONG, temperature=0, stop=[stop, "\x00never"]
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert "".join(pieces) == expected
    assert finish == "stop"
    assert not any(stop in p for p in pieces)
    # Generation itself stopped: far short of max_tokens, and recorded as a stop.
    entry = wait_for(lambda: stats_entry(url, endpoint="chat.completions"))
    assert entry["finish_reason"] == "stop" and entry["outcome"] == "completed"
    assert entry["completion_tokens"] < LONG

    whole = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=LONG, temperature=0, stop=stop)
    assert whole.choices[0].message.content == expected
    assert whole.choices[0].finish_reason == "stop"
    assert whole.usage is not None and whole.usage.completion_tokens < LONG

    # Legacy completions and the native endpoint apply it too.
    comp = client.completions.create(model="tiny", prompt="Once upon", max_tokens=60, temperature=0)
    ctext = comp.choices[0].text
    cstop = ctext[20:23]
    cexpected, _ = truncate(ctext, [cstop])
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model="tiny", prompt="Once upon", max_tokens=60, temperature=0, stop=cstop, stream=True
        )
    )
    assert streamed == cexpected
    native = httpx.post(
        url + "/generate", json={"prompt": "Once upon", "max_tokens": 60, "temperature": 0, "stop": [cstop]}
    )
    assert native.status_code == 200 and native.text == cexpected


def test_stop_at_the_first_character_gives_empty_content(client_for: Any) -> None:
    _, client, _ = client_for()
    text = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=10, temperature=0)
    first = text.choices[0].message.content[:2]
    texts, finish, _ = _stream_chat(client, max_tokens=10, temperature=0, stop=first)
    assert texts == {0: ""} and finish == {0: "stop"}


def test_stop_in_paced_mode_ends_the_paced_stream(live: Any) -> None:
    _, url = live(paced=True, paced_interval=0.01)
    body = {"messages": MESSAGES, "max_tokens": 40, "stream": True, "stop": " fox"}
    response = httpx.post(url + "/v1/chat/completions", json=body, timeout=30)
    assert "".join(chunk_texts(response.text)) == "".join(PACED_TOKENS[:3])
    entry = wait_for(lambda: stats_entry(url, endpoint="chat.completions"))
    assert entry["finish_reason"] == "stop" and entry["completion_tokens"] <= 5


def test_n_choices_stream_with_their_index(client_for: Any) -> None:
    _, client, url = client_for()
    texts, finish, usage = _stream_chat(
        client, n=3, max_tokens=30, temperature=0, stream_options={"include_usage": True}
    )
    assert sorted(texts) == [0, 1, 2] and finish == {0: "length", 1: "length", 2: "length"}
    assert len(set(texts.values())) == 1 and len(texts[0]) > 0  # greedy: the same text thrice
    assert usage.completion_tokens == 90 and usage.prompt_tokens > 0
    whole = client.chat.completions.create(model="tiny", messages=MESSAGES, n=3, max_tokens=30, temperature=0)
    assert [c.index for c in whole.choices] == [0, 1, 2]
    assert [c.message.content for c in whole.choices] == [texts[0]] * 3
    assert whole.usage.completion_tokens == 90

    # Sampled: choice i uses seed + i, so the choices differ and a repeat is identical.
    sampled = client.chat.completions.create(
        model="tiny", messages=MESSAGES, n=2, max_tokens=30, temperature=1.0, seed=7
    )
    again = client.chat.completions.create(model="tiny", messages=MESSAGES, n=2, max_tokens=30, temperature=1.0, seed=7)
    a, b = (c.message.content for c in sampled.choices)
    assert a != b
    assert [c.message.content for c in again.choices] == [a, b]
    texts, _, _ = _stream_chat(client, n=2, max_tokens=30, temperature=1.0, seed=7)
    assert texts == {0: a, 1: b}
    # With stop sequences, each choice stops on its own.
    texts, finish, _ = _stream_chat(client, n=2, max_tokens=30, temperature=1.0, seed=7, stop=a[10:13])
    assert texts[0] == truncate(a, [a[10:13]])[0] and finish[0] == "stop"
    assert texts[1] == truncate(b, [a[10:13]])[0]


def test_seed_makes_sampling_reproducible(client_for: Any) -> None:
    _, client, _ = client_for()

    def sample(seed: int) -> str:
        out = client.completions.create(model="tiny", prompt="x", max_tokens=40, temperature=1.0, seed=seed)
        return out.choices[0].text

    assert sample(5) == sample(5)
    assert sample(5) != sample(6)


def test_n_stream_cancelled_by_the_client_cancels_every_choice(client_for: Any) -> None:
    _, client, url = client_for(limits=Limits(max_tokens=LONG))
    stream = client.chat.completions.create(
        model="tiny", messages=MESSAGES, stream=True, n=2, max_tokens=LONG, temperature=0
    )
    seen = 0
    for chunk in stream:
        seen += bool(chunk.choices and chunk.choices[0].delta.content)
        if seen == 5:
            break
    stream.close()

    def both_done() -> list[dict[str, Any]] | None:
        streams = [s for s in httpx.get(url + "/stats").json()["streams"] if s["endpoint"] == "chat.completions"]
        done = [s for s in streams if s["generation_done"] and s["outcome"] is not None]
        return done if len(done) == 2 else None

    for entry in wait_for(both_done, timeout=30):
        assert entry["outcome"] == "cancelled" and entry["finish_reason"] == "cancelled"
        assert entry["completion_tokens"] < LONG
