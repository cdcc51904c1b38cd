"""``POST /v1/responses`` (the Responses API) read by the official ``openai`` client
over a real uvicorn: the typed event sequence with its sequence numbers, the
``responses.stream()`` helper's final response, the same text streamed or not (and as
chat completions give), ``incomplete`` at ``max_output_tokens``, refusals, cancellation."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from asgi_stream.demo.model import LoadedModel
from asgi_stream.demo.schemas import Limits

from ..support.waiting import wait_for
from .conftest import stats_entry

PROLOGUE = ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
EPILOGUE = ["response.output_text.done", "response.content_part.done", "response.output_item.done"]


class EosAfter:
    """A logits processor forcing end-of-sequence ``n`` tokens past the length of the
    first sequence it sees (the test sends one prompt, so: after ``n`` tokens)."""

    def __init__(self, n: int, eos: int) -> None:
        self.n, self.eos, self.start = n, eos, None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.start is None:
            self.start = input_ids.shape[1]
        if input_ids.shape[1] - self.start >= self.n:
            scores[:] = float("-inf")
            scores[:, self.eos] = 0.0
        return scores


def ends_on_its_own(tiny: LoadedModel, n: int) -> Any:
    """A loader of the tiny model that emits end-of-sequence after ``n`` tokens."""

    def load() -> LoadedModel:
        processors = [*tiny.generate_kwargs.get("logits_processor", []), EosAfter(n, tiny.tokenizer.eos_token_id)]
        return LoadedModel(
            name=tiny.name,
            model=tiny.model,
            tokenizer=tiny.tokenizer,
            device=tiny.device,
            dtype=tiny.dtype,
            max_context=tiny.max_context,
            generate_kwargs={"logits_processor": processors},
        )

    return load


@pytest.fixture
def client_for(live: Any) -> Any:
    def make(**options: Any) -> tuple[Any, openai.OpenAI, str]:
        app, url = live(**options)
        return app, openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60), url

    return make


def _check_events(events: list[Any], final: str) -> str:
    types = [e.type for e in events]
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert types == [*PROLOGUE, *["response.output_text.delta"] * len(deltas), *EPILOGUE, final]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(d.delta for d in deltas)
    assert len(deltas) > 1 and all(d.delta for d in deltas)
    response_id = events[0].response.id
    assert events[-1].response.id == response_id and response_id.startswith("resp_")
    item_id = events[2].item.id
    assert {d.item_id for d in deltas} == {item_id}
    assert events[-4].text == text and events[-3].part.text == text
    assert events[-2].item.content[0].text == text
    assert events[-1].response.output_text == text
    return text


def test_responses_stream_with_the_openai_client(client_for: Any) -> None:
    _, client, url = client_for()
    events = list(
        client.responses.create(model="tiny", input="Say something", stream=True, max_output_tokens=40, temperature=0)
    )
    text = _check_events(events, "response.incomplete")  # the tiny model never ends on its own
    final = events[-1].response
    assert final.status == "incomplete" and final.incomplete_details.reason == "max_output_tokens"
    assert final.usage.output_tokens == 40 and final.usage.input_tokens > 0
    assert final.usage.total_tokens == final.usage.input_tokens + 40

    whole = client.responses.create(model="tiny", input="Say something", max_output_tokens=40, temperature=0)
    assert whole.output_text == text and whole.status == "incomplete" and whole.object == "response"
    assert whole.output[0].role == "assistant" and whole.output[0].status == "incomplete"
    # The same conversation through chat completions gives the same text.
    chat = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Say something"}], max_tokens=40, temperature=0
    )
    assert chat.choices[0].message.content == text
    entry = wait_for(lambda: stats_entry(url, endpoint="responses"))
    assert entry["outcome"] == "completed" and entry["ttft_s"] is not None

    # Instructions are the system message; message items with text parts are accepted.
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": "Say"}, {"type": "input_text", "text": " it"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
        {"role": "user", "content": "again"},
    ]
    with_items = client.responses.create(
        model="tiny", input=items, instructions="Be brief.", max_output_tokens=20, temperature=0
    )
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say it"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "again"},
    ]
    chat = client.chat.completions.create(model="tiny", messages=messages, max_tokens=20, temperature=0)
    assert with_items.output_text == chat.choices[0].message.content
    assert with_items.instructions == "Be brief."


def test_responses_completed_and_the_stream_helper(tiny: LoadedModel, client_for: Any) -> None:
    _, client, _ = client_for(model=ends_on_its_own(tiny, 12))
    events = list(client.responses.create(model="tiny", input="hi", stream=True, max_output_tokens=100, temperature=0))
    text = _check_events(events, "response.completed")
    assert events[-1].response.status == "completed" and events[-1].response.incomplete_details is None
    assert events[-1].response.usage.output_tokens <= 13
    with client.responses.stream(model="tiny", input="hi", max_output_tokens=100, temperature=0) as stream:
        seen = [event.type for event in stream]
        final = stream.get_final_response()
    assert seen[0] == "response.created" and seen[-1] == "response.completed"
    assert final.output_text == text and final.status == "completed"
    whole = client.responses.create(model="tiny", input="hi", max_output_tokens=100, temperature=0)
    assert whole.output_text == text and whole.status == "completed"


@pytest.mark.parametrize(
    "fields,param",
    [
        ({"tools": [{"type": "function", "name": "f", "parameters": {}}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {}}}}, "text"),
        ({"reasoning": {"effort": "low"}}, "reasoning"),
        ({"store": True}, "store"),
        ({"background": True}, "background"),
        ({"truncation": "auto"}, "truncation"),
        ({"include": ["reasoning.encrypted_content"]}, "include"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "text": "x"}]}]}, "input[0].content"),
        ({"input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]}, "input[0]"),
        ({"seed": 3}, "seed"),
        ({"max_tokens": 3}, "max_tokens"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"input": ""}, "input"),
        ({"input": 5}, "input"),
        ({"temperature": 1e-38}, None),
        ({"text": {"format": {"type": "text"}}, "tools": [], "tool_choice": "auto", "store": False}, None),
    ],
)
def test_responses_parameters(client_for: Any, fields: dict[str, Any], param: str | None) -> None:
    _, client, url = client_for()
    body = {"model": "tiny", "input": "hi", "max_output_tokens": 4, **fields}
    response = httpx.post(url + "/v1/responses", json=body, timeout=30)
    if param is None:
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["output_tokens"] == 4
        return
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="tiny", input="hi", max_output_tokens=4, extra_body=fields)


def test_responses_stream_cancelled_by_the_client(client_for: Any) -> None:
    _, client, url = client_for(limits=Limits(max_tokens=4000))
    stream = client.responses.create(model="tiny", input="long", stream=True, max_output_tokens=4000, temperature=0)
    deltas = 0
    for event in stream:
        deltas += event.type == "response.output_text.delta"
        if deltas == 5:
            break
    stream.close()
    entry = wait_for(lambda: stats_entry(url, endpoint="responses"))
    assert entry["outcome"] == "cancelled" and entry["finish_reason"] == "cancelled"
    assert entry["completion_tokens"] < 4000
