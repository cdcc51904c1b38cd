"""Running client processes from the harness."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from .servers import REPO_ROOT


def client_command(name: str, args: dict[str, Any]) -> list[str]:
    """The command line of client ``benchmarks.clients.<name>`` with JSON ``args``."""
    return [sys.executable, "-m", f"benchmarks.clients.{name}", json.dumps(args)]


def client_env() -> dict[str, str]:
    """Environment for client processes (the repository importable)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def run_client(name: str, args: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    """Run a client to completion; its JSON result (last stdout line)."""
    proc = subprocess.run(
        client_command(name, args),
        cwd=REPO_ROOT,
        env=client_env(),
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"client {name} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-3000:]}")
    return dict(json.loads(proc.stdout.decode().strip().splitlines()[-1]))


def rotate(items: list[Any], k: int) -> list[Any]:
    """``items`` rotated left by ``k`` (each repetition starts with another target)."""
    if not items:
        return items
    k %= len(items)
    return items[k:] + items[:k]
