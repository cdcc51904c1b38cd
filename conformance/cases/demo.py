"""Cases against the bundled demo app (``asgi_stream.demo``, paced mode), mounted at
``/demo`` in the target app when it is importable."""

from __future__ import annotations

import json
import time

from . import case
from ._checks import events_by_chunk, require_one_event_per_chunk, wire_fault
from .base import SSE, CaseContext, Observed, Skip, observe_h1, observe_h2, require

#: The request the demo's generate endpoint gets (paced mode: deterministic tokens).
DEMO_PATH = "/demo/generate"
DEMO_BODY = {"prompt": "Hello", "max_tokens": 8, "stream": True}


def _one_per_chunk_but_the_tail(ctx: CaseContext, obs: Observed, counts: list[tuple[int, int]]) -> None:
    """One event per chunk, except that the last chunk may carry the closing events
    (last token, finish chunk, [DONE]): produced back to back, an HTTP/2 server may
    put them in one DATA frame."""
    require_one_event_per_chunk(ctx, obs, counts[:-1])
    require(
        len(counts) >= 2 and counts[-1][0] <= 3,
        f"the last chunk carried {counts[-1][0] if counts else 0} events: {obs.describe_chunks()}",
        fault=wire_fault(ctx),
    )


def _post(ctx: CaseContext) -> Observed:
    body = json.dumps(DEMO_BODY).encode()
    headers = [("accept", SSE), ("content-type", "application/json")]
    timeout = ctx.timing.request_timeout
    if ctx.target.protocol == "h2":
        with ctx.target.h2(timeout=timeout) as c:
            st = c.request("POST", DEMO_PATH, headers=headers, body=body)
            c.read_all([st.stream_id], timeout=timeout)
            return observe_h2(st)
    with ctx.target.h1(timeout=timeout) as c:
        c.request("POST", DEMO_PATH, headers=headers, body=body)
        return observe_h1(c.read_response(deadline=time.monotonic() + timeout))


@case(
    "demo-generate",
    "the bundled demo app's /demo/generate (paced mode) streams SSE, one event per "
    "chunk / DATA frame (the closing events may share the last)",
    needs_app=True,
    needs_demo=True,
)
def demo_generate(ctx: CaseContext) -> str:
    """POST /demo/generate with Accept: text/event-stream."""
    obs = _post(ctx)
    if obs.status in (404, 405, 422):
        raise Skip(f"/demo/generate answered {obs.status}: {obs.body[:120]!r}")
    require(obs.status == 200 and obs.complete, f"status {obs.status}, complete {obs.complete}")
    require(obs.media_type == "text/event-stream", f"Content-Type {obs.header('content-type')!r}")
    parser, counts = events_by_chunk(obs)
    require(len(parser.events) >= 2, f"{len(parser.events)} events")
    _one_per_chunk_but_the_tail(ctx, obs, counts)
    require(parser.replacement_chars == 0 and parser.discarded_at_close is None, "malformed SSE")
    span = (parser.events[-1].t or 0) - (parser.events[0].t or 0)
    return f"{len(parser.events)} events over {span * 1000:.0f} ms, one per chunk (closing ones: {counts[-1][0]} in the last)"


CHAT_PATH = "/demo/v1/chat/completions"
CHAT_BODY = {"model": "paced", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8, "stream": True}


@case(
    "demo-openai-chat",
    "the demo app's OpenAI-compatible /v1/chat/completions stream: chunk objects "
    "with choices[0].delta, one per chunk / DATA frame, then data: [DONE]",
    needs_app=True,
    needs_demo=True,
)
def demo_openai_chat(ctx: CaseContext) -> str:
    """POST /demo/v1/chat/completions with ``stream: true``."""
    body = json.dumps(CHAT_BODY).encode()
    headers = [("content-type", "application/json")]
    timeout = ctx.timing.request_timeout
    if ctx.target.protocol == "h2":
        with ctx.target.h2(timeout=timeout) as c:
            st = c.request("POST", CHAT_PATH, headers=headers, body=body)
            c.read_all([st.stream_id], timeout=timeout)
            obs = observe_h2(st)
    else:
        with ctx.target.h1(timeout=timeout) as c:
            c.request("POST", CHAT_PATH, headers=headers, body=body)
            obs = observe_h1(c.read_response(deadline=time.monotonic() + timeout))
    if obs.status in (404, 405):
        raise Skip(f"{CHAT_PATH} answered {obs.status}")
    require(obs.status == 200 and obs.complete, f"status {obs.status}, complete {obs.complete}: {obs.body[:200]!r}")
    require(obs.media_type == "text/event-stream", f"Content-Type {obs.header('content-type')!r}")
    parser, counts = events_by_chunk(obs)
    data = [e.data for e in parser.events]
    require(data and data[-1] == "[DONE]", f"the stream does not end with data: [DONE] (last {data[-1:]!r})")
    deltas = []
    for d in data[:-1]:
        try:
            obj = json.loads(d)
        except ValueError:
            require(False, f"event data is not JSON: {d[:80]!r}")
        require(obj.get("object") == "chat.completion.chunk", f"object {obj.get('object')!r}")
        deltas.append(obj["choices"][0].get("delta", {}).get("content") or "")
    _one_per_chunk_but_the_tail(ctx, obs, counts)
    text = "".join(deltas)
    return (
        f"{len(data) - 1} chunk objects then [DONE], one event per chunk (closing ones: {counts[-1][0]} in the "
        f"last); text {text[:40]!r}"
    )
