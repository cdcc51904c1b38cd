"""Fuzzing the request parsers on a real server: whatever the body (or query string),
the answer is a 2xx or a 4xx in the OpenAI error shape — never a 5xx, never a hang —
and nothing is left running afterwards."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asgi_stream.demo.responses import RESPONSES_FIELDS
from asgi_stream.demo.schemas import CHAT_FIELDS, COMPLETION_FIELDS, GENERATE_FIELDS, Limits

from ..support.waiting import wait_for

LIMITS = Limits(max_tokens=4, default_max_tokens=4, max_body_bytes=16_384)
ENDPOINTS = {
    "/v1/chat/completions": CHAT_FIELDS,
    "/v1/completions": COMPLETION_FIELDS,
    "/v1/responses": RESPONSES_FIELDS,
    "/generate": GENERATE_FIELDS,
}
EDGE_NUMBERS = [0, -1, 1, 2, 4, 5, 9, 1e-38, 5e-324, 1e-5, 0.5, 1.0, 2.0, 2.5, 1e308, 2**63, 2**64, -(2**63) - 1]

scalars = (
    st.none()
    | st.booleans()
    | st.sampled_from(EDGE_NUMBERS)
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["", "text", "auto", "none", "required", "json_object", "user", "assistant", "\x00", "é🙂"])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=10,
)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "developer", "tool", "x"]), "content": values}
)
good_messages = st.lists(
    st.fixed_dictionaries({"role": st.just("user"), "content": st.text(min_size=1, max_size=20)}),
    min_size=1,
    max_size=2,
)


small_text = st.text(min_size=1, max_size=4)
tokens = st.integers(1, 4)
#: Values each field accepts (edges included), so that most bodies parse and generate.
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "temperature": st.floats(0, 2) | st.sampled_from([0, 1e-38, 5e-324, 1e-300, 1e-5, 2]),
    "top_p": st.floats(0, 1, exclude_min=True) | st.sampled_from([1e-38, 5e-324, 1]),
    "max_tokens": tokens,
    "max_completion_tokens": tokens,
    "max_output_tokens": tokens,
    "seed": st.integers(-(2**63), 2**63 - 1),
    "n": st.integers(1, 3),
    "stop": small_text | st.lists(small_text, max_size=4),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans()}),
    "ignore_eos": st.booleans(),
    "model": st.text(max_size=5),
    "user": st.text(max_size=5),
    "metadata": st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
    "presence_penalty": st.just(0),
    "frequency_penalty": st.just(0.0),
    "logit_bias": st.just({}),
    "tools": st.just([]),
    "tool_choice": st.sampled_from(["none", "auto"]),
    "response_format": st.just({"type": "text"}),
    "instructions": st.text(max_size=8),
}


def bodies(fields: frozenset[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects made of the endpoint's own fields with values they accept (edges
    included), a valid prompt most of the time, and at most one field — known or
    not — with a value from plausible to absurd, so that parsing goes deep and many
    requests reach the model."""
    keys = sorted(fields | {"x", "stream"})
    plausible = st.fixed_dictionaries({}, optional={k: PLAUSIBLE[k] for k in keys if k in PLAUSIBLE})
    text = st.text(min_size=1, max_size=20)
    prompts = {
        "messages": good_messages | good_messages.map(lambda m: m * 2) | st.lists(message, max_size=3) | values,
        "prompt": text | text.map(lambda t: [t]) | values,
        "input": text | good_messages | values,
    }
    prompt = st.sampled_from([k for k in prompts if k in fields]).flatmap(
        lambda key: st.fixed_dictionaries({key: prompts[key]})
    )
    odd = st.just({}) | st.dictionaries(st.sampled_from(keys), values, max_size=1)
    return st.builds(lambda a, b, c: {**a, **b, **c}, prompt, plausible, odd)


def raw_bodies() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=64),
        st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n),
        st.integers(1, 3000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
        st.integers(1, 3000).map(lambda n: b'{"messages": ' + b"[" * n),
        values.map(lambda v: json.dumps(v).encode()),
    )


def _dumps(body: Any) -> bytes:
    return json.dumps(body, allow_nan=True).encode()


@pytest.fixture(scope="module", params=["batching", "thread"])
def base(tiny: Any, request: Any) -> Any:
    """The app on either engine path (their sampling code differs)."""
    from asgi_stream.demo import create_app
    from tests.support.servers import serve

    options: dict[str, Any] = {} if request.param == "batching" else {"batching": None}
    app = create_app(tiny, limits=LIMITS, max_queue=64, **options)
    with serve(app, "uvicorn", lifespan="on") as running:
        with httpx.Client(base_url=running.url, timeout=20) as client:
            yield client
        # Nothing left running or waiting once every request has been answered.
        wait_for(lambda: (s := client_stats(running.url))["queue_depth"] == 0 and not s["generations_running"])
    app.state.service.engine.close()


def client_stats(url: str) -> dict[str, Any]:
    return httpx.get(url + "/stats", timeout=5).json()


def _check(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text[:500]
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
    elif response.headers.get("content-type", "").startswith("text/event-stream"):
        assert "event: error" not in response.text, response.text[:500]


FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@pytest.mark.parametrize("path", sorted(ENDPOINTS))
def test_fuzzed_bodies_never_get_a_5xx(base: httpx.Client, path: str) -> None:
    @FUZZ
    @given(bodies(ENDPOINTS[path]))
    def run(body: dict[str, Any]) -> None:
        _check(base.post(path, content=_dumps(body), headers={"Content-Type": "application/json"}))

    run()


@pytest.mark.parametrize("path", sorted(ENDPOINTS))
def test_fuzzed_raw_bytes_never_get_a_5xx(base: httpx.Client, path: str) -> None:
    @FUZZ
    @given(raw_bodies())
    def run(raw: bytes) -> None:
        _check(base.post(path, content=raw, headers={"Content-Type": "application/json"}))

    run()


QUERY_KEYS = ["message", "prompt", "max_tokens", "temperature", "top_p", "seed", "stop", "retry", "ignore_eos",
              "model", "n", "x", "last_event_id"]  # fmt: skip
query_values = st.one_of(
    st.text(max_size=10),
    st.sampled_from([str(v) for v in EDGE_NUMBERS] + ["nan", "inf", "-inf", "true", "false", "1" * 5000]),
)


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.sampled_from(QUERY_KEYS),
            query_values,
        ),
        max_size=6,
    )
)
def test_fuzzed_queries_never_get_a_5xx(base: httpx.Client, items: list[tuple[str, str]]) -> None:
    _check(base.get("/v1/stream?" + urlencode(items)))
