"""Run the peers' suites without and with the line, compare per test id, print the
summary, exit non-zero on any unexpected regression (``scripts/peer-suites.sh``).

Each suite runs under pytest-xdist, twice (``ASGI_STREAM_PEERS_LINE`` 0 and 1, the
same plugin loaded both times). A test that passes without the line and fails with
it is rerun alone once, without and with the line: it counts as a regression only if
it fails with the line again while passing without (otherwise it is reported as
flaky). A test of ``KNOWN_REGRESSIONS`` that passes with the line is rerun the same
way before it is reported as fixed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .allowlist import ALLOWED, DEFECTS, KNOWN_REGRESSIONS
from .compare import Comparison, Entry, Outcomes, compare, passed
from .suites import BUILD, SUITES, Suite, import_path, prepare

LINE_ENV = "ASGI_STREAM_PEERS_LINE"
OUTCOMES_ENV = "ASGI_STREAM_PEERS_OUTCOMES"


@dataclass
class Run:
    """One pytest run of a suite."""

    outcomes: dict[str, dict[str, str]]
    seconds: float
    returncode: int
    log: Path


def run_pytest(
    suite: Suite,
    folder: Path,
    *,
    line: bool,
    workers: int,
    timeout: float,
    nodeids: Sequence[str] = (),
    tag: str = "",
) -> Run:
    """Run the suite's pytest in ``folder`` (all of ``tests`` or just ``nodeids``)."""
    mode = "with" if line else "without"
    logs = BUILD / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    name = f"{suite.name}-{mode}{tag}"
    out, log = logs / f"{name}.json", logs / f"{name}.log"
    out.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "ASGI_STREAM_PEERS_"))}
    env.update({"PYTHONPATH": str(import_path()), LINE_ENV: "1" if line else "0", OUTCOMES_ENV: str(out)})
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "asgi_stream_inject",
        f"--timeout={timeout:g}",
        *suite.pytest_args,
    ]
    if workers > 1 and not nodeids:
        # Whole files per worker, in file order: the same order every run (some
        # peers' tests share module-level state such as one scope dict).
        command += ["-n", str(workers), "--dist", "loadfile"]
    command += list(nodeids) or ["tests"]
    started = time.monotonic()
    with log.open("w") as f:
        proc = subprocess.run(command, cwd=folder, env=env, stdout=f, stderr=subprocess.STDOUT, check=False)
    seconds = time.monotonic() - started
    if not out.exists():
        raise RuntimeError(f"{suite.name} ({mode} the line) recorded no outcomes (exit {proc.returncode}); see {log}")
    return Run(json.loads(out.read_text()), seconds, proc.returncode, log)


def run_suite(suite: Suite, *, workers: int, timeout: float) -> tuple[Comparison, Run, Run]:
    """Both runs of one suite, the comparison, and the confirming reruns."""
    folder = prepare(suite)
    without = run_pytest(suite, folder, line=False, workers=workers, timeout=timeout)
    with_line = run_pytest(suite, folder, line=True, workers=workers, timeout=timeout)
    result = compare(suite.name, without.outcomes, with_line.outcomes, ALLOWED, KNOWN_REGRESSIONS)
    doubtful = sorted(set(result.unexpected) | {nodeid for nodeid, _ in result.fixed})
    if doubtful:
        confirm(result, suite, folder, doubtful, timeout=timeout)
    return result, without, with_line


def confirm(result: Comparison, suite: Suite, folder: Path, nodeids: list[str], *, timeout: float) -> None:
    """Rerun ``nodeids`` alone, without and with the line, and keep only confirmed
    regressions and confirmed fixes."""
    again_without = run_pytest(suite, folder, line=False, workers=1, timeout=timeout, nodeids=nodeids, tag="-rerun")
    again_with = run_pytest(suite, folder, line=True, workers=1, timeout=timeout, nodeids=nodeids, tag="-rerun")
    still: list[str] = []
    for nodeid in result.unexpected:
        if passed(again_without.outcomes, nodeid) and not passed(again_with.outcomes, nodeid):
            still.append(nodeid)
        else:
            result.flaky.append(nodeid)
    result.unexpected = still
    fixed: list[tuple[str, Entry]] = []
    for nodeid, entry in result.fixed:
        if passed(again_with.outcomes, nodeid):
            fixed.append((nodeid, entry))
        else:
            result.known.append((nodeid, entry))
    result.fixed = fixed


def summary(results: Sequence[tuple[Comparison, Run, Run]]) -> str:
    """The summary table and the details of every difference."""
    head = ("suite", "tests", "passed without", "passed with", "allowed", "known", "unexpected", "fixed", "time")
    rows = [head]
    for c, without, with_line in results:
        rows.append(
            (
                f"{c.suite} {SUITES[c.suite].version}",
                str(c.tests),
                str(c.passed_without),
                str(c.passed_with),
                str(len(c.allowed)),
                str(len(c.known)),
                str(len(c.unexpected)),
                str(len(c.fixed)),
                f"{without.seconds:.0f}+{with_line.seconds:.0f} s",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    for c, _, with_line in results:
        lines += _grouped(c.suite, "allowed differences (ALLOWED)", c.allowed, lambda e: e.reason)
        lines += _grouped(c.suite, "known regressions (KNOWN_REGRESSIONS)", c.known, _why_known)
        lines += _grouped(c.suite, "FIXED: remove from KNOWN_REGRESSIONS", c.fixed, _why_known)
        lines += _grouped(
            c.suite, "ALLOW-LIST ENTRY TOO BROAD: it matches tests that pass both ways", c.broad, lambda e: e.reason
        )
        for title, items in (
            ("UNEXPECTED REGRESSIONS", [(n, _message(with_line.outcomes, n)) for n in c.unexpected]),
            ("STALE ENTRY (matches no differing test): remove it", [(", ".join(e.tests), e.reason) for e in c.stale]),
            ("flaky (failed with the line, passed when rerun alone)", [(n, "") for n in c.flaky]),
            ("passes only with the line", [(n, "") for n in c.improved]),
        ):
            if items:
                lines.append(f"\n{c.suite}: {title}: {len(items)}")
                lines.extend(f"  {n}" + (f"\n      {why}" if why else "") for n, why in items)
    return "\n".join(lines)


def _why_known(entry: Entry) -> str:
    defects = "".join(f"\n    defect {d}: {DEFECTS[d]}" for d in entry.defects)
    return entry.reason + defects


def _grouped(suite: str, title: str, items: Sequence[tuple[str, Entry]], why: Callable[[Entry], str]) -> list[str]:
    """``title: N`` then, per entry, its reason and the tests it matched."""
    if not items:
        return []
    lines = [f"\n{suite}: {title}: {len(items)}"]
    by_entry: dict[int, tuple[Entry, list[str]]] = {}
    for nodeid, entry in items:
        by_entry.setdefault(id(entry), (entry, []))[1].append(nodeid)
    for entry, nodeids in by_entry.values():
        lines.append(f"  - {why(entry)}")
        lines.extend(f"      {n}" for n in nodeids)
    return lines


def _message(outcomes: Outcomes, nodeid: str) -> str:
    result = outcomes.get(nodeid)
    if result is None:
        return "did not run with the line"
    return f"{result.get('outcome')}: {result.get('message', '')}"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="peer-suites", description=__doc__.split("\n\n")[0])
    parser.add_argument("suites", nargs="*", metavar="SUITE", help=f"any of {', '.join(SUITES)} (default: all)")
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers per run (default 2)")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per test before it fails (default 20)")
    parser.add_argument("--json", type=Path, default=BUILD / "report.json", help="where the report goes")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.suites) - set(SUITES))
    if unknown:
        parser.error(f"unknown suite(s) {', '.join(unknown)}; known: {', '.join(SUITES)}")
    started = time.monotonic()
    results = [run_suite(SUITES[name], workers=args.workers, timeout=args.timeout) for name in args.suites or SUITES]
    print(summary(results))
    ok = all(c.ok for c, _, _ in results)
    print(f"\npeer suites: {'OK' if ok else 'FAILED'} in {time.monotonic() - started:.0f} s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps([_report(c, w, x) for c, w, x in results], indent=1))
    return 0 if ok else 1


def _report(c: Comparison, without: Run, with_line: Run) -> dict[str, object]:
    return {
        "suite": c.suite,
        "version": SUITES[c.suite].version,
        "tests": c.tests,
        "passed_without": c.passed_without,
        "passed_with": c.passed_with,
        "seconds": [round(without.seconds, 1), round(with_line.seconds, 1)],
        "allowed": [n for n, _ in c.allowed],
        "known": [n for n, _ in c.known],
        "unexpected": c.unexpected,
        "fixed": [n for n, _ in c.fixed],
        "broad": [n for n, _ in c.broad],
        "stale": [list(e.tests) for e in c.stale],
        "flaky": c.flaky,
        "improved": c.improved,
        "ok": c.ok,
    }


if __name__ == "__main__":
    sys.exit(main())
