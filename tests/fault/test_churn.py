"""Churn on real servers: waves of 100 aborted connections per generator kind, leave
mode and server (uvicorn h11 and httptools, each in its own process).

After every wave the server must have no request in flight and every generator it
started closed; at the end, no more event-loop tasks, asgi-stream threads, threads in
app code or file descriptors than after the first wave, and RSS back near that
baseline. CI runs ``FAULT_CHURN_CONNECTIONS`` (default 200) connections per
combination; ``FAULT_CHURN_CONNECTIONS=2000`` is the full test.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from . import churn
from .churn_app import KINDS
from .known_failures import known, stale, unexplained

#: RSS after the churn may exceed the first wave's by this factor or this many bytes.
RSS_FACTOR, RSS_SLACK = 1.5, 48 << 20
#: The figures of every churn run, for the terminal summary.
FIGURES: list[dict[str, Any]] = []

_servers: dict[str, churn.Server] = {}


class KnownFailureSeen(Exception):
    """The combination failed exactly as its known-failure entries say."""


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, churn.Server]]:
    yield _servers
    for server in _servers.values():
        server.stop()
    _servers.clear()


def _server(pool: dict[str, churn.Server], http: str) -> churn.Server:
    """The server for ``http``; a fresh one if the last test failed unexpectedly (a known
    failure's leftovers are another kind's: every check here is per kind)."""
    server = pool.get(http)
    if server is None or server.dirty or not server.proc.alive():
        if server is not None:
            server.stop()
        server = pool[http] = churn.start(http)
    return server


def _leaks(kind: str, base: dict[str, Any], now: dict[str, Any]) -> list[str]:
    out = []
    hung = now["inflight"].get(kind, 0)
    if hung:
        out.append(f"hung: {hung} requests still in flight after their clients left (no progress)")
    opened, closed = now["started"].get(kind, 0), now["closed"].get(kind, 0)
    if opened != closed:
        out.append(f"generator: {opened - closed} of {opened} never closed")
    if now["tasks"] > base["tasks"]:
        out.append(f"tasks: {now['tasks'] - base['tasks']} more event-loop tasks than after the first wave")
    for what in ("asgi_stream", "in_app"):
        extra = now["threads"].get(what, 0) - base["threads"].get(what, 0)
        if extra > 0:
            out.append(f"threads: {extra} more {what} threads than after the first wave")
    if now["fds"] > base["fds"]:
        out.append(f"fds: {now['fds'] - base['fds']} more file descriptors than after the first wave")
    return out


def _params() -> list[Any]:
    params = []
    # the known failures leave streams running on the server: keep them at the end of each server's run
    order = [(kind, mode) for mode in churn.MODES if mode != "rst_early" for kind in KINDS]
    early = sorted(KINDS, key=lambda kind: bool(known("", kind, churn.SERVERS[0], "rst_early", suite="churn")))
    order += [(kind, "rst_early") for kind in early]
    for http in churn.SERVERS:
        for kind, mode in order:
            entries = known("", kind, http, mode, suite="churn")
            marks = []
            if entries:
                reason = "; ".join(f"[{e.key}] {e.where}" for e in entries)
                marks.append(pytest.mark.xfail(strict=True, raises=KnownFailureSeen, reason=reason))
            params.append(pytest.param(http, kind, mode, marks=marks, id=f"{http}-{kind}-{mode}"))
    return params


@pytest.mark.parametrize(("http", "kind", "mode"), _params())
def test_churn(servers: dict[str, churn.Server], http: str, kind: str, mode: str) -> None:
    server = _server(servers, http)
    server.dirty = True  # until this test shows it clean or known
    total = max(churn.DEFAULT, churn.WAVE)
    collect = kind == "sr_sync"  # documented: closed by the garbage collector
    violations: list[str] = []
    started = time.monotonic()
    base: dict[str, Any] | None = None
    now: dict[str, Any] = {}
    worst_settle = 0.0
    connections = first_tokens = 0
    for n in range(total // churn.WAVE):
        result = churn.wave(server.endpoint, kind, mode)
        connections += result.opened
        first_tokens += result.first_token
        if result.refused or result.errors:
            violations.append(f"client: {result.refused} refused, errors {result.errors[:3]} (wave {n})")
        now, waited = churn.settle(server, kind, collect=collect)
        worst_settle = max(worst_settle, waited)
        if base is None:
            base = now
        leaks = _leaks(kind, base, now)
        deadline = time.monotonic() + 2.0  # sockets and tasks of the last connections may still be closing
        while leaks and time.monotonic() < deadline and not now["inflight"].get(kind):
            time.sleep(0.1)
            now = server.stats(collect=collect)
            leaks = _leaks(kind, base, now)
        if leaks:
            violations.extend(f"{leak} (wave {n})" for leak in leaks)
            break
    assert base is not None
    rss_bound = max(base["rss"] * RSS_FACTOR, base["rss"] + RSS_SLACK)
    if now["rss"] > rss_bound:
        violations.append(f"rss: {now['rss'] >> 20} MiB after the churn, {base['rss'] >> 20} MiB after the first wave")
    FIGURES.append(
        {
            "id": f"{http}-{kind}-{mode}",
            "connections": connections,
            "seconds": time.monotonic() - started,
            "settle": worst_settle,
            "rss_growth": now["rss"] - base["rss"],
            "clean": not violations,
        }
    )
    entries = known("", kind, http, mode, suite="churn")
    if not entries:
        assert not violations, "\n".join(violations)
        server.dirty = False
        return
    if not violations:
        server.dirty = False
        return  # XPASS (strict): fixed; remove the combination from known_failures.TABLE
    new = unexplained(entries, violations)
    assert not new, "failures no known-failure entry explains:\n" + "\n".join(violations)
    fixed = stale(entries, violations)
    assert not fixed, f"fixed here, remove from known_failures.TABLE: {[k.key for k in fixed]}"
    server.dirty = False
    raise KnownFailureSeen("\n".join([*(e.reason for e in entries), "", *violations]))
