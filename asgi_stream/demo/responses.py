"""The OpenAI Responses API (``POST /v1/responses``): request parsing, the response
object and its typed stream events.

Streamed, a response is a sequence of typed SSE events (``event: <type>`` and a JSON
``data`` carrying the same ``type`` and a ``sequence_number`` counting from 0)::

    response.created → response.in_progress → response.output_item.added →
    response.content_part.added → response.output_text.delta … →
    response.output_text.done → response.content_part.done →
    response.output_item.done → response.completed (or response.incomplete)

as OpenAI sends them and the official ``openai`` client's ``responses.create(stream=True)``
and ``responses.stream()`` read them. There is no ``[DONE]``. The first event waits for
the first token (keepalive comments cover the wait), so the stream's TTFT measures a
real token. Reaching ``max_output_tokens`` makes the response ``incomplete``, with
``incomplete_details.reason = "max_output_tokens"``, as OpenAI does.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..events import Event
from .engine import Job
from .output import JobText
from .schemas import (
    APIError,
    Limits,
    ParsedRequest,
    check_fields,
    check_messages,
    check_neutral,
    kind_of,
    read_json_object,
    sampling,
    string_field,
    unsupported,
)

if TYPE_CHECKING:
    from .app import DemoService

ENDPOINT = "responses"

RESPONSES_FIELDS = frozenset(
    {
        "model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "stream",
        "stream_options", "user", "metadata", "store", "tools", "tool_choice", "parallel_tool_calls", "text",
        "reasoning", "previous_response_id", "conversation", "include", "truncation", "background",
        "service_tier", "top_logprobs", "max_tool_calls", "prompt", "prompt_cache_key", "safety_identifier",
    }
)  # fmt: skip

_ROLES = ("user", "assistant", "system", "developer")
_TEXT_PARTS = ("input_text", "output_text", "text")


def _text_format(v: Any) -> bool:
    if v is None:
        return True
    if not isinstance(v, dict) or set(v) - {"format", "verbosity"} or v.get("verbosity") is not None:
        return False
    fmt = v.get("format")
    return fmt is None or (isinstance(fmt, dict) and fmt.get("type") == "text")


#: Responses-only parameters this server does not implement: the values accepted.
_RESPONSES_NEUTRAL: dict[str, tuple[Any, str]] = {
    "text": (_text_format, 'only {"format": {"type": "text"}} is accepted (no JSON mode or schemas)'),
    "reasoning": (
        lambda v: v is None or (isinstance(v, dict) and all(x is None for x in v.values())),
        "the model does not reason",
    ),
    "previous_response_id": (lambda v: v is None, "responses are not stored; send the whole conversation as input"),
    "conversation": (lambda v: v is None, "conversations are not stored; send the whole conversation as input"),
    "include": (lambda v: v is None or v == [], "there is nothing extra to include"),
    "truncation": (lambda v: v in (None, "disabled"), 'only "disabled" is accepted (an over-long input is a 400)'),
    "background": (lambda v: v is None or v is False, "background responses are not implemented"),
    "prompt": (lambda v: v is None, "prompt templates are not implemented"),
    "max_tool_calls": (lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)), "must be an integer"),
}


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    """A validated ``POST /v1/responses`` request."""

    parsed: ParsedRequest
    instructions: str | None = None
    max_output_tokens: int | None = None
    tool_choice: str = "auto"
    user: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


def _parts(content: Any, index: int) -> str:
    where = f"input[{index}].content"
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise APIError(400, f"{where} must be a string or an array, got {kind_of(content)}.", param=where)
    texts = []
    for part in content:
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            raise APIError(400, f"{where} parts must be objects with a 'text' string.", param=where)
        if part.get("type") not in _TEXT_PARTS:
            raise unsupported(where, f"only text parts ({', '.join(_TEXT_PARTS)}) are accepted")
        texts.append(part["text"])
    return "".join(texts)


def _input(body: dict[str, Any], limits: Limits) -> list[dict[str, str]]:
    value = body.get("input")
    if value is None:
        raise APIError(400, "'input' is required.", param="input")
    if isinstance(value, str):
        if not value:
            raise APIError(400, "'input' must not be empty.", param="input")
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        raise APIError(400, f"'input' must be a string or an array, got {kind_of(value)}.", param="input")
    if not value:
        raise APIError(400, "'input' must contain at least one item.", param="input")
    if len(value) > limits.max_messages:
        raise APIError(400, f"At most {limits.max_messages} input items are accepted.", param="input")
    messages = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise APIError(400, f"input[{i}] must be an object, got {kind_of(item)}.", param=f"input[{i}]")
        kind = item.get("type", "message")
        if kind != "message":
            raise unsupported(f"input[{i}]", f"only message items are accepted, not {kind!r}")
        role = item.get("role")
        if role not in _ROLES:
            raise APIError(400, f"input[{i}].role must be one of {', '.join(_ROLES)}.", param=f"input[{i}].role")
        messages.append({"role": "system" if role == "developer" else role, "content": _parts(item.get("content"), i)})
    return messages


def parse_responses(body: dict[str, Any], limits: Limits, *, paced: bool = False) -> ResponsesRequest:
    """``POST /v1/responses``."""
    check_fields(body, RESPONSES_FIELDS)
    messages = _input(body, limits)
    check_neutral(body, RESPONSES_FIELDS)
    for name, (accepts, why) in _RESPONSES_NEUTRAL.items():
        if name in body and not accepts(body[name]):
            raise unsupported(name, why)
    instructions = string_field(body, "instructions")
    if instructions:
        messages = [{"role": "system", "content": instructions}, *messages]
    check_messages(messages, limits, "input")
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise APIError(400, "'metadata' must be an object of strings.", param="metadata")
    for name in ("user", "prompt_cache_key", "safety_identifier", "model"):
        string_field(body, name)
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict) or set(options) - {"include_obfuscation"}:
            raise APIError(400, "'stream_options' accepts only include_obfuscation.", param="stream_options")
        if options.get("include_obfuscation"):
            raise unsupported("stream_options.include_obfuscation", "stream events are not padded")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise APIError(400, f"'stream' must be a boolean, got {kind_of(stream)}.", param="stream")
    params = sampling(body, limits, paced=paced, max_name="max_output_tokens")
    parsed = ParsedRequest(params, messages=messages, stream=bool(stream), model=body.get("model"))
    return ResponsesRequest(
        parsed,
        instructions=instructions,
        max_output_tokens=body.get("max_output_tokens"),
        tool_choice=body.get("tool_choice") or "auto",
        user=body.get("user"),
        metadata=metadata,
    )


class ResponseBuilder:
    """The response object and output message of one ``/v1/responses`` request."""

    def __init__(self, request: ResponsesRequest, job: Job, model: str) -> None:
        self.request = request
        self.job = job
        self.model = model
        self.id = f"resp_{job.id:024x}"
        self.item_id = f"msg_{job.id:024x}"
        self.created_at = int(time.time())

    @staticmethod
    def part(text: str) -> dict[str, Any]:
        """An ``output_text`` content part."""
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def item(self, status: str, text: str | None) -> dict[str, Any]:
        """The assistant message (``text`` None: no content part yet)."""
        content = [] if text is None else [self.part(text)]
        return {"id": self.item_id, "type": "message", "status": status, "role": "assistant", "content": content}

    def usage(self) -> dict[str, Any]:
        """The Responses API's usage object."""
        stats = self.job.stats
        return {
            "input_tokens": stats.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": stats.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": stats.prompt_tokens + stats.completion_tokens,
        }

    def response(self, status: str, text: str | None = None) -> dict[str, Any]:
        """The response object: ``in_progress`` (no output yet), ``completed`` or
        ``incomplete`` (with ``text``, its output and usage)."""
        request, params = self.request, self.request.parsed.params
        done = status != "in_progress"
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": request.instructions,
            "max_output_tokens": request.max_output_tokens,
            "max_tool_calls": None,
            "model": self.model,
            "output": [self.item(status, text or "")] if done else [],
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": False,
            "temperature": params.temperature,
            "text": {"format": {"type": "text"}},
            "tool_choice": request.tool_choice,
            "tools": [],
            "top_logprobs": 0,
            "top_p": params.top_p,
            "truncation": "disabled",
            "usage": self.usage() if done else None,
            "user": request.user,
            "metadata": request.metadata,
        }


def status_of(text: JobText) -> str:
    """``completed``, or ``incomplete`` when ``max_output_tokens`` ended the text."""
    return "incomplete" if text.finish_reason == "length" else "completed"


async def response_events(builder: ResponseBuilder, text: JobText) -> AsyncIterator[Event]:
    """The typed SSE events of a streamed response."""
    seq = itertools.count()
    where = {"item_id": builder.item_id, "output_index": 0, "content_index": 0}

    def event(kind: str, **fields: Any) -> Event:
        return Event(event=kind, data={"type": kind, "sequence_number": next(seq), **fields})

    iterator = text.__aiter__()
    try:
        first: str | None = await iterator.__anext__()
    except StopAsyncIteration:
        first = None
    yield event("response.created", response=builder.response("in_progress"))
    yield event("response.in_progress", response=builder.response("in_progress"))
    yield event("response.output_item.added", output_index=0, item=builder.item("in_progress", None))
    yield event("response.content_part.added", **where, part=builder.part(""))
    pieces: list[str] = []
    if first is not None:
        pieces.append(first)
        yield event("response.output_text.delta", **where, delta=first, logprobs=[])
        async for piece in iterator:
            pieces.append(piece)
            yield event("response.output_text.delta", **where, delta=piece, logprobs=[])
    whole = "".join(pieces)
    status = status_of(text)
    yield event("response.output_text.done", **where, text=whole, logprobs=[])
    yield event("response.content_part.done", **where, part=builder.part(whole))
    yield event("response.output_item.done", output_index=0, item=builder.item(status, whole))
    yield event(f"response.{status}", response=builder.response(status, whole))


async def responses_endpoint(service: DemoService, request: Request) -> Response:
    """``POST /v1/responses``: a response object, or its typed event stream."""
    started = time.monotonic()
    try:
        body = await read_json_object(request, service.limits)
        req = parse_responses(body, service.limits, paced=service.settings.paced)
        job = await service.admit(req.parsed, ENDPOINT)
    except APIError as error:
        return service.rejected(error)
    builder = ResponseBuilder(req, job, service.engine.name)
    text = JobText(job)
    headers = {"X-Request-Id": str(job.id)}
    if req.parsed.stream:
        events = response_events(builder, text)
        return service.token_stream(job, events, ENDPOINT, format="sse", headers=headers)
    try:
        results = await service.collect(request, [text], ENDPOINT, started)
    except APIError as error:
        return error.response()
    if results is None:
        return Response(status_code=499)
    return JSONResponse(builder.response(status_of(text), results[0][0]), headers=headers)
