"""Instructions per token of each streaming layer, counted by callgrind.

``python -m benchmarks.instructions [--tokens N] [LABEL-SUBSTRING ...]``

Seconds on a shared two-core machine move with whatever else runs; instruction counts
do not (the same binary, inputs and environment give the same count, loaded or not).
Each layer of :mod:`benchmarks.hotpath` streams ``N`` tokens and then ``2 N`` tokens
in-process under ``valgrind --tool=callgrind``; the difference divided by ``N`` is the
cost of one token, start-up and imports excluded. Use it to compare two versions of
the code: a change of a few percent shows as such, where timings cannot.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _child(label: str, tokens: int) -> None:
    from . import hotpath

    factory = dict(hotpath.variants())[label]
    app = factory()
    asyncio.run(hotpath._run_once(app, 200))  # warm-up: imports and caches, counted in both runs
    asyncio.run(hotpath._run_once(app, tokens))


def count(label: str, tokens: int) -> int:
    """Instructions callgrind counts for one process streaming ``tokens`` through ``label``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=str(ROOT))
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable]
        cmd += ["-m", "benchmarks.instructions", "--child", label, "--tokens", str(tokens)]
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        match = re.search(r"Collected : (\d+)", done.stderr)
        if done.returncode != 0 or match is None:
            raise RuntimeError(f"callgrind failed for {label!r}:\n{done.stderr[-2000:]}")
        return int(match.group(1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions", description=__doc__.split("\n")[0])
    parser.add_argument("labels", nargs="*", help="only layers whose label contains one of these")
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.tokens)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    from . import hotpath

    labels = [label for label, _ in hotpath.variants() if "for scale" not in label]
    if args.labels:
        labels = [label for label in labels if any(part in label for part in args.labels)]
    n = args.tokens
    print(f"instructions per token (callgrind; {n} and {2 * n} tokens, the difference / {n})")
    for label in labels:
        per_token = (count(label, 2 * n) - count(label, n)) / n
        print(f"{per_token:>10,.0f}  {label.strip()}", flush=True)


if __name__ == "__main__":
    main()
