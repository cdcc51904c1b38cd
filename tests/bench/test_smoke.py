"""``python -m benchmarks --smoke`` runs every workload against every target and
writes the report: the benchmark code cannot rot unnoticed. Speed is not asserted."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from benchmarks.targets import TARGETS

TARGET_KEYS = {t.key for t in TARGETS}


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def test_writes_table_json_and_chart(smoke_results: dict[str, Any]) -> None:
    out = Path(smoke_results["_out"])
    table = (out / "results.md").read_text()
    assert smoke_results["meta"]["date"] in table
    assert smoke_results["meta"]["machine"]["cpu"] in table
    for t in TARGETS:
        assert t.label in table
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_target_has_throughput_and_ttfb_figures(smoke_results: dict[str, Any]) -> None:
    skipped = set(smoke_results["meta"]["skipped_kinds"])
    kinds = [k for k in smoke_results["meta"]["mode"]["kinds"] if k not in skipped]
    assert kinds and "uvicorn-h11" in kinds
    for workload, metric in (("throughput", "events_per_s"), ("ttfb", "p50_us")):
        for kind in kinds:
            per_target = smoke_results[workload][kind]
            assert set(per_target) == TARGET_KEYS, (workload, kind)
            for key, runs in per_target.items():
                assert runs and all(_number(r[metric]) and r[metric] > 0 for r in runs), (workload, kind, key)


def test_every_target_has_slow_stream_figures(smoke_results: dict[str, Any]) -> None:
    (per_n,) = smoke_results["slow"].values()
    for n, per_target in per_n.items():
        assert set(per_target) == TARGET_KEYS
        for key, runs in per_target.items():
            for r in runs:
                assert "error" not in r, (n, key, r.get("error"))
                assert r["received"] > 0 and _number(r["p99_ms"]), (n, key)
                assert _number(r["server_cpu"]) and r["rss_mb"] > 0, (n, key)


def test_every_target_has_disconnect_figures(smoke_results: dict[str, Any]) -> None:
    (records,) = smoke_results["disconnect"].values()
    seen = {(r["target"], r["generator"]) for r in records}
    assert seen == {(k, g) for k in TARGET_KEYS for g in ("async", "sync")}
    # An async generator is closed by every target once the client is gone (the
    # figure exists); asgi-stream also reports when its CancelToken was set.
    for r in records:
        if r["generator"] == "async":
            assert _number(r["closed_ms"]), r
        if r["target"].startswith("asgi-stream"):
            assert _number(r["token_ms"]), r


def test_goals_are_evaluated(smoke_results: dict[str, Any]) -> None:
    goals = smoke_results["goals"]
    assert all(g["met"] in (True, False, None) and g["measured"] for g in goals)
    # Throughput, disconnect and TTFB goals always get a verdict.
    for topic in ("per-token", "coalescing", "disconnect", "TTFB"):
        assert any(g["goal"].startswith(topic) and g["met"] is not None for g in goals), topic


def test_side_by_side_table_has_a_column_per_target(smoke_results: dict[str, Any]) -> None:
    table = (Path(smoke_results["_out"]) / "results.md").read_text()
    section = table.split("## Side by side", 1)[1].split("\n## ", 1)[0]
    header = next(line for line in section.splitlines() if line.startswith("|"))
    assert [cell.strip() for cell in header.strip("|").split("|")][1:] == [t.label for t in TARGETS]


def test_the_line_closes_fastapis_sync_generators(smoke_results: dict[str, Any]) -> None:
    """FastAPI's own EventSourceResponse leaves a sync generator open after a disconnect;
    with StreamMiddleware it is closed after its blocking step (within the smoke's timeout)."""
    (records,) = smoke_results["disconnect"].values()
    line = [r for r in records if r["target"] == "fastapi-line" and r["generator"] == "sync"]
    assert line and all(_number(r["closed_ms"]) for r in line), line
