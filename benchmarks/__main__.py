"""``python -m benchmarks [--quick | --smoke] [--out DIR] [--only WORKLOAD ...]``

Runs every workload against every target and writes results.json, results.md and
chart.png. The full run writes to benchmarks/results/; ``--quick`` and ``--smoke``
write to benchmarks/results/raw/<mode>/ (not committed) unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import machine, report
from .config import MODES, Mode
from .servers import KIND_BY_KEY, REPO_ROOT, SERVER_KINDS, start_all, stop_all
from .targets import TARGETS, Target
from .workloads import disconnect, slow, throughput, ttfb

RESULTS = Path(__file__).resolve().parent / "results"
DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
WORKLOADS = ("throughput", "slow", "disconnect", "ttfb")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[1])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", const="quick", dest="mode", help="a few minutes")
    size.add_argument("--smoke", action="store_const", const="smoke", dest="mode", help="seconds; CI")
    p.add_argument("--out", type=Path, help="output directory")
    p.add_argument("--only", nargs="+", choices=WORKLOADS, help="run only these workloads")
    p.add_argument("--targets", nargs="+", choices=[t.key for t in TARGETS], help="run only these targets")
    p.add_argument("--kinds", nargs="+", choices=[k.key for k in SERVER_KINDS], help="run only these server kinds")
    p.add_argument("--render", type=Path, metavar="RESULTS_JSON", help="only re-write the report of an earlier run")
    p.add_argument("--logs", type=Path, help="keep server logs here (default: a temporary directory)")
    p.set_defaults(mode="full")
    return p.parse_args(argv)


def run(
    mode: Mode,
    workloads: tuple[str, ...],
    targets: list[Target],
    place: machine.Placement,
    log_dir: Path,
    progress: Any,
) -> dict[str, Any]:
    """Run the selected workloads; returns the per-run records by workload."""
    machine.pin(place.client_core)
    cores = (place.server_core, place.client_core)
    available = {k.key for k in SERVER_KINDS if k.available()}
    skipped = sorted({k for k in (*mode.kinds, *mode.slow_kinds, *mode.disconnect_kinds) if k not in available})
    for k in skipped:
        progress(f"server kind {k} is not installed here: skipped")
    results: dict[str, Any] = {w: {} for w in workloads}
    shared_slow = "slow" in workloads and not mode.slow_fresh_server
    order = [k.key for k in SERVER_KINDS if k.key in available]
    for kind_key in order:
        kind = KIND_BY_KEY[kind_key]
        wants_tp = kind_key in mode.kinds and ("throughput" in workloads or "ttfb" in workloads)
        wants_disc = kind_key in mode.disconnect_kinds and "disconnect" in workloads and not kind.http2
        wants_slow = shared_slow and kind_key in mode.slow_kinds and not kind.http2
        if not (wants_tp or wants_disc or wants_slow):
            continue
        servers = start_all(targets, kind, place.server_core, log_dir)
        try:
            if kind_key in mode.kinds and "throughput" in workloads:
                results["throughput"][kind_key] = throughput.measure(
                    servers, mode.tokens, mode.reps, place.client_core, progress
                )
            if kind_key in mode.kinds and "ttfb" in workloads:
                results["ttfb"][kind_key] = ttfb.measure(
                    servers, mode.ttfb_requests, mode.reps, place.client_core, progress
                )
            if wants_disc:
                results["disconnect"][kind_key] = disconnect.measure(
                    servers,
                    mode.disconnect_blocks,
                    mode.disconnect_trials,
                    mode.disconnect_reps,
                    mode.disconnect_timeout,
                    place.client_core,
                    progress,
                )
            if wants_slow:
                results["slow"][kind_key] = slow.measure(
                    targets,
                    kind,
                    mode.slow_streams,
                    mode.slow_reps,
                    mode.slow_interval,
                    mode.slow_warmup,
                    mode.slow_duration,
                    cores,
                    log_dir,
                    progress,
                    servers=servers,
                )
        finally:
            stop_all(servers)
    if "slow" in workloads and mode.slow_fresh_server:
        for kind_key in mode.slow_kinds:
            if kind_key not in available:
                continue
            results["slow"][kind_key] = slow.measure(
                targets,
                KIND_BY_KEY[kind_key],
                mode.slow_streams,
                mode.slow_reps,
                mode.slow_interval,
                mode.slow_warmup,
                mode.slow_duration,
                cores,
                log_dir,
                progress,
            )
    results["skipped_kinds"] = skipped
    return results


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    if args.render:
        results = report.load(args.render)
        out = args.out or args.render.parent
        report.write(results, out)
        if out == RESULTS:
            report.update_doc(results, DOC, "../benchmarks/results/chart.png")
        print(f"wrote {out / 'results.md'}", file=sys.stderr)
        return 0
    mode = MODES[args.mode]
    if args.kinds:
        keep = set(args.kinds)
        mode = dataclasses.replace(
            mode,
            kinds=tuple(k for k in mode.kinds if k in keep),
            slow_kinds=tuple(k for k in mode.slow_kinds if k in keep),
            disconnect_kinds=tuple(k for k in mode.disconnect_kinds if k in keep),
        )
    out = args.out or (RESULTS if mode.name == "full" else RESULTS / "raw" / mode.name)
    workloads = tuple(w for w in WORKLOADS if not args.only or w in args.only)
    targets = [t for t in TARGETS if not args.targets or t.key in args.targets]
    started = time.monotonic()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    desc = machine.describe()
    place = machine.placement()

    def progress(msg: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    command = "python -m benchmarks" + ("" if mode.name == "full" else f" --{mode.name}")
    progress(f"{command}: {', '.join(workloads)} → {out}")
    with tempfile.TemporaryDirectory(prefix="asgi-stream-bench-") as tmp:
        log_dir = args.logs or Path(tmp)
        log_dir.mkdir(parents=True, exist_ok=True)
        data = run(mode, workloads, targets, place, log_dir, progress)
    results = {
        "meta": {
            "date": date,
            "command": command,
            "mode": dataclasses.asdict(mode),
            "machine": desc,
            "source": machine.source_state(str(REPO_ROOT)),
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
            "placement": dataclasses.asdict(place),
            "duration_s": time.monotonic() - started,
            "skipped_kinds": data.pop("skipped_kinds"),
            "targets": [dataclasses.asdict(t) for t in targets],
        },
        **data,
    }
    report.write(results, out)
    if out == RESULTS and report.update_doc(results, DOC, "../benchmarks/results/chart.png"):
        progress(f"updated the results section of {DOC}")
    progress(f"done: {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
