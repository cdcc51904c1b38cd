"""HTTP/2-only cases: connection-specific headers, END_STREAM, concurrent streams,
RST_STREAM cancellation, flow control with a tiny window, and a client GOAWAY."""

from __future__ import annotations

import select
import time

from ..clients import H2Error, H2Stream
from ..clients.h2 import SettingCodes
from ..tokens import expected_tokens
from . import case
from ._checks import cancelled_in_budget, require_sse_tokens
from .base import FAULT_SERVER, FAULT_TARGET, SSE, CaseContext, Fail, Skip, fetch, observe_h2, observe_url, require

H2 = ("h2",)
CONNECTION_SPECIFIC = {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}


@case(
    "h2-no-connection-headers",
    "no connection-specific header fields on HTTP/2 (RFC 9113 §8.2.2)",
    protocols=H2,
    shared=True,
)
def no_connection_headers(ctx: CaseContext) -> str:
    """Response header block: lower-case names, only ``:status``, no hop-by-hop fields."""
    obs = observe_url(ctx) if ctx.external else fetch(ctx, ctx.path(n=2, interval="0.01"), SSE)
    names = [k for k, _ in obs.headers]
    bad = sorted({k.decode() for k in names if k in CONNECTION_SPECIFIC})
    te = [v for k, v in obs.headers if k == b"te" and v.lower() != b"trailers"]
    upper = [k.decode() for k in names if k != k.lower()]
    pseudo = [k.decode() for k in names if k.startswith(b":")]
    require(not bad, f"connection-specific fields: {bad}", fault=FAULT_SERVER)
    require(not te, f"TE other than trailers: {te}", fault=FAULT_SERVER)
    require(not upper, f"upper-case field names: {upper}", fault=FAULT_SERVER)
    require(
        pseudo == [":status"] and names[0] == b":status",
        f"pseudo-headers {pseudo} (must be :status, first)",
        fault=FAULT_SERVER,
    )
    return f"{len(names)} fields, none connection-specific: {', '.join(k.decode() for k in names)}"


@case(
    "h2-end-stream", "END_STREAM ends the stream right after the last token (no RST_STREAM)", protocols=H2, shared=True
)
def end_stream(ctx: CaseContext) -> str:
    """The last frame carries END_STREAM."""
    obs = observe_url(ctx) if ctx.external else fetch(ctx, ctx.path(n=3, interval=f"{ctx.timing.iv:.3f}"), SSE)
    if obs.cut:
        raise Skip(f"the end of the stream was not observed (observation stopped {obs.cut_reason})")
    st = obs.raw
    require(
        st.reset_by_server is None,
        f"the server reset the stream (error code {st.reset_by_server})",  # type: ignore[union-attr]
        fault=FAULT_SERVER,
    )
    require(st.ended, "no END_STREAM", fault=FAULT_SERVER)  # type: ignore[union-attr]
    require(obs.chunks, "no DATA")
    lag = (obs.t_end or 0) - obs.chunks[-1].t
    require(lag <= ctx.timing.s(0.5), f"END_STREAM came {lag * 1000:.0f} ms after the last token")
    last = st.frames[-1]  # type: ignore[union-attr]
    how = "an empty DATA frame" if not last.data else f"the last DATA frame ({len(last.data)} B)"
    return f"{len(obs.chunks)} DATA frames; END_STREAM on {how}, {lag * 1000:.1f} ms after the last token"


@case(
    "h2-concurrent",
    "several concurrent streams on one connection interleave and all complete",
    protocols=H2,
    timing=True,
)
def concurrent(ctx: CaseContext) -> str:
    """Three paced streams at once."""
    n = 6
    path = ctx.path(n=n, interval=f"{ctx.timing.iv:.3f}")
    with ctx.target.h2() as c:
        streams = [c.request(ctx.method(), path, headers=ctx.headers(SSE), body=ctx.body()) for _ in range(3)]
        require(c.read_all(timeout=ctx.timing.request_timeout), "not all streams ended")
        order = [ev.stream_id for _, ev in c.log if type(ev).__name__ == "DataReceived" and ev.data]
    for st in streams:
        obs = observe_h2(st)
        parser = obs.sse()
        if ctx.external:
            require(obs.complete, f"stream {st.stream_id} did not complete")
        else:
            require_sse_tokens(obs, parser, expected_tokens(n))
    # Interleaved: every stream's first frame came before every other stream's last frame.
    serial = _serialized(streams)
    if serial is not None:
        a, b = serial
        heads = "/".join(f"{(s.t_headers or 0) - s.t_request:.2f}" for s in streams)
        where = f"stream {a} started only after stream {b} finished: frame order {order[:24]} (headers at +{heads} s)"
        separate = _separate_connections_overlap(ctx, path)
        if separate is False:
            raise Fail(
                f"{where}; two streams on two separate connections were serialized too, so the HTTP/2 server is "
                f"not at fault: the endpoint serves one stream at a time (a single worker, a lock or a queue in "
                f"the app or its engine); fix: serve generations concurrently (batching) or answer 429 with "
                f"Retry-After beyond capacity",
                fault=FAULT_TARGET,
            )
        control = "" if separate is None else "; two separate connections ran concurrently"
        raise Fail(
            f"{where}{control}: the HTTP/2 server does not multiplex streams on a connection", fault=FAULT_SERVER
        )
    switches = sum(1 for x, y in zip(order, order[1:]) if x != y)
    return (
        f"3 streams × {n} tokens on one connection, frame order {','.join(map(str, order[:12]))}… ({switches} switches)"
    )


#: Two streams whose spans overlap by less than this are taken as one after the other.
SERIAL_SLACK = 0.05


def _serialized(streams: list[H2Stream]) -> tuple[int, int] | None:
    """(a, b) if stream a's first DATA came only after (or right at) stream b's last."""
    spans = [(s.stream_id, s.chunks[0].t, s.chunks[-1].t) for s in streams if s.chunks]
    for i, (a, a0, _) in enumerate(spans):
        for j, (b, _, b1) in enumerate(spans):
            if i != j and a0 >= b1 - SERIAL_SLACK:
                return a, b
    return None


def _separate_connections_overlap(ctx: CaseContext, path: str) -> bool | None:
    """The control: two streams on two connections at once. True if they overlapped,
    False if they were serialized too, None if it could not be run."""
    timeout = ctx.timing.request_timeout
    try:
        conns = [ctx.target.h2(), ctx.target.h2()]
    except H2Error:
        return None
    try:
        streams = [c.request(ctx.method(), path, headers=ctx.headers(SSE), body=ctx.body()) for c in conns]
        deadline = time.monotonic() + timeout
        while not all(s.closed for s in streams) and time.monotonic() < deadline:
            ready, _, _ = select.select([c.sock for c, s in zip(conns, streams) if not s.closed], [], [], 0.1)
            for c in conns:
                if c.sock in ready:
                    c.pump(0.01)
        if not all(s.closed and s.chunks for s in streams):
            return None
        return _serialized(streams) is None
    except H2Error:
        return None
    finally:
        for c in conns:
            c.close()


@case(
    "h2-rst-cancel",
    "RST_STREAM(CANCEL) on one stream cancels only that stream's generator; the others complete",
    protocols=H2,
)
def rst_cancel(ctx: CaseContext) -> str:
    """Three streams; the middle one is reset after two tokens."""
    n = 12
    labels = [ctx.label(x) for x in "abc"]
    with ctx.target.h2() as c:
        streams = [
            c.request(
                ctx.method(),
                ctx.path(n=n, interval=f"{ctx.timing.iv:.3f}", label=lab),
                headers=ctx.headers(SSE),
                body=ctx.body(),
            )
            for lab in labels
        ]
        victim = streams[1]
        require(
            c.run_until(lambda: len(victim.chunks) >= 2, timeout=ctx.timing.request_timeout),
            "the stream to cancel did not start",
        )
        t_rst = time.monotonic()
        c.cancel(victim.stream_id)
        others = [s.stream_id for s in streams if s is not victim]
        try:
            done = c.read_all(others, timeout=ctx.timing.request_timeout)
        except H2Error as exc:
            raise Fail(f"the connection failed after RST_STREAM: {exc}", fault=FAULT_SERVER) from exc
        require(done, "the other streams did not complete after one was reset")
        after = [f for f in victim.frames if f.t > t_rst + 0.05]
    for s in streams:
        if s is victim:
            continue
        obs = observe_h2(s)
        if ctx.external:
            require(obs.complete, f"stream {s.stream_id} did not complete")
        else:
            require_sse_tokens(obs, obs.sse(), expected_tokens(n))
    note = f"{len(after)} DATA frames for the reset stream arrived >50 ms after the RST"
    if ctx.external or ctx.target.hooks is None:
        return f"streams {others} completed after RST_STREAM on {victim.stream_id}; {note}"
    budget = ctx.timing.s(ctx.timing.cancel_budget)
    logs = ctx.server_logs(labels, until=lambda v: v.get("finally_at") is not None, timeout=budget + 2)
    evidence = cancelled_in_budget(ctx, logs[labels[1]], t_rst, f"stream {victim.stream_id}")
    for lab, s in zip(labels, streams):
        if s is victim:
            continue
        log = logs[lab]
        require(
            log.get("outcome") == "completed" and log.get("finally_reason") == "exhausted",
            f"stream {s.stream_id} ended as {log.get('outcome')!r} ({log.get('cancel_reason')}) on the server",
        )
    return f"{evidence}; streams {others} completed ({n} tokens each)"


@case(
    "h2-flow-control",
    "tiny SETTINGS_INITIAL_WINDOW_SIZE: the server never exceeds the window and the "
    "stream completes as WINDOW_UPDATEs arrive",
    protocols=H2,
)
def flow_control(ctx: CaseContext) -> str:
    """A 16-byte stream window granted 16 bytes at a time."""
    window = 16
    n = 6
    quiet = ctx.timing.s(0.3)
    try:
        c = ctx.target.h2(settings={SettingCodes.INITIAL_WINDOW_SIZE: window}, auto_window_update=False)
    except H2Error as exc:
        raise Fail(f"connection with a {window}-byte window failed: {exc}", fault=FAULT_SERVER) from exc
    stalls: list[tuple[int, int]] = []
    granted = window
    try:
        st = c.request(ctx.method(), ctx.path(n=n, interval="0.02"), headers=ctx.headers(SSE), body=ctx.body())
        deadline = time.monotonic() + ctx.timing.request_timeout * 2
        while not st.closed:
            if time.monotonic() > deadline:
                raise Fail(
                    f"stream not finished: {len(st.body)} bytes received, {granted} granted, stalls at {stalls}",
                    fault=FAULT_SERVER,
                )
            # Read until the server goes quiet (held back by the window) or the stream ends.
            while not st.closed and c.pump(quiet):
                pass
            got = sum(len(f.data) for f in st.frames)
            require(got <= granted, f"received {got} bytes with only {granted} granted", fault=FAULT_SERVER)
            if st.closed:
                break
            stalls.append((got, granted))
            step = (1 << 20) if len(stalls) > 6 and ctx.external else window  # proven: finish quickly
            c.grant(st.stream_id, step)
            granted += step
    except H2Error as exc:
        if c.protocol_error:
            raise Fail(
                f"the server broke flow control: {c.protocol_error} (window {window}, granted {granted}, "
                f"received {len(st.body)})",
                fault=FAULT_SERVER,
            ) from exc
        raise Fail(f"connection failed: {exc}", fault=FAULT_SERVER) from exc
    finally:
        c.close()
    require(
        st.ended and st.reset_by_server is None, f"stream ended by RST_STREAM {st.reset_by_server}", fault=FAULT_SERVER
    )
    require(
        len(stalls) >= 2,
        f"the server was never held back by the {window}-byte window (stalls {stalls})",
        fault=FAULT_SERVER,
    )
    obs = observe_h2(st)
    if not ctx.external:
        require_sse_tokens(obs, obs.sse(), expected_tokens(n))
    sizes = [len(f.data) for f in st.frames if f.data]
    points = ", ".join(f"{g}/{w}" for g, w in stalls[:6])
    return (
        f"{len(obs.body)} bytes through a {window}-byte window: waited {len(stalls)}× for WINDOW_UPDATE "
        f"(received/granted {points}…), never over; DATA sizes {sizes[:10]}"
    )


@case(
    "h2-goaway",
    "GOAWAY from the client: the in-flight stream completes, or is dropped and its generator cancelled",
    protocols=H2,
)
def goaway(ctx: CaseContext) -> str:
    """GOAWAY(NO_ERROR, last stream 0) after the first token."""
    label = ctx.label()
    n = 6
    with ctx.target.h2() as c:
        st = c.request(
            ctx.method(),
            ctx.path(n=n, interval=f"{ctx.timing.iv:.3f}", label=label),
            headers=ctx.headers(SSE),
            body=ctx.body(),
        )
        require(c.run_until(lambda: len(st.chunks) >= 1, timeout=ctx.timing.request_timeout), "stream did not start")
        t_goaway = time.monotonic()
        c.send_goaway()
        closed_conn = False
        try:
            c.read_all([st.stream_id], timeout=ctx.timing.request_timeout)
        except H2Error:
            closed_conn = True
        obs = observe_h2(st)
        if obs.complete:
            if not ctx.external:
                require_sse_tokens(obs, obs.sse(), expected_tokens(n))
            closed_after = c.wait_closed(ctx.timing.s(2.0))
            return (
                f"the server finished the in-flight stream ({len(obs.chunks)} DATA frames) after the client's "
                f"GOAWAY; connection {'closed' if closed_after else 'left open'} afterwards"
            )
    require(
        closed_conn or st.reset_by_server is not None,
        f"stream neither completed nor was reset/closed within {ctx.timing.request_timeout:.0f} s",
        fault=FAULT_SERVER,
    )
    how = f"RST_STREAM {st.reset_by_server}" if st.reset_by_server is not None else "closing the connection"
    if ctx.external or ctx.target.hooks is None:
        return f"server note: it dropped the in-flight stream by {how} after the client's GOAWAY"
    budget = ctx.timing.s(ctx.timing.cancel_budget)
    log = ctx.server_logs([label], until=lambda v: v.get("finally_at") is not None, timeout=budget + 2)[label]
    note = cancelled_in_budget(ctx, log, t_goaway, "generator")
    return (
        f"server note: it drops in-flight streams on a client GOAWAY (by {how}, {len(obs.chunks)} of {n} "
        f"tokens delivered); {note}"
    )
