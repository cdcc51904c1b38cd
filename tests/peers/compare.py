"""Compare a peer suite's two runs (without and with the line) per test id, against
the allow-list and the known regressions."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

#: ``{node id: {"outcome": "passed" | "failed" | "error" | "skipped" | ..., "message": str}}``
Outcomes = Mapping[str, Mapping[str, str]]


@dataclass(frozen=True)
class Entry:
    """Tests of one suite whose outcome with the line differs, and why.

    ``tests`` are pytest node ids; ``*`` matches any run of characters, nothing
    else is special (brackets are literal). ``defects`` names the core defects an
    entry of ``KNOWN_REGRESSIONS`` waits for.
    """

    suite: str
    tests: tuple[str, ...]
    reason: str
    defects: tuple[str, ...] = ()


@lru_cache(maxsize=512)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


def matches(pattern: str, nodeid: str) -> bool:
    """Whether ``nodeid`` matches ``pattern`` (whole id; ``*`` is the only wildcard)."""
    return _compiled(pattern).fullmatch(nodeid) is not None


def entry_matches(entry: Entry, nodeid: str) -> bool:
    """Whether any pattern of ``entry`` matches ``nodeid``."""
    return any(matches(p, nodeid) for p in entry.tests)


def passed(outcomes: Outcomes, nodeid: str) -> bool:
    """Whether the test ran and passed."""
    result = outcomes.get(nodeid)
    return result is not None and result.get("outcome") == "passed"


@dataclass
class Comparison:
    """The verdict for one suite."""

    suite: str
    tests: int
    passed_without: int
    passed_with: int
    allowed: list[tuple[str, Entry]] = field(default_factory=list)
    known: list[tuple[str, Entry]] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    #: A test of KNOWN_REGRESSIONS that passes with the line: remove it from the table.
    fixed: list[tuple[str, Entry]] = field(default_factory=list)
    #: An allow-list entry matching a test that passes both ways: narrow it.
    broad: list[tuple[str, Entry]] = field(default_factory=list)
    #: An entry that matches no test whose outcome differs: remove it.
    stale: list[Entry] = field(default_factory=list)
    #: Failed without the line, passes with it (reported, never an error).
    improved: list[str] = field(default_factory=list)
    #: Unexpected regressions that passed when rerun alone (reported, not an error).
    flaky: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No unexpected regression, and both tables exactly right."""
        return not (self.unexpected or self.fixed or self.broad or self.stale)


def compare(
    suite: str,
    without: Outcomes,
    with_line: Outcomes,
    allowed: Sequence[Entry],
    known: Sequence[Entry],
) -> Comparison:
    """Every test that passes without the line must pass with it, unless an entry of
    ``allowed`` (a reasoned difference) or ``known`` (a core defect awaiting its fix)
    names it; each entry must match only tests whose outcome differs."""
    allowed = [e for e in allowed if e.suite == suite]
    known = [e for e in known if e.suite == suite]
    ids = sorted(set(without) | set(with_line))
    result = Comparison(
        suite=suite,
        tests=len(ids),
        passed_without=sum(passed(without, i) for i in ids),
        passed_with=sum(passed(with_line, i) for i in ids),
    )
    used: set[int] = set()
    for nodeid in ids:
        before, after = passed(without, nodeid), passed(with_line, nodeid)
        if before and not after:
            entry = _first(allowed, nodeid) or _first(known, nodeid)
            if entry is None:
                result.unexpected.append(nodeid)
            else:
                used.add(id(entry))
                (result.allowed if entry in allowed else result.known).append((nodeid, entry))
        elif not before and after:
            result.improved.append(nodeid)
        if after:
            for entry in known:
                if entry_matches(entry, nodeid):
                    used.add(id(entry))
                    result.fixed.append((nodeid, entry))
            if before:
                for entry in allowed:
                    if entry_matches(entry, nodeid):
                        used.add(id(entry))
                        result.broad.append((nodeid, entry))
    result.stale = [e for e in (*allowed, *known) if id(e) not in used]
    return result


def _first(entries: Iterable[Entry], nodeid: str) -> Entry | None:
    return next((e for e in entries if entry_matches(e, nodeid)), None)
