"""Fixtures of the conformance tests: the suite's targets and deliberately broken ones,
started once per session (on demand, several at once) and stopped by PID at its end.

One broken server serves every flaw set: a request's ``X-Conformance-Flaws`` header
picks the flaws (see ``broken_app``), and :func:`flawed` gives the runner a view of a
broken target that sends that header with every request.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from broken_h2 import BrokenH2Server  # noqa: E402

from conformance.runner import stop_all  # noqa: E402
from conformance.targets import DEFAULT_APP, TARGETS, Target, start_target  # noqa: E402

#: Session servers: name → (launcher, app, broken?).
SPECS: dict[str, tuple[str, str, bool]] = {
    **{name: (name, DEFAULT_APP, False) for name in TARGETS},
    "broken-h1": ("h1-uvicorn", "broken_app:app", True),
    "broken-h2": ("h2-hypercorn", "broken_app:app", True),
    "broken-nginx": ("nginx", "broken_app:app", True),
    "broken-h3": ("h3-hypercorn", "broken_app:app", True),
    # hypercorn with its HTTP/3 disconnect reporting repaired (test_h3.py), serving the
    # suite's app and the broken one.
    "fixed-h3": ("h3-hypercorn", "h3_fixed_app:app", True),
    "fixed-broken-h3": ("h3-hypercorn", "h3_fixed_app:broken", True),
}


def broken_env(flaws: set[str]) -> dict[str, str]:
    """The environment that makes a server load ``broken_app`` with these flaws."""
    path = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {"CONFORMANCE_FLAWS": ",".join(sorted(flaws)), "PYTHONPATH": path}


def flawed(target: Target, flaws: set[str], name: str | None = None) -> Target:
    """A view of a broken target whose every request carries these flaws (same server,
    its own name and memo; stopping it stops nothing)."""
    headers = [h for h in target.extra_headers if h[0] != "x-conformance-flaws"]
    if flaws:
        headers.append(("x-conformance-flaws", ",".join(sorted(flaws))))
    return dataclasses.replace(
        target,
        name=name or target.name,
        extra_headers=headers,
        processes=[],
        workdir=None,
        _memo={},
        _memo_lock=threading.Lock(),
    )


class Servers:
    """Session servers, started on first use (several at once with :meth:`start`)."""

    def __init__(self) -> None:
        self._started: dict[str, Target] = {}
        self._errors: dict[str, BaseException] = {}
        self._lock = threading.Lock()

    def start(self, *names: str) -> None:
        """Start these servers in parallel (those not started yet)."""
        todo = [n for n in names if n not in self._started and n not in self._errors]
        threads = [threading.Thread(target=self._start, args=(n,)) for n in todo]
        for th in threads:
            th.start()
        for th in threads:
            th.join()

    def _start(self, name: str) -> None:
        launcher, app, broken = SPECS[name]
        try:
            t = start_target(launcher, app, env=broken_env(set()) if broken else None)
        except BaseException as exc:
            with self._lock:
                self._errors[name] = exc
            return
        with self._lock:
            self._started[name] = t

    def get(self, name: str) -> Target:
        """A started server (raises what its start raised)."""
        self.start(name)
        if name in self._errors:
            raise self._errors[name]
        return self._started[name]

    def error(self, name: str) -> BaseException | None:
        """Why a server could not start (None if it runs)."""
        self.start(name)
        return self._errors.get(name)

    def stop(self) -> None:
        """Stop every server."""
        stop_all(list(self._started.values()), timeout=1.0)
        self._started.clear()


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    """The session's servers."""
    s = Servers()
    yield s
    s.stop()


@pytest.fixture
def broken(servers: Servers) -> Callable[[str, set[str]], Target]:
    """``broken("h1-uvicorn" | "h2-hypercorn" | "nginx", flaws)``: a broken target with
    these flaws (a view of the session's broken server)."""

    def make(name: str, flaws: set[str]) -> Target:
        key = {"h1-uvicorn": "broken-h1", "h2-hypercorn": "broken-h2", "nginx": "broken-nginx"}[name]
        return flawed(servers.get(key), flaws)

    return make


@pytest.fixture
def broken_target() -> Iterator[Callable[[str, set[str]], Target]]:
    """Start a built-in target serving ``broken_app`` with the given flaws in its
    environment (its own server, stopped after the test)."""
    started: list[Target] = []

    def start(name: str, flaws: set[str]) -> Target:
        t = start_target(name, "broken_app:app", env=broken_env(flaws))
        started.append(t)
        return t

    yield start
    for t in started:
        t.stop()


@pytest.fixture
def broken_h2() -> Iterator[Callable[[set[str]], Target]]:
    """Start the broken raw HTTP/2 server with the given flaws."""
    servers: list[BrokenH2Server] = []

    def start(flaws: set[str]) -> Target:
        s = BrokenH2Server(flaws)
        servers.append(s)
        return s.target()

    yield start
    for s in servers:
        s.close()
