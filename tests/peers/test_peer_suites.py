"""The gate itself: Starlette's and sse-starlette's own suites, without and with the
line (scripts/peer-suites.sh; about three minutes, most of it the peers' own tests)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.peers.allowlist import ALLOWED, DEFECTS, KNOWN_REGRESSIONS
from tests.peers.suites import REPO, SUITES


def test_every_entry_has_a_reason_a_known_suite_and_named_defects() -> None:
    for entry in (*ALLOWED, *KNOWN_REGRESSIONS):
        assert entry.suite in SUITES and entry.tests and entry.reason.strip()
    for entry in KNOWN_REGRESSIONS:
        assert entry.defects and all(d in DEFECTS for d in entry.defects)
    for entry in ALLOWED:
        assert not entry.defects


@pytest.mark.timeout(1500)
def test_peer_suites_pass_with_the_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.peers.runner"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1400,
        check=False,
    )
    print(proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stdout[-20000:] + proc.stderr[-5000:]
