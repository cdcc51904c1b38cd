"""``GET /v1/stream``: a resumable SSE stream for browsers' ``EventSource``.

    const es = new EventSource("v1/stream?message=" + encodeURIComponent(text));
    es.addEventListener("start", (e) => ...);            // {"id": 12, "model": "..."}
    es.onmessage = (e) => out += JSON.parse(e.data).text;
    es.addEventListener("done", (e) => es.close());      // {"finish_reason", "usage"}

The request is the query string: ``message`` (one user message, through the chat
template) or ``prompt`` (raw continuation), and the fields of ``/generate`` —
``max_tokens``, ``temperature``, ``top_p``, ``seed``, ``stop`` (repeat it for several),
``ignore_eos``, ``model`` — plus ``retry`` (the reconnection delay, in ms, sent to the
EventSource in the first event). Bad input gets the usual 4xx JSON, on which an
EventSource stops.

The stream is resumable (``TokenStream(resumable=True)``): every event carries an id,
and an EventSource that loses its connection reconnects with ``Last-Event-ID`` and gets
the events it missed, then the live tail, from the middleware's replay store — the
generation runs once, decoupled from the connection. Its reconnect after the end gets
204, on which an EventSource stops. A client that goes away for good leaves the
generation running for the middleware's ``resume_grace``; then it is cancelled.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from ..events import Event
from .engine import Job
from .openai import usage
from .output import JobText
from .schemas import APIError, Limits, ParsedRequest, int_field, parse_generate

if TYPE_CHECKING:
    from .app import DemoService

ENDPOINT = "stream"
#: The reconnection delay sent to the EventSource unless ``retry`` says otherwise (ms).
DEFAULT_RETRY_MS = 1000

_NUMBERS = frozenset({"max_tokens", "temperature", "top_p", "seed", "interval", "retry"})
_STRINGS = frozenset({"prompt", "message", "model"})
_INT = re.compile(r"[+-]?[0-9]+")


def _number(value: str) -> Any:
    """A query value as a JSON number would be (left a string when it is none)."""
    if _INT.fullmatch(value):
        try:
            return int(value)
        except ValueError:  # beyond the digits Python converts
            return value
    try:
        return float(value)
    except ValueError:
        return value


def _flag(value: str) -> Any:
    return {"true": True, "1": True, "false": False, "0": False}.get(value.lower(), value)


def parse_query(items: Iterable[tuple[str, str]], limits: Limits, *, paced: bool = False) -> tuple[ParsedRequest, int]:
    """The request a ``GET /v1/stream`` query string makes, and its ``retry`` (ms)."""
    body: dict[str, Any] = {}
    stops: list[str] = []
    for key, value in items:
        if key == "last_event_id":  # the resume cursor: the middleware's
            continue
        if key == "stop":
            stops.append(value)
            continue
        if key in body:
            raise APIError(400, f"'{key}' is given more than once.", param=key)
        if key in _NUMBERS:
            body[key] = _number(value)
        elif key == "ignore_eos":
            body[key] = _flag(value)
        elif key in _STRINGS:
            body[key] = value
        else:
            raise APIError(400, f"Unrecognized query parameter: {key}", param=key, code="unknown_parameter")
    retry = int_field(body, "retry", DEFAULT_RETRY_MS, 0, 600_000)
    body.pop("retry", None)
    if stops:
        body["stop"] = stops
    if "message" in body:
        if "prompt" in body:
            raise APIError(400, "Give either 'message' or 'prompt', not both.", param="message")
        body["messages"] = [{"role": "user", "content": body.pop("message")}]
    elif "prompt" not in body:
        raise APIError(400, "'message' or 'prompt' is required.", param="message")
    assert retry is not None
    return parse_generate(body, limits, paced=paced), retry


async def stream_events(job: Job, text: JobText, model: str, retry: int) -> AsyncIterator[Any]:
    """The events: ``start`` (with the reconnection delay) once the first token is
    ready, ``{"text": ...}`` messages, then ``done``."""
    iterator = text.__aiter__()
    try:
        first: str | None = await iterator.__anext__()
    except StopAsyncIteration:
        first = None
    yield Event(event="start", data={"id": job.id, "model": model}, retry=retry)
    if first is not None:
        yield {"text": first}
        async for piece in iterator:
            yield {"text": piece}
    yield Event(event="done", data={"id": job.id, "finish_reason": text.finish_reason, "usage": usage([job])})


async def stream_endpoint(service: DemoService, request: Request) -> Response:
    """``GET /v1/stream``."""
    try:
        parsed, retry = parse_query(request.query_params.multi_items(), service.limits, paced=service.settings.paced)
        if request.method == "HEAD":  # nothing to generate for
            return Response(media_type="text/event-stream")
        job = await service.admit(parsed, ENDPOINT)
    except APIError as error:
        return service.rejected(error)
    events = stream_events(job, JobText(job, parsed.stop), service.engine.name, retry)
    return service.token_stream(
        job, events, ENDPOINT, format="sse", resumable=True, headers={"X-Request-Id": str(job.id)}
    )
