"""Fixtures for the benchmark smoke test."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run ``python -m benchmarks --smoke`` once into a temporary directory; its
    results.json (the output files are checked by the tests)."""
    for module in ("matplotlib", "psutil", "sse_starlette", "uvicorn"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"the bench extra is not installed ({module} missing)")
    out = tmp_path_factory.mktemp("bench-smoke")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    results["_out"] = str(out)
    return results
