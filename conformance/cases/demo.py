"""Cases against the bundled demo app (``asgi_stream.demo``, paced mode), mounted at
``/demo`` in the target app when it is importable."""

from __future__ import annotations

import json
import time

from . import case
from ._checks import events_by_chunk, require_one_event_per_chunk
from .base import SSE, CaseContext, Observed, Skip, fetch, observe_h1, observe_h2, require

#: The request the demo's generate endpoint gets (paced mode: deterministic tokens).
DEMO_PATH = "/demo/generate"
DEMO_BODY = {"prompt": "Hello", "max_tokens": 8, "stream": True}


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


@case("demo-generate", "the bundled demo app's /demo/generate (paced mode) streams SSE, one event per "
      "chunk / DATA frame", needs_app=True, needs_demo=True)
def demo_generate(ctx: CaseContext) -> str:
    """POST /demo/generate with Accept: text/event-stream."""
    obs = _post(ctx)
    if obs.status in (404, 405, 422):
        raise Skip(f"/demo/generate answered {obs.status}: {obs.body[:120]!r}")
    require(obs.status == 200 and obs.complete, f"status {obs.status}, complete {obs.complete}")
    require(obs.media_type == "text/event-stream", f"Content-Type {obs.header('content-type')!r}")
    parser, counts = events_by_chunk(obs)
    require(len(parser.events) >= 2, f"{len(parser.events)} events")
    require_one_event_per_chunk(ctx, obs, counts)
    require(parser.replacement_chars == 0 and parser.discarded_at_close is None, "malformed SSE")
    span = (parser.events[-1].t or 0) - (parser.events[0].t or 0)
    return f"{len(parser.events)} events, one per chunk, over {span * 1000:.0f} ms"
