"""The report: a case × target table, then the evidence of every failure (and skip)."""

from __future__ import annotations

import json
import textwrap

from .runner import SuiteResult

CELL = {"pass": "pass", "fail": "FAIL", "fault": "FAULT", "skip": "skip", "n/a": "—"}


def cell(status: str, fault: str | None, attempts: int) -> str:
    """The table cell of one result."""
    text = CELL.get(status, status)
    if status == "fault" or (status == "fail" and fault and fault != "target"):
        text += f"({fault})"
    if status == "pass" and attempts > 1:
        text += "*"
    return text


def table(suite: SuiteResult) -> str:
    """The case × target table as fixed-width text."""
    targets = [t.name for t in suite.targets]
    rows = []
    for c in suite.cases:
        row = [c.name]
        for t in targets:
            r = suite.get(c.name, t)
            row.append(cell(r.status, r.fault, r.attempts) if r else "")
        rows.append(row)
    header = ["case", *targets]
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(x.ljust(w) for x, w in zip(row, widths)) for row in rows]
    return "\n".join(out)


def render(suite: SuiteResult, *, verbose: bool = False) -> str:
    """The full text report."""
    parts = [table(suite), ""]
    counts: dict[str, int] = {}
    for r in suite.results:
        counts[r.status] = counts.get(r.status, 0) + 1
    summary = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("pass", "fail", "fault", "skip"))
    parts.append(f"{summary} in {suite.duration:.1f} s")
    parts.append(
        "(pass* = passed on retry; FAIL(server) = failure blamed on the server; FAULT(server) = the app "
        "did its part and a diagnosed server/proxy fault kept the case from passing; — = not applicable)"
    )
    for t in suite.targets:
        if t.status != "ok":
            parts.append(f"target {t.name}: {t.status}: {_short(t.reason, 300)}")
    failures = suite.failed
    if failures:
        parts += ["", "Failures:"]
        for r in failures:
            who = f" [{r.fault}'s fault]" if r.fault else ""
            parts.append(f"- {r.case} @ {r.target}{who}:")
            parts.append(textwrap.indent(textwrap.fill(_short(r.evidence, 1500), 100), "    "))
    faults = suite.faults
    if faults:
        parts += ["", "Server / proxy faults (diagnosed; the app did its part):"]
        for r in faults:
            parts.append(f"- {r.case} @ {r.target} [{r.fault}]:")
            parts.append(textwrap.indent(textwrap.fill(_short(r.evidence, 1500), 100), "    "))
    skips = sorted({(r.case, r.evidence) for r in suite.results if r.status == "skip"})
    if skips and verbose:
        parts += ["", "Skipped:"]
        parts += [f"- {c}: {e}" for c, e in skips]
    if verbose:
        parts += ["", "Evidence:"]
        for r in suite.results:
            if r.status == "pass":
                parts.append(f"- {r.case} @ {r.target} ({r.duration:.2f} s): {r.evidence}")
    return "\n".join(parts)


def to_json(suite: SuiteResult) -> str:
    """The machine-readable report."""
    return json.dumps(suite.as_dict(), indent=2, ensure_ascii=False)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
