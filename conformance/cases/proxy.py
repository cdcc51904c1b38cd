"""Cases through the reverse proxy (nginx with gzip and proxy_buffering on)."""

from __future__ import annotations

from ..tokens import expected_tokens
from . import case
from ._checks import events_by_chunk, latencies, require_paced, require_sse_tokens
from .base import FAULT_PROXY, NDJSON, SSE, CaseContext, fetch, require


@case(
    "proxy-paced",
    "through nginx (gzip on, proxy_buffering on, client Accept-Encoding: gzip) tokens "
    "still arrive paced, thanks to X-Accel-Buffering: no",
    protocols=("h1",),
    proxy=True,
    needs_app=True,
    needs_hooks=True,
    timing=True,
)
def proxy_paced(ctx: CaseContext) -> str:
    """SSE (compressed by nginx, flushed per token) and NDJSON (identity) both paced."""
    n = ctx.timing.tokens
    notes = []
    for accept in (SSE, NDJSON):
        label = ctx.label(accept.split("/")[1])
        obs = fetch(ctx, ctx.path(n=n, interval=f"{ctx.timing.iv:.3f}", label=label), accept)
        require(obs.decode_error is None, f"{accept}: {obs.decode_error}", fault=FAULT_PROXY)
        log = ctx.server_logs([label], until=lambda v: v.get("ended_at") is not None)[label]
        produced = log.get("produced_at") or []
        if accept == SSE:
            parser, _ = events_by_chunk(obs)
            require_sse_tokens(obs, parser, expected_tokens(n))
            events = parser.events
        else:
            parser_nd = obs.ndjson()
            require(
                obs.complete and [v.value for v in parser_nd.values] == expected_tokens(n),
                f"NDJSON values {[v.value for v in parser_nd.values]!r}",
            )
            events = parser_nd.values  # same .t attribute
        paced = require_paced(ctx, events, produced)  # type: ignore[arg-type]
        notes.append(f"{accept} (Content-Encoding {obs.header('content-encoding') or 'none'}): {paced}")
    return "; ".join(notes)


@case(
    "proxy-contrast",
    "the contrast: with the anti-buffering header turned off in the app, nginx "
    "delivers the stream in one burst at the end",
    protocols=("h1",),
    proxy=True,
    needs_app=True,
    needs_hooks=True,
    timing=True,
)
def proxy_contrast(ctx: CaseContext) -> str:
    """``anti=0``: no X-Accel-Buffering, so gzip + proxy buffering hold everything back."""
    n = ctx.timing.tokens
    label = ctx.label()
    obs = fetch(ctx, ctx.path(n=n, interval=f"{ctx.timing.iv:.3f}", label=label, anti=0), SSE)
    parser, _ = events_by_chunk(obs)
    require_sse_tokens(obs, parser, expected_tokens(n))
    log = ctx.server_logs([label], until=lambda v: v.get("ended_at") is not None)[label]
    produced = log.get("produced_at") or []
    require(len(produced) == n, f"server logged {len(produced)} tokens")
    first = parser.events[0].t
    assert first is not None
    early = [i for i, e in enumerate(parser.events) if e.t is not None and e.t < produced[-1]]
    require(
        not early,
        f"no contrast: tokens {early} arrived before the last one was produced even without "
        f"X-Accel-Buffering (latencies {latencies(parser.events, produced)})",
        fault=FAULT_PROXY,
    )
    spread = (parser.events[-1].t or 0) - first
    return (
        f"without the header all {n} tokens arrived in one burst ({spread * 1000:.0f} ms wide) "
        f"{(first - produced[0]) * 1000:.0f} ms after the first was produced (paced with it: see proxy-paced)"
    )
