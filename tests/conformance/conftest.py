"""Fixtures of the conformance tests: broken targets for proving that cases fail."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from broken_h2 import BrokenH2Server  # noqa: E402

from conformance.targets import Target, start_target  # noqa: E402


def broken_env(flaws: set[str]) -> dict[str, str]:
    """The environment that makes a server load ``broken_app`` with these flaws."""
    path = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {"CONFORMANCE_FLAWS": ",".join(sorted(flaws)), "PYTHONPATH": path}


@pytest.fixture
def broken_target() -> Iterator[Callable[[str, set[str]], Target]]:
    """Start a built-in target serving ``broken_app`` with the given flaws."""
    started: list[Target] = []

    def start(name: str, flaws: set[str]) -> Target:
        t = start_target(name, "broken_app:app", env=broken_env(flaws))
        started.append(t)
        return t

    yield start
    for t in started:
        t.stop()


@pytest.fixture
def broken_h2() -> Iterator[Callable[[set[str]], Target]]:
    """Start the broken raw HTTP/2 server with the given flaws."""
    servers: list[BrokenH2Server] = []

    def start(flaws: set[str]) -> Target:
        s = BrokenH2Server(flaws)
        servers.append(s)
        return s.target()

    yield start
    for s in servers:
        s.close()
