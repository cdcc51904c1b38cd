"""The fault matrix's known failures on today's core: ONE table, applied as strict xfails.

Each entry is one defect: where it lives, which invariant breaks and why, the
violation lines it explains (``signature``), and the combinations it breaks (``rows``
of space-separated kinds, events and points; ``point@backend`` limits a point to one
backend). A combination the table names must fail with exactly its entries' lines:

* it passes → XPASS (strict): the defect is fixed, remove its rows;
* one of its entries explains none of its lines → that defect is gone there: remove it;
* a line no entry explains → a new failure (or a fix that changed the symptom).

So every fix shows up as a test to update, never as silence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class KnownFailure:
    """One defect of the core and the combinations it breaks."""

    key: str
    where: str
    diagnosis: str
    #: Regexes over violation lines: the lines this defect explains.
    signature: tuple[str, ...]
    #: (kinds, events, points) rows, space-separated; a point may carry ``@trio`` / ``@asyncio``.
    #: For the churn suite: (kinds, leave modes, servers).
    rows: tuple[tuple[str, str, str], ...]
    #: (kinds, leave modes, servers) rows of the churn test on real servers.
    churn: tuple[tuple[str, str, str], ...] = ()
    _compiled: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", tuple(re.compile(s) for s in self.signature))

    def matches(self, backend: str, kind: str, point: str, event: str, *, suite: str = "matrix") -> bool:
        """Whether this defect breaks that combination."""
        for kinds, events, points in self.rows if suite == "matrix" else self.churn:
            if kind in kinds.split() and event in events.split():
                for spec in points.split():
                    name, _, only = spec.partition("@")
                    if name == point and (not only or only == backend):
                        return True
        return False

    def explains(self, line: str) -> bool:
        """Whether a violation line is a symptom of this defect."""
        return any(p.search(line) for p in self._compiled)

    @property
    def reason(self) -> str:
        """The xfail reason: the defect, where, and why."""
        return f"[{self.key}] {self.where}: {self.diagnosis}"


#: Empty: every combination of the matrix and of the churn test holds every invariant.
#: A defect found later gets its entry here (with its rows) until it is fixed.
TABLE: tuple[KnownFailure, ...] = ()


def known(backend: str, kind: str, point: str, event: str, *, suite: str = "matrix") -> list[KnownFailure]:
    """The defects the table says break this combination (churn: ``known("", kind,
    server, mode, suite="churn")``)."""
    return [k for k in TABLE if k.matches(backend, kind, point, event, suite=suite)]


def unexplained(entries: Iterable[KnownFailure], violations: Iterable[str]) -> list[str]:
    """Violation lines none of ``entries`` explains."""
    entries = list(entries)
    return [v for v in violations if not any(k.explains(v) for k in entries)]


def stale(entries: Iterable[KnownFailure], violations: Iterable[str]) -> list[KnownFailure]:
    """Entries that explain none of the violations (their defect is gone here)."""
    violations = list(violations)
    return [k for k in entries if not any(k.explains(v) for v in violations)]
