"""HTTP/1.1-only cases: the terminating chunk, HTTP/1.0, keep-alive reuse, a reader
that stops reading, and a client that half-closes."""

from __future__ import annotations

import time

from ..clients import H1Error
from ..tokens import expected_tokens
from . import case, outside
from ._checks import cancelled_in_budget, require_paced, require_sse_tokens
from .base import (
    FAULT_SERVER,
    SSE,
    CaseContext,
    Fail,
    ServerFault,
    Skip,
    fetch,
    observe_h1,
    observe_url,
    out_of_time,
    require,
)

H1 = ("h1",)


@case(
    "h1-zero-chunk",
    "the body ends with the terminating zero-length chunk, right after the last token",
    protocols=H1,
    shared=True,
)
def zero_chunk(ctx: CaseContext) -> str:
    """Chunked framing closes properly (a truncated body has no ``0\\r\\n\\r\\n``)."""
    obs = observe_url(ctx) if ctx.external else fetch(ctx, ctx.path(n=3, interval=f"{ctx.timing.iv:.3f}"), SSE)
    if obs.cut:
        raise Skip(f"the end of the stream was not observed (observation stopped {obs.cut_reason})")
    resp = obs.raw
    require(resp.chunked, f"not chunked (Transfer-Encoding {obs.header('transfer-encoding')!r})", fault=FAULT_SERVER)  # type: ignore[union-attr]
    require(
        obs.complete and resp.trailing_zero_chunk_seen,  # type: ignore[union-attr]
        f"no terminating chunk: the body ends with {bytes(resp.raw[-24:])!r}",
        fault=FAULT_SERVER,
    )  # type: ignore[union-attr]
    tail = bytes(resp.raw[-7:])  # type: ignore[union-attr]
    require(tail.endswith(b"0\r\n\r\n"), f"body tail {tail!r}", fault=FAULT_SERVER)
    require(obs.chunks, "no chunks before the terminator")
    lag = (obs.t_end or 0) - obs.chunks[-1].t
    require(lag <= ctx.timing.s(0.5), f"the terminating chunk came {lag * 1000:.0f} ms after the last token")
    return f"{len(obs.chunks)} data chunks, then 0\\r\\n\\r\\n {lag * 1000:.1f} ms after the last"


@case(
    "h1-http10",
    "an HTTP/1.0 request gets a close-delimited body, still streamed token by token",
    protocols=H1,
    timing=True,
)
def http10(ctx: CaseContext) -> str:
    """No chunked coding for a 1.0 client: the server must close to end the body."""
    label = ctx.label()
    n = ctx.timing.tokens
    path = ctx.path(n=n, interval=f"{ctx.timing.iv:.3f}", label=label)
    with ctx.target.h1() as c:
        c.request(ctx.method(), path, headers=ctx.headers(SSE), body=ctx.body(), http_version="1.0")
        try:
            resp = c.read_response(deadline=time.monotonic() + ctx.timing.request_timeout)
        except TimeoutError as exc:
            out_of_time(ctx, "the HTTP/1.0 response")
            raise Fail(
                f"HTTP/1.0 response did not end (server kept the connection open?): {exc}", fault=FAULT_SERVER
            ) from exc
    obs = observe_h1(resp)
    te = obs.header("transfer-encoding")
    require(
        not te or "chunked" not in te.lower(),
        "chunked Transfer-Encoding sent to an HTTP/1.0 client",
        fault=FAULT_SERVER,
    )
    require(obs.header("content-length") is None, "Content-Length on a stream")
    require(resp.server_closed, "the server did not close the connection to end the body", fault=FAULT_SERVER)
    parser = obs.sse()
    if ctx.external:
        require(obs.status == 200 and (parser.events or obs.body), f"status {obs.status}, empty body")
        return f"close-delimited body of {len(obs.body)} bytes in {len(obs.chunks)} reads"
    require_sse_tokens(obs, parser, expected_tokens(n))
    if ctx.target.hooks is None:
        return f"HTTP/{resp.http_version} {resp.status}, body ended by close; {n} tokens in {len(obs.chunks)} reads"
    log = ctx.server_logs([label], until=lambda v: v.get("ended_at") is not None)[label]
    paced = require_paced(ctx, parser.events, log.get("produced_at") or [])
    return (
        f"HTTP/{resp.http_version} {resp.status} without Transfer-Encoding/Content-Length, body ended by close; "
        f"{n} tokens {paced}"
    )


@case(
    "h1-keepalive-reuse", "a second request on the same keep-alive connection works after a stream ends", protocols=H1
)
def keepalive_reuse(ctx: CaseContext) -> str:
    """Two streams, one connection."""
    path = ctx.path(n=3, interval="0.01")
    bodies = []
    with ctx.target.h1() as c:
        for i in range(2):
            try:
                c.request(ctx.method(), path, headers=ctx.headers(SSE), body=ctx.body())
                resp = c.read_response(deadline=time.monotonic() + ctx.timing.request_timeout)
            except (H1Error, TimeoutError) as exc:
                if isinstance(exc, TimeoutError):
                    out_of_time(ctx, f"request {i + 1} on the reused connection")
                raise Fail(f"request {i + 1} on the reused connection failed: {exc}", fault=FAULT_SERVER) from exc
            require(
                resp.status == 200 and resp.complete, f"request {i + 1}: status {resp.status}, complete {resp.complete}"
            )
            conn = (resp.header("connection") or b"").lower()
            require(
                i == 1 or (conn != b"close" and not resp.server_closed),
                f"the server closed the connection after the stream (Connection: {conn!r})",
                fault=FAULT_SERVER,
            )
            bodies.append(observe_h1(resp).body)
    require((bodies[0] and bodies[0] == bodies[1]) or ctx.external, "the two streams differ")
    return f"2 streams of {len(bodies[0])} bytes on one connection"


@case(
    "h1-slow-reader",
    "a reader that stops reading (small SO_RCVBUF): server memory stays bounded and "
    "the stream ends by its send timeout",
    protocols=H1,
    heavy=True,
    alone=True,
)
def slow_reader(ctx: CaseContext) -> str:
    """A fast endless producer of 1 KiB tokens; the client reads a little, then stops
    (from outside: whether the server gives the stalled stream up)."""
    if ctx.target.hooks is None:
        if not ctx.external:
            raise Skip("needs the server-side hook endpoint (or --url)")
        return outside.slow_reader(ctx)
    t = ctx.timing
    send_timeout = t.s(t.send_timeout)
    label = ctx.label()
    rss0 = ctx.server_rss()
    c = ctx.target.h1(rcvbuf=4096)
    try:
        c.request(
            "GET",
            ctx.path(n=0, interval=0, size=1024, send_timeout=f"{send_timeout:.3f}", label=label),
            headers=ctx.headers(SSE),
        )
        resp = c.read_chunks(4, deadline=time.monotonic() + t.request_timeout)
        received = len(resp.raw)
        t_stop = time.monotonic()
        # Stop reading. Watch the server until the stream ends (or clearly never will).
        limit = send_timeout + t.s(8.0)
        rss_max = rss0
        log: dict = {}
        while time.monotonic() - t_stop < limit:
            snap = ctx.target.hook_streams([label])
            rss_max = max(rss_max, int(snap["rss"]))
            log = snap["streams"].get(label) or {}
            if log.get("finally_at") is not None and log.get("ended_at") is not None:
                break
            cancelled = log.get("cancelled_at")
            if cancelled is not None and time.monotonic() - cancelled > t.s(3.0):
                break  # cancelled long ago and still not over: the server holds it
            if int(log.get("produced_bytes") or 0) - received > 16 << 20:
                break  # the producer is not held back: proven, no need to watch further
            time.sleep(0.1)
    finally:
        c.abort()
    produced = int(log.get("produced_bytes") or 0)
    in_flight = produced - received
    growth = rss_max - rss0
    mib = 1 << 20
    require(growth <= 48 * mib, f"server RSS grew by {growth / mib:.1f} MiB while the client did not read")
    require(
        in_flight <= 16 * mib,
        f"{in_flight / mib:.1f} MiB produced beyond what the client read: the producer was not held back",
    )
    fin = log.get("finally_at")
    cancelled_at = log.get("cancelled_at")
    if log.get("ended_at") is None and log.get("cancel_reason") == "send_timeout" and cancelled_at is not None:
        closed = (
            f"its generator was closed {fin - t_stop:.1f} s after the client stopped reading"
            if fin is not None
            else "its generator is not closed yet"
        )
        raise ServerFault(
            f"the app's send timeout fired {cancelled_at - t_stop:.1f} s after the client stopped reading (its "
            f"CancelToken is set, {closed}, {produced / mib:.2f} MiB produced, RSS +{growth / mib:.1f} MiB), but the "
            f"response could not end: the server's send() is still blocked {time.monotonic() - cancelled_at:.0f} s "
            f"later and does not yield to "
            f"cancellation (hypercorn's trio worker shields socket writes: hypercorn/trio/tcp_server.py "
            f"protocol_send); the stream ends only when the client goes away"
            if "trio" in ctx.target.server
            else f"the app's send timeout fired {cancelled_at - t_stop:.1f} s after the client stopped reading, but the "
            f"server's send() stayed blocked for {time.monotonic() - cancelled_at:.0f} s and did not yield to cancellation"
        )
    if fin is None:
        raise Fail(
            f"stream still running {limit:.0f} s after the client stopped reading "
            f"({produced / mib:.1f} MiB produced, outcome {log.get('outcome')})"
        )
    require(
        log.get("outcome") == "timed_out" and log.get("cancel_reason") == "send_timeout",
        f"ended with outcome {log.get('outcome')!r}, reason {log.get('cancel_reason')!r}; expected the send timeout",
    )
    took = fin - t_stop
    return (
        f"producer held back: {produced / mib:.2f} MiB produced, {received / 1024:.0f} KiB read, "
        f"RSS +{growth / mib:.1f} MiB; ended by send_timeout ({send_timeout:.1f} s) {took:.1f} s after the "
        f"client stopped reading"
    )


@case(
    "h1-half-close",
    "a client that half-closes (FIN after the request): the stream completes, or the "
    "server treats it as a disconnect and the generator is cancelled",
    protocols=H1,
)
def half_close(ctx: CaseContext) -> str:
    """SHUT_WR right after the request; then keep reading."""
    label = ctx.label()
    n = ctx.timing.tokens
    path = ctx.path(n=n, interval=f"{ctx.timing.iv:.3f}", label=label)
    with ctx.target.h1() as c:
        c.request(ctx.method(), path, headers=ctx.headers(SSE), body=ctx.body())
        t_fin = time.monotonic()
        c.half_close()
        error = None
        try:
            resp = c.read_response(deadline=time.monotonic() + ctx.timing.request_timeout)
        except TimeoutError as exc:
            out_of_time(ctx, "the stream after the half-close")
            raise Fail(
                f"after the half-close the server neither finished nor closed within "
                f"{ctx.timing.request_timeout:.0f} s: {exc}",
                fault=FAULT_SERVER,
            ) from exc
        except H1Error as exc:
            error = str(exc)
            resp = c.response  # type: ignore[assignment]
        t_seen = time.monotonic()
    assert resp is not None
    obs = observe_h1(resp)
    if obs.complete and error is None:
        parser = obs.sse()
        if not ctx.external:
            require_sse_tokens(obs, parser, expected_tokens(n))
        return f"the server finished the stream after the FIN ({len(obs.chunks)} chunks, complete)"
    # The server treated the FIN as a disconnect: the generator must have been cancelled.
    if ctx.target.hooks is None or ctx.external:
        return f"the server closed the connection after the FIN ({error or 'incomplete body'})"
    budget = ctx.timing.s(ctx.timing.cancel_budget)
    log = ctx.server_logs([label], until=lambda v: v.get("finally_at") is not None, timeout=budget + 2)[label]
    if not log:
        return "the server closed the connection at the FIN before the app saw the request"
    note = cancelled_in_budget(ctx, log, t_fin, "generator")
    return (
        f"the server treats a half-close as a disconnect (closed after {(t_seen - t_fin) * 1000:.0f} ms, "
        f"{len(obs.chunks)} chunks); {note}"
    )
