"""The report as one self-contained HTML page (no external assets), to attach to a
bug report: the case × target table, then each result's verdict, evidence and, for
every response it observed, an inline SVG plot of when the headers, each body piece,
each event and each comment arrived."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from . import __version__
from .report import cell
from .runner import SuiteResult
from .timeline import Timeline

STATUS_CLASS = {"pass": "pass", "fail": "fail", "fault": "fault", "skip": "skip", "n/a": "na"}
CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d1d1f;max-width:1100px}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 8px} h3{font-size:14px;margin:18px 0 4px}
table{border-collapse:collapse;margin:8px 0} th,td{border:1px solid #d0d0d5;padding:3px 8px;text-align:left}
th{background:#f3f3f6;font-weight:600} td a{color:inherit;text-decoration:none;display:block}
.pass{background:#e3f5e6}.fail{background:#fbe0e0;font-weight:600}.fault{background:#fdf0d6}
.skip{background:#eef0f4;color:#555}.na{color:#aaa}
.meta{color:#555} .ev{white-space:pre-wrap;font:12px/1.4 ui-monospace,Menlo,Consolas,monospace;
background:#f7f7f9;border:1px solid #e3e3e8;padding:6px 8px;margin:4px 0}
.result{border-top:1px solid #e3e3e8;padding-top:6px} .tag{display:inline-block;padding:0 6px;border-radius:3px}
svg{display:block;margin:4px 0 10px} .legend span{margin-right:14px}
"""
WIDTH, LEFT, RIGHT = 760, 74, 16
LANES = (("wire", "body pieces", "#6b7280"), ("events", "events", "#2563eb"), ("comments", "comments", "#d97706"))


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _anchor(case: str, target: str) -> str:
    return "r-" + "".join(ch if ch.isalnum() else "-" for ch in f"{case}-{target}")


def _nice_step(span: float, ticks: int = 8) -> float:
    raw = span / max(ticks, 1)
    if raw <= 0:
        return 1.0
    mag = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 5.0):
        if raw <= m * mag:
            return m * mag
    return 10.0 * mag


def plot(tl: Timeline, gauge: Sequence[Sequence[float]] = ()) -> str:
    """An inline SVG of one response: one lane each for the body pieces on the wire
    (tick height grows with the size), the events and the comments; the headers, the
    end (or where observation stopped) as vertical lines."""
    points = [t for t, _ in tl.chunks] + tl.events + tl.comments + [tl.end_at]
    if tl.headers_at is not None:
        points.append(tl.headers_at)
    span = max([p for p in points if p is not None] + [1e-3])
    lane_h, top = 22, 8
    height = top + lane_h * len(LANES) + 24
    inner = WIDTH - LEFT - RIGHT

    def x(t: float) -> float:
        return LEFT + inner * (t / span)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="arrivals of {_e(tl.label)}">'
    ]
    out.append(f'<rect x="{LEFT}" y="{top}" width="{inner}" height="{lane_h * len(LANES)}" fill="#fafafa"/>')
    biggest = max([n for _, n in tl.chunks] + [1])
    for i, (key, name, color) in enumerate(LANES):
        y0 = top + i * lane_h
        out.append(
            f'<text x="{LEFT - 6}" y="{y0 + lane_h / 2 + 4}" font-size="11" text-anchor="end" fill="#444">{name}</text>'
        )
        if key == "wire":
            segs = []
            for t, n in tl.chunks:
                h = 3 + (lane_h - 6) * math.log1p(n) / math.log1p(biggest)
                segs.append(f"M{x(t):.1f} {y0 + lane_h - 2:.1f}v{-h:.1f}")
        else:
            segs = [f"M{x(t):.1f} {y0 + 3}v{lane_h - 6}" for t in (tl.events if key == "events" else tl.comments)]
        if segs:
            out.append(f'<path d="{"".join(segs)}" stroke="{color}" stroke-width="1.2" fill="none"/>')
    bottom = top + lane_h * len(LANES)
    if tl.headers_at is not None:
        hx = x(tl.headers_at)
        out.append(
            f'<line x1="{hx:.1f}" y1="{top}" x2="{hx:.1f}" y2="{bottom}" stroke="#16a34a" stroke-dasharray="3 2"/>'
        )
    ex = x(tl.end_at)
    end_color = "#dc2626" if tl.cut or not tl.complete else "#111"
    out.append(f'<line x1="{ex:.1f}" y1="{top}" x2="{ex:.1f}" y2="{bottom}" stroke="{end_color}" stroke-width="1.5"/>')
    step = _nice_step(span)
    k = 0
    while k * step <= span * 1.0001:
        tx = x(k * step)
        label = f"{k * step:g}"
        out.append(f'<line x1="{tx:.1f}" y1="{bottom}" x2="{tx:.1f}" y2="{bottom + 4}" stroke="#888"/>')
        out.append(
            f'<text x="{tx:.1f}" y="{bottom + 15}" font-size="10" text-anchor="middle" fill="#555">{label}</text>'
        )
        k += 1
    out.append(f'<text x="{WIDTH - RIGHT}" y="{bottom + 15}" font-size="10" text-anchor="end" fill="#555">s</text>')
    out.append("</svg>")
    svg = "".join(out)
    if gauge:
        svg += gauge_plot(gauge)
    return svg


def gauge_plot(samples: Sequence[Sequence[float]]) -> str:
    """A step plot of the ``--active-metric`` gauge samples (monotonic time, value)."""
    if not samples:
        return ""
    t0 = samples[0][0]
    span = max(samples[-1][0] - t0, 1e-3)
    top_v = max(max(v for _, v in samples), 1.0)
    height, inner = 70, WIDTH - LEFT - RIGHT
    pts = []
    for t, v in samples:
        px = LEFT + inner * (t - t0) / span
        py = 8 + (height - 28) * (1 - v / top_v)
        pts.append(f"{px:.1f},{py:.1f}")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}">'
        f'<text x="{LEFT - 6}" y="26" font-size="11" text-anchor="end" fill="#444">gauge</text>'
        f'<polyline points="{" ".join(pts)}" fill="none" stroke="#7c3aed" stroke-width="1.5"/>'
        f'<text x="{LEFT}" y="{height - 4}" font-size="10" fill="#555">0 → {span:.2f} s, max {top_v:g}</text></svg>'
    )


def _legend() -> str:
    items = [f'<span style="color:{c}">▮ {n}</span>' for _, n, c in LANES]
    items += [
        '<span style="color:#16a34a">┆ headers</span>',
        "<span>│ end</span>",
        '<span style="color:#dc2626">│ observation stopped</span>',
    ]
    return f'<p class="legend meta">{"".join(items)}</p>'


def to_html(suite: SuiteResult, title: str = "asgi-stream conformance report") -> str:
    """The whole report as one HTML document."""
    targets = [t.name for t in suite.targets]
    counts: dict[str, int] = {}
    for r in suite.results:
        counts[r.status] = counts.get(r.status, 0) + 1
    summary = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("pass", "fail", "fault", "skip"))
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<p class='meta'>conformance {__version__} · {summary} · {suite.duration:.1f} s</p>",
        "<table><tr><th>target</th><th>what runs</th><th>status</th></tr>",
    ]
    for info in suite.targets:
        parts.append(
            f"<tr><td>{_e(info.name)}</td><td>{_e(info.server)}</td><td>{_e(info.status)} {_e(info.reason)}</td></tr>"
        )
    parts.append("</table>")
    parts.append(f"<p class='meta'>budgets: {_e(_budgets(suite))}</p>")
    parts.append("<h2>Results</h2><table><tr><th>case</th>")
    parts += [f"<th>{_e(t)}</th>" for t in targets]
    parts.append("</tr>")
    for c in suite.cases:
        parts.append(f"<tr><td title='{_e(c.title)}'>{_e(c.name)}</td>")
        for name in targets:
            res = suite.get(c.name, name)
            if res is None:
                parts.append("<td></td>")
                continue
            cls = STATUS_CLASS.get(res.status, "")
            text = _e(cell(res.status, res.fault, res.attempts))
            if res.status == "n/a":
                parts.append(f"<td class='{cls}'>{text}</td>")
            else:
                parts.append(f"<td class='{cls}'><a href='#{_anchor(c.name, name)}'>{text}</a></td>")
        parts.append("</tr>")
    parts.append("</table>")
    parts.append(_legend())
    order = {"fail": 0, "fault": 1, "pass": 2, "skip": 3}
    shown = sorted((r for r in suite.results if r.status != "n/a"), key=lambda r: order.get(r.status, 4))
    parts.append("<h2>Evidence</h2>")
    titles = {c.name: c.title for c in suite.cases}
    for r in shown:
        cls = STATUS_CLASS.get(r.status, "")
        who = f" — {r.fault}'s fault" if r.fault and r.status in ("fail", "fault") else ""
        parts.append(f"<div class='result' id='{_anchor(r.case, r.target)}'>")
        parts.append(
            f"<h3><span class='tag {cls}'>{_e(cell(r.status, r.fault, r.attempts))}</span> "
            f"{_e(r.case)} @ {_e(r.target)}{_e(who)} <span class='meta'>({r.duration:.2f} s)</span></h3>"
        )
        parts.append(f"<div class='meta'>{_e(titles.get(r.case, ''))}</div>")
        parts.append(f"<div class='ev'>{_e(r.evidence)}</div>")
        parts += _plots(r.details)
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _plots(details: dict[str, Any]) -> list[str]:
    out = []
    seen: set[int] = set()
    gauge = details.get("gauge") or ()
    for i, d in enumerate(details.get("timelines") or []):
        key = hash((d.get("label"), d.get("end_at"), len(d.get("chunks", []))))
        if key in seen:
            continue
        seen.add(key)
        tl = Timeline.from_dict(d)
        state = "complete" if tl.complete else ("observation stopped" if tl.cut else "incomplete")
        head = "—" if tl.headers_at is None else f"+{tl.headers_at:.3f} s"
        out.append(
            f"<div class='meta'>{_e(tl.label)} · {_e(tl.protocol)} {_e(tl.status)} {_e(tl.media_type)} · headers "
            f"{head} · {len(tl.chunks)} pieces, {len(tl.events)} {tl.unit}s, {len(tl.comments)} comments · "
            f"{tl.end_at:.3f} s, {state}</div>"
        )
        out.append(plot(tl, gauge if i == 0 else ()))
    if gauge and not details.get("timelines"):
        out.append(gauge_plot(gauge))
    return out


def _budgets(suite: SuiteResult) -> str:
    t = suite.timing
    return (
        f"scale {t.scale:g}, max duration {t.max_duration:g} s, keepalive {t.keepalive_budget:g} s, pacing "
        f"{t.pacing_budget:g} s, cancel {t.cancel_budget:g} s, stall {t.stall_budget:g} s"
    )
