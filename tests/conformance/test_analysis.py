"""The outside-in judgements on synthetic timelines (offsets in seconds since the
request): every rule fails what it must, passes what it must, and says "not
observable" where arrival times cannot tell."""

from __future__ import annotations

from conformance.analysis import (
    FAIL,
    PASS,
    UNOBSERVABLE,
    bursts,
    format_histogram,
    histogram,
    judge_keepalive,
    judge_pacing,
    wire_silences,
)
from conformance.layers import buffering_hints, detect_proxy
from conformance.metrics import gauge_value, parse_selector


def paced(n: int, start: float, interval: float) -> list[float]:
    return [start + i * interval for i in range(n)]


# ---------------------------------------------------------------- pacing
def test_a_paced_llm_stream_after_a_slow_first_token_passes() -> None:
    events = paced(40, 3.0, 0.05)  # 3 s prefill, then 20 tokens/s
    j = judge_pacing(events, headers_at=0.01, budget=1.0)
    assert j.verdict == PASS, j.evidence
    assert "40 events in 40 separate arrivals" in j.evidence


def test_everything_in_one_burst_at_the_end_fails_with_the_histogram() -> None:
    events = [5.0 + i * 0.0001 for i in range(40)]
    j = judge_pacing(events, headers_at=0.01, budget=1.0)
    assert j.verdict == FAIL
    assert "all 40 events arrived in one burst" in j.evidence and "after the headers" in j.evidence
    assert "arrivals per" in j.evidence and j.evidence.rstrip().endswith("40")
    late = judge_pacing(events, headers_at=5.0, budget=1.0)
    assert "the headers came with it" in late.evidence


def test_a_proxy_releasing_batches_fails() -> None:
    events = [b * 1.5 + i * 0.0002 for b in range(1, 6) for i in range(6)]  # 5 buffers of 6 events, 1.5 s apart
    j = judge_pacing(events, headers_at=0.0, budget=1.0)
    assert j.verdict == FAIL
    assert "30 of 30 events arrived in 5 bursts" in j.evidence


def test_coalescing_within_the_budget_passes() -> None:
    # 10 tokens per chunk every 200 ms: held at most 200 ms, within a 1 s budget.
    events = [0.5 + b * 0.2 + i * 0.0001 for b in range(10) for i in range(10)]
    assert judge_pacing(events, headers_at=0.0, budget=1.0).verdict == PASS


def test_a_short_answer_in_one_burst_cannot_be_judged() -> None:
    # Five events at once after 2 s: a buffer, or a fast model after a slow first token.
    events = [2.0 + i * 0.001 for i in range(5)]
    j = judge_pacing(events, headers_at=0.0, budget=1.0)
    assert j.verdict == UNOBSERVABLE and "cannot" in j.evidence
    # A fast stream, all within the budget of the request: nothing to judge either.
    assert judge_pacing([0.01, 0.011, 0.012, 0.013], 0.0, 1.0).verdict == UNOBSERVABLE
    assert judge_pacing([0.5, 1.0], 0.0, 1.0).verdict == UNOBSERVABLE


def test_the_closing_events_of_an_llm_stream_do_not_count_as_buffering() -> None:
    # Content tokens paced, then finish chunk, usage and [DONE] together after a pause.
    events = paced(30, 0.5, 0.05) + [4.0, 4.0001, 4.0002]
    assert judge_pacing(events, 0.0, 1.0).verdict == PASS


def test_bursts_and_histogram() -> None:
    b = bursts([0.1, 0.105, 0.3, 1.0, 1.001, 1.002])
    assert [(x.size, round(x.silence_before, 3)) for x in b] == [(2, 0.1), (1, 0.195), (3, 0.7)]
    width, counts = histogram([0.0, 0.5, 1.0], bins=2)
    assert width == 0.5 and counts == [1, 2]
    assert format_histogram([1.0], bins=2).endswith("0 1")


# ---------------------------------------------------------------- keepalive
def test_a_silence_longer_than_the_budget_fails_with_the_gap_measured() -> None:
    # 3 events, silent 20 s (a tool call), one more: the case from the issue.
    events = [0.1, 0.2, 0.3, 20.3]
    j = judge_keepalive(0.01, events, events, [], 20.4, budget=15.0)
    assert j.verdict == FAIL
    assert "20.0 s of silence on the wire after event 3" in j.evidence and "+0.30 s → +20.30 s" in j.evidence


def test_a_pause_bridged_by_keepalive_comments_passes() -> None:
    events = [0.1, 0.2, 0.3, 40.3]
    comments = [15.3, 30.3]
    wire = sorted(events + comments)
    j = judge_keepalive(0.01, wire, events, comments, 40.4, budget=20.0)
    assert j.verdict == PASS, j.evidence
    assert "40.0 s after event 3" in j.evidence and "carried 2 keepalive(s)" in j.evidence


def test_no_pause_means_not_observable_never_pass() -> None:
    events = paced(50, 0.2, 0.05)
    j = judge_keepalive(0.01, events, events, [], 2.7, budget=20.0)
    assert j.verdict == UNOBSERVABLE and "not observable" in j.evidence
    # Comments seen, but no pause long enough to show they come often enough: still not a pass.
    j = judge_keepalive(0.01, [*events, 1.0], events, [1.0], 2.7, budget=20.0)
    assert j.verdict == UNOBSERVABLE and "1 comments seen" in j.evidence


def test_a_silence_before_the_headers_and_a_silence_until_observation_stopped_count() -> None:
    j = judge_keepalive(25.0, [25.1], [25.1], [], 25.2, budget=20.0)
    assert j.verdict == FAIL and "before the response headers" in j.evidence
    # Cut by --max-duration during a silence: the silence so far counts.
    j = judge_keepalive(0.01, [0.1], [0.1], [], 30.0, budget=20.0)
    assert j.verdict == FAIL and "until the end" in j.evidence


def test_wire_silences_are_named() -> None:
    s = wire_silences(0.5, [1.0, 2.0], [1.0, 2.0], 2.5)
    assert [(x.where, round(x.length, 2)) for x in s] == [
        ("before the response headers", 0.5),
        ("after the response headers", 0.5),
        ("after event 1", 1.0),
        ("after event 2 (until the end)", 0.5),
    ]


# ---------------------------------------------------------------- layers
def test_proxies_are_found_in_the_headers_or_declared() -> None:
    assert detect_proxy([(b"server", b"nginx/1.22.1")]).name == "nginx"  # type: ignore[union-attr]
    assert detect_proxy([(b"via", b"1.1 varnish")]).evidence == "via: 1.1 varnish"  # type: ignore[union-attr]
    assert detect_proxy([(b"cf-ray", b"abc")]).name == "cf-ray"  # type: ignore[union-attr]
    assert detect_proxy([(b"server", b"uvicorn")]) is None
    assert detect_proxy([(b"server", b"uvicorn")], declared=True).evidence == "declared with --behind-proxy"  # type: ignore[union-attr]


def test_buffering_hints_name_the_layer() -> None:
    gz = buffering_hints([(b"content-encoding", b"gzip")], detect_proxy([(b"server", b"nginx")]), "text/event-stream")
    assert "Content-Encoding: gzip" in gz[0] and "X-Accel-Buffering: no" in gz[1]
    plain = buffering_hints([], None, "text/event-stream")
    assert len(plain) == 1 and "flush each one" in plain[0]


# ---------------------------------------------------------------- metrics
PAGE = """# HELP vllm:num_requests_running Number of requests running.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="a"} 2.0
vllm:num_requests_running{engine="0",model_name="b"} 1.0
vllm:num_requests_waiting{model_name="a"} 7.0
tgi_batch_current_size 3
"""


def test_gauge_values_are_summed_over_matching_samples() -> None:
    assert gauge_value(PAGE, "vllm:num_requests_running") == 3.0
    assert gauge_value(PAGE, 'vllm:num_requests_running{model_name="b"}') == 1.0
    assert gauge_value(PAGE, "tgi_batch_current_size") == 3.0
    assert gauge_value(PAGE, "nope") is None
    assert parse_selector('a:b{x="1", y="2"}') == ("a:b", {"x": "1", "y": "2"})
