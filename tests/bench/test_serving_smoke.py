"""``scripts/gpu-check.sh``'s CPU dry run — ``python -m benchmarks.serving --smoke``
(the tiny model, the demo only) — runs and writes its report, and the report renders
the three-server comparison from a stored result: the serving benchmark cannot rot
unnoticed. Speed is not asserted."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.serving import report

REPO = Path(__file__).resolve().parents[2]


def test_gpu_check_dry_run_writes_the_serving_report(tmp_path: Path) -> None:
    for module in ("matplotlib", "psutil"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"the bench extra is not installed ({module} missing)")
    env = dict(os.environ, OUT=str(tmp_path), GPU_CHECK_FORCE_CPU="1", GPU_CHECK_SECONDS="200")
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu-check.sh")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "the CUDA comparison is skipped" in (tmp_path / "gpu-check.txt").read_text()
    results = json.loads((tmp_path / "serving.json").read_text())
    assert {run["concurrency"] for run in results["runs"]} == {1, 2}
    assert all(not s["error"] and s["tokens"] > 0 for run in results["runs"] for s in run["streams"])
    assert (tmp_path / "serving.png").stat().st_size > 0
    assert "| 2 | asgi-stream demo" in (tmp_path / "serving.md").read_text()


def _run(server: str, conc: int, wall: float, ttft: float, text: str) -> dict[str, object]:
    streams = [
        {"index": i, "ttft_s": ttft, "tokens": 10, "tokens_per_s": 5.0, "finish": "length", "error": None, "text": text}
        for i in range(conc)
    ]
    return {"server": server, "round": 0, "concurrency": conc, "wall_s": wall, "streams": streams}


def test_the_report_compares_the_three_servers(tmp_path: Path) -> None:
    runs = [
        _run(s, c, wall, ttft, "same")
        for s, wall, ttft in [("asgi-stream", 1.0, 0.1), ("serve-cb", 2.0, 0.3), ("serve", 4.0, 1.0)]
        for c in (1, 8)
    ]
    runs[-1]["streams"][0]["text"] = "different"  # type: ignore[index]
    results = {"runs": runs, "servers": {"serve": "transformers serve"}, "threads": 1, "max_tokens": 10}
    report.write(results, tmp_path)
    md = (tmp_path / "serving.md").read_text()
    assert "| 8 | asgi-stream | 80.0 |" in md
    assert "aggregate tok/s at 8 ≥ batched peer | met: 80.0 vs 40.0" in md
    assert "TTFT p99 at 8 ≤ batched peer (s) | met: 0.10 vs 0.30" in md
    assert "transformers serve: no" in md and "asgi-stream: yes" in md
