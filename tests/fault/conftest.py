"""Reports the fault matrix's size and known failures, and the churn figures, at the end
of a run."""

from __future__ import annotations

import sys
from typing import Any


def pytest_terminal_summary(terminalreporter: Any) -> None:
    stats = terminalreporter.stats
    reports = [r for key in ("passed", "failed", "xfailed", "xpassed") for r in stats.get(key, ())]
    ran = [r for r in reports if "test_fault[" in r.nodeid]
    if ran:
        from .known_failures import TABLE

        xfailed = sum(1 for r in stats.get("xfailed", ()) if "test_fault[" in r.nodeid)
        terminalreporter.write_line(
            f"fault matrix: {len(ran)} combinations run, {xfailed} known failures ({len(TABLE)} defects in "
            "tests/fault/known_failures.py)"
        )
    module = sys.modules.get(f"{__package__}.test_churn")
    figures = getattr(module, "FIGURES", None)
    if figures:
        connections = sum(f["connections"] for f in figures)
        seconds = sum(f["seconds"] for f in figures)
        clean = [f for f in figures if f["clean"]]
        terminalreporter.write_line(
            f"churn: {connections} aborted connections on {len(figures)} combinations in {seconds:.1f} s "
            f"({len(clean)} clean: {sum(f['connections'] for f in clean)} connections, "
            f"{sum(f['seconds'] for f in clean):.1f} s, worst settle {max((f['settle'] for f in clean), default=0):.2f} s, "
            f"max RSS growth {max((f['rss_growth'] for f in clean), default=0) / 2**20:.1f} MiB)"
        )
