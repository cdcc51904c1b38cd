"""What a case is, what it returns, and the context it runs in.

A case is a function ``run(ctx) -> str`` registered with :func:`case`: it returns
its evidence on success, raises :class:`Fail` (with evidence, and whose fault it
is) or :class:`Skip`. :class:`CaseContext` gives it the target, the timing knobs,
unique labels and access to the server-side hooks; :func:`fetch` makes one
request over the target's protocol and returns an :class:`Observed` response that
looks the same for HTTP/1.1, HTTP/2 and HTTP/3.
"""

from __future__ import annotations

import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from ..clients import Chunk, H1Response, H2Stream
from ..layers import Proxy, detect_proxy
from ..metrics import GaugeWatch
from ..ndjson import NDJSONParser
from ..sse import SSEParser
from ..targets import Target
from ..timeline import Timeline

if TYPE_CHECKING:  # aioquic is imported only when HTTP/3 is used
    from ..clients.h3 import H3Stream

SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
TEXT = "text/plain"
#: The Accept of the one shared request to an external URL (unless -H gives one).
ANY_STREAM = "text/event-stream, application/x-ndjson;q=0.9, */*;q=0.5"
#: Media types of streams whose events the suite can find.
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/ndjson", "application/jsonlines")

#: Who is to blame for a failure.
FAULT_TARGET = "target"  # the app + middleware (what asgi-stream is responsible for)
FAULT_SERVER = "server"  # the HTTP server itself (framing, flow control, …)
FAULT_PROXY = "proxy"  # the reverse proxy in front


class Fail(Exception):
    """The case failed; the message is the evidence."""

    def __init__(self, evidence: str, *, fault: str = FAULT_TARGET, details: dict[str, Any] | None = None) -> None:
        super().__init__(evidence)
        self.evidence = evidence
        self.fault = fault
        self.details = details or {}


class ServerFault(Exception):
    """The app did its part, but the server (or proxy) keeps the case from passing:
    a diagnosed fault of the server, with the evidence. Reported as such, and counted
    as a failure only with ``--strict``."""

    def __init__(self, evidence: str, *, fault: str = FAULT_SERVER) -> None:
        super().__init__(evidence)
        self.evidence = evidence
        self.fault = fault


class Skip(Exception):
    """The case does not apply here (the message says why)."""


@dataclass(frozen=True, slots=True)
class Timing:
    """Timing knobs, all scaled by ``scale`` (raise it on a loaded machine)."""

    scale: float = 1.0
    #: Seconds between paced tokens.
    interval: float = 0.1
    #: Tokens in a paced stream.
    tokens: int = 5
    #: Seconds within which a disconnect must reach the generator's ``finally``.
    cancel_budget: float = 1.0
    #: Keepalive interval the keepalive case asks for.
    keepalive: float = 0.3
    #: Coalescing delay bound the coalesce case asks for.
    max_delay: float = 0.25
    #: Send timeout of the slow-reader stream.
    send_timeout: float = 1.0
    #: Retries of a failed timing case on the suite's own targets (a loaded machine).
    retries: int = 1
    #: Timeout of one whole request (``--max-duration`` with ``--url``).
    request_timeout: float = 15.0
    # --url budgets, in seconds (not scaled).
    #: The longest one external stream is read; verdicts rest on what arrived by then.
    max_duration: float = 300.0
    #: The longest silence on the wire a stream may have (keepalive from outside).
    keepalive_budget: float = 20.0
    #: The longest an event may be held before delivery (pacing from outside).
    pacing_budget: float = 1.0
    #: How long a server may keep a stream open to a client that stopped reading.
    stall_budget: float = 60.0

    def s(self, seconds: float) -> float:
        """``seconds`` scaled."""
        return seconds * self.scale

    @property
    def iv(self) -> float:
        """The scaled token interval."""
        return self.interval * self.scale


@dataclass(slots=True)
class Result:
    """The outcome of one case on one target."""

    case: str
    target: str
    status: str  # "pass", "fail", "fault" (diagnosed server/proxy fault), "skip", "n/a"
    evidence: str = ""
    fault: str | None = None
    duration: float = 0.0
    attempts: int = 1
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "case": self.case,
            "target": self.target,
            "status": self.status,
            "evidence": self.evidence,
            "fault": self.fault,
            "duration": round(self.duration, 3),
            "attempts": self.attempts,
            "details": self.details,
        }


@dataclass(frozen=True, slots=True)
class Case:
    """A registered case."""

    name: str
    title: str
    run: Callable[[CaseContext], str]
    #: Protocols it applies to ("h1", "h2", "h3").
    protocols: frozenset[str]
    #: Needs the suite's target app endpoints (not available with --url).
    needs_app: bool = False
    #: Needs the server-side hook endpoint.
    needs_hooks: bool = False
    #: Only behind a reverse proxy / only without one (None: either).
    proxy: bool | None = None
    #: Its verdict rests on timing: one retry is allowed on a loaded machine.
    timing: bool = False
    #: Heavy on CPU or sockets: never run two of these at once.
    heavy: bool = False
    #: Needs the demo app mounted at /demo.
    needs_demo: bool = False
    #: Reads server-wide state (the ``--active-metric`` gauge) on targets without
    #: hooks: run it with nothing else in flight on that target.
    alone: bool = False
    #: With ``--url``, judges the shared request (:func:`observe_url`).
    shared: bool = False

    def applies(self, target: Target) -> str | None:
        """None if the case runs on the target, else why not (n/a or skip reason)."""
        if target.protocol not in self.protocols:
            return "n/a"
        if self.proxy is True and target.proxy is None:
            return "n/a"
        if self.proxy is False and target.proxy is not None:
            return "n/a"
        if self.needs_app and not target.app_endpoints:
            return "needs the suite's target app (not available with --url)"
        if self.needs_hooks and target.hooks is None:
            return "needs the server-side hook endpoint (not available with --url)"
        if self.needs_demo and not target.demo:
            return "the demo app (asgi_stream.demo) is not mounted"
        return None


@dataclass(slots=True)
class CaseContext:
    """What a running case gets."""

    target: Target
    timing: Timing
    case_name: str
    #: The last request :func:`fetch` made: (path, Accept), for diagnosing a proxy.
    last_request: tuple[str, str | None] | None = None
    #: What each observed response looked like over time (for the reports' plots).
    timelines: list[Timeline] = field(default_factory=list)
    #: Extra evidence for the reports (e.g. the gauge samples), kept whatever the verdict.
    details: dict[str, Any] = field(default_factory=dict)

    def record(self, obs: Observed, label: str = "") -> None:
        """Keep the timeline of a response for the report."""
        self.timelines.append(obs.timeline(label))

    def gauge(self) -> GaugeWatch | None:
        """A watch on the ``--active-metric`` gauge, or None without one."""
        metric = self.target.active_metric
        return GaugeWatch(metric) if metric is not None else None

    def proxy(self, obs: Observed) -> Proxy | None:
        """The proxy in front of the target: the suite's own (nginx), one the response
        headers reveal, or one declared with ``--behind-proxy``."""
        if self.target.proxy is not None:
            return Proxy(self.target.proxy, f"the suite's {self.target.proxy} target")
        return detect_proxy(obs.headers, self.target.behind_proxy)

    def label(self, tag: str = "") -> str:
        """A label unique to this run, for correlating with the hooks."""
        base = f"{self.case_name}-{self.target.name}"
        return f"{base}-{tag}-{uuid.uuid4().hex[:8]}" if tag else f"{base}-{uuid.uuid4().hex[:8]}"

    @property
    def external(self) -> bool:
        """Checking an external URL (no app endpoints, no hooks)."""
        return not self.target.app_endpoints

    def path(self, endpoint: str = "/stream", **params: Any) -> str:
        """A path on the target app with query parameters (the URL's path with --url)."""
        if self.external:
            return self.target.path
        query = urlencode({k: v for k, v in params.items() if v is not None})
        return f"{endpoint}?{query}" if query else endpoint

    def headers(self, accept: str | None) -> list[tuple[str, str]]:
        """Request headers: Accept (unless external), Accept-Encoding gzip as browsers
        send it, and the --url extra headers."""
        out: list[tuple[str, str]] = []
        if accept is not None and not any(k.lower() == "accept" for k, _ in self.target.extra_headers):
            out.append(("accept", accept))
        out.append(("accept-encoding", "gzip"))
        out += self.target.extra_headers
        return out

    def method(self, default: str = "GET") -> str:
        """The method to use (the --url method for external targets)."""
        return self.target.method if self.external else default

    def body(self) -> bytes:
        """The request body (the --url data for external targets)."""
        return self.target.body if self.external else b""

    # ------------------------------------------------------------ hooks
    def server_logs(
        self,
        labels: list[str],
        until: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = 5.0,
    ) -> dict[str, dict[str, Any]]:
        """The hook logs of ``labels``, polled until ``until(log)`` holds for all of
        them (or ``timeout`` passes: the last view is returned either way)."""
        deadline = time.monotonic() + timeout
        while True:
            snap = self.target.hook_streams(labels)
            logs = {k: v for k, v in snap["streams"].items()}
            ready = all(v is not None and (until is None or until(v)) for v in logs.values())
            if ready or time.monotonic() >= deadline:
                return {k: (v or {}) for k, v in logs.items()}
            time.sleep(0.05)

    def server_rss(self) -> int:
        """The target app process's RSS in bytes."""
        return int(self.target.hook_streams(["-"])["rss"])


# ---------------------------------------------------------------- observations
@dataclass(slots=True)
class Observed:
    """One response, protocol-independent: what the cases reason about."""

    protocol: str
    status: int | None
    headers: list[tuple[bytes, bytes]]
    #: Body pieces as they came off the wire (h1 chunks / h2, h3 non-empty DATA frames).
    chunks: list[Chunk]
    #: The same pieces after Content-Encoding decoding (empty ones dropped).
    decoded: list[Chunk]
    complete: bool
    t_request: float
    t_headers: float | None
    t_end: float | None
    raw: H1Response | H2Stream | H3Stream
    decode_error: str | None = None
    #: Observation stopped at the deadline (``--max-duration``) before the stream ended.
    cut: bool = False
    #: Why observation stopped early ("at --max-duration 300 s", "after 32 MiB").
    cut_reason: str = ""
    #: When observation stopped (monotonic), the end of the stream or the deadline.
    t_stop: float | None = None
    _parsed: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def unit(self) -> str:
        """What one body piece is on this protocol, for evidence."""
        return "chunk" if self.protocol == "h1" else "DATA frame"

    def header(self, name: str) -> str | None:
        """First value of a header, as text (lower-case name)."""
        key = name.lower().encode()
        for k, v in self.headers:
            if k == key:
                return v.decode("latin-1")
        return None

    @property
    def media_type(self) -> str:
        """The Content-Type without parameters, lower-case."""
        return (self.header("content-type") or "").split(";")[0].strip().lower()

    @property
    def body(self) -> bytes:
        """The decoded body."""
        return b"".join(c.data for c in self.decoded)

    def sse(self) -> SSEParser:
        """The decoded body run through the WHATWG parser, chunk by chunk (parsed once)."""
        parser: SSEParser | None = self._parsed.get("sse")
        if parser is None:
            parser = SSEParser()
            for c in self.decoded:
                parser.feed(c.data, c.t)
            parser.close()
            self._parsed["sse"] = parser
        return parser

    def ndjson(self) -> NDJSONParser:
        """The decoded body parsed as NDJSON, chunk by chunk (parsed once)."""
        parser: NDJSONParser | None = self._parsed.get("ndjson")
        if parser is None:
            parser = NDJSONParser()
            for c in self.decoded:
                parser.feed(c.data, c.t)
            parser.close()
            self._parsed["ndjson"] = parser
        return parser

    @property
    def stream_kind(self) -> str:
        """``sse``, ``ndjson`` or ``text`` from the Content-Type."""
        if self.media_type == "text/event-stream":
            return "sse"
        if self.media_type in NDJSON_TYPES:
            return "ndjson"
        return "text"

    def arrivals(self) -> Arrivals:
        """When each event (SSE event, NDJSON line, or text chunk) and each comment
        (SSE comment, blank NDJSON line) arrived, in seconds since the request."""
        cached: Arrivals | None = self._parsed.get("arrivals")
        if cached is None:
            cached = self._parsed["arrivals"] = self._arrivals()
        return cached

    def _arrivals(self) -> Arrivals:
        t0 = self.t_request
        kind = self.stream_kind
        if kind == "sse":
            parser = self.sse()
            return Arrivals(
                "event",
                [e.t - t0 for e in parser.events if e.t is not None],
                [c.t - t0 for c in parser.comments if c.t is not None],
            )
        if kind == "ndjson":
            parser_nd = NDJSONParser()
            fillers = []
            for c in self.decoded:
                if not parser_nd.feed(c.data, c.t) and c.data.strip() == b"":
                    fillers.append(c.t - t0)
            parser_nd.close()
            return Arrivals("line", [v.t - t0 for v in parser_nd.values if v.t is not None], fillers)
        return Arrivals("chunk", [c.t - t0 for c in self.decoded if c.data.strip()], [])

    def end_offset(self) -> float:
        """Seconds from the request to the end of the stream (or of observation)."""
        end = self.t_end if self.complete and self.t_end is not None else self.t_stop
        if end is None:
            end = self.t_end or (self.chunks[-1].t if self.chunks else self.t_headers or self.t_request)
        return end - self.t_request

    def timeline(self, label: str = "") -> Timeline:
        """The response over time, offsets in seconds since the request."""
        t0 = self.t_request
        arr = self.arrivals()
        return Timeline(
            label=label,
            protocol=self.protocol,
            media_type=self.media_type,
            status=self.status,
            headers_at=None if self.t_headers is None else self.t_headers - t0,
            end_at=self.end_offset(),
            complete=self.complete,
            cut=self.cut,
            unit=arr.unit,
            chunks=[(c.t - t0, len(c.data)) for c in self.chunks],
            events=arr.events,
            comments=arr.fillers,
        )

    def describe_chunks(self, limit: int = 8) -> str:
        """``+0.102s 13B b'data: t001…'`` lines for evidence."""
        lines = []
        for c in self.decoded[:limit]:
            lines.append(f"+{c.t - self.t_request:.3f}s {len(c.data)}B {c.data[:40]!r}")
        if len(self.decoded) > limit:
            lines.append(f"… {len(self.decoded) - limit} more")
        return "; ".join(lines)


@dataclass(frozen=True, slots=True)
class Arrivals:
    """Arrival offsets (seconds since the request) of a response's events and fillers."""

    #: What an event is here: "event" (SSE), "line" (NDJSON) or "chunk" (text).
    unit: str
    events: list[float]
    #: Comments and keepalive bytes that carry no event.
    fillers: list[float]


def decode_chunks(chunks: list[Chunk], encoding: str | None) -> tuple[list[Chunk], str | None]:
    """Undo gzip/deflate incrementally, chunk by chunk (same timestamps)."""
    enc = (encoding or "identity").strip().lower()
    if enc in ("identity", ""):
        return [c for c in chunks if c.data], None
    if enc not in ("gzip", "x-gzip", "deflate"):
        return [c for c in chunks if c.data], f"unsupported content-encoding {enc!r}"
    d = zlib.decompressobj(31 if "gzip" in enc else 15)
    out = []
    try:
        for c in chunks:
            data = d.decompress(c.data)
            if data:
                out.append(Chunk(c.t, data, c.stream_id))
    except zlib.error as exc:
        return out, f"{enc} decoding failed: {exc}"
    return out, None


def observe_h1(resp: H1Response) -> Observed:
    """An :class:`Observed` from an HTTP/1.x response."""
    enc = resp.header(b"content-encoding")
    decoded, err = decode_chunks(resp.chunks, enc.decode("latin-1") if enc else None)
    return Observed(
        "h1",
        resp.status,
        resp.headers,
        list(resp.chunks),
        decoded,
        resp.complete,
        resp.t_request,
        resp.t_headers,
        resp.t_end,
        resp,
        err,
    )


def observe_h2(stream: H2Stream) -> Observed:
    """An :class:`Observed` from an HTTP/2 stream."""
    enc = stream.header(b"content-encoding")
    chunks = stream.chunks
    decoded, err = decode_chunks(chunks, enc.decode("latin-1") if enc else None)
    complete = stream.ended and stream.reset_by_server is None
    return Observed(
        "h2",
        stream.status,
        stream.headers,
        chunks,
        decoded,
        complete,
        stream.t_request,
        stream.t_headers,
        stream.t_end,
        stream,
        err,
    )


def observe_h3(stream: H3Stream) -> Observed:
    """An :class:`Observed` from an HTTP/3 request stream."""
    enc = stream.header(b"content-encoding")
    chunks = stream.chunks
    decoded, err = decode_chunks(chunks, enc.decode("latin-1") if enc else None)
    complete = stream.ended and stream.reset_by_server is None
    return Observed(
        "h3",
        stream.status,
        stream.headers,
        chunks,
        decoded,
        complete,
        stream.t_request,
        stream.t_headers,
        stream.t_end,
        stream,
        err,
    )


#: A response is read for at most this many bytes (an endless fast stream stays judgeable).
MAX_BODY = 32 * 1024 * 1024

Fetcher = Callable[[CaseContext, str, str, list[tuple[str, str]], bytes, float], Observed]


def _fetch_h1(
    ctx: CaseContext, method: str, path: str, headers: list[tuple[str, str]], body: bytes, timeout: float
) -> Observed:
    with ctx.target.h1(timeout=max(timeout, 1.0)) as c:
        resp = c.request(method, path, headers=headers, body=body)
        try:
            for _ in c.events(deadline=time.monotonic() + timeout):
                if len(resp.raw) > MAX_BODY:
                    break
        except TimeoutError as exc:
            if not ctx.external:
                raise Fail(f"response not complete after {timeout:.0f} s: {exc}") from exc
        obs = observe_h1(resp)
        obs.t_stop = time.monotonic()
        if not resp.complete:
            obs.cut = True
            obs.cut_reason = _cut_reason(len(resp.raw), timeout)
        return obs


def _cut_reason(received: int, timeout: float) -> str:
    if received > MAX_BODY:
        return f"after {MAX_BODY >> 20} MiB"
    return f"at --max-duration {timeout:g} s"


def _fetch_h2(
    ctx: CaseContext, method: str, path: str, headers: list[tuple[str, str]], body: bytes, timeout: float
) -> Observed:
    with ctx.target.h2(timeout=max(timeout, 1.0)) as c:
        st = c.request(method, path, headers=headers, body=body)
        c.run_until(lambda: st.closed or st.received > MAX_BODY, timeout=timeout)
        done = st.closed
        obs = observe_h2(st)
        obs.t_stop = time.monotonic()
        if not done:
            if not ctx.external:
                raise Fail(f"HTTP/2 stream not closed after {timeout:.0f} s ({len(st.frames)} DATA frames so far)")
            obs.cut = True
            obs.cut_reason = _cut_reason(st.received, timeout)
        return obs


def _fetch_h3(
    ctx: CaseContext, method: str, path: str, headers: list[tuple[str, str]], body: bytes, timeout: float
) -> Observed:
    with ctx.target.h3(timeout=max(timeout, 1.0)) as c:
        st = c.request(method, path, headers=headers, body=body)
        c.run_until(lambda: st.closed or st.received > MAX_BODY, timeout=timeout)
        done = st.closed
        obs = observe_h3(st)
        obs.t_stop = time.monotonic()
        if not done:
            if not ctx.external:
                raise Fail(f"HTTP/3 stream not closed after {timeout:.0f} s ({len(st.frames)} DATA frames so far)")
            obs.cut = True
            obs.cut_reason = _cut_reason(st.received, timeout)
        return obs


#: How :func:`fetch` makes one request, per protocol ("h1", "h2", "h3"; a transport adds its own).
FETCHERS: dict[str, Fetcher] = {"h1": _fetch_h1, "h2": _fetch_h2, "h3": _fetch_h3}


def fetch(
    ctx: CaseContext,
    path: str,
    accept: str | None = SSE,
    *,
    method: str | None = None,
    timeout: float | None = None,
    label: str = "",
) -> Observed:
    """One request on a new connection, read to the end, its timeline recorded.

    On the suite's own targets a stream that does not end in time fails the case; on
    an external URL observation stops at the deadline (``--max-duration``) and the
    partial response is returned with ``cut`` set, for the verdicts to rest on.
    """
    timeout = timeout or ctx.timing.request_timeout
    ctx.last_request = (path, accept)
    try:
        fetcher = FETCHERS[ctx.target.protocol]
    except KeyError:
        raise Skip(f"no client for protocol {ctx.target.protocol!r}") from None
    obs = fetcher(ctx, method or ctx.method(), path, ctx.headers(accept), ctx.body(), timeout)
    ctx.record(obs, label or path[:60])
    return obs


def observe_url(ctx: CaseContext, *, allow_silent: bool = False) -> Observed:
    """The external URL's response, fetched once per target and shared by every case
    that only reads it (one long LLM answer, judged many ways). A response whose
    headers did not arrive within ``--max-duration`` is no verdict (Skip), unless the
    case judges the silence itself (``allow_silent``)."""
    target = ctx.target

    def make() -> Observed:
        probe = CaseContext(target=target, timing=ctx.timing, case_name="observe")
        return fetch(probe, target.path, ANY_STREAM, timeout=ctx.timing.max_duration, label="the shared request")

    obs: Observed = target.memo("observation", make)
    ctx.last_request = (target.path, ANY_STREAM)
    ctx.record(obs, "the shared request")
    if obs.status is None and not allow_silent:
        raise Skip(f"no response headers {obs.cut_reason or 'at all'}: not judged")
    return obs


def out_of_time(ctx: CaseContext, what: str) -> None:
    """With ``--url``, a request that did not finish within ``--max-duration`` is no
    verdict (an LLM server may queue the suite's concurrent requests): raise Skip."""
    if ctx.external:
        raise Skip(f"{what} did not finish within --max-duration {ctx.timing.max_duration:g} s: not judged")


def require(cond: object, evidence: str, *, fault: str = FAULT_TARGET) -> None:
    """Raise :class:`Fail` with ``evidence`` unless ``cond`` holds."""
    if not cond:
        raise Fail(evidence, fault=fault)
