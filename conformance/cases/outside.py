"""The cases' checks from outside (``--url``): what any endpoint shows on the wire,
with budgets that fit LLM streams. Called by the registered cases when the target
has no suite app; each returns evidence, or raises Fail / Skip with the layer to
blame and how to fix it."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from ..analysis import FAIL, UNOBSERVABLE, judge_keepalive, judge_pacing
from ..clients import H1Error, H2Error
from ..layers import buffering_hints
from ..metrics import GaugeWatch, MetricError
from .base import ANY_STREAM, FAULT_PROXY, FAULT_SERVER, FAULT_TARGET, CaseContext, Fail, Observed, Skip, observe_url

GAUGES = "vllm:num_requests_running, tgi_batch_current_size, asgi_stream_demo_generations_running"
KEEPALIVE_FIX = (
    "fix: while the generator is idle, send a comment line (': keepalive' then a blank line; NDJSON: a blank "
    "line) every ≤ 15 s (asgi-stream: keepalive=15; sse-starlette: ping; FastAPI's EventSourceResponse pings "
    "every 15 s); idle proxies and load balancers cut silent streams (nginx proxy_read_timeout 60 s, "
    "AWS ALB 60 s, Cloudflare 100 s)"
)
HEADERS_FIRST_FIX = (
    "fix: send the response headers at once, before the first token is ready; if a proxy in front buffers the "
    "response (see per-token), it holds the headers too"
)
#: A stalled stream with at least this much queued shows that the server kept producing.
STALL_BACKLOG = 256 * 1024
#: Reading resumes for at most this much (a server that never gives up never ends).
RESUME_CAP = 16 * 1024 * 1024


def _ok_response(obs: Observed) -> None:
    if obs.status != 200:
        raise Fail(f"status {obs.status}: {obs.body[:200]!r}")


def _cut_note(ctx: CaseContext, obs: Observed) -> str:
    return f" (observation stopped {obs.cut_reason})" if obs.cut else ""


# ---------------------------------------------------------------- pacing
def pacing(ctx: CaseContext) -> str:
    """Events (SSE events, NDJSON lines, text chunks) reach the client as produced,
    judged from their arrival times alone (:func:`~conformance.analysis.judge_pacing`)."""
    obs = observe_url(ctx)
    _ok_response(obs)
    if obs.decode_error:
        raise Fail(f"body not decodable: {obs.decode_error}", fault=FAULT_PROXY if ctx.proxy(obs) else FAULT_TARGET)
    arr = obs.arrivals()
    headers_at = None if obs.t_headers is None else obs.t_headers - obs.t_request
    j = judge_pacing(arr.events, headers_at, ctx.timing.pacing_budget, arr.unit)
    ctx.details["figures"] = j.figures
    if j.verdict == FAIL:
        proxy = ctx.proxy(obs)
        hints = buffering_hints(obs.headers, proxy, obs.media_type)
        raise Fail(
            f"{j.evidence}{_cut_note(ctx, obs)}; fix: " + " — or ".join(hints),
            fault=FAULT_PROXY if proxy is not None else FAULT_TARGET,
        )
    if j.verdict == UNOBSERVABLE:
        raise Skip(j.evidence + _cut_note(ctx, obs))
    return f"{obs.media_type or 'no Content-Type'}: {j.evidence}{_cut_note(ctx, obs)}"


# ---------------------------------------------------------------- keepalive
def keepalive(ctx: CaseContext) -> str:
    """No silence on the wire longer than ``--keepalive-budget``; a pause in the events
    must be bridged by comments. Without a pause long enough, not observable."""
    obs = observe_url(ctx, allow_silent=True)
    if obs.status is not None:
        _ok_response(obs)
    arr = obs.arrivals()
    t0 = obs.t_request
    headers_at = None if obs.t_headers is None else obs.t_headers - t0
    wire = [c.t - t0 for c in obs.chunks]
    j = judge_keepalive(headers_at, wire, arr.events, arr.fillers, obs.end_offset(), ctx.timing.keepalive_budget)
    ctx.details["figures"] = j.figures
    if j.verdict == FAIL:
        before_headers = "before the response headers" in j.evidence
        fix = HEADERS_FIRST_FIX if before_headers else KEEPALIVE_FIX
        raise Fail(f"{j.evidence}{_cut_note(ctx, obs)}; {fix}")
    if j.verdict == UNOBSERVABLE:
        raise Skip(j.evidence + _cut_note(ctx, obs))
    return j.evidence + _cut_note(ctx, obs)


# ---------------------------------------------------------------- cancellation
def _gauge(ctx: CaseContext) -> GaugeWatch:
    watch = ctx.gauge()
    if watch is None:
        raise Skip(f"needs --active-metric URL NAME, a Prometheus gauge of running generations ({GAUGES})")
    try:
        watch.read()
    except MetricError as exc:
        raise Skip(f"--active-metric: {exc}") from exc
    return watch


def cancel(ctx: CaseContext) -> str:
    """Close mid-stream (HTTP/1.1: FIN, then RST; HTTP/2: RST_STREAM) and watch the
    gauge of running generations fall within the cancel budget."""
    watch = _gauge(ctx)
    if ctx.target.protocol == "h3":
        raise Skip("cancellation from outside is not measured over HTTP/3 yet (use --h2 or HTTP/1.1 for it)")
    kinds = ["fin", "rst"] if ctx.target.protocol == "h1" else ["rst_stream"]
    notes: list[str] = []
    failures: list[str] = []
    floor = watch.read()
    try:
        for kind in kinds:
            ok, text = _close_and_watch(ctx, watch, kind, floor)
            (notes if ok else failures).append(text)
    finally:
        ctx.details["gauge"] = [[round(t, 4), v] for t, v in watch.samples[-1000:]]
    if failures:
        raise Fail(
            "; ".join(failures + notes)
            + "; fix: stop the generation when the client disconnects (watch for http.disconnect / "
            "request.is_disconnected(), close the generator, cancel the engine request; a sync generator run in "
            "a thread pool is not closed by the framework)"
        )
    return "; ".join(notes)


HOW = {
    "fin": "close after draining (FIN)",
    "rst": "reset (RST, SO_LINGER 0)",
    "rst_stream": "RST_STREAM(CANCEL), connection kept open",
}


def _close_and_watch(ctx: CaseContext, watch: GaugeWatch, kind: str, floor: float) -> tuple[bool, str]:
    """One stream, closed ``kind``-wise as soon as the gauge shows its generation
    running (no body needs to have arrived: a buffering proxy may hold all of it)."""
    t = ctx.timing
    budget = t.s(t.cancel_budget)
    name = watch.metric.name
    base = watch.settle(floor, timeout=min(t.max_duration, 30.0))
    start_wait = min(t.max_duration, 30.0)
    how = HOW[kind]
    headers = ctx.headers(ANY_STREAM)
    if kind == "rst_stream":
        conn = ctx.target.h2()
        try:
            st = conn.request(ctx.method(), ctx.target.path, headers=headers, body=ctx.body())

            def pump() -> None:
                try:
                    conn.pump(watch.interval)
                except H2Error:
                    time.sleep(watch.interval)

            up, running = watch.wait_for(lambda v: v >= base + 1 or st.closed, timeout=start_wait, between=pump)
            if st.closed:
                raise Skip(f"{how}: the stream ended before the client could close it (ask for a longer answer)")
            if not up:
                raise Skip(_not_counted(name, running, base))
            t_close = time.monotonic()
            conn.cancel(st.stream_id)
            return _after_close(watch, name, how, running, t_close, budget, between=pump)
        finally:
            conn.close()
    c = ctx.target.h1()
    try:
        c.request(ctx.method(), ctx.target.path, headers=headers, body=ctx.body())
        up, running = watch.wait_for(lambda v: v >= base + 1 or _ends_in_buffer(c.sock), timeout=start_wait)
        if not up or running < base + 1:
            if _ends_in_buffer(c.sock) or tcp_state(c.sock) == TCP_CLOSE_WAIT:
                raise Skip(f"{how}: the stream ended before the client could close it (ask for a longer answer)")
            raise Skip(_not_counted(name, running, base))
        t_close = time.monotonic()
        if kind == "fin":
            c.close_draining()
        else:
            c.abort()
        return _after_close(watch, name, how, running, t_close, budget)
    except (H1Error, TimeoutError) as exc:
        raise Fail(f"{how}: the stream failed before the close: {exc}", fault=FAULT_SERVER) from exc
    finally:
        c.abort()


def _not_counted(name: str, value: float, base: float) -> str:
    return (
        f"the gauge {name} stayed at {value:g} (baseline {base:g}) while a stream ran: it does not count this "
        f"endpoint's generations, so cancellation cannot be observed with it"
    )


def _after_close(
    watch: GaugeWatch,
    name: str,
    how: str,
    running: float,
    t_close: float,
    budget: float,
    between: Callable[[], None] | None = None,
) -> tuple[bool, str]:
    dropped, value = watch.wait_for(lambda v: v <= running - 1, timeout=budget, between=between)
    took = time.monotonic() - t_close
    if dropped:
        return True, f"{how}: {name} {running:g} → {value:g} {took * 1000:.0f} ms after the close"
    later, value = watch.wait_for(lambda v: v <= running - 1, timeout=min(budget, 5.0), between=between)
    after = (
        f"; it fell {time.monotonic() - t_close:.1f} s after the close"
        if later
        else f"; still {value:g} {time.monotonic() - t_close:.1f} s after it"
    )
    return False, (
        f"{how}: {name} stayed at {running:g} for {budget:g} s after the close (cancel budget {budget:g} s){after}: "
        f"the generation kept running for a client that was gone"
    )


# ---------------------------------------------------------------- slow reader
TCP_CLOSE, TCP_CLOSE_WAIT = 7, 8


def size(n: int) -> str:
    """``512 B``, ``12.0 KiB``, ``3.5 MiB``."""
    if n < 1024:
        return f"{n} B"
    if n < 1 << 20:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1 << 20):.1f} MiB"


def tcp_state(sock: socket.socket) -> int | None:
    """The kernel's TCP state of a socket (Linux ``TCP_INFO``), or None if unknown."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    except (OSError, AttributeError):
        return None
    state: int = info[0]
    return state


def _ends_in_buffer(sock: socket.socket) -> bool:
    """The bytes waiting in the receive buffer end a chunked body (peeked, not read)."""
    timeout = sock.gettimeout()
    try:
        sock.setblocking(False)  # with a timeout set, Python would wait for data first
        data = sock.recv(1 << 20, socket.MSG_PEEK)
    except (OSError, ValueError):
        return False
    finally:
        try:
            sock.settimeout(timeout)
        except OSError:
            pass
    return data == b"0\r\n\r\n" or data.endswith(b"\r\n0\r\n\r\n")


def slow_reader(ctx: CaseContext) -> str:
    """A client that stops reading (``SO_RCVBUF`` 4096): the server must give the
    stream up within ``--stall-budget`` rather than keep producing into a full pipe."""
    t = ctx.timing
    budget = t.stall_budget
    watch = ctx.gauge()
    gauge_note = ""
    c = ctx.target.h1(rcvbuf=4096, timeout=max(budget + 10.0, 10.0))
    try:
        c.request(ctx.method(), ctx.target.path, headers=ctx.headers(ANY_STREAM), body=ctx.body())
        try:
            resp = c.read_chunks(1, deadline=time.monotonic() + t.max_duration)
        except TimeoutError as exc:
            raise Skip(f"not observable: no body arrived to stop reading after ({exc})") from exc
        if resp.complete:
            raise Skip("not observable: the stream ended before the client could stop reading")
        t_stop = time.monotonic()
        read_before = len(resp.raw)
        closed_at = dropped_at = None
        running = None
        while time.monotonic() - t_stop < budget:
            state = tcp_state(c.sock)
            if state in (TCP_CLOSE, TCP_CLOSE_WAIT):
                closed_at = time.monotonic()
                break
            if resp.chunked and _ends_in_buffer(c.sock):
                break  # the whole rest of the response is already here: nothing to wait for
            if watch is not None:
                try:
                    value = watch.read()
                except MetricError:
                    watch = None
                else:
                    running = value if running is None else running
                    if dropped_at is None and value < running:
                        dropped_at = time.monotonic()
            time.sleep(0.1)
        stalled = time.monotonic() - t_stop
        if watch is not None and dropped_at is not None:
            gauge_note = f"; {watch.metric.name} fell {dropped_at - t_stop:.1f} s after the client stopped reading"
        elif watch is not None and running is not None:
            gauge_note = f"; {watch.metric.name} stayed at {running:g} through the stall"
        # Resume: take what is queued, and see whether the stream goes on.
        c.timeout = 0.5
        error = None
        try:
            for _ in c.events(deadline=time.monotonic() + 3.0):
                if len(resp.raw) - read_before > RESUME_CAP:
                    break
        except (TimeoutError, H1Error) as exc:
            error = str(exc)
        backlog = len(resp.raw) - read_before
        closed = resp.server_closed or (error is not None and "recv failed" in error) or closed_at is not None
    finally:
        c.abort()
    queued = size(backlog)
    if resp.complete:
        raise Skip(
            f"not observable: the whole response ({queued} queued) came through after a {stalled:.1f} s stall: "
            f"it fitted in the socket buffers, or ended before the stall did{gauge_note}"
        )
    if closed:
        when = f" {closed_at - t_stop:.1f} s into the stall" if closed_at is not None else ""
        return (
            f"the server gave the stalled stream up: the connection closed{when} with the body incomplete "
            f"({queued} were still queued when reading resumed after {stalled:.1f} s){gauge_note}"
        )
    if backlog >= STALL_BACKLOG:
        raise Fail(
            f"the server kept the stream open through a {stalled:.1f} s stall (--stall-budget {budget:g} s) and kept "
            f"sending when reading resumed ({queued} queued, no end in sight){gauge_note}: a client that stops "
            f"reading holds its generation and the server's memory; fix: a send timeout (asgi-stream: "
            f"send_timeout=…) that ends a stream whose sends block"
        )
    raise Skip(
        f"not observable: only {queued} were queued during a {stalled:.1f} s stall, so the server's sends "
        f"never blocked (a stream must outgrow the socket buffers, a few MiB, to show a send timeout){gauge_note}"
    )
