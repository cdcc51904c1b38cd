"""The app the suite streams from: a Starlette app with StreamMiddleware and
deterministic, paced token streams, plus test-only hook endpoints.

Endpoints (all GET, HEAD too):

``/stream``
    ``n`` tokens ``"t000 "``, ``"t001 "``… (``n=0``: never ends), ``interval`` seconds
    apart, after ``idle`` seconds of silence, with a ``pause`` of that many seconds after
    the first ``pause_after`` tokens. ``mode=async|sync`` picks an async or a
    sync generator; ``flush=token|coalesce`` (``max_delay``, ``max_bytes``) the flush
    policy; ``keepalive`` the idle keepalive interval; ``send_timeout``; ``anti=0``
    turns the anti-buffering header off; ``events=1`` yields :class:`Event` objects
    with ``event``/``id`` fields and one multi-line payload; ``size`` pads each token
    to that many bytes; ``format`` forces a wire format (default: negotiated from
    Accept); ``label`` names the stream for the hooks.
``/utf8``
    bytes tokens that split multi-byte characters across two tokens:
    ``b"A"``, ``b"\\xf0\\x9f"``, ``b"\\x98\\x80"``, ``b" \\xc3"``, ``b"\\xa9B"`` → ``"A😀 éB"``.
``/metrics``
    ``conformance_generations_running``, the generators whose body runs and whose
    ``finally`` has not run yet, as a Prometheus gauge.
``/_hooks/streams?label=a,b``
    what each labelled stream's generator did (see :mod:`conformance.hooks`), the
    server's clock, PID and RSS.
``/demo/...``
    the bundled demo app in its paced mode, when :mod:`asgi_stream.demo` is importable.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from asgi_stream import Coalesce, PerToken, StreamMiddleware, TokenStream, current_cancel_token

from .asgi_tap import AsgiTap
from .hooks import Registry, StreamLog
from .tokens import MULTILINE, UTF8_TEXT, UTF8_TOKENS, event_for, expected_tokens, token_text

__all__ = ["MULTILINE", "UTF8_TEXT", "UTF8_TOKENS", "app", "create_app", "event_for", "expected_tokens", "token_text"]

_anon = itertools.count(1)
registry = Registry()


class BadParam(ValueError):
    """A query parameter is missing or malformed (answered with 400)."""


# ---------------------------------------------------------------- generators
@dataclass(frozen=True, slots=True)
class Pace:
    """How a paced stream is timed: ``n`` tokens (0: endless) ``interval`` s apart
    after ``idle`` s, with a ``pause`` of that many seconds after token ``pause_after``."""

    n: int = 5
    interval: float = 0.1
    idle: float = 0.0
    pause: float = 0.0
    pause_after: int = 0

    def wait(self, i: int) -> float:
        """Seconds to wait before token ``i``."""
        if i == 0:
            return self.idle
        extra = self.pause if self.pause and i == self.pause_after else 0.0
        return self.interval + extra


async def paced_async(log: StreamLog, pace: Pace, size: int, events: bool) -> AsyncIterator[Any]:
    """An async generator of paced tokens that logs production and its ``finally``."""
    reason = "closed"
    n = pace.n
    log.enter()
    try:
        for i in itertools.count() if n == 0 else range(n):
            wait = pace.wait(i)
            if wait:
                await anyio.sleep(wait)
            elif n == 0 and i % 16 == 0:
                await anyio.lowlevel.checkpoint()  # a fast producer that still lets the loop breathe
            tok: Any = event_for(i, n) if events else token_text(i, size)
            log.produced(size or 5)
            yield tok
        reason = "exhausted"
    except Exception:
        reason = "error"
        raise
    finally:
        token = current_cancel_token()
        log.finished(reason, token.cancelled if token is not None else None)


def paced_sync(log: StreamLog, pace: Pace, size: int, events: bool) -> Iterator[Any]:
    """The sync twin of :func:`paced_async` (runs on the stream's worker thread)."""
    reason = "closed"
    n = pace.n
    log.enter()
    try:
        for i in itertools.count() if n == 0 else range(n):
            wait = pace.wait(i)
            if wait:
                time.sleep(wait)
            tok: Any = event_for(i, n) if events else token_text(i, size)
            log.produced(size or 5)
            yield tok
        reason = "exhausted"
    except Exception:
        reason = "error"
        raise
    finally:
        token = current_cancel_token()
        log.finished(reason, token.cancelled if token is not None else None)


async def utf8_tokens(log: StreamLog, interval: float) -> AsyncIterator[bytes]:
    """Bytes tokens that split multi-byte characters between two tokens."""
    reason = "closed"
    try:
        for i, tok in enumerate(UTF8_TOKENS):
            if i and interval:
                await anyio.sleep(interval)
            log.produced(len(tok))
            yield tok
        reason = "exhausted"
    finally:
        log.finished(reason, None)


# ---------------------------------------------------------------- endpoints
def _number(req: Request, name: str, default: float, lo: float, hi: float, kind: type, noun: str) -> Any:
    raw = req.query_params.get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise BadParam(f"{name} must be {noun}, got {raw!r}") from None
    if not lo <= value <= hi:
        raise BadParam(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _float(req: Request, name: str, default: float, lo: float = 0.0, hi: float = 3600.0) -> float:
    return float(_number(req, name, default, lo, hi, float, "a number"))


def _int(req: Request, name: str, default: int, lo: int = 0, hi: int = 1_000_000) -> int:
    return int(_number(req, name, default, lo, hi, int, "an integer"))


def _choice(req: Request, name: str, choices: tuple[str, ...]) -> str:
    value = req.query_params.get(name, choices[0])
    if value not in choices:
        raise BadParam(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _label(req: Request) -> str:
    return req.query_params.get("label") or f"anon-{next(_anon)}"


async def stream(req: Request) -> Response:
    """Paced deterministic tokens; see the module docstring for the parameters."""
    pace = Pace(
        n=_int(req, "n", 5),
        interval=_float(req, "interval", 0.1, hi=60),
        idle=_float(req, "idle", 0.0, hi=60),
        pause=_float(req, "pause", 0.0, hi=600),
        pause_after=_int(req, "pause_after", 0),
    )
    size = _int(req, "size", 0, hi=1 << 20)
    mode = _choice(req, "mode", ("async", "sync"))
    flush_name = _choice(req, "flush", ("token", "coalesce"))
    events = _choice(req, "events", ("0", "1")) == "1"
    anti = _choice(req, "anti", ("1", "0")) == "1"
    fmt = req.query_params.get("format")
    if fmt is not None and fmt not in ("sse", "ndjson", "text"):
        raise BadParam(f"format must be sse, ndjson or text, got {fmt!r}")
    options: dict[str, Any] = {"anti_buffering": anti}
    if flush_name == "coalesce":
        options["flush"] = Coalesce(
            max_delay=_float(req, "max_delay", 0.25, lo=0.001, hi=60),
            max_bytes=_int(req, "max_bytes", 16384, lo=1),
        )
    else:
        options["flush"] = PerToken()
    if "keepalive" in req.query_params:
        options["keepalive"] = _float(req, "keepalive", 15.0, lo=0.01, hi=3600)
    if "send_timeout" in req.query_params:
        options["send_timeout"] = _float(req, "send_timeout", 30.0, lo=0.01, hi=3600)
    label = _label(req)
    log = registry.open(label, f"stream-{mode}")
    gen_fn = paced_async if mode == "async" else paced_sync
    gen = gen_fn(log, pace, size, events)
    return TokenStream(gen, format=fmt, name=label, **options)  # type: ignore[arg-type]


async def utf8(req: Request) -> Response:
    """Bytes tokens splitting multi-byte characters (see :data:`UTF8_TOKENS`)."""
    interval = _float(req, "interval", 0.05, hi=60)
    fmt = req.query_params.get("format")
    if fmt is not None and fmt not in ("sse", "ndjson", "text"):
        raise BadParam(f"format must be sse, ndjson or text, got {fmt!r}")
    label = _label(req)
    log = registry.open(label, "utf8")
    return TokenStream(utf8_tokens(log, interval), format=fmt, name=label)  # type: ignore[arg-type]


async def hook_streams(req: Request) -> Response:
    """Test-only: the logs of the given labels (comma-separated), or of all streams."""
    raw = req.query_params.get("label")
    labels = [x for x in raw.split(",") if x] if raw else None
    return JSONResponse(registry.snapshot(labels))


async def metrics(req: Request) -> Response:
    """The gauge of running generators, in the Prometheus text format (for
    ``--active-metric``)."""
    return Response(registry.prometheus(), media_type="text/plain; version=0.0.4")


async def bad_param(req: Request, exc: Exception) -> Response:
    """400 with the parameter error as plain text."""
    return Response(f"bad request: {exc}\n", status_code=400, media_type="text/plain")


def _demo_routes() -> list[Any]:
    """Mount the bundled demo app (paced mode: fixed tokens, no model) at /demo when it
    is importable and ``CONFORMANCE_DEMO`` is not ``0`` (it loads torch: a target
    without it starts faster); the demo cases skip otherwise."""
    if os.environ.get("CONFORMANCE_DEMO", "1") == "0":
        return []
    try:
        from asgi_stream.demo import create_app as create_demo
    except Exception:  # not installed, or its optional dependencies are missing
        return []
    try:
        return [Mount("/demo", app=create_demo(paced=True, paced_interval=0.1, paced_tokens=8))]
    except Exception:  # an incompatible demo version: leave it out rather than break the target
        return []


def create_app(*, keepalive: float = 15.0, send_timeout: float = 30.0) -> Starlette:
    """The target app with StreamMiddleware configured to record every stream."""
    routes = [
        Route("/stream", stream, methods=["GET", "HEAD", "POST"]),
        Route("/utf8", utf8, methods=["GET", "HEAD"]),
        Route("/_hooks/streams", hook_streams),
        Route("/metrics", metrics),
        *_demo_routes(),
    ]
    application = Starlette(routes=routes, exception_handlers={BadParam: bad_param})
    application.add_middleware(
        StreamMiddleware,
        keepalive=keepalive,
        send_timeout=send_timeout,
        shutdown_grace=0.5,
        on_end=registry.on_end,
        on_cancel=registry.on_cancel,
    )
    return application


application = create_app()
#: What the servers run: the app inside an AsgiTap, which records what the server's own
#: receive() and send() did for each labelled request (``asgi`` in the hook logs).
app = AsgiTap(application, registry.open_tap)
#: Whether the demo app is mounted at /demo.
DEMO_MOUNTED = any(isinstance(r, Mount) and r.path == "/demo" for r in application.routes)
