"""Cases for both protocols: headers, per-token flush, coalescing, SSE/NDJSON
bodies, split UTF-8, keepalive, disconnect cancellation, HEAD."""

from __future__ import annotations

import time

from ..clients import H2Error
from ..tokens import UTF8_TEXT, event_for, expected_tokens
from . import case, outside
from ._checks import (
    cancelled_in_budget,
    events_by_chunk,
    latencies,
    require_one_event_per_chunk,
    require_paced,
    require_sse_tokens,
    utf8_chunks_ok,
    wire_fault,
)
from .base import (
    FAULT_PROXY,
    FAULT_SERVER,
    FAULT_TARGET,
    NDJSON,
    NDJSON_TYPES,
    SSE,
    TEXT,
    CaseContext,
    Fail,
    Observed,
    Skip,
    fetch,
    observe_url,
    require,
)

CONNECTION_SPECIFIC = ("connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade")


def _stream_kw(ctx: CaseContext, **extra: object) -> dict[str, object]:
    return {"n": ctx.timing.tokens, "interval": f"{ctx.timing.iv:.3f}", **extra}


# ---------------------------------------------------------------- headers
STREAM_TYPES = ("text/event-stream", *NDJSON_TYPES, "application/json-seq", "text/plain")


@case(
    "headers",
    "status and headers: negotiated Content-Type, no Content-Length, chunked (h1), Cache-Control, X-Accel-Buffering",
    shared=True,
)
def headers(ctx: CaseContext) -> str:
    """One request per format (the shared request with ``--url``); every response must
    carry the streaming headers. All the problems are listed, each with its layer."""
    if ctx.external:
        obs = observe_url(ctx)
        problems, note = _header_problems(ctx, obs, None, "the URL")
        notes = [note]
    else:
        problems, notes = [], []
        for accept, media in ((SSE, SSE), (NDJSON, NDJSON), (TEXT, TEXT)):
            obs = fetch(ctx, ctx.path(n=2, interval="0.01"), accept)
            found, note = _header_problems(ctx, obs, media, f"Accept: {accept}")
            problems += found
            notes.append(note)
    if problems:
        layers = {layer for layer, _ in problems}
        fault = FAULT_TARGET if FAULT_TARGET in layers else sorted(layers)[0]
        raise Fail(
            f"{len(problems)} problem(s): " + "; ".join(f"[{layer}] {text}" for layer, text in problems),
            fault=fault,
            details={"problems": [{"layer": layer, "problem": text} for layer, text in problems]},
        )
    return "; ".join(notes)


def _header_problems(
    ctx: CaseContext, obs: Observed, media: str | None, what: str
) -> tuple[list[tuple[str, str]], str]:
    """Every streaming-header problem of one response, as (layer, problem + fix), and
    a note of what was fine."""
    problems: list[tuple[str, str]] = []

    def problem(layer: str, text: str) -> None:
        problems.append((layer, f"{what}: {text}"))

    proxy = ctx.proxy(obs)
    if obs.status != 200:
        problem(FAULT_TARGET, f"status {obs.status}")
    ctype = obs.header("content-type")
    if media is not None and obs.media_type != media:
        problem(FAULT_TARGET, f"Content-Type {ctype!r}, expected {media}")
    elif media is None and obs.media_type not in STREAM_TYPES:
        problem(
            FAULT_TARGET,
            f"Content-Type {ctype!r} is not a streaming type (fix: text/event-stream or application/x-ndjson)",
        )
    length = obs.header("content-length")
    if length is not None:
        problem(FAULT_TARGET, f"Content-Length {length} on a stream (the body was buffered whole; fix: stream it)")
    if obs.protocol == "h1" and length is None:
        te = (obs.header("transfer-encoding") or "").lower()
        if "chunked" not in te:
            layer = FAULT_PROXY if proxy is not None else FAULT_SERVER
            problem(layer, f"Transfer-Encoding {te!r}, expected chunked")
    elif obs.protocol != "h1":
        bad = [k.decode() for k, _ in obs.headers if k.decode() in CONNECTION_SPECIFIC]
        if bad:
            problem(FAULT_SERVER, f"connection-specific headers on HTTP/2: {bad}")
    cc = (obs.header("cache-control") or "").lower()
    if "no-cache" not in cc and "no-store" not in cc:
        problem(
            FAULT_TARGET,
            f"Cache-Control {cc or None!r}, expected no-cache (fix: send Cache-Control: no-cache so caches and "
            f"CDNs neither store nor hold the stream)",
        )
    xab = obs.header("x-accel-buffering")
    kind = media or obs.media_type or "the stream"
    encoding = obs.header("content-encoding")
    if ctx.target.proxy == "nginx":
        # nginx consumes X-Accel-* headers from the upstream (proxy_hide_header default):
        # check that the app sent it by asking the upstream directly.
        if xab is not None:
            problem(FAULT_PROXY, f"nginx passed X-Accel-Buffering through ({xab!r})")
        upstream = _upstream_header(ctx, ctx.path(n=2, interval="0.01"), media, "x-accel-buffering")
        if upstream != "no" and ctx.target.hooks is not None:
            problem(FAULT_TARGET, f"the app's response to nginx has X-Accel-Buffering {upstream!r}, expected 'no'")
        note = f"{kind}: ok (X-Accel-Buffering: no sent upstream and consumed by nginx, Content-Encoding {encoding})"
    elif xab is None and proxy is not None:
        note = (
            f"{kind}: ok; note: no X-Accel-Buffering, which a proxy in front ({proxy.evidence}) consumes after "
            f"honouring it: whether the app sent it cannot be seen from here (per-token shows whether the stream "
            f"arrives paced)"
        )
    elif xab != "no":
        problem(
            FAULT_TARGET,
            f"X-Accel-Buffering {xab!r}, expected 'no' (fix: send X-Accel-Buffering: no, so that an nginx put in "
            f"front does not buffer the stream; or pass --behind-proxy if a proxy in front removes it)",
        )
        note = ""
    else:
        note = f"{kind}: ok" + (f" (through {proxy.evidence})" if proxy is not None else "")
    if encoding and encoding.lower() not in ("identity",):
        note += f"; Content-Encoding {encoding} (per-token shows whether compression holds events back)"
    return problems, note


def _upstream_header(ctx: CaseContext, path: str, accept: str | None, name: str) -> str | None:
    """A header of the app's own response (HEAD straight to the upstream behind a proxy)."""
    if ctx.target.hooks is None:
        return None
    with ctx.target.hooks.h1(timeout=5) as c:
        c.request("HEAD", path, headers=([("accept", accept)] if accept else []) + ctx.target.extra_headers)
        value = c.read_response(deadline=time.monotonic() + 5).header(name)
    return value.decode("latin-1") if value is not None else None


# ---------------------------------------------------------------- per-token
def _per_token(ctx: CaseContext, mode: str) -> str:
    if ctx.external:
        return outside.pacing(ctx)
    label = ctx.label(mode)
    n = ctx.timing.tokens
    obs = fetch(ctx, ctx.path(**_stream_kw(ctx, mode=mode, label=label)), SSE)
    parser, counts = events_by_chunk(obs)
    unit = obs.unit
    require_sse_tokens(obs, parser, expected_tokens(n))
    require_one_event_per_chunk(ctx, obs, counts)
    if ctx.target.hooks is None:
        # No server clock to compare with: the arrival gaps must show the pacing.
        gaps = [b.t - a.t for a, b in zip(parser.events, parser.events[1:])]  # type: ignore[operator]
        require(
            min(gaps) >= 0.5 * ctx.timing.iv,
            f"tokens produced {ctx.timing.iv * 1000:.0f} ms apart arrived with gaps of "
            f"{'/'.join(f'{g * 1000:.0f}' for g in gaps)} ms",
            fault=wire_fault(ctx),
        )
        return (
            f"{n} tokens in {len(obs.decoded)} {unit}s, one each, gaps {'/'.join(f'{g * 1000:.0f}' for g in gaps)} ms"
        )
    log = ctx.server_logs([label], until=lambda v: v.get("ended_at") is not None)[label]
    paced = require_paced(ctx, parser.events, log.get("produced_at") or [])
    return f"{n} tokens in {len(obs.decoded)} {unit}s, one each; {paced}"


@case(
    "per-token",
    "each token in its own chunk / DATA frame, arriving before the next is produced (async generator)",
    timing=True,
    shared=True,
)
def per_token(ctx: CaseContext) -> str:
    """Per-token flush with an async generator."""
    return _per_token(ctx, "async")


@case(
    "per-token-sync",
    "the same with a sync generator (driven on its worker thread)",
    needs_app=True,
    needs_hooks=True,
    timing=True,
)
def per_token_sync(ctx: CaseContext) -> str:
    """Per-token flush with a sync generator."""
    return _per_token(ctx, "sync")


# ---------------------------------------------------------------- coalescing
@case(
    "coalesce",
    "Coalesce policy: fewer, larger chunks, each token on the wire within max_delay",
    needs_app=True,
    needs_hooks=True,
    timing=True,
)
def coalesce(ctx: CaseContext) -> str:
    """12 tokens 50 ms apart, Coalesce(max_delay=250 ms)."""
    n = 12
    iv = ctx.timing.s(0.05)
    max_delay = ctx.timing.s(ctx.timing.max_delay)
    slack = ctx.timing.s(0.2)
    label = ctx.label()
    obs = fetch(
        ctx, ctx.path(n=n, interval=f"{iv:.3f}", flush="coalesce", max_delay=f"{max_delay:.3f}", label=label), SSE
    )
    parser, counts = events_by_chunk(obs)
    require_sse_tokens(obs, parser, expected_tokens(n))
    per_chunk = [e for e, _ in counts if e]
    require(
        len(per_chunk) <= n // 2, f"{len(per_chunk)} chunks for {n} tokens: not coalesced ({obs.describe_chunks()})"
    )
    require(max(per_chunk) >= 2, f"no chunk carried more than one event: {per_chunk}")
    log = ctx.server_logs([label], until=lambda v: v.get("ended_at") is not None)[label]
    produced = log.get("produced_at") or []
    require(len(produced) >= n, f"server logged {len(produced)} tokens")
    worst = max(e.t - p for e, p in zip(parser.events, produced))  # type: ignore[operator]
    require(
        worst <= max_delay + slack,
        f"a token waited {worst * 1000:.0f} ms to reach the wire (max_delay {max_delay * 1000:.0f} ms + "
        f"{slack * 1000:.0f} ms slack; latencies {latencies(parser.events, produced)})",
        fault=wire_fault(ctx),
    )
    return (
        f"{n} tokens in {len(per_chunk)} chunks ({'/'.join(map(str, per_chunk))} events), "
        f"worst token latency {worst * 1000:.0f} ms ≤ {max_delay * 1000:.0f} ms + slack"
    )


# ---------------------------------------------------------------- bodies
@case("sse-parse", "the body parses as SSE per the WHATWG algorithm (event types, ids, multi-line data)", shared=True)
def sse_parse(ctx: CaseContext) -> str:
    """Events with ``event``/``id`` fields and a multi-line payload round-trip."""
    n = 5
    obs = observe_url(ctx) if ctx.external else fetch(ctx, ctx.path(n=n, interval="0.01", events=1), SSE)
    parser = obs.sse()
    require(obs.decode_error is None, f"body not decodable: {obs.decode_error}")
    require(obs.status == 200 and (obs.complete or obs.cut), f"status {obs.status}, complete {obs.complete}")
    if ctx.external and obs.media_type != "text/event-stream":
        raise Skip(f"not an SSE endpoint ({obs.media_type})")
    require(obs.media_type == "text/event-stream", f"Content-Type {obs.header('content-type')!r}")
    require(parser.replacement_chars == 0, f"{parser.replacement_chars} U+FFFD in the decoded stream")
    require(not parser.ignored_fields, f"fields the spec ignores: {parser.ignored_fields}")
    require(
        parser.discarded_at_close is None or obs.cut,
        f"the stream ended inside an event (data {parser.discarded_at_close!r} never dispatched)",
    )
    if ctx.external:
        require(parser.events, "no events")
        types = sorted({e.type for e in parser.events})
        if obs.cut:
            return (
                f"{len(parser.events)} well-formed events, types {types}; the end was not observed (observation "
                f"stopped {obs.cut_reason})"
            )
        return f"{len(parser.events)} events, types {types}, nothing left over"
    expected = []
    for i in range(n):
        ev = event_for(i, n)
        expected.append((ev.event, str(ev.data).replace("\r\n", "\n"), ev.id))
    got = [(e.type, e.data, e.last_event_id) for e in parser.events]
    require(got == expected, f"events {got!r}, expected {expected!r}")
    return f"{n} events (type, data, lastEventId) exactly as sent, incl. a 3-line payload; last id {parser.last_event_id!r}"


@case("ndjson-parse", "the body parses as NDJSON, one whole line per chunk", shared=True)
def ndjson_parse(ctx: CaseContext) -> str:
    """``Accept: application/x-ndjson`` → JSON lines."""
    if ctx.external:
        obs = observe_url(ctx)
    else:
        obs = fetch(ctx, ctx.path(n=ctx.timing.tokens, interval="0.02"), NDJSON)
    require(obs.status == 200 and (obs.complete or obs.cut), f"status {obs.status}, complete {obs.complete}")
    if ctx.external and obs.media_type not in NDJSON_TYPES:
        raise Skip(f"not an NDJSON endpoint ({obs.media_type})")
    require(obs.media_type == "application/x-ndjson" or ctx.external, f"Content-Type {obs.header('content-type')!r}")
    parser = obs.ndjson()
    errors = (
        parser.errors[:-1] if obs.cut and parser.errors and "no terminating LF" in parser.errors[-1] else parser.errors
    )
    require(not errors, f"NDJSON errors: {errors[:3]}")
    if ctx.external:
        values = [v.value for v in parser.values]
        require(values, "no lines")
        partial = [i for i, c in enumerate(obs.decoded) if not c.data.endswith(b"\n")]
        split = f"; {len(partial)} chunks end mid-line (clients must reassemble lines)" if partial else ""
        return f"{len(values)} JSON lines{split}{f' (observation stopped {obs.cut_reason})' if obs.cut else ''}"
    partial = [i for i, c in enumerate(obs.decoded) if not c.data.endswith(b"\n")]
    require(not partial, f"chunks {partial} end mid-line: {obs.describe_chunks()}", fault=wire_fault(ctx))
    values = [v.value for v in parser.values]
    require(values == expected_tokens(ctx.timing.tokens), f"values {values!r}")
    return f"{len(values)} JSON lines as sent, {len(obs.decoded)} chunks of whole lines"


# ---------------------------------------------------------------- UTF-8
@case(
    "utf8-split",
    "a multi-byte character split across two bytes tokens decodes with a streaming decoder and never shows U+FFFD",
    shared=True,
)
def utf8_split(ctx: CaseContext) -> str:
    """``/utf8`` yields ``b"\\xf0\\x9f"`` then ``b"\\x98\\x80"`` (and a split é)."""
    if ctx.external:
        obs = observe_url(ctx)
        text, bad, _ = utf8_chunks_ok(obs)
        require(obs.complete or obs.cut, "response incomplete")
        require(bad == 0, f"{bad} U+FFFD after streaming UTF-8 decoding")
        return f"{len(text)} characters decoded, no U+FFFD"
    notes = []
    for accept in (SSE, TEXT):
        obs = fetch(ctx, f"/utf8?interval={ctx.timing.s(0.05):.3f}", accept)
        require(obs.status == 200 and obs.complete, f"{accept}: status {obs.status}, complete {obs.complete}")
        text, bad, broken = utf8_chunks_ok(obs)
        require(bad == 0, f"{accept}: {bad} U+FFFD in the stream: {obs.describe_chunks()}")
        require(not broken, f"{accept}: chunks {broken} split a character on the wire: {obs.describe_chunks()}")
        if accept == SSE:
            parser = obs.sse()
            joined = "".join(e.data for e in parser.events)
            require(joined == UTF8_TEXT, f"SSE events {[e.data for e in parser.events]!r}, expected {UTF8_TEXT!r}")
            require(parser.replacement_chars == 0, "U+FFFD in SSE data")
            notes.append(f"SSE events {[e.data for e in parser.events]!r}")
        else:
            require(text == UTF8_TEXT, f"text {text!r}, expected {UTF8_TEXT!r}")
            notes.append(f"text chunks {[c.data for c in obs.decoded]!r}")
    return "split characters held back until complete: " + "; ".join(notes)


# ---------------------------------------------------------------- keepalive
@case(
    "keepalive",
    "keepalive comments after the idle interval (own chunk / DATA frame), never while tokens flow; with --url: "
    "no silence longer than --keepalive-budget",
    timing=True,
    shared=True,
)
def keepalive(ctx: CaseContext) -> str:
    """1 s idle with keepalive 0.3 s, then tokens every 0.1 s (from outside: the
    silences of the shared request)."""
    if ctx.external:
        return outside.keepalive(ctx)
    t = ctx.timing
    ka = t.s(t.keepalive)
    idle = t.s(1.0)
    n = 4
    obs = fetch(ctx, ctx.path(n=n, interval=f"{t.iv:.3f}", idle=f"{idle:.3f}", keepalive=f"{ka:.3f}"), SSE)
    parser, counts = events_by_chunk(obs)
    require_sse_tokens(obs, parser, expected_tokens(n))
    first_ev = parser.events[0].t
    before = [c for c in parser.comments if c.t is not None and first_ev is not None and c.t < first_ev]
    during = [c for c in parser.comments if c.t is not None and parser.events[0].t < c.t <= parser.events[-1].t]  # type: ignore[operator]
    require(len(before) >= 2, f"{len(before)} keepalive comments in {idle:.1f} s of silence (keepalive {ka:.2f} s)")
    first = before[0].t - obs.t_request  # type: ignore[operator]
    require(
        first >= 0.7 * ka, f"first keepalive after {first * 1000:.0f} ms, before the {ka * 1000:.0f} ms idle interval"
    )
    require(
        first <= ka + t.s(0.5),
        f"first keepalive only after {first * 1000:.0f} ms (interval {ka * 1000:.0f} ms)",
        fault=wire_fault(ctx),
    )
    require(not during, f"{len(during)} keepalive comments while tokens flowed every {t.iv * 1000:.0f} ms")
    mixed = [i for i, (e, c) in enumerate(counts) if c and e]
    require(not mixed, f"chunks {mixed} mixed keepalive comments and events")
    unit = obs.unit + "s"
    gaps = [b.t - a.t for a, b in zip(before, before[1:])]  # type: ignore[operator]
    return (
        f"{len(before)} keepalive comments in their own {unit} during {idle:.1f} s idle, first at "
        f"+{first * 1000:.0f} ms, then every {'/'.join(f'{g * 1000:.0f}' for g in gaps)} ms; none among {n} tokens"
    )


# ---------------------------------------------------------------- disconnect
@case(
    "client-close-cancel",
    "client closes mid-stream → the server-side generator (async and sync) is cancelled within the budget; with "
    "--url: the --active-metric gauge falls after FIN / RST / RST_STREAM",
    alone=True,
)
def client_close_cancel(ctx: CaseContext) -> str:
    """Two long streams; after two tokens each the client resets the connection (from
    outside: the gauge of running generations after each way of closing)."""
    if ctx.target.hooks is None:
        return outside.cancel(ctx)
    n = 50
    labels = {"async": ctx.label("async"), "sync": ctx.label("sync")}
    paths = {m: ctx.path(n=n, interval=f"{ctx.timing.iv:.3f}", mode=m, label=lab) for m, lab in labels.items()}
    deadline = time.monotonic() + ctx.timing.request_timeout
    if ctx.target.protocol == "h3":
        from .http3 import close_connection_cancel

        return close_connection_cancel(ctx, labels, paths)
    if ctx.target.protocol == "h2":
        with ctx.target.h2() as c:
            streams = [c.request("GET", p, headers=ctx.headers(SSE)) for p in paths.values()]
            ok = c.run_until(lambda: all(len(s.chunks) >= 2 for s in streams), timeout=ctx.timing.request_timeout)
            require(ok, f"streams did not start: {[len(s.chunks) for s in streams]} DATA frames")
            t_close = time.monotonic()
            c.abort()
        how = "TCP reset of the HTTP/2 connection"
    else:
        clients = [ctx.target.h1() for _ in paths]
        try:
            for c, p in zip(clients, paths.values()):
                c.request("GET", p, headers=ctx.headers(SSE))
            for c in clients:
                c.read_chunks(3, deadline=deadline)  # gzip header chunk behind a proxy
            t_close = time.monotonic()
        finally:
            for c in clients:
                c.abort()
        how = "TCP reset (SO_LINGER 0)"
    budget = ctx.timing.s(ctx.timing.cancel_budget)
    logs = ctx.server_logs(list(labels.values()), until=lambda v: v.get("finally_at") is not None, timeout=budget + 2)
    notes = [cancelled_in_budget(ctx, logs[lab], t_close, mode) for mode, lab in labels.items()]
    for mode, lab in labels.items():
        produced = len(logs[lab].get("produced_at") or [])
        require(produced < n, f"{mode}: all {n} tokens were produced")
    return f"{how}: " + "; ".join(notes)


# ---------------------------------------------------------------- HEAD
@case("head", "HEAD gets the headers and no body (and the connection stays usable)")
def head(ctx: CaseContext) -> str:
    """HEAD, then a GET on the same connection."""
    path = ctx.path(n=3, interval="0.01")
    headers = ctx.headers(SSE)
    if ctx.target.protocol == "h2":
        with ctx.target.h2() as c:
            st = c.request("HEAD", path, headers=headers)
            try:
                ended = c.read_all([st.stream_id], timeout=ctx.timing.request_timeout)
            except H2Error as exc:
                raise Fail(f"HEAD response carried a body: {exc}", fault=FAULT_SERVER) from exc
            require(ended, "HEAD stream did not end")
            if ctx.external and st.status in (404, 405):
                raise Skip(f"the endpoint answers HEAD with {st.status}")
            require(st.status == 200, f"HEAD status {st.status}")
            require(st.header("content-type") is not None, "HEAD response without Content-Type")
            require(not st.body, f"HEAD response carried a body ({len(st.body)} bytes)", fault=FAULT_SERVER)
            if ctx.external:
                return f"HEAD {st.status}, Content-Type {st.header('content-type')!r}, no DATA"
            st2 = c.request("GET", path, headers=headers)
            require(c.read_all([st2.stream_id], timeout=ctx.timing.request_timeout), "GET after HEAD did not end")
            require(st2.status == 200 and st2.body, "GET after HEAD failed")
            return f"HEAD {st.status}, Content-Type {st.header('content-type')!r}, no DATA; next stream fine"
    with ctx.target.h1() as c:
        c.request("HEAD", path, headers=headers)
        resp = c.read_response(deadline=time.monotonic() + ctx.timing.request_timeout)
        if ctx.external and resp.status in (404, 405):
            raise Skip(f"the endpoint answers HEAD with {resp.status}")
        require(resp.status == 200 and resp.complete, f"HEAD status {resp.status}, complete {resp.complete}")
        require(resp.header("content-type") is not None, "HEAD response without Content-Type")
        require(not resp.body, f"HEAD response carried a body ({len(resp.body)} bytes)", fault=FAULT_SERVER)
        if resp.server_closed or (resp.header("connection") or b"").lower() == b"close":
            return f"HEAD {resp.status}, no body (server closed the connection after it)"
        c.request("GET", path, headers=headers)
        try:
            resp2 = c.read_response(deadline=time.monotonic() + ctx.timing.request_timeout)
        except Exception as exc:
            raise Fail(
                f"GET after HEAD on the same connection failed: {exc} (stray bytes after the HEAD response?)",
                fault=FAULT_SERVER,
            ) from exc
        require(
            resp2.status == 200 and resp2.complete and resp2.body,
            f"GET after HEAD: status {resp2.status}, complete {resp2.complete}",
            fault=FAULT_SERVER,
        )
        return f"HEAD {resp.status}, Content-Type {resp.header('content-type')!r}, no body; GET on the same connection fine"
