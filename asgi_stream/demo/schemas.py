"""Request parsing and validation, with errors in the OpenAI error shape.

Every bad input becomes an :class:`APIError` (a 4xx JSON response)::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "max_tokens", "code": null}}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from .engine import SamplingParams

_ROLES = ("system", "user", "assistant", "developer", "tool")


class APIError(Exception):
    """An error answered as JSON in the OpenAI error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers

    def payload(self) -> dict[str, Any]:
        """``{"error": {...}}``."""
        return error_payload(self.message, type=self.type, param=self.param, code=self.code)

    def response(self) -> JSONResponse:
        """The JSON response for this error."""
        return JSONResponse(self.payload(), status_code=self.status, headers=self.headers)


def error_payload(message: str, *, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The OpenAI error object."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


@dataclass(frozen=True, slots=True)
class Limits:
    """What a request may ask for."""

    max_tokens: int = 1024
    default_max_tokens: int = 256
    max_prompt_tokens: int = 2048
    max_prompt_chars: int = 32_000
    max_body_bytes: int = 1 << 20
    max_messages: int = 64


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """A validated generation request."""

    params: SamplingParams
    prompt: str | None = None
    messages: list[dict[str, str]] | None = None
    stream: bool = False
    include_usage: bool = False
    model: str | None = None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def read_json_object(request: Request, limits: Limits) -> dict[str, Any]:
    """The request body as a JSON object, or an APIError (400 / 413)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise _too_large(limits)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_body_bytes:
            raise _too_large(limits)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise APIError(400, "The request body is empty; send a JSON object.")
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise APIError(400, f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise APIError(400, f"The request body must be a JSON object, not {_kind(body)}.")
    return body


def _too_large(limits: Limits) -> APIError:
    return APIError(413, f"The request body is larger than {limits.max_body_bytes} bytes.", code="request_too_large")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _int(body: dict[str, Any], name: str, default: int | None, lo: int, hi: int) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, float) and not value.is_integer())
    ):
        raise APIError(400, f"'{name}' must be an integer, got {_kind(value)}.", param=name)
    value = int(value)
    if not lo <= value <= hi:
        raise APIError(400, f"'{name}' must be between {lo} and {hi}, got {value}.", param=name)
    return value


def _float(body: dict[str, Any], name: str, default: float, lo: float, hi: float, *, open_lo: bool = False) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise APIError(400, f"'{name}' must be a number, got {_kind(value)}.", param=name)
    if value > hi or value < lo or (open_lo and value == lo):
        bound = f"greater than {lo}" if open_lo else f"at least {lo}"
        raise APIError(400, f"'{name}' must be {bound} and at most {hi}, got {value}.", param=name)
    return float(value)


def _bool(body: dict[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise APIError(400, f"'{name}' must be a boolean, got {_kind(value)}.", param=name)
    return value


def _params(body: dict[str, Any], limits: Limits, *, paced: bool) -> SamplingParams:
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value <= 0:
            raise APIError(400, f"'{name}' must be at least 1, got {value}.", param=name)
    max_tokens = _int(body, "max_completion_tokens", None, 1, limits.max_tokens)
    if max_tokens is None:
        max_tokens = _int(body, "max_tokens", limits.default_max_tokens, 1, limits.max_tokens)
    n = _int(body, "n", 1, 1, 1000)
    if n != 1:
        raise APIError(400, "Only 'n': 1 is supported.", param="n")
    for unsupported in ("logprobs", "echo", "stop", "tools", "best_of"):
        value = body.get(unsupported)
        if value not in (None, False, [], "") and not (unsupported == "best_of" and value == 1):
            raise APIError(400, f"'{unsupported}' is not supported by this server.", param=unsupported)
    interval = None
    if paced and body.get("interval") is not None:
        interval = _float(body, "interval", 0.0, 0.0, 10.0)
    assert max_tokens is not None
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=_float(body, "temperature", 0.0 if paced else 0.7, 0.0, 2.0),
        top_p=_float(body, "top_p", 0.95, 0.0, 1.0, open_lo=True),
        seed=_int(body, "seed", None, -(2**63), 2**63 - 1),
        ignore_eos=_bool(body, "ignore_eos"),
        interval=interval,
    )


def _prompt(body: dict[str, Any], limits: Limits) -> str:
    if "prompt" not in body or body["prompt"] is None:
        raise APIError(400, "'prompt' is required.", param="prompt")
    prompt = body["prompt"]
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise APIError(400, f"'prompt' must be a string, got {_kind(prompt)}.", param="prompt")
    if not prompt:
        raise APIError(400, "'prompt' must not be empty.", param="prompt")
    _check_chars(len(prompt), limits, "prompt")
    return prompt


def _check_chars(count: int, limits: Limits, param: str) -> None:
    if count > limits.max_prompt_chars:
        raise APIError(
            400,
            f"The prompt is {count} characters long; the limit is {limits.max_prompt_chars}.",
            param=param,
            code="context_length_exceeded",
        )


def _content(value: Any, index: int) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # [{"type": "text", "text": "..."}]
        parts = []
        for part in value:
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise APIError(
                    400, f"messages[{index}].content parts must be text parts.", param=f"messages[{index}].content"
                )
            parts.append(part["text"])
        return "".join(parts)
    raise APIError(
        400, f"messages[{index}].content must be a string, got {_kind(value)}.", param=f"messages[{index}].content"
    )


def _messages(body: dict[str, Any], limits: Limits) -> list[dict[str, str]]:
    if "messages" not in body or body["messages"] is None:
        raise APIError(400, "'messages' is required.", param="messages")
    raw = body["messages"]
    if not isinstance(raw, list):
        raise APIError(400, f"'messages' must be an array, got {_kind(raw)}.", param="messages")
    if not raw:
        raise APIError(400, "'messages' must contain at least one message.", param="messages")
    if len(raw) > limits.max_messages:
        raise APIError(400, f"At most {limits.max_messages} messages are accepted.", param="messages")
    messages = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict):
            raise APIError(400, f"messages[{i}] must be an object, got {_kind(message)}.", param=f"messages[{i}]")
        role = message.get("role")
        if role not in _ROLES:
            raise APIError(400, f"messages[{i}].role must be one of {', '.join(_ROLES)}.", param=f"messages[{i}].role")
        messages.append(
            {"role": "system" if role == "developer" else role, "content": _content(message.get("content"), i)}
        )
    _check_chars(sum(len(m["content"]) for m in messages), limits, "messages")
    return messages


def _model(body: dict[str, Any]) -> str | None:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise APIError(400, f"'model' must be a string, got {_kind(model)}.", param="model")
    return model


def _stream(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = _bool(body, "stream")
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not isinstance(options, dict):
        raise APIError(400, f"'stream_options' must be an object, got {_kind(options)}.", param="stream_options")
    return stream, _bool(options, "include_usage")


def parse_completion(body: dict[str, Any], limits: Limits, *, paced: bool = False) -> ParsedRequest:
    """``POST /v1/completions``."""
    prompt = _prompt(body, limits)
    stream, usage = _stream(body)
    return ParsedRequest(
        _params(body, limits, paced=paced), prompt=prompt, stream=stream, include_usage=usage, model=_model(body)
    )


def parse_chat(body: dict[str, Any], limits: Limits, *, paced: bool = False) -> ParsedRequest:
    """``POST /v1/chat/completions``."""
    messages = _messages(body, limits)
    stream, usage = _stream(body)
    return ParsedRequest(
        _params(body, limits, paced=paced), messages=messages, stream=stream, include_usage=usage, model=_model(body)
    )


def parse_generate(body: dict[str, Any], limits: Limits, *, paced: bool = False) -> ParsedRequest:
    """``POST /generate``: a ``prompt`` (raw continuation) or ``messages`` (chat)."""
    if body.get("messages") is not None and body.get("prompt") is None:
        return ParsedRequest(_params(body, limits, paced=paced), messages=_messages(body, limits))
    return ParsedRequest(_params(body, limits, paced=paced), prompt=_prompt(body, limits))
