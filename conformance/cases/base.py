"""What a case is, what it returns, and the context it runs in.

A case is a function ``run(ctx) -> str`` registered with :func:`case`: it returns
its evidence on success, raises :class:`Fail` (with evidence, and whose fault it
is) or :class:`Skip`. :class:`CaseContext` gives it the target, the timing knobs,
unique labels and access to the server-side hooks; :func:`fetch` makes one
request over the target's protocol and returns an :class:`Observed` response that
looks the same for HTTP/1.1 and HTTP/2.
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

if TYPE_CHECKING:  # aioquic is imported only when HTTP/3 is used
    from ..clients.h3 import H3Stream
from ..ndjson import NDJSONParser
from ..sse import SSEParser
from ..targets import Target

SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
TEXT = "text/plain"

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
    #: Timeout of one whole request.
    request_timeout: float = 15.0

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
        """The decoded body run through the WHATWG parser, chunk by chunk."""
        parser = SSEParser()
        for c in self.decoded:
            parser.feed(c.data, c.t)
        parser.close()
        return parser

    def ndjson(self) -> NDJSONParser:
        """The decoded body parsed as NDJSON, chunk by chunk."""
        parser = NDJSONParser()
        for c in self.decoded:
            parser.feed(c.data, c.t)
        parser.close()
        return parser

    def describe_chunks(self, limit: int = 8) -> str:
        """``+0.102s 13B b'data: t001…'`` lines for evidence."""
        lines = []
        for c in self.decoded[:limit]:
            lines.append(f"+{c.t - self.t_request:.3f}s {len(c.data)}B {c.data[:40]!r}")
        if len(self.decoded) > limit:
            lines.append(f"… {len(self.decoded) - limit} more")
        return "; ".join(lines)


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


def fetch(
    ctx: CaseContext, path: str, accept: str | None = SSE, *, method: str | None = None, timeout: float | None = None
) -> Observed:
    """One request on a new connection, read to the end; raises Fail if it does not end."""
    target = ctx.target
    timeout = timeout or ctx.timing.request_timeout
    method = method or ctx.method()
    ctx.last_request = (path, accept)
    headers = ctx.headers(accept)
    body = ctx.body()
    if target.protocol == "h3":
        with target.h3(timeout=timeout) as h3c:
            s3 = h3c.request(method, path, headers=headers, body=body)
            if not h3c.read_all([s3.stream_id], timeout=timeout):
                raise Fail(f"HTTP/3 stream not closed after {timeout:.0f} s ({len(s3.frames)} DATA frames so far)")
            return observe_h3(s3)
    if target.protocol == "h2":
        with target.h2(timeout=timeout) as c:
            st = c.request(method, path, headers=headers, body=body)
            if not c.read_all([st.stream_id], timeout=timeout):
                raise Fail(f"HTTP/2 stream not closed after {timeout:.0f} s ({len(st.frames)} DATA frames so far)")
            return observe_h2(st)
    with target.h1(timeout=timeout) as c:
        c.request(method, path, headers=headers, body=body)
        try:
            resp = c.read_response(deadline=time.monotonic() + timeout)
        except TimeoutError as exc:
            raise Fail(f"response not complete after {timeout:.0f} s: {exc}") from exc
        return observe_h1(resp)


def require(cond: object, evidence: str, *, fault: str = FAULT_TARGET) -> None:
    """Raise :class:`Fail` with ``evidence`` unless ``cond`` holds."""
    if not cond:
        raise Fail(evidence, fault=fault)
