"""The OpenAI-compatible endpoints, consumed by the official ``openai`` client over a
real uvicorn on loopback."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from asgi_stream.demo.schemas import Limits

from ..support.sse import nothing_after, parse
from ..support.waiting import wait_for
from .conftest import chunk_texts, stats_entry


@pytest.fixture
def client_for(live: Any) -> Any:
    def make(**options: Any) -> tuple[Any, openai.OpenAI, str]:
        app, url = live(**options)
        return app, openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30), url

    return make


def test_chat_stream_with_the_openai_client(client_for: Any) -> None:
    _, client, _ = client_for()
    messages = [{"role": "user", "content": "Say something"}]
    stream = client.chat.completions.create(
        model="tiny",
        messages=messages,
        stream=True,
        max_tokens=60,
        temperature=0,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage, roles = [], None, None, []
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        if delta.role:
            roles.append(delta.role)
        if delta.content:
            pieces.append(delta.content)
        if chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert roles == ["assistant"]
    assert len(pieces) > 1 and all(pieces)
    assert finish == "length"
    assert usage is not None and usage.completion_tokens == 60 and usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + 60
    # The same request, not streamed, gives the same text (greedy decoding).
    whole = client.chat.completions.create(model="tiny", messages=messages, max_tokens=60, temperature=0)
    assert whole.choices[0].message.content == "".join(pieces)
    assert whole.choices[0].message.role == "assistant"
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage.completion_tokens == 60
    assert whole.model == "tiny-random-llama"


def test_completions_stream_with_the_openai_client(client_for: Any) -> None:
    _, client, _ = client_for()
    stream = client.completions.create(
        model="tiny", prompt="Once upon a time", stream=True, max_tokens=40, temperature=0
    )
    pieces, finish = [], None
    for chunk in stream:
        assert chunk.object == "text_completion"
        if chunk.choices[0].text:
            pieces.append(chunk.choices[0].text)
        finish = chunk.choices[0].finish_reason or finish
    assert len(pieces) > 1 and finish == "length"
    whole = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=40, temperature=0)
    assert whole.choices[0].text == "".join(pieces)
    assert whole.usage.prompt_tokens == len("Once upon a time")  # byte-level tokenizer


def test_models_list(client_for: Any) -> None:
    _, client, _ = client_for()
    assert [m.id for m in client.models.list()] == ["tiny-random-llama"]


def test_stream_wire_shape(live: Any) -> None:
    _, url = live()
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 8, "temperature": 0}
    with httpx.Client(timeout=10) as client:
        response = client.post(url + "/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "content-length" not in response.headers
    parsed = parse(response.text)
    assert parsed.events[-1].data == "[DONE]" and nothing_after(parsed)
    assert "".join(chunk_texts(response.text))


def test_errors_raise_in_the_openai_client(client_for: Any) -> None:
    _, client, _ = client_for()
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny", messages=[], max_tokens=5)
    assert info.value.body["param"] == "messages"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny", prompt="x", max_tokens=0)


def test_stream_cancelled_by_the_client_stops_generation(client_for: Any) -> None:
    _, client, url = client_for(limits=Limits(max_tokens=4000))
    stream = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "long"}],
        stream=True,
        max_tokens=4000,
        temperature=0,
    )
    seen = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            seen += 1
            if seen == 5:
                break
    stream.close()
    entry = wait_for(lambda: stats_entry(url, endpoint="chat.completions"))
    assert entry["outcome"] == "cancelled"
    assert entry["finish_reason"] == "cancelled"
    assert entry["steps_after_cancel"] <= 1
    assert entry["completion_tokens"] < 4000
