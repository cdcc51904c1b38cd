"""Checks several cases share: per-token arrival, event-per-chunk, hook verdicts."""

from __future__ import annotations

import codecs
import time
from typing import Any

from ..sse import SSEMessage, SSEParser
from .base import FAULT_PROXY, FAULT_TARGET, CaseContext, Fail, Observed, require


def wire_fault(ctx: CaseContext) -> str:
    """Whom a wire-timing failure points at: the app, unless a proxy sits in front
    and the app's own response (asked for directly, with HEAD) carried
    ``X-Accel-Buffering: no`` — then the proxy buffered despite being told not to."""
    if not ctx.target.proxy or ctx.target.hooks is None or ctx.last_request is None:
        return FAULT_TARGET
    path, accept = ctx.last_request
    try:
        with ctx.target.hooks.h1(timeout=5) as c:
            c.request("HEAD", path, headers=([("accept", accept)] if accept else []) + ctx.target.extra_headers)
            resp = c.read_response(deadline=time.monotonic() + 5)
    except Exception:
        return FAULT_TARGET
    return FAULT_PROXY if (resp.header("x-accel-buffering") or b"").lower() == b"no" else FAULT_TARGET


def events_by_chunk(obs: Observed) -> tuple[SSEParser, list[tuple[int, int]]]:
    """Parse the body chunk by chunk: the parser and, per decoded chunk, how many
    events and comments it completed."""
    parser = SSEParser()
    counts = []
    for c in obs.decoded:
        n_comments = len(parser.comments)
        events = parser.feed(c.data, c.t)
        counts.append((len(events), len(parser.comments) - n_comments))
    parser.close()
    return parser, counts


def require_one_event_per_chunk(ctx: CaseContext, obs: Observed, counts: list[tuple[int, int]]) -> None:
    """Every chunk carries exactly one event (or only comments)."""
    unit = obs.unit
    for i, (events, comments) in enumerate(counts):
        if events > 1:
            raise Fail(
                f"{unit} {i} carried {events} events (tokens were merged): {obs.describe_chunks()}",
                fault=wire_fault(ctx),
            )
        if events == 0 and comments == 0:
            raise Fail(
                f"{unit} {i} carried part of an event ({obs.decoded[i].data[:60]!r}): {obs.describe_chunks()}",
                fault=wire_fault(ctx),
            )


def require_sse_tokens(obs: Observed, parser: SSEParser, tokens: list[str]) -> None:
    """The stream parsed into exactly these ``message`` events."""
    got = [e.data for e in parser.events]
    require(obs.status == 200, f"status {obs.status}")
    require(obs.complete, f"the response did not end properly ({len(got)} events received)")
    require(got == tokens, f"events {got!r}, expected {tokens!r}")


def require_paced(ctx: CaseContext, events: list[SSEMessage], produced_at: list[float], what: str = "token") -> str:
    """Each event arrived before the next token was produced (server clock = client
    clock on Linux). Returns a summary of the margins."""
    require(
        len(produced_at) >= len(events), f"the server logged {len(produced_at)} tokens, the client got {len(events)}"
    )
    margins = []
    for i in range(len(events) - 1):
        t_arrive = events[i].t
        assert t_arrive is not None
        margin = produced_at[i + 1] - t_arrive
        margins.append(margin)
        if margin <= 0:
            raise Fail(
                f"{what} {i} arrived {-margin * 1000:.0f} ms after {what} {i + 1} was produced "
                f"(latencies: {latencies(events, produced_at)})",
                fault=wire_fault(ctx),
            )
    if not margins:
        return "one token only"
    return f"each arrived ≥{min(margins) * 1000:.0f} ms before the next was produced (latencies {latencies(events, produced_at)})"


def latencies(events: list[SSEMessage], produced_at: list[float]) -> str:
    """``3/2/2 ms``: arrival minus production per token."""
    out = []
    for e, p in zip(events, produced_at):
        if e.t is not None:
            out.append(f"{(e.t - p) * 1000:.0f}")
    return "/".join(out) + " ms"


def utf8_chunks_ok(obs: Observed) -> tuple[str, int, list[int]]:
    """Decode the body with a streaming decoder: the text, the U+FFFD count, and the
    indexes of chunks that are not valid UTF-8 on their own."""
    dec = codecs.getincrementaldecoder("utf-8")("replace")
    text = "".join(dec.decode(c.data) for c in obs.decoded) + dec.decode(b"", final=True)
    broken = []
    for i, c in enumerate(obs.decoded):
        try:
            c.data.decode("utf-8")
        except UnicodeDecodeError:
            broken.append(i)
    return text, text.count("\ufffd"), broken


def cancelled_in_budget(ctx: CaseContext, log: dict[str, Any], t_close: float, who: str) -> str:
    """The generator's ``finally`` ran within the cancel budget of ``t_close`` because
    it was closed; returns the evidence."""
    budget = ctx.timing.s(ctx.timing.cancel_budget)
    fin = log.get("finally_at")
    if fin is None:
        raise Fail(
            f"{who}: generator still running {budget:.1f}+ s after the client left "
            f"({len(log.get('produced_at') or [])} tokens produced, cancel reason {log.get('cancel_reason')})"
        )
    delay = fin - t_close
    require(
        delay <= budget,
        f"{who}: generator's finally ran {delay * 1000:.0f} ms after the client left (budget {budget * 1000:.0f} ms)",
    )
    require(
        log.get("finally_reason") == "closed",
        f"{who}: generator ended as {log.get('finally_reason')!r}, not closed by cancellation",
    )
    reason = log.get("cancel_reason")
    return f"{who}: finally {delay * 1000:.0f} ms after close (reason {reason}, outcome {log.get('outcome')})"
