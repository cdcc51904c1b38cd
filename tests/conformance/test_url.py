"""``--url`` from outside, proven both ways: every outside-in check fails against a
broken endpoint (with evidence that names the defect and the layer), passes against
asgi-stream, and says "not observable" where the wire cannot tell. Short budgets
(``--keepalive-budget 1`` and the like) keep it fast."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conformance.cases import Result, Timing
from conformance.hooks import GAUGE
from conformance.html import to_html
from conformance.metrics import ActiveMetric
from conformance.runner import SuiteResult, run_suite
from conformance.targets import Target, external_target, find_nginx

from .conftest import Servers

BUDGETS = {"max_duration": 10.0, "keepalive_budget": 1.0, "pacing_budget": 0.5, "cancel_budget": 1.0}
needs_nginx = pytest.mark.skipif(find_nginx() is None, reason="no nginx binary")


def url_of(target: Target, query: str, name: str, *, h2: bool = False, metric: bool = True, **kw: bool) -> Target:
    """An external target for ``query`` on a running server (with its flaws header)."""
    base = f"http://{target.endpoint.host}:{target.endpoint.port}"
    return external_target(
        base + query,
        h2=h2,
        headers=list(target.extra_headers),
        read_timeout=BUDGETS["max_duration"],
        active_metric=ActiveMetric(base + "/metrics", GAUGE) if metric else None,
        name=name,
        **kw,
    )


def run(targets: list[Target], cases: list[str] | None, **budgets: float) -> SuiteResult:
    timing = Timing(request_timeout=BUDGETS["max_duration"], **{**BUDGETS, **budgets})
    return run_suite([], cases, prebuilt=targets, timing=timing, jobs=8)


def verdicts(suite: SuiteResult, case: str) -> dict[str, Result]:
    return {r.target: r for r in suite.results if r.case == case}


def expect(r: Result, status: str, *needles: str, fault: str | None = None) -> None:
    assert r.status == status, f"{r.case} @ {r.target}: expected {status}, got {r.status}: {r.evidence}"
    for n in needles:
        assert n.lower() in r.evidence.lower(), f"{r.case} @ {r.target}: {n!r} not in {r.evidence}"
    if fault is not None:
        assert r.fault == fault, f"{r.case} @ {r.target}: fault {r.fault}, expected {fault}"


def wait_idle(target: Target, timeout: float = 15.0) -> None:
    """Wait until no generator runs on the server (a leftover would end mid-measurement)."""
    metric = ActiveMetric(f"http://{target.endpoint.host}:{target.endpoint.port}/metrics", GAUGE)
    deadline = time.monotonic() + timeout
    while metric.read() > 0:
        assert time.monotonic() < deadline, "the server never went idle"
        time.sleep(0.05)


# ---------------------------------------------------------------- keepalive
def test_keepalive_from_outside(servers: Servers, broken: Callable[[str, set[str]], Target]) -> None:
    good, naive = servers.get("h1-uvicorn"), broken("h1-uvicorn", set())
    pause = "/stream?n=6&interval=0.05&pause_after=2&pause=1.5&keepalive=0.3"
    suite = run(
        [
            url_of(good, pause, "good"),
            url_of(naive, pause, "naive"),
            url_of(good, "/stream?n=5&interval=0.05", "no-pause"),
        ],
        ["keepalive"],
    )
    r = verdicts(suite, "keepalive")
    expect(r["good"], "pass", "event-free stretch of 1.", "keepalive(s)")
    expect(r["naive"], "fail", "s of silence on the wire after event 2", "budget 1 s", "fix:", fault="target")
    expect(r["no-pause"], "skip", "not observable")


# ---------------------------------------------------------------- pacing
def test_pacing_from_outside_sse_and_ndjson(servers: Servers, broken: Callable[[str, set[str]], Target]) -> None:
    good, buffering = servers.get("h1-uvicorn"), broken("h1-uvicorn", {"buffer"})
    q = "/stream?n=12&interval=0.1"
    suite = run(
        [
            url_of(good, q, "good-sse"),
            url_of(good, q + "&format=ndjson", "good-ndjson"),
            url_of(buffering, q, "buffer-sse"),
            url_of(buffering, q + "&format=ndjson", "buffer-ndjson"),
            url_of(buffering, "/stream?n=4&interval=0.01", "too-fast"),
        ],
        ["per-token"],
    )
    r = verdicts(suite, "per-token")
    expect(r["good-sse"], "pass", "12 events in 12 separate arrivals")
    expect(r["good-ndjson"], "pass", "12 lines in 12 separate arrivals")
    for name in ("buffer-sse", "buffer-ndjson"):
        expect(r[name], "fail", "in one burst", "headers came with it", "arrivals per", "flush", fault="target")
    expect(r["too-fast"], "skip", "not observable")


@needs_nginx
def test_pacing_through_a_buffering_proxy_blames_the_proxy(
    servers: Servers, broken: Callable[[str, set[str]], Target]
) -> None:
    good, bad = servers.get("nginx"), broken("nginx", {"no-stream-headers"})
    q = "/stream?n=12&interval=0.1"
    suite = run(
        [
            url_of(good, q, "good-sse"),
            url_of(good, q + "&format=ndjson", "good-ndjson"),
            url_of(bad, q, "bad-sse"),
            url_of(bad, q + "&format=ndjson", "bad-ndjson"),
        ],
        ["per-token", "headers"],
    )
    pacing, headers = verdicts(suite, "per-token"), verdicts(suite, "headers")
    for name in ("good-sse", "good-ndjson"):
        expect(pacing[name], "pass", "12 separate arrivals")
        # nginx consumed X-Accel-Buffering: a note, not a failure.
        expect(headers[name], "pass", "consumes after honouring it")
    for name in ("bad-sse", "bad-ndjson"):
        expect(pacing[name], "fail", "one burst", "Content-Encoding: gzip", "X-Accel-Buffering: no", fault="proxy")
        expect(headers[name], "fail", "Cache-Control")


# ---------------------------------------------------------------- cancellation
def test_cancel_from_outside_watches_the_gauge(servers: Servers, broken: Callable[[str, set[str]], Target]) -> None:
    good_h1, good_h2 = servers.get("h1-uvicorn"), servers.get("h2-hypercorn")
    bad_h1, bad_h2 = broken("h1-uvicorn", {"no-cancel"}), broken("h2-hypercorn", {"no-cancel"})
    for t in (good_h1, good_h2, bad_h1, bad_h2):
        wait_idle(t)
    q = "/stream?n=20&interval=0.1"
    suite = run(
        [
            url_of(good_h1, q, "good-h1"),
            url_of(good_h2, q, "good-h2", h2=True),
            url_of(bad_h1, q, "bad-h1"),
            url_of(bad_h2, q, "bad-h2", h2=True),
        ],
        ["client-close-cancel"],
    )
    r = verdicts(suite, "client-close-cancel")
    expect(r["good-h1"], "pass", "(FIN): conformance_generations_running 1 → 0", "(RST, SO_LINGER 0)")
    expect(r["good-h2"], "pass", "RST_STREAM(CANCEL)", "1 → 0")
    expect(r["bad-h1"], "fail", "(FIN): conformance_generations_running stayed at 1", "(RST", "fix:", fault="target")
    expect(r["bad-h2"], "fail", "RST_STREAM(CANCEL)", "stayed at 1", fault="target")
    assert r["good-h1"].details["gauge"], "the gauge samples are kept for the report"
    no_metric = run([url_of(good_h1, q, "no-metric", metric=False)], ["client-close-cancel"])
    expect(verdicts(no_metric, "client-close-cancel")["no-metric"], "skip", "needs --active-metric")


def test_slow_reader_from_outside(servers: Servers, broken: Callable[[str, set[str]], Target]) -> None:
    good, unbounded = servers.get("h1-uvicorn"), broken("h1-uvicorn", {"unbounded"})
    fast = "/stream?n=0&interval=0&size=1024"
    suite = run(
        [
            url_of(good, fast + "&send_timeout=1", "good"),
            url_of(unbounded, fast, "unbounded"),
            url_of(good, "/stream?n=3&interval=0.05", "short"),
        ],
        ["h1-slow-reader"],
        stall_budget=2.0,
    )
    r = verdicts(suite, "h1-slow-reader")
    expect(r["good"], "pass", "gave the stalled stream up", "body incomplete", "fell")
    expect(r["unbounded"], "fail", "kept the stream open through a", "MiB queued", "send timeout", fault="target")
    expect(r["short"], "skip", "not observable")


# ---------------------------------------------------------------- headers
def test_headers_lists_every_problem_and_knows_about_proxies(
    servers: Servers, broken: Callable[[str, set[str]], Target]
) -> None:
    good, bad = servers.get("h1-uvicorn"), broken("h1-uvicorn", {"content-length", "no-stream-headers"})
    q, anti_off = "/stream?n=2&interval=0.01", "/stream?n=2&interval=0.01&anti=0"
    suite = run(
        [
            url_of(bad, q, "bad"),
            url_of(good, anti_off, "direct"),
            url_of(good, anti_off, "declared", behind_proxy=True),
        ],
        ["headers"],
    )
    r = verdicts(suite, "headers")
    expect(r["bad"], "fail", "3 problem(s)", "Content-Length", "Cache-Control", "X-Accel-Buffering", fault="target")
    assert [p["layer"] for p in r["bad"].details["problems"]] == ["target", "target", "target"]
    expect(r["direct"], "fail", "1 problem(s)", "X-Accel-Buffering None", "--behind-proxy")
    expect(r["declared"], "pass", "declared with --behind-proxy")


# ---------------------------------------------------------------- h2-concurrent
def test_h2_concurrent_blames_a_serializing_app_not_the_server(broken: Callable[[str, set[str]], Target]) -> None:
    target = broken("h2-hypercorn", {"single-worker"})
    suite = run_suite([], ["h2-concurrent"], prebuilt=[target], timing=Timing(scale=0.5, retries=0))
    expect(suite.results[0], "fail", "separate connections were serialized too", "not at fault", fault="target")


# ---------------------------------------------------------------- budgets and reports
def test_max_duration_and_the_reports_from_the_cli(servers: Servers, tmp_path: Path) -> None:
    good = servers.get("h1-uvicorn")
    url = f"http://{good.endpoint.host}:{good.endpoint.port}/stream?n=40&interval=0.1"
    page = tmp_path / "report.html"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "conformance", "--url", url, "--json", "--html", str(page)),
            *("--max-duration", "1", "--keepalive-budget", "0.5", "--cases", "per-token,h1-zero-chunk,sse-parse"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    assert data["timing"]["request_timeout"] == 1.0 and data["timing"]["keepalive_budget"] == 0.5
    r = {x["case"]: x for x in data["results"]}
    # The stream lasts 4 s: observation stops at 1 s and the verdicts rest on what arrived.
    assert r["per-token"]["status"] == "pass" and "stopped at --max-duration 1 s" in r["per-token"]["evidence"]
    assert r["h1-zero-chunk"]["status"] == "skip" and "not observed" in r["h1-zero-chunk"]["evidence"]
    assert r["sse-parse"]["status"] == "pass" and "not observed" in r["sse-parse"]["evidence"]
    timeline = r["per-token"]["details"]["timelines"][0]
    assert timeline["cut"] and 5 <= len(timeline["events"]) <= 15 and timeline["end_at"] < 2.0
    html = page.read_text()
    assert html.startswith("<!doctype html>") and html.count("<svg") >= 3
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:)?//""", html), "no external assets"
    bad = subprocess.run(
        [sys.executable, "-m", "conformance", "--keepalive-budget", "1"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "applies to --url only" in bad.stderr


def test_html_report_plots_every_observed_response(servers: Servers) -> None:
    good = servers.get("h1-uvicorn")
    q = "/stream?n=6&interval=0.05&pause_after=3&pause=1.2&keepalive=0.3"
    suite = run([url_of(good, q, "u")], ["headers", "per-token", "keepalive", "client-close-cancel", "h1-zero-chunk"])
    html = to_html(suite)
    plotted = [r for r in suite.results if r.details.get("timelines")]
    assert plotted and html.count("<svg") >= len(plotted)
    assert "keepalive @ u" in html and "comments" in html
    assert "<script" not in html and "<link" not in html


def test_url_budgets_default_to_llm_sizes() -> None:
    from conformance.__main__ import _url_timing, build_parser

    t = _url_timing(build_parser().parse_args(["--url", "http://127.0.0.1:9/"]), {})
    assert (t.request_timeout, t.max_duration, t.keepalive_budget, t.pacing_budget) == (300.0, 300.0, 20.0, 1.0)
    assert (t.cancel_budget, t.stall_budget) == (5.0, 60.0)


def test_concurrency_limits_the_cases_in_flight_against_one_endpoint(servers: Servers) -> None:
    good = servers.get("h1-uvicorn")
    base = f"http://{good.endpoint.host}:{good.endpoint.port}/stream?n=4&interval=0.1"
    one = external_target(base, concurrency=1, read_timeout=10)
    cases = ["head", "h1-http10", "h1-keepalive-reuse", "h1-half-close"]
    suite = run([one], cases)
    took = [r.duration for r in suite.results if r.case in cases]
    assert all(r.status == "pass" for r in suite.results if r.case in cases), [r.evidence for r in suite.results]
    # One at a time: the run lasts at least as long as its cases added up.
    assert suite.duration >= 0.95 * sum(took), (suite.duration, took)


def test_cancel_from_outside_with_the_demo_gauge(servers: Servers) -> None:
    good = servers.get("h1-uvicorn")
    if not good.demo:
        pytest.skip("the demo app is not mounted")
    base = f"http://{good.endpoint.host}:{good.endpoint.port}/demo"
    chat = {"model": "paced", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "stream": True}
    ext = external_target(
        base + "/v1/chat/completions",
        method="POST",
        body=json.dumps(chat).encode(),
        headers=[("content-type", "application/json")],
        read_timeout=10,
        active_metric=ActiveMetric(base + "/metrics", "asgi_stream_demo_generations_running"),
    )
    r = verdicts(run([ext], ["client-close-cancel", "per-token"]), "client-close-cancel")["h1-url"]
    expect(r, "pass", "(FIN): asgi_stream_demo_generations_running 1 → 0", "(RST, SO_LINGER 0)")
