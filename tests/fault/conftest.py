"""Reports the fault matrix's size and known failures at the end of a run."""

from __future__ import annotations

from typing import Any


def pytest_terminal_summary(terminalreporter: Any) -> None:
    stats = terminalreporter.stats
    ran = [
        r for key in ("passed", "failed", "xfailed", "xpassed") for r in stats.get(key, ()) if "test_fault[" in r.nodeid
    ]
    if not ran:
        return
    from .known_failures import TABLE

    xfailed = sum(1 for r in stats.get("xfailed", ()) if "test_fault[" in r.nodeid)
    terminalreporter.write_line(
        f"fault matrix: {len(ran)} combinations run, {xfailed} known failures ({len(TABLE)} defects in "
        "tests/fault/known_failures.py)"
    )
