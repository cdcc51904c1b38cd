"""pytest plugin for a peer's own test suite: the one line, everywhere, and a record
of every test's outcome.

Loaded with ``-p asgi_stream_inject`` (this folder on ``PYTHONPATH``; the module
imports nothing from this project's ``tests`` package, whose name the peers' suites
use too). With ``ASGI_STREAM_PEERS_LINE=1`` it puts :class:`StreamMiddleware`, with
its defaults, around every application the suite builds:

* every ``Starlette`` app: ``build_middleware_stack`` returns
  ``StreamMiddleware(<the usual stack>)``, so it is the outermost layer (outside
  ``ServerErrorMiddleware``), for the test client and real servers alike;
* every other app handed to Starlette's ``TestClient`` (lifespan included) or to
  an ``httpx``/``httpx2`` ``ASGITransport`` (bare ASGI callables, routers, responses);
* every response called directly as an ASGI app (``await response(scope, receive,
  send)``, as sse-starlette's tests do) when no injected line is already outside
  (known from a context variable, never from the scope: the tests reuse scope dicts).

Without the variable nothing is patched, yet every import is the same, so the two
runs differ by the line alone. ``ASGI_STREAM_PEERS_OUTCOMES=<path>`` writes
``{node id: {"outcome", "message"}}`` as JSON when the session ends.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import pytest

from asgi_stream import StreamMiddleware
from asgi_stream.scope import CTX_KEY

LINE_ENV = "ASGI_STREAM_PEERS_LINE"
OUTCOMES_ENV = "ASGI_STREAM_PEERS_OUTCOMES"

Outcome = dict[str, str]


#: Whether the current call runs inside an injected line.
_inside: ContextVar[bool] = ContextVar("asgi_stream_inside", default=False)


class Line(StreamMiddleware):
    """``StreamMiddleware(app)`` with its defaults, marking the calls it serves.

    The outermost line of a call drops a context an earlier request left in the scope
    dict (the peers' tests reuse module-level scope dicts; a fresh request never has
    one): each test then measures the line on a fresh request. What a reused scope
    does to the middleware is a regression test of its own (tests/fidelity).
    """

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not _inside.get():
            scope.pop(CTX_KEY, None)
        token = _inside.set(True)
        try:
            await super().__call__(scope, receive, send)
        finally:
            _inside.reset(token)


def _wrap(app: Any) -> Any:
    """``Line(app)`` unless the app already gets it (a Starlette app) or is one."""
    from starlette.applications import Starlette

    if isinstance(app, (Starlette, StreamMiddleware)):
        return app
    return Line(app)


def _patch_starlette() -> None:
    from starlette.applications import Starlette

    build = Starlette.build_middleware_stack

    @functools.wraps(build)
    def build_middleware_stack(self: Starlette) -> Any:
        return Line(build(self))

    Starlette.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]


def _patch_test_client() -> None:
    from starlette.testclient import TestClient

    init = TestClient.__init__

    @functools.wraps(init)
    def __init__(self: TestClient, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)  # adapts an ASGI2 app first
        self.app = _wrap(self.app)
        self._transport.app = self.app  # type: ignore[attr-defined]

    TestClient.__init__ = __init__  # type: ignore[method-assign]


def _patch_asgi_transports() -> None:
    for name in ("httpx", "httpx2"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        transport = module.ASGITransport
        init = transport.__init__

        def make(init: Callable[..., None]) -> Callable[..., None]:
            @functools.wraps(init)
            def __init__(self: Any, app: Any, *args: Any, **kwargs: Any) -> None:
                init(self, _wrap(app), *args, **kwargs)

            return __init__

        transport.__init__ = make(init)


def _wrap_call(cls: type) -> None:
    """Run ``cls.__call__`` inside a line when no line is outside already."""
    original = cls.__dict__["__call__"]
    if getattr(original, "__asgi_stream_wrapped__", False):
        return

    @functools.wraps(original)
    async def __call__(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or _inside.get():
            await original(self, scope, receive, send)
            return
        await Line(functools.partial(original, self))(scope, receive, send)

    __call__.__asgi_stream_wrapped__ = True  # type: ignore[attr-defined]
    cls.__call__ = __call__  # type: ignore[attr-defined]


def _patch_responses() -> None:
    from starlette.responses import Response

    def visit(cls: type) -> None:
        if "__call__" in cls.__dict__:
            _wrap_call(cls)
        for sub in cls.__subclasses__():
            visit(sub)

    visit(Response)
    previous = Response.__dict__.get("__init_subclass__")

    def __init_subclass__(cls: type, **kwargs: Any) -> None:  # responses defined later
        if previous is not None:
            previous.__func__(cls, **kwargs)
        else:
            super(Response, cls).__init_subclass__(**kwargs)
        if "__call__" in cls.__dict__:
            _wrap_call(cls)

    Response.__init_subclass__ = classmethod(__init_subclass__)  # type: ignore[assignment]


def _import_peers() -> None:
    """Import what the patches touch in both runs, so import order never differs."""
    import starlette.applications
    import starlette.responses
    import starlette.testclient  # noqa: F401

    for optional in ("httpx", "httpx2", "sse_starlette.sse"):
        try:
            __import__(optional)
        except ImportError:
            pass


def install() -> None:
    """Apply every patch (idempotent per process is not needed: called once)."""
    _patch_starlette()
    _patch_test_client()
    _patch_asgi_transports()
    _patch_responses()


class OutcomeRecorder:
    """Folds pytest's per-phase reports into one outcome per test id."""

    def __init__(self) -> None:
        self.outcomes: dict[str, Outcome] = {}

    def add(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        """Record one report (setup, call, teardown, or a failed collection)."""
        nodeid = report.nodeid
        current = self.outcomes.get(nodeid)
        if current is not None and current["outcome"] in ("failed", "error"):
            return
        if isinstance(report, pytest.CollectReport):
            if report.failed:
                self.outcomes[nodeid] = {"outcome": "error", "message": _message(report)}
            return
        wasxfail = hasattr(report, "wasxfail")
        if report.failed:
            self.outcomes[nodeid] = {
                "outcome": "failed" if report.when == "call" else "error",
                "message": _message(report),
            }
        elif report.skipped:
            self.outcomes[nodeid] = {"outcome": "xfailed" if wasxfail else "skipped", "message": ""}
        elif report.when == "call":
            self.outcomes[nodeid] = {"outcome": "xpassed" if wasxfail else "passed", "message": ""}

    def write(self, path: str) -> None:
        """Write the outcomes as JSON to ``path``."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.outcomes, f, indent=0, sort_keys=True)


def _message(report: pytest.TestReport | pytest.CollectReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message).splitlines()[0][:300] if crash.message else ""
    text = str(report.longrepr or "")
    return (text.strip().splitlines() or [""])[-1][:300]


_recorder = OutcomeRecorder()


def pytest_configure(config: pytest.Config) -> None:
    """Import the peers, and patch them when the line is on."""
    _import_peers()
    if os.environ.get(LINE_ENV) == "1":
        install()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Record a test phase (on xdist's controller too, where workers' reports arrive)."""
    _recorder.add(report)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    """Record a module that failed to import."""
    _recorder.add(report)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write the outcomes (only in the controlling process under xdist)."""
    path = os.environ.get(OUTCOMES_ENV)
    if path and not hasattr(session.config, "workerinput"):
        _recorder.write(path)
