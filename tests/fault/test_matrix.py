"""The fault matrix: every generator kind × await point × injected event, on the fake
server under virtual time, on trio and asyncio. One test id per combination.

Known failures of today's core are listed in :mod:`tests.fault.known_failures` and
applied as strict xfails that must show exactly their entry's symptoms.
"""

from __future__ import annotations

import pytest

from .kinds import KINDS
from .known_failures import known, stale, unexplained
from .matrix import BACKENDS, EVENTS, POINTS, combinations, run_combination

COMBINATIONS = [(backend, kind, point, event) for backend in BACKENDS for kind, point, event in combinations()]


class KnownFailureSeen(Exception):
    """The combination failed exactly as its known-failure entries say."""


def _params() -> list[object]:
    params = []
    for combo in COMBINATIONS:
        entries = known(*combo)
        marks = []
        if entries:
            reason = "; ".join(f"[{e.key}] {e.where}" for e in entries)
            marks.append(pytest.mark.xfail(strict=True, raises=KnownFailureSeen, reason=reason))
        params.append(pytest.param(*combo, marks=marks, id="-".join(combo)))
    return params


@pytest.mark.parametrize(("backend", "kind", "point", "event"), _params())
def test_fault(backend: str, kind: str, point: str, event: str) -> None:
    report = run_combination(kind, point, event, backend)
    entries = known(backend, kind, point, event)
    if not entries:
        assert not report.violations, report.explain()
        return
    if not report.violations:
        return  # XPASS (strict): the defect is fixed here; remove the combination from the table
    new = unexplained(entries, report.violations)
    assert not new, "failures no known-failure entry explains:\n" + report.explain()
    fixed = stale(entries, report.violations)
    assert not fixed, f"fixed here, remove from known_failures.TABLE: {[k.key for k in fixed]}\n" + report.explain()
    raise KnownFailureSeen("\n".join([*(e.reason for e in entries), "", report.explain()]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS)
def test_baseline(backend: str, kind: str) -> None:
    """Nothing injected: every kind streams its three tokens, ends cleanly, reaches every point."""
    report = run_combination(kind, "none", "none", backend)
    assert not report.violations, report.explain()
    assert report.run is not None
    reached = {p for p, _ in report.run.seen.points}
    assert reached == set(POINTS), f"points never reached: {set(POINTS) - reached}"


def test_matrix_size() -> None:
    """Every (kind, point, event) is covered, except those that cannot happen."""
    per_backend = len(COMBINATIONS) // len(BACKENDS)
    print(
        f"\nfault matrix: {per_backend} combinations per backend ({len(KINDS)} kinds × {len(POINTS)} points × "
        f"{len(EVENTS)} events, applicable ones), {len(COMBINATIONS)} runs on {', '.join(BACKENDS)}"
    )
    assert per_backend == 1008
