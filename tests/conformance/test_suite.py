"""The conformance suite, run whole against every target, and proven able to fail:
each case is run against a deliberately broken target and must FAIL there, with
evidence that names the defect."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from conformance.cases import CASES, Result, Timing
from conformance.report import render
from conformance.runner import run_suite
from conformance.targets import TARGETS, Target, TargetUnavailable, external_target, find_nginx

from .conftest import Servers

#: Faults of the servers themselves that the suite diagnoses (see docs/conformance.md).
KNOWN_SERVER_FAULTS = {
    ("h1-slow-reader", "h1-hypercorn-trio"),
    # hypercorn's HTTP/3 never reports a client's cancel to the app (test_h3.py).
    ("client-close-cancel", "h3-hypercorn"),
    ("h3-stream-cancel", "h3-hypercorn"),
}
#: Cases that pass only against a server none of the built-in targets is (test_h3.py
#: shows them passing against hypercorn with its HTTP/3 disconnects repaired).
PASS_ELSEWHERE = {"h3-stream-cancel"}


def test_full_suite_passes_on_every_target(servers: Servers, capsys: pytest.CaptureFixture[str]) -> None:
    servers.start(*TARGETS)
    prebuilt = [servers.get(n) for n in TARGETS if servers.error(n) is None]
    suite = run_suite([], None, prebuilt=prebuilt, jobs=8)
    report = render(suite)
    with capsys.disabled():
        print("\n" + report)
    assert not suite.failed, report
    faults = {(r.case, r.target) for r in suite.faults}
    assert faults <= KNOWN_SERVER_FAULTS, f"unexpected server faults {faults - KNOWN_SERVER_FAULTS}\n{report}"
    for name in TARGETS:
        if name == "nginx" and find_nginx() is None:
            assert isinstance(servers.error(name), TargetUnavailable)
        else:
            assert servers.error(name) is None, f"{name}: {servers.error(name)}"
    passed = {r.case for r in suite.results if r.status == "pass"}
    demo = {"demo-generate", "demo-openai-chat"}
    must = set(CASES) - (demo if not any(r.case in demo and r.status == "pass" for r in suite.results) else set())
    must -= PASS_ELSEWHERE
    if find_nginx() is None:
        must -= {"proxy-paced", "proxy-contrast"}
    assert must <= passed, f"cases that passed nowhere: {must - passed}"


# ---------------------------------------------------------------- every case can fail
def _run(target: Target, cases: list[str]) -> dict[str, Result]:
    # No retries: a retry helps a case pass on a loaded machine; these must fail.
    suite = run_suite([], cases, prebuilt=[target], jobs=8, timing=Timing(retries=0))
    return {r.case: r for r in suite.results}


def _assert_fail(results: dict[str, Result], expected: dict[str, str]) -> None:
    for case, needle in expected.items():
        r = results[case]
        assert r.status == "fail", f"{case} should FAIL against the broken target, got {r.status}: {r.evidence}"
        # "a|b": either phrase (the same defect can show either way, depending on timing).
        assert any(n.lower() in r.evidence.lower() for n in needle.split("|")), (
            f"{case}: evidence does not mention {needle!r}: {r.evidence}"
        )


BROKEN_H1 = [
    (
        {"content-length"},
        {
            "headers": "Content-Length",
            "per-token": "events",
            "per-token-sync": "events",
            "coalesce": "waited",
            "h1-zero-chunk": "not chunked",
            "h1-http10": "Content-Length",
        },
    ),
    (set(), {"keepalive": "keepalive comments", "coalesce": "not coalesced"}),
    ({"no-stream-headers"}, {"headers": "Cache-Control"}),
    (
        {"no-cancel"},
        {"client-close-cancel": "still running", "h1-half-close": "after the client left|not closed by cancellation"},
    ),
    ({"replace-utf8"}, {"utf8-split": "U+FFFD"}),
    ({"truncate"}, {"h1-zero-chunk": "incomplete", "h1-keepalive-reuse": "failed"}),
    ({"unbounded"}, {"h1-slow-reader": "MiB"}),
    ({"sse-no-terminator"}, {"sse-parse": "ended inside an event"}),
    ({"bad-json"}, {"ndjson-parse": "invalid JSON"}),
]


@pytest.mark.parametrize(("flaws", "expected"), BROKEN_H1, ids=[",".join(sorted(f)) or "naive" for f, _ in BROKEN_H1])
def test_h1_cases_fail_against_a_broken_app(
    broken: Callable[[str, set[str]], Target], flaws: set[str], expected: dict[str, str]
) -> None:
    target = broken("h1-uvicorn", flaws)
    _assert_fail(_run(target, list(expected)), expected)


def test_the_naive_broken_app_still_passes_what_it_does_right(broken: Callable[[str, set[str]], Target]) -> None:
    # Without flaws it streams token by token: the cases discriminate, they do not just fail.
    target = broken("h1-uvicorn", set())
    results = _run(target, ["per-token", "sse-parse", "h1-zero-chunk"])
    assert {k: r.status for k, r in results.items()} == dict.fromkeys(results, "pass"), results


def test_h2_cancellation_cases_fail_when_the_app_ignores_disconnects(
    broken: Callable[[str, set[str]], Target],
) -> None:
    target = broken("h2-hypercorn", {"no-cancel"})
    expected = dict.fromkeys(
        ["client-close-cancel", "h2-rst-cancel", "h2-goaway"], "after the client left|not closed by cancellation"
    )
    _assert_fail(_run(target, list(expected)), expected)


BROKEN_H2 = [
    ({"conn-headers"}, {"h2-no-connection-headers": "connection-specific", "headers": "connection-specific"}),
    ({"rst-instead-of-end"}, {"h2-end-stream": "reset"}),
    ({"ignore-window"}, {"h2-flow-control": "flow control"}),
    ({"one-frame"}, {"per-token": "carried 5 events"}),
    ({"head-body"}, {"head": "carried a body"}),
    ({"serial"}, {"h2-concurrent": "two separate connections ran concurrently"}),
]


@pytest.mark.parametrize(("flaws", "expected"), BROKEN_H2, ids=[",".join(sorted(f)) for f, _ in BROKEN_H2])
def test_h2_cases_fail_against_a_broken_server(
    broken_h2: Callable[[set[str]], Target], flaws: set[str], expected: dict[str, str]
) -> None:
    results = _run(broken_h2(flaws), list(expected))
    _assert_fail(results, expected)
    for r in results.values():
        if r.case.startswith("h2-") or r.case == "head":
            assert r.fault == "server", f"{r.case}: a protocol defect is the server's fault, got {r.fault}"


@pytest.mark.skipif(find_nginx() is None, reason="no nginx binary")
def test_proxy_cases_fail_without_the_anti_buffering_header(broken: Callable[[str, set[str]], Target]) -> None:
    # No X-Accel-Buffering: nginx (gzip + proxy buffering) holds the stream back.
    target = broken("nginx", {"no-stream-headers"})
    _assert_fail(_run(target, ["proxy-paced"]), {"proxy-paced": "arrived"})
    # The naive app always sends the header, even with anti=0: there is no contrast to show.
    target = broken("nginx", set())
    _assert_fail(_run(target, ["proxy-contrast"]), {"proxy-contrast": "no contrast"})


# ---------------------------------------------------------------- the CLI
def test_cli_json_and_exit_status() -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "conformance", "--targets", "h1-uvicorn", "--cases", "headers,per-token", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CONFORMANCE_DEMO": "0"},  # the demo's torch import is not what this tests
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    data = json.loads(ok.stdout)
    assert data["ok"] is True
    assert {(r["case"], r["status"]) for r in data["results"]} == {("headers", "pass"), ("per-token", "pass")}
    bad = subprocess.run(
        [sys.executable, "-m", "conformance", "--cases", "nope"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "unknown case" in bad.stderr


def test_cli_url_mode_exits_non_zero_on_a_broken_endpoint(broken: Callable[[str, set[str]], Target]) -> None:
    target = broken("h1-uvicorn", set())
    url = f"http://{target.endpoint.host}:{target.endpoint.port}/stream?n=4&interval=0.1"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "conformance", "--url", url, "--cases", "headers,per-token,h1-zero-chunk"),
            *("-H", "X-Conformance-Flaws: content-length"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Content-Length" in proc.stdout


def test_url_mode_against_a_good_endpoint_over_h1_and_h2(servers: Servers) -> None:
    t = servers.get("h2-hypercorn")
    url = f"http://{t.endpoint.host}:{t.endpoint.port}/stream?n=5&interval=0.1"
    for h2 in (False, True):
        ext = external_target(url, h2=h2)
        suite = run_suite([], None, prebuilt=[ext], jobs=4)
        assert not suite.failed, render(suite)
        statuses = {r.case: r.status for r in suite.results}
        assert statuses["per-token"] == "pass" and statuses["sse-parse"] == "pass"
        assert statuses["client-close-cancel"] == "skip"  # needs --active-metric
        assert statuses["keepalive"] == "skip"  # no pause: not observable
        if h2:
            assert statuses["h2-flow-control"] == "pass" and statuses["h2-concurrent"] == "pass"
        else:
            assert statuses["h1-zero-chunk"] == "pass" and statuses["h1-http10"] == "pass"
