"""Request parsing and validation, with errors in the OpenAI error shape.

Every bad input becomes an :class:`APIError` (a 4xx JSON response)::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "max_tokens", "code": null}}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, TypeGuard

from starlette.requests import Request
from starlette.responses import JSONResponse

from .engine import SamplingParams

ROLES = ("system", "user", "assistant", "developer", "tool")


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
    #: Completions per request (``n``).
    max_n: int = 8


#: Stop sequences per request (OpenAI's limit).
MAX_STOPS = 4
#: The longest stop sequence, in characters.
MAX_STOP_CHARS = 256
#: A temperature below this samples greedily, as temperature 0 does: the two cannot be
#: told apart, and dividing the logits by a tinier one overflows to NaN probabilities.
GREEDY_BELOW = 1e-5


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """A validated generation request."""

    params: SamplingParams
    prompt: str | None = None
    messages: list[dict[str, str]] | None = None
    stream: bool = False
    include_usage: bool = False
    model: str | None = None
    #: Stop sequences: the output ends before the first one to appear.
    stop: tuple[str, ...] = ()
    #: Completions to generate for the prompt (``n``), each its own choice.
    n: int = 1


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
    return decode_json_object(b"".join(chunks))


def decode_json_object(raw: bytes) -> dict[str, Any]:
    """Parse a request body that must be a JSON object (APIError 400 otherwise)."""
    if not raw.strip():
        raise APIError(400, "The request body is empty; send a JSON object.")
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise APIError(400, f"The request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise APIError(400, "The request body is nested too deeply.") from None
    if not isinstance(body, dict):
        raise APIError(400, f"The request body must be a JSON object, not {kind_of(body)}.")
    return body


def _too_large(limits: Limits) -> APIError:
    return APIError(413, f"The request body is larger than {limits.max_body_bytes} bytes.", code="request_too_large")


def kind_of(value: Any) -> str:
    """How a JSON value is named in error messages ("a string", "an array"...)."""
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


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def int_field(body: dict[str, Any], name: str, default: int | None, lo: int, hi: int) -> int | None:
    """An optional integer field within [lo, hi] (a float with no fraction counts)."""
    value = body.get(name)
    if value is None:
        return default
    if not _is_number(value) or (isinstance(value, float) and not value.is_integer()):
        raise APIError(400, f"'{name}' must be an integer, got {kind_of(value)}.", param=name)
    value = int(value)
    if not lo <= value <= hi:
        raise APIError(400, f"'{name}' must be between {lo} and {hi}, got {value}.", param=name)
    return value


def float_field(
    body: dict[str, Any], name: str, default: float, lo: float, hi: float, *, open_lo: bool = False
) -> float:
    """An optional finite number within [lo, hi] (or (lo, hi] with ``open_lo``)."""
    value = body.get(name)
    if value is None:
        return default
    if not _is_number(value) or not math.isfinite(value):
        raise APIError(400, f"'{name}' must be a number, got {kind_of(value)}.", param=name)
    if value > hi or value < lo or (open_lo and value == lo):
        bound = f"greater than {lo}" if open_lo else f"at least {lo}"
        raise APIError(400, f"'{name}' must be {bound} and at most {hi}, got {value}.", param=name)
    return float(value)


def bool_field(body: dict[str, Any], name: str, default: bool = False) -> bool:
    """An optional boolean field."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise APIError(400, f"'{name}' must be a boolean, got {kind_of(value)}.", param=name)
    return value


def string_field(body: dict[str, Any], name: str) -> str | None:
    """An optional string field."""
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise APIError(400, f"'{name}' must be a string, got {kind_of(value)}.", param=name)
    return value


def check_fields(body: dict[str, Any], allowed: frozenset[str]) -> None:
    """Refuse any field this endpoint does not know, as OpenAI does."""
    for name in body:
        if name not in allowed:
            raise APIError(400, f"Unrecognized request argument supplied: {name}", param=name, code="unknown_parameter")


def unsupported(name: str, why: str) -> APIError:
    """A 400 for a parameter whose requested behaviour this server does not have."""
    return APIError(400, f"'{name}' is not supported by this server: {why}.", param=name, code="unsupported_parameter")


def _one_of(*values: Any) -> Any:
    return lambda v: v is None or (isinstance(v, str) and v in values)


def _empty(v: Any) -> bool:
    return v is None or (isinstance(v, (list, dict)) and not v)


def _false(v: Any) -> bool:
    return v is None or v is False


#: OpenAI parameters this server does not implement, with the values that ask for
#: nothing it lacks (the defaults): those are accepted, anything else is a 400.
NEUTRAL: dict[str, tuple[Any, str]] = {
    "presence_penalty": (lambda v: v is None or (_is_number(v) and v == 0), "only 0, the default, is accepted"),
    "frequency_penalty": (lambda v: v is None or (_is_number(v) and v == 0), "only 0, the default, is accepted"),
    "logit_bias": (_empty, "token biases are not implemented"),
    "top_logprobs": (lambda v: v is None or (_is_number(v) and v == 0), "log probabilities are not returned"),
    "response_format": (
        lambda v: v is None or (isinstance(v, dict) and v.get("type") == "text"),
        'only {"type": "text"} is accepted (no JSON mode or schemas)',
    ),
    "tools": (_empty, "function calling is not implemented"),
    "functions": (_empty, "function calling is not implemented"),
    "tool_choice": (_one_of("none", "auto"), 'no tools: only "none" or "auto" is accepted'),
    "function_call": (_one_of("none", "auto"), 'no functions: only "none" or "auto" is accepted'),
    "parallel_tool_calls": (lambda v: v is None or isinstance(v, bool), "must be a boolean (there are no tools)"),
    "store": (_false, "completions are not stored"),
    "service_tier": (_one_of("auto", "default"), 'one tier: only "auto" or "default" is accepted'),
    "modalities": (lambda v: v is None or v == ["text"], 'text only: only ["text"] is accepted'),
    "audio": (lambda v: v is None, "audio output is not implemented"),
    "prediction": (lambda v: v is None, "predicted outputs are not implemented"),
    "web_search_options": (lambda v: v is None, "web search is not implemented"),
    "reasoning_effort": (lambda v: v is None, "the model does not reason"),
    "verbosity": (lambda v: v is None, "verbosity control is not implemented"),
    "echo": (_false, "the prompt is not echoed"),
    "suffix": (lambda v: v is None or v == "", "insertion (suffix) is not implemented"),
}


def check_neutral(body: dict[str, Any], names: frozenset[str]) -> None:
    """Refuse any of ``names`` (keys of :data:`NEUTRAL`) set to a value that asks for
    something this server does not do."""
    for name in NEUTRAL:
        if name in names and name in body:
            accepts, why = NEUTRAL[name]
            if not accepts(body[name]):
                raise unsupported(name, why)


def _metadata(body: dict[str, Any]) -> None:
    value = body.get("metadata")
    if value is None:
        return
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise APIError(400, "'metadata' must be an object of strings.", param="metadata")


def _logprobs(body: dict[str, Any], *, chat: bool) -> None:
    value = body.get("logprobs")
    if value is None or value is False:
        return
    if chat and not isinstance(value, bool):
        raise APIError(400, f"'logprobs' must be a boolean, got {kind_of(value)}.", param="logprobs")
    raise unsupported("logprobs", "log probabilities are not returned")


def stop_field(body: dict[str, Any]) -> tuple[str, ...]:
    """``stop``: null, a string, or an array of up to 4 non-empty strings."""
    value = body.get("stop")
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise APIError(400, f"'stop' must be a string or an array of strings, got {kind_of(value)}.", param="stop")
    if len(items) > MAX_STOPS:
        raise APIError(400, f"'stop' accepts at most {MAX_STOPS} sequences, got {len(items)}.", param="stop")
    for s in items:
        if not s:
            raise APIError(400, "'stop' sequences must not be empty.", param="stop")
        if len(s) > MAX_STOP_CHARS:
            raise APIError(400, f"'stop' sequences are limited to {MAX_STOP_CHARS} characters.", param="stop")
    return tuple(dict.fromkeys(items))


def sampling(body: dict[str, Any], limits: Limits, *, paced: bool, max_name: str | None = None) -> SamplingParams:
    """The sampling fields: ``max_tokens`` (or ``max_completion_tokens``, or
    ``max_name``), ``temperature``, ``top_p``, ``seed``, ``ignore_eos``, ``interval``."""
    names = (max_name,) if max_name else ("max_completion_tokens", "max_tokens")
    for name in names:
        value = body.get(name)
        if _is_number(value) and value <= 0:
            raise APIError(400, f"'{name}' must be at least 1, got {value}.", param=name)
    max_tokens = None
    for name in names:
        max_tokens = int_field(body, name, None, 1, limits.max_tokens)
        if max_tokens is not None:
            break
    interval = None
    if body.get("interval") is not None:
        if not paced:
            raise unsupported("interval", "it sets the pacing of the paced mode only")
        interval = float_field(body, "interval", 0.0, 0.0, 10.0)
    temperature = float_field(body, "temperature", 0.0 if paced else 0.7, 0.0, 2.0)
    if temperature < GREEDY_BELOW:
        temperature = 0.0
    return SamplingParams(
        max_tokens=min(limits.default_max_tokens, limits.max_tokens) if max_tokens is None else max_tokens,
        temperature=temperature,
        top_p=float_field(body, "top_p", 0.95, 0.0, 1.0, open_lo=True),
        seed=int_field(body, "seed", None, -(2**63), 2**63 - 1),
        ignore_eos=bool_field(body, "ignore_eos"),
        interval=interval,
    )


def prompt_field(body: dict[str, Any], limits: Limits) -> str:
    """``prompt``: a non-empty string (or an array holding one)."""
    if "prompt" not in body or body["prompt"] is None:
        raise APIError(400, "'prompt' is required.", param="prompt")
    prompt = body["prompt"]
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise APIError(400, f"'prompt' must be a string, got {kind_of(prompt)}.", param="prompt")
    if not prompt:
        raise APIError(400, "'prompt' must not be empty.", param="prompt")
    check_chars(len(prompt), limits, "prompt")
    return prompt


def check_chars(count: int, limits: Limits, param: str) -> None:
    """Refuse a prompt over ``max_prompt_chars``."""
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
        400, f"messages[{index}].content must be a string, got {kind_of(value)}.", param=f"messages[{index}].content"
    )


def _messages(body: dict[str, Any], limits: Limits) -> list[dict[str, str]]:
    if "messages" not in body or body["messages"] is None:
        raise APIError(400, "'messages' is required.", param="messages")
    raw = body["messages"]
    if not isinstance(raw, list):
        raise APIError(400, f"'messages' must be an array, got {kind_of(raw)}.", param="messages")
    if not raw:
        raise APIError(400, "'messages' must contain at least one message.", param="messages")
    if len(raw) > limits.max_messages:
        raise APIError(400, f"At most {limits.max_messages} messages are accepted.", param="messages")
    messages = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict):
            raise APIError(400, f"messages[{i}] must be an object, got {kind_of(message)}.", param=f"messages[{i}]")
        role = message.get("role")
        if role not in ROLES:
            raise APIError(400, f"messages[{i}].role must be one of {', '.join(ROLES)}.", param=f"messages[{i}].role")
        messages.append(
            {"role": "system" if role == "developer" else role, "content": _content(message.get("content"), i)}
        )
    check_messages(messages, limits)
    return messages


def check_messages(messages: list[dict[str, str]], limits: Limits, param: str = "messages") -> None:
    """Refuse a conversation over ``max_messages`` or ``max_prompt_chars``."""
    if len(messages) > limits.max_messages:
        raise APIError(400, f"At most {limits.max_messages} messages are accepted.", param=param)
    check_chars(sum(len(m["content"]) for m in messages), limits, param)


def _stream(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = bool_field(body, "stream")
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not isinstance(options, dict):
        raise APIError(400, f"'stream_options' must be an object, got {kind_of(options)}.", param="stream_options")
    for key in options:
        if key not in ("include_usage", "include_obfuscation"):
            raise APIError(
                400,
                f"Unrecognized request argument supplied: stream_options.{key}",
                param=f"stream_options.{key}",
                code="unknown_parameter",
            )
    if bool_field(options, "include_obfuscation"):
        raise unsupported("stream_options.include_obfuscation", "stream chunks are not padded")
    return stream, bool_field(options, "include_usage")


def _n(body: dict[str, Any], limits: Limits) -> int:
    n = int_field(body, "n", 1, 1, limits.max_n)
    assert n is not None
    best_of = body.get("best_of")
    if best_of is not None and not (_is_number(best_of) and best_of == n):
        raise unsupported("best_of", "only best_of equal to n (every completion returned) is accepted")
    return n


_SAMPLING = frozenset({"model", "max_tokens", "temperature", "top_p", "seed", "stop", "ignore_eos", "interval"})
_OPENAI = _SAMPLING | {
    "n", "stream", "stream_options", "user", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
    "metadata", "store", "service_tier",
}  # fmt: skip
CHAT_FIELDS = _OPENAI | {
    "messages", "max_completion_tokens", "top_logprobs", "response_format", "tools", "tool_choice",
    "parallel_tool_calls", "functions", "function_call", "modalities", "audio", "prediction",
    "web_search_options", "reasoning_effort", "verbosity",
}  # fmt: skip
COMPLETION_FIELDS = _OPENAI | {"prompt", "max_completion_tokens", "echo", "best_of", "suffix"}
GENERATE_FIELDS = _SAMPLING | {"prompt", "messages", "max_completion_tokens", "stream"}


def _openai(body: dict[str, Any], limits: Limits, fields: frozenset[str], *, paced: bool, chat: bool) -> dict[str, Any]:
    check_fields(body, fields)
    check_neutral(body, fields)
    _logprobs(body, chat=chat)
    _metadata(body)
    string_field(body, "user")
    stream, usage = _stream(body)
    return {
        "params": sampling(body, limits, paced=paced),
        "stream": stream,
        "include_usage": usage,
        "model": string_field(body, "model"),
        "stop": stop_field(body),
        "n": _n(body, limits),
    }


def parse_completion(body: dict[str, Any], limits: Limits, *, paced: bool = False) -> ParsedRequest:
    """``POST /v1/completions``."""
    fields = _openai(body, limits, COMPLETION_FIELDS, paced=paced, chat=False)
    return ParsedRequest(prompt=prompt_field(body, limits), **fields)


def parse_chat(body: dict[str, Any], limits: Limits, *, paced: bool = False) -> ParsedRequest:
    """``POST /v1/chat/completions``."""
    messages = _messages(body, limits)
    fields = _openai(body, limits, CHAT_FIELDS, paced=paced, chat=True)
    return ParsedRequest(messages=messages, **fields)


def parse_generate(body: dict[str, Any], limits: Limits, *, paced: bool = False) -> ParsedRequest:
    """``POST /generate`` (and ``GET /v1/stream``): a ``prompt`` (raw continuation)
    or ``messages`` (chat), the sampling fields and ``stop``. ``stream`` is accepted
    and has no effect (the framing follows ``Accept``)."""
    check_fields(body, GENERATE_FIELDS)
    bool_field(body, "stream")
    params = sampling(body, limits, paced=paced)
    stop, model = stop_field(body), string_field(body, "model")
    if body.get("messages") is not None and body.get("prompt") is None:
        return ParsedRequest(params, messages=_messages(body, limits), stop=stop, model=model)
    return ParsedRequest(params, prompt=prompt_field(body, limits), stop=stop, model=model)
