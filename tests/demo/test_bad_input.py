"""Bad input gets a 4xx JSON error in the OpenAI error shape: never a 500, a crash or
a hung stream. Each case runs on a real server, which must keep serving afterwards."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from asgi_stream.demo.schemas import Limits

LIMITS = Limits(max_tokens=64, max_prompt_tokens=200, max_prompt_chars=1000, max_body_bytes=4096)
CHAT = "/v1/chat/completions"
COMP = "/v1/completions"
GEN = "/generate"
MSG = [{"role": "user", "content": "hi"}]

# (name, path, raw body or JSON value, expected status, expected param or None)
CASES: list[tuple[str, str, Any, int, str | None]] = [
    ("invalid JSON", CHAT, b'{"messages": [', 400, None),
    ("invalid JSON (completions)", COMP, b"prompt=hi", 400, None),
    ("invalid JSON (generate)", GEN, b"{'prompt': 'hi'}", 400, None),
    ("NaN is not JSON", COMP, b'{"prompt": "hi", "temperature": NaN}', 400, None),
    ("not UTF-8", COMP, b'{"prompt": "\xff\xfe"}', 400, None),
    ("empty body", CHAT, b"", 400, None),
    ("array body", COMP, [1, 2], 400, None),
    ("string body", GEN, "hello", 400, None),
    ("missing messages", CHAT, {"max_tokens": 5}, 400, "messages"),
    ("null messages", CHAT, {"messages": None}, 400, "messages"),
    ("messages not a list", CHAT, {"messages": "hi"}, 400, "messages"),
    ("empty messages", CHAT, {"messages": []}, 400, "messages"),
    ("message not an object", CHAT, {"messages": ["hi"]}, 400, "messages[0]"),
    ("message without role", CHAT, {"messages": [{"content": "hi"}]}, 400, "messages[0].role"),
    ("unknown role", CHAT, {"messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages[0].role"),
    ("content a number", CHAT, {"messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content"),
    (
        "content parts not text",
        CHAT,
        {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        400,
        "messages[0].content",
    ),
    ("missing prompt", COMP, {"max_tokens": 5}, 400, "prompt"),
    ("missing prompt (generate)", GEN, {"max_tokens": 5}, 400, "prompt"),
    ("prompt a number", COMP, {"prompt": 42}, 400, "prompt"),
    ("prompt an object", GEN, {"prompt": {"text": "hi"}}, 400, "prompt"),
    ("prompt a list of several", COMP, {"prompt": ["a", "b"]}, 400, "prompt"),
    ("empty prompt", COMP, {"prompt": ""}, 400, "prompt"),
    ("max_tokens zero", COMP, {"prompt": "hi", "max_tokens": 0}, 400, "max_tokens"),
    ("max_tokens negative", CHAT, {"messages": MSG, "max_tokens": -3}, 400, "max_tokens"),
    ("max_tokens over the limit", CHAT, {"messages": MSG, "max_tokens": 65}, 400, "max_tokens"),
    ("max_tokens over the limit (generate)", GEN, {"prompt": "hi", "max_tokens": 10_000}, 400, "max_tokens"),
    ("max_tokens a string", COMP, {"prompt": "hi", "max_tokens": "10"}, 400, "max_tokens"),
    ("max_tokens a fraction", COMP, {"prompt": "hi", "max_tokens": 2.5}, 400, "max_tokens"),
    ("max_tokens a boolean", COMP, {"prompt": "hi", "max_tokens": True}, 400, "max_tokens"),
    ("max_completion_tokens zero", CHAT, {"messages": MSG, "max_completion_tokens": 0}, 400, "max_completion_tokens"),
    ("temperature a string", CHAT, {"messages": MSG, "temperature": "hot"}, 400, "temperature"),
    ("temperature out of range", CHAT, {"messages": MSG, "temperature": 9}, 400, "temperature"),
    ("top_p zero", COMP, {"prompt": "hi", "top_p": 0}, 400, "top_p"),
    ("stream not a boolean", CHAT, {"messages": MSG, "stream": "yes"}, 400, "stream"),
    (
        "stream_options not an object",
        CHAT,
        {"messages": MSG, "stream": True, "stream_options": 1},
        400,
        "stream_options",
    ),
    ("seed a string", COMP, {"prompt": "hi", "seed": "x"}, 400, "seed"),
    ("model a number", CHAT, {"messages": MSG, "model": 3}, 400, "model"),
    ("n over the limit", CHAT, {"messages": MSG, "n": 9}, 400, "n"),
    ("n zero", COMP, {"prompt": "hi", "n": 0}, 400, "n"),
    ("n on generate", GEN, {"prompt": "hi", "n": 2}, 400, "n"),
    ("five stop sequences", COMP, {"prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ("an empty stop sequence", CHAT, {"messages": MSG, "stop": ""}, 400, "stop"),
    ("a stop sequence not a string", CHAT, {"messages": MSG, "stop": [1]}, 400, "stop"),
    ("stop an object", GEN, {"prompt": "hi", "stop": {"a": 1}}, 400, "stop"),
    ("stop sequence too long", COMP, {"prompt": "hi", "stop": "x" * 257}, 400, "stop"),
    ("unknown field", CHAT, {"messages": MSG, "top_k": 5}, 400, "top_k"),
    ("unknown field (generate)", GEN, {"prompt": "hi", "frequency_penalty": 0}, 400, "frequency_penalty"),
    ("interval outside paced mode", GEN, {"prompt": "hi", "interval": 0.1}, 400, "interval"),
    ("unknown stream option", CHAT, {"messages": MSG, "stream_options": {"x": 1}}, 400, "stream_options.x"),
    ("nested too deeply", CHAT, b"[" * 2000 + b"]" * 2000, 400, None),
    ("nested too deeply in a field", CHAT, b'{"messages": ' + b"[" * 2000 + b"]" * 2000 + b"}", 400, None),
    ("over-long prompt (characters)", COMP, {"prompt": "x" * 1001}, 400, "prompt"),
    ("over-long prompt (tokens)", COMP, {"prompt": "é" * 150}, 400, "prompt"),
    ("over-long chat (tokens)", CHAT, {"messages": [{"role": "user", "content": "word " * 60}]}, 400, "messages"),
    ("body too large", COMP, {"prompt": "x" * 5000}, 413, None),
]


@pytest.fixture(scope="module")
def base(tiny: Any) -> Any:
    from asgi_stream.demo import create_app
    from tests.support.servers import serve

    app = create_app(tiny, limits=LIMITS)
    with serve(app, "uvicorn", lifespan="on") as running:
        yield running.url
    app.state.service.engine.close()


@pytest.mark.parametrize("name,path,body,status,param", CASES, ids=[c[0] for c in CASES])
def test_bad_input(base: str, name: str, path: str, body: Any, status: int, param: str | None) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    for stream in (False, True):
        if stream and isinstance(body, dict) and path != GEN:
            content = json.dumps({**body, "stream": body.get("stream", True)}).encode()
        response = httpx.post(base + path, content=content, headers={"Content-Type": "application/json"}, timeout=10)
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/json")
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert isinstance(error["message"], str) and error["message"]
        assert error["type"] == "invalid_request_error"
        if param is not None:
            assert error["param"] == param
    if "over-long" in name:
        assert error["code"] == "context_length_exceeded"
    # The server is unharmed: a good request right after works.
    ok = httpx.post(base + COMP, json={"prompt": "ok", "max_tokens": 3, "temperature": 0}, timeout=10)
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3


# Parameters this server does not implement: their defaults are accepted (see
# test_neutral_values_are_accepted), anything that asks for the feature is refused.
REFUSED: list[tuple[str, str, Any]] = [
    (CHAT, "presence_penalty", 0.5),
    (COMP, "frequency_penalty", -1),
    (CHAT, "logit_bias", {"50": 10}),
    (CHAT, "logprobs", True),
    (COMP, "logprobs", 2),
    (CHAT, "top_logprobs", 3),
    (CHAT, "response_format", {"type": "json_object"}),
    (CHAT, "response_format", {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
    (CHAT, "tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
    (CHAT, "tool_choice", "required"),
    (CHAT, "tool_choice", {"type": "function", "function": {"name": "f"}}),
    (CHAT, "functions", [{"name": "f"}]),
    (CHAT, "function_call", {"name": "f"}),
    (CHAT, "store", True),
    (CHAT, "service_tier", "flex"),
    (CHAT, "modalities", ["text", "audio"]),
    (CHAT, "audio", {"voice": "alloy", "format": "wav"}),
    (CHAT, "prediction", {"type": "content", "content": "x"}),
    (CHAT, "web_search_options", {}),
    (CHAT, "reasoning_effort", "low"),
    (CHAT, "verbosity", "low"),
    (COMP, "echo", True),
    (COMP, "best_of", 3),
    (COMP, "suffix", "end"),
    (CHAT, "stream_options", {"include_obfuscation": True}),
]
NEUTRAL: list[tuple[str, dict[str, Any]]] = [
    (
        CHAT,
        {
            "presence_penalty": 0,
            "frequency_penalty": 0.0,
            "logit_bias": {},
            "logprobs": False,
            "top_logprobs": 0,
            "response_format": {"type": "text"},
            "tools": [],
            "tool_choice": "none",
            "parallel_tool_calls": True,
            "functions": [],
            "function_call": "auto",
            "store": False,
            "service_tier": "auto",
            "modalities": ["text"],
            "user": "someone",
            "metadata": {"k": "v"},
            "seed": 3,
            "n": 1,
            "model": "anything",
            "stop": None,
            "stream_options": {"include_usage": True, "include_obfuscation": False},
        },
    ),
    (COMP, {"echo": False, "best_of": 1, "suffix": "", "logprobs": None, "user": "u", "stop": []}),
]


@pytest.mark.parametrize("path,name,value", REFUSED, ids=[f"{n}={v!r}"[:60] for _, n, v in REFUSED])
def test_unimplemented_parameters_are_refused(base: str, path: str, name: str, value: Any) -> None:
    body: dict[str, Any] = {"messages": MSG} if path == CHAT else {"prompt": "hi"}
    param = name
    if name == "stream_options":
        body["stream"] = True
        param = "stream_options.include_obfuscation"
    response = httpx.post(base + path, json={**body, name: value, "max_tokens": 2}, timeout=10)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["code"] == "unsupported_parameter" and param in error["message"]


@pytest.mark.parametrize("path,fields", NEUTRAL, ids=["chat", "completions"])
def test_neutral_values_are_accepted(base: str, path: str, fields: dict[str, Any]) -> None:
    body: dict[str, Any] = {"messages": MSG} if path == CHAT else {"prompt": "hi"}
    response = httpx.post(base + path, json={**body, **fields, "max_tokens": 3, "temperature": 0}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == 3


@pytest.fixture(scope="module")
def thread_base(tiny: Any) -> Any:
    """The app on the one-thread engine path (``model.generate``'s own sampling)."""
    from asgi_stream.demo import create_app
    from tests.support.servers import serve

    app = create_app(tiny, limits=LIMITS, batching=None)
    with serve(app, "uvicorn", lifespan="on") as running:
        yield running.url
    app.state.service.engine.close()


@pytest.mark.parametrize("temperature", [1e-38, 5e-324, 1e-300, 1e-6, 1e-5 * 1.5, 2.0])
@pytest.mark.parametrize("engine", ["batching", "thread"])
def test_tiny_temperatures_generate(engine: str, temperature: float, request: Any) -> None:
    """Temperatures whose division overflows the logits (NaN probabilities) sample
    greedily, as temperature 0 does; the rest sample as asked. On both engine paths."""
    base = request.getfixturevalue("base" if engine == "batching" else "thread_base")
    body = {"prompt": "hi", "max_tokens": 8, "temperature": temperature, "seed": 1}
    for stream in (False, True):
        response = httpx.post(base + COMP, json={**body, "stream": stream}, timeout=30)
        assert response.status_code == 200, response.text
        assert "error" not in response.text
    if temperature < 1e-5:
        greedy = httpx.post(base + COMP, json={**body, "temperature": 0}, timeout=30).json()
        tiny = httpx.post(base + COMP, json=body, timeout=30).json()
        assert tiny["choices"][0]["text"] == greedy["choices"][0]["text"]


def test_context_length_exceeded(tiny: Any, live: Any) -> None:
    _, url = live(limits=Limits(max_tokens=4096, max_prompt_tokens=4096))
    response = httpx.post(url + COMP, json={"prompt": "x" * 100, "max_tokens": 4000}, timeout=10)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "max_tokens"


@pytest.mark.parametrize(
    "method,path,status", [("GET", CHAT, 405), ("GET", GEN, 405), ("POST", "/nope", 404), ("GET", "/v2/models", 404)]
)
def test_wrong_route_or_method(base: str, method: str, path: str, status: int) -> None:
    response = httpx.request(method, base + path, timeout=10)
    assert response.status_code == status
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_model_that_fails_to_load_gives_503(live: Any) -> None:
    def broken() -> Any:
        raise RuntimeError("no weights here")

    from asgi_stream.demo import create_app

    app = create_app(broken)
    from tests.support.servers import serve

    with serve(app, "uvicorn", lifespan="off") as running:
        for _ in range(2):  # and again: still a clean error, not a hang
            response = httpx.post(running.url + COMP, json={"prompt": "hi"}, timeout=10)
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "model_unavailable"
