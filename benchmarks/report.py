"""Turn the per-run records into results.json, results.md and chart.png."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .servers import KIND_BY_KEY
from .stats import percentile, summary
from .targets import BY_KEY, RAW, SSE_STARLETTE, TARGETS

Records = list[dict[str, Any]]
#: Chart data source: (group, target key) → spread summary, or None for no bar.
Getter = Callable[[str, str], "dict[str, Any] | None"]

#: The issue's goals for asgi-stream.
PER_TOKEN_MIN_RATIO = 0.95
COALESCE_MIN_RATIO = 5.0
SLOW_P99_MAX_MS = 50.0
SLOW_MAX_RATIO = 1.15
DISCONNECT_ASYNC_P99_MS = 5.0
DISCONNECT_TOKEN_P99_MS = 5.0
DISCONNECT_AFTER_STEP_MS = 50.0
TTFB_OVERHEAD_MAX_US = 1000.0
COALESCE_MAX_DELAY_MS = 20.0
ASGI_STREAM, COALESCE = "asgi-stream", "asgi-stream-coalesce"


# ---------------------------------------------------------------------- numbers
def values(records: Records, metric: str) -> list[float]:
    """The metric of every successful run."""
    return [r[metric] for r in records if "error" not in r and r.get(metric) is not None]


def spread(records: Records, metric: str) -> dict[str, Any]:
    """Median / min / max / quartiles of a metric over runs."""
    return summary(values(records, metric))


def paired_ratio(records: Records, base: Records, metric: str) -> dict[str, Any]:
    """Ratio to the baseline run of the same round, summarised over rounds."""
    ratios = []
    for i, r in enumerate(records):
        rep = r.get("rep", i)
        b = next((x for j, x in enumerate(base) if x.get("rep", j) == rep), None)
        if b is None or "error" in r or "error" in b or not b.get(metric) or r.get(metric) is None:
            continue
        ratios.append(r[metric] / b[metric])
    return summary(ratios)


def fmt_num(x: float | None, digits: int = 0, unit: str = "") -> str:
    """Thousands-separated number, '–' for missing, '∞' for infinite."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if math.isinf(x):
        return "∞"
    return f"{x:,.{digits}f}{unit}"


def fmt_spread(s: dict[str, Any], digits: int = 0, unit: str = "", scale: float = 1.0) -> str:
    """``median (min–max)``; just the median when there was one run."""
    if s["median"] is None:
        return "–"
    med = fmt_num(s["median"] * scale, digits, unit)
    if s["n"] <= 1:
        return med
    return f"{med} ({fmt_num(s['min'] * scale, digits)}–{fmt_num(s['max'] * scale, digits)})"


def fmt_ratio(s: dict[str, Any]) -> str:
    """``0.97×`` with its spread."""
    if s["median"] is None:
        return "–"
    if s["n"] <= 1:
        return f"{s['median']:.2f}×"
    return f"{s['median']:.2f}× ({s['min']:.2f}–{s['max']:.2f})"


def pct(samples: Sequence[float | None], q: float) -> float | None:
    """Percentile with None (did not happen in time) counted as infinite."""
    data = sorted(math.inf if v is None else v for v in samples)
    return percentile(data, q, presorted=True) if data else None


def label(key: str) -> str:
    """A target's display name."""
    return BY_KEY[key].label if key in BY_KEY else key


# ---------------------------------------------------------------------- tables
def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def throughput_table(data: dict[str, dict[str, Records]]) -> str:
    """Workload 1."""
    rows = []
    for kind, per_target in data.items():
        raw, sse = per_target.get(RAW, []), per_target.get(SSE_STARLETTE, [])
        for key, recs in per_target.items():
            rows.append(
                [
                    KIND_BY_KEY[kind].label,
                    label(key),
                    fmt_spread(spread(recs, "events_per_s")),
                    fmt_ratio(paired_ratio(recs, raw, "events_per_s")),
                    fmt_ratio(paired_ratio(recs, sse, "events_per_s")),
                    fmt_spread(spread(recs, "bytes_per_s"), 2, scale=1e-6),
                    fmt_spread(spread(recs, "server_cpu"), 0, "%", scale=100),
                    fmt_spread(spread(recs, "cpu_us_per_event"), 2),
                    fmt_spread(spread(recs, "delay_max_ms"), 1),
                ]
            )
    return _table(
        [
            "server",
            "target",
            "events/s",
            "× raw",
            "× sse-starlette",
            "wire MB/s",
            "server CPU",
            "CPU µs/event",
            "token delay max (ms)",
        ],
        rows,
    )


def slow_table(data: dict[str, dict[str, dict[str, Records]]]) -> str:
    """Workload 2."""
    rows = []
    for per_n in data.values():
        for n, per_target in per_n.items():
            raw, sse = per_target.get(RAW, []), per_target.get(SSE_STARLETTE, [])
            for key, recs in per_target.items():
                failed = sum(1 for r in recs if "error" in r)
                overloaded = _overloaded(recs)
                rows.append(
                    [
                        f"{int(n):,}",
                        label(key) + (" (*overloaded*)" if overloaded else ""),
                        fmt_spread(spread(recs, "p50_ms"), 1),
                        fmt_spread(spread(recs, "p99_ms"), 1),
                        fmt_spread(spread(recs, "max_ms"), 0),
                        fmt_spread(spread(recs, "missing")),
                        fmt_spread(spread(recs, "server_cpu"), 0, "%", scale=100),
                        fmt_ratio(paired_ratio(recs, raw, "server_cpu")),
                        fmt_spread(spread(recs, "rss_mb"), 0),
                        fmt_ratio(paired_ratio(recs, raw, "rss_mb")),
                        fmt_ratio(paired_ratio(recs, sse, "server_cpu"))
                        + " / "
                        + fmt_ratio(paired_ratio(recs, sse, "rss_mb")),
                        fmt_spread(spread(recs, "client_cpu"), 0, "%", scale=100)
                        + (f" ({failed} failed)" if failed else ""),
                    ]
                )
    return _table(
        [
            "streams",
            "target",
            "lateness p50 (ms)",
            "p99 (ms)",
            "max (ms)",
            "missing events",
            "server CPU",
            "CPU × raw",
            "peak RSS (MB)",
            "RSS × raw",
            "CPU / RSS × sse-starlette",
            "client CPU",
        ],
        rows,
    )


def _round_percentiles(recs: Records, metric: str, *, none_is_inf: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """p50 and p99 of ``metric`` in each round, summarised over rounds."""
    p50s, p99s = [], []
    for rep in sorted({r["rep"] for r in recs}):
        vals = [r[metric] for r in recs if r["rep"] == rep]
        if not none_is_inf:
            vals = [v for v in vals if v is not None]
        if vals:
            p50s.append(pct(vals, 50))
            p99s.append(pct(vals, 99))
    return summary(p50s), summary(p99s)


def disconnect_rows(records: Records) -> list[dict[str, Any]]:
    """Per (target, generator, block): p50 and p99 of each round, summarised over
    rounds (a generator not closed in time counts as infinitely late)."""
    groups: dict[tuple[str, str, float], Records] = {}
    for r in records:
        groups.setdefault((r["target"], r["generator"], r["block"]), []).append(r)
    out: list[dict[str, Any]] = []
    for (target, gen, block), recs in groups.items():
        closed50, closed99 = _round_percentiles(recs, "closed_ms", none_is_inf=True)
        token50, token99 = _round_percentiles(recs, "token_ms", none_is_inf=False)
        after50, after99 = _round_percentiles(
            [r for r in recs if r["closed_ms"] is not None], "after_step_ms", none_is_inf=False
        )
        out.append(
            {
                "target": target,
                "generator": gen,
                "block": block,
                "trials": len(recs),
                "rounds": len({r["rep"] for r in recs}),
                "not_closed": sum(1 for r in recs if r["closed_ms"] is None),
                "closed_p50": closed50,
                "closed_p99": closed99,
                "token_p50": token50,
                "token_p99": token99,
                "after_step_p50": after50,
                "after_step_p99": after99,
            }
        )
    order = {t.key: i for i, t in enumerate(TARGETS)}
    out.sort(key=lambda r: (r["generator"], r["block"], order.get(r["target"], 99)))
    return out


def _p50_p99(p50: dict[str, Any], p99: dict[str, Any], digits: int) -> str:
    if p50["median"] is None:
        return "–"
    return f"{fmt_num(p50['median'], digits)} / {fmt_spread(p99, digits)}"


def disconnect_table(data: dict[str, Records], timeout: float) -> str:
    """Workload 3."""
    rows = []
    for _kind, records in data.items():
        for r in disconnect_rows(records):
            nc = r["not_closed"]
            rows.append(
                [
                    label(r["target"]),
                    r["generator"],
                    f"{r['block']:g} s",
                    _p50_p99(r["closed_p50"], r["closed_p99"], 1),
                    f"{nc} of {r['trials']}" if nc else "0",
                    _p50_p99(r["token_p50"], r["token_p99"], 2),
                    _p50_p99(r["after_step_p50"], r["after_step_p99"], 2),
                ]
            )
    return _table(
        [
            "target",
            "generator",
            "blocked step",
            "closed after disconnect p50 / p99 (ms)",
            f"not closed within {timeout:g} s",
            "CancelToken set p50 / p99 (ms)",
            "closed after the step ended p50 / p99 (ms)",
        ],
        rows,
    )


def ttfb_table(data: dict[str, dict[str, Records]]) -> str:
    """Workload 4."""
    rows = []
    for kind, per_target in data.items():
        raw = per_target.get(RAW, [])
        raw_p50 = spread(raw, "p50_us")["median"]
        for key, recs in per_target.items():
            p50 = spread(recs, "p50_us")
            over = None if raw_p50 is None or p50["median"] is None else p50["median"] - raw_p50
            rows.append(
                [
                    KIND_BY_KEY[kind].label,
                    label(key),
                    fmt_spread(p50),
                    fmt_spread(spread(recs, "p99_us")),
                    "–" if over is None else f"{over:+,.0f}",
                ]
            )
    return _table(["server", "target", "TTFB p50 (µs)", "TTFB p99 (µs)", "p50 over raw (µs)"], rows)


def side_by_side_table(results: dict[str, Any]) -> str:
    """The README's table: one column per target, the headline figure of each workload
    (the first server kind of each workload, the largest blocking step)."""
    keys = [t.key for t in TARGETS if _measured(results, t.key)]
    rows: list[list[str]] = []
    tp = results.get("throughput") or {}
    if tp:
        kind = next(iter(tp))
        per_target = tp[kind]
        raw = per_target.get(RAW, [])
        cells = []
        for key in keys:
            recs = per_target.get(key, [])
            med = spread(recs, "events_per_s")["median"]
            ratio = paired_ratio(recs, raw, "events_per_s")["median"]
            cells.append(
                "–" if med is None else f"{fmt_num(med)} ({ratio:.2f}×)" if key != RAW and ratio else fmt_num(med)
            )
        rows.append([f"one stream, events/s (× raw), {KIND_BY_KEY[kind].label}", *cells])
    slow = results.get("slow") or {}
    if slow:
        kind = next(iter(slow))
        n = next(iter(slow[kind]))
        per_target = slow[kind][n]

        def cpu_rss(key: str) -> str:
            recs = per_target.get(key, [])
            cpu, rss = spread(recs, "server_cpu")["median"], spread(recs, "rss_mb")["median"]
            if cpu is None:
                return "–"
            return f"{cpu * 100:.0f} % / {rss:.0f} MB" + (" (*overloaded*)" if _overloaded(recs) else "")

        def p99(key: str) -> str:
            med = spread(per_target.get(key, []), "p99_ms")["median"]
            return "–" if med is None else fmt_num(med, 1, " ms")

        rows.append([f"{int(n):,} slow streams: server CPU / RSS", *(cpu_rss(k) for k in keys)])
        rows.append([f"{int(n):,} slow streams: p99 lateness", *(p99(k) for k in keys)])
    disc = results.get("disconnect") or {}
    if disc:
        drows = [r for recs in disc.values() for r in disconnect_rows(recs)]
        block = max(r["block"] for r in drows)
        timeout = results["meta"]["mode"]["disconnect_timeout"]

        def closed(gen: str, key: str, metric: str) -> str:
            row = next((r for r in drows if r["target"] == key and r["generator"] == gen and r["block"] == block), None)
            if row is None:
                return "–"
            if row["not_closed"]:
                return f"not within {timeout:g} s"
            value = row[metric]["median"]
            return "–" if value is None else f"{value:.2f} ms"

        rows.append(
            [
                f"disconnect → async generator closed, p99 (blocked {block:g} s)",
                *(closed("async", k, "closed_p99") for k in keys),
            ]
        )
        rows.append(
            [
                "disconnect → sync generator closed, p99 after its blocking step ends",
                *(closed("sync", k, "after_step_p99") for k in keys),
            ]
        )
    tt = results.get("ttfb") or {}
    if tt:
        kind = next(iter(tt))
        raw_p50 = spread(tt[kind].get(RAW, []), "p50_us")["median"]

        def over(key: str) -> str:
            p50 = spread(tt[kind].get(key, []), "p50_us")["median"]
            if key == RAW or p50 is None or raw_p50 is None:
                return "—" if key == RAW else "–"
            return f"{p50 - raw_p50:+,.0f} µs"

        rows.append(["time to first byte over raw", *(over(k) for k in keys)])
    return _table(["", *(label(k) for k in keys)], rows)


def _measured(results: dict[str, Any], key: str) -> bool:
    """Whether any workload of the run measured target ``key``."""
    for name in ("throughput", "ttfb"):
        if any(key in per_target for per_target in (results.get(name) or {}).values()):
            return True
    if any(key in per_target for per_n in (results.get("slow") or {}).values() for per_target in per_n.values()):
        return True
    return any(r["target"] == key for recs in (results.get("disconnect") or {}).values() for r in recs)


# ---------------------------------------------------------------------- goals
def _at_least(s: dict[str, Any], limit: float) -> bool | None:
    return None if s["median"] is None else s["median"] >= limit


def _at_most(s: dict[str, Any], limit: float) -> bool | None:
    return None if s["median"] is None else s["median"] <= limit


def _overloaded(records: Records) -> bool:
    """Whether the median run of a slow-stream cell lost events (the server fell behind)."""
    return (spread(records, "missing")["median"] or 0) > 0


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each of the issue's targets for asgi-stream: what was measured, and whether it
    was met (None: not measurable in this run, e.g. CPU ratios of saturated servers)."""
    out: list[dict[str, Any]] = []

    def add(goal: str, measured: str, met: bool | None) -> None:
        out.append({"goal": goal, "measured": measured, "met": met})

    for kind, per_target in results.get("throughput", {}).items():
        klabel = KIND_BY_KEY[kind].label
        if ASGI_STREAM in per_target and RAW in per_target:
            r = paired_ratio(per_target[ASGI_STREAM], per_target[RAW], "events_per_s")
            add(
                f"per-token ≥ {PER_TOKEN_MIN_RATIO}× raw events/s ({klabel})",
                fmt_ratio(r),
                _at_least(r, PER_TOKEN_MIN_RATIO),
            )
        if COALESCE in per_target and SSE_STARLETTE in per_target:
            r = paired_ratio(per_target[COALESCE], per_target[SSE_STARLETTE], "events_per_s")
            d = spread(per_target[COALESCE], "delay_max_ms")
            fast, prompt = _at_least(r, COALESCE_MIN_RATIO), _at_most(d, COALESCE_MAX_DELAY_MS)
            add(
                f"coalescing ≥ {COALESCE_MIN_RATIO:g}× sse-starlette events/s, every sampled token "
                f"within max_delay {COALESCE_MAX_DELAY_MS:g} ms ({klabel})",
                f"{fmt_ratio(r)}; slowest sampled token {fmt_spread(d, 1, ' ms')}",
                None if fast is None else bool(fast and prompt is not False),
            )
    for per_n in results.get("slow", {}).values():
        for n, per_target in per_n.items():
            if ASGI_STREAM not in per_target or RAW not in per_target:
                continue
            recs, raw = per_target[ASGI_STREAM], per_target[RAW]
            p99 = spread(recs, "p99_ms")
            goal = f"{int(n):,} slow streams: p99 lateness ≤ {SLOW_P99_MAX_MS:g} ms"
            add(goal, fmt_spread(p99, 1, " ms"), _at_most(p99, SLOW_P99_MAX_MS))
            saturated = any(_overloaded(x) for x in (recs, raw)) or (spread(raw, "server_cpu")["median"] or 0) >= 0.9
            for metric, name in (("server_cpu", "CPU"), ("rss_mb", "RSS")):
                r = paired_ratio(recs, raw, metric)
                goal = f"{int(n):,} slow streams: {name} ≤ {SLOW_MAX_RATIO}× raw"
                if metric == "server_cpu" and saturated:
                    add(goal, f"{fmt_ratio(r)}, but a core's limit: the servers could not keep up", None)
                else:
                    add(goal, fmt_ratio(r), _at_most(r, SLOW_MAX_RATIO))
    for records in results.get("disconnect", {}).values():
        for row in disconnect_rows(records):
            if row["target"] != ASGI_STREAM:
                continue
            step = f"{row['block']:g} s step"
            if row["generator"] == "async":
                v = row["closed_p99"]
                goal = f"disconnect, async generator ({step}): closed p99 ≤ {DISCONNECT_ASYNC_P99_MS:g} ms"
                add(goal, fmt_spread(v, 2, " ms"), _at_most(v, DISCONNECT_ASYNC_P99_MS))
                continue
            v = row["token_p99"]
            goal = f"disconnect, sync generator ({step}): CancelToken set p99 ≤ {DISCONNECT_TOKEN_P99_MS:g} ms"
            add(goal, fmt_spread(v, 2, " ms"), _at_most(v, DISCONNECT_TOKEN_P99_MS))
            v = row["after_step_p99"]
            met = _at_most(v, DISCONNECT_AFTER_STEP_MS)
            goal = f"disconnect, sync generator ({step}): closed ≤ {DISCONNECT_AFTER_STEP_MS:g} ms after the step ends (p99)"
            add(goal, fmt_spread(v, 2, " ms"), None if met is None else met and row["not_closed"] == 0)
    for kind, per_target in results.get("ttfb", {}).items():
        if ASGI_STREAM in per_target and RAW in per_target:
            a = spread(per_target[ASGI_STREAM], "p50_us")["median"]
            b = spread(per_target[RAW], "p50_us")["median"]
            if a is not None and b is not None:
                goal = f"TTFB overhead ≤ {TTFB_OVERHEAD_MAX_US / 1000:g} ms over raw ({KIND_BY_KEY[kind].label})"
                add(goal, f"{a - b:+,.0f} µs", a - b <= TTFB_OVERHEAD_MAX_US)
    return out


def goals_table(rows: list[dict[str, Any]]) -> str:
    """The goals with their verdicts."""
    mark = {True: "met", False: "**missed**", None: "not measurable here"}
    return _table(["goal", "measured", "verdict"], [[g["goal"], g["measured"], mark[g["met"]]] for g in rows])


# ---------------------------------------------------------------------- documents
def markdown(results: dict[str, Any]) -> str:
    """The whole results.md."""
    meta = results["meta"]
    m = meta["machine"]
    mode = meta["mode"]
    p = meta["placement"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    parts = [
        "# asgi-stream benchmark results",
        "",
        f"- **Date:** {meta['date']} (run took {meta['duration_s'] / 60:.1f} min)",
        f"- **Machine:** {m['cpu']}, {m['cpus']} CPUs ({m['cpus_usable']} usable), {m['memory_gib']} GiB RAM, "
        f"{m['os']}, Python {m['python']}",
        f"- **Load average** at start {m['load_average']}, at end {meta['load_average_end']}",
        f"- **Command:** `{meta['command']}` (mode `{mode['name']}`)" + _source(meta.get("source")),
        f"- **CPU placement:** every server process (all its threads) pinned to CPU {p['server_core']}; "
        f"the measuring clients and the harness share CPU {p['client_core']}"
        + (" (one CPU only: everything shares it)" if p["server_core"] == p["client_core"] else ""),
        f"- **Versions:** {versions}",
        "- **Figures:** median over repeated runs, (min–max) across runs. Ratios are taken "
        "run by run against the baseline measured in the same round, then summarised.",
        "",
        "## Goals",
        "",
        goals_table(goals(results)),
        "",
        "## Side by side",
        "",
        side_by_side_table(results),
        "",
    ]
    if results.get("throughput"):
        parts += [
            f"## 1. One stream of {mode['tokens']:,} small tokens, as fast as possible",
            "",
            f"{mode['reps']} runs per cell. *Token delay*: for one token in 1,024, arrival minus the moment "
            "the generator produced it (the slowest sampled token of the run, median over runs).",
            "",
            throughput_table(results["throughput"]),
            "",
        ]
    if results.get("slow"):
        kinds = ", ".join(KIND_BY_KEY[k].label for k in results["slow"])
        parts += [
            f"## 2. Concurrent slow streams: one event every {mode['slow_interval'] * 1000:g} ms",
            "",
            f"Server {kinds}; {mode['slow_reps']} runs per cell, "
            f"{'a fresh server process per run' if mode['slow_fresh_server'] else 'shared server processes'}; "
            f"measured over {mode['slow_duration']:g} s after all streams are open and {mode['slow_warmup']:g} s of warm-up. "
            "Lateness: arrival at the client minus the event's due time; events not arrived 1 s after "
            "the window count as infinitely late (*missing*). Server CPU in % of one core. "
            "A target marked *overloaded* lost events in the median run: its server could not keep "
            "up with the schedule (lateness then grows for as long as the run lasts, and its CPU "
            "figure is capped by the core, not set by the work).",
            "",
            *(slow_table({k: v}) + "\n" for k, v in results["slow"].items()),
        ]
    if results.get("disconnect"):
        kinds = ", ".join(KIND_BY_KEY[k].label for k in results["disconnect"])
        parts += [
            "## 3. Client disconnect → generator closed",
            "",
            f"Server {kinds}. The generator yields a token, then blocks for the step "
            "(`await asyncio.sleep` / `time.sleep`); the client closes the socket 10–90 % of the way into "
            f"the step. p50 and p99 of each round of {mode['disconnect_trials']} trials per row, median over "
            f"{mode['disconnect_reps']} rounds (min–max of the rounds' p99 in parentheses). "
            "*Closed after the step ended*: how long after the blocking step returned the generator's "
            "`finally` ran (for generators that were not closed earlier).",
            "",
            disconnect_table(results["disconnect"], mode["disconnect_timeout"]),
            "",
        ]
    if results.get("ttfb"):
        parts += [
            "## 4. Time to first byte",
            "",
            f"{mode['ttfb_requests']} sequential requests on one kept-alive connection per run, "
            f"{mode['reps']} runs; request written → first byte of the first event received.",
            "",
            ttfb_table(results["ttfb"]),
            "",
        ]
    parts += ["![chart](chart.png)", ""]
    return "\n".join(parts)


def _source(source: dict[str, Any] | None) -> str:
    if not source or not source.get("commit"):
        return ""
    dirty = " with local changes" if source.get("local_changes") else ""
    return f" at commit `{source['commit'][:10]}`{dirty}"


def chart(results: dict[str, Any], path: Path) -> None:
    """A PNG with one panel per workload."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.transforms import blended_transform_factory

    keys = [t.key for t in TARGETS]
    palette = ["#777777", "#4c72b0", "#dd8452", "#c44e52", "#da8bc3", "#55a868", "#8172b3", "#937860"]
    colors = dict(zip(keys, palette, strict=False))
    fig, axes = plt.subplots(2, 3, figsize=(18, 10))
    meta = results["meta"]
    fig.suptitle(f"asgi-stream benchmarks — {meta['date']} — {meta['machine']['cpu']} — mode {meta['mode']['name']}")

    def bars(ax: Any, groups: list[str], getter: Getter, title: str, ylabel: str, log: bool = False) -> None:
        width = 0.8 / len(keys)
        top = blended_transform_factory(ax.transData, ax.transAxes)
        for i, key in enumerate(keys):
            xs, ys, lo, hi = [], [], [], []
            for g, group in enumerate(groups):
                s = getter(group, key)
                if s is None or s["median"] is None:
                    continue
                x = g + (i - (len(keys) - 1) / 2) * width
                if math.isinf(s["median"]):  # lost events / never closed: no bar, a mark
                    ax.text(
                        x,
                        0.97,
                        "∞",
                        transform=top,
                        ha="center",
                        va="top",
                        color=colors[key],
                        fontsize=12,
                        fontweight="bold",
                    )
                    continue
                xs.append(x)
                ys.append(s["median"])
                lo.append(s["median"] - s["min"])
                hi.append(0.0 if math.isinf(s["max"]) else s["max"] - s["median"])
            if xs:
                ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, color=colors[key], label=label(key))
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(groups, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)

    tp = results.get("throughput", {})
    bars(axes[0][0], list(tp), _metric(tp, "events_per_s"), "1. one fast stream: events/s", "events/s", log=True)
    slow = results.get("slow", {})
    slow_groups = [(kind, n) for kind, per_n in slow.items() for n in per_n]
    names = [f"{int(n):,} streams" for _, n in slow_groups]
    lookup = dict(zip(names, slow_groups, strict=True))

    def slow_get(metric: str) -> Getter:
        def get(g: str, k: str) -> dict[str, Any] | None:
            kind, n = lookup[g]
            recs = slow[kind][n].get(k)
            return spread(recs, metric) if recs else None

        return get

    bars(axes[0][1], names, slow_get("p99_ms"), "2. slow streams: p99 lateness (∞: events lost)", "ms", log=True)
    cpu = slow_get("server_cpu")
    bars(axes[0][2], names, lambda g, k: _scaled(cpu(g, k), 100), "2. slow streams: server CPU", "% of one core")
    bars(axes[1][0], names, slow_get("rss_mb"), "2. slow streams: peak server RSS", "MB")
    disc = [r for recs in results.get("disconnect", {}).values() for r in disconnect_rows(recs)]
    dgroups = sorted({(r["generator"], r["block"]) for r in disc})
    dnames = [f"{g}, {b:g} s step" for g, b in dgroups]
    dlookup = dict(zip(dnames, dgroups, strict=True))

    def disc_get(g: str, k: str) -> dict[str, Any] | None:
        gen, block = dlookup[g]
        row = next((r for r in disc if r["target"] == k and r["generator"] == gen and r["block"] == block), None)
        if row is None or row["closed_p99"]["median"] is None:
            return None
        s = row["closed_p99"]
        return {"median": max(s["median"], 0.01), "min": max(s["min"], 0.01), "max": s["max"]}

    bars(axes[1][1], dnames, disc_get, "3. disconnect → generator closed, p99 (∞: not closed in time)", "ms", log=True)
    tt = results.get("ttfb", {})
    bars(axes[1][2], list(tt), _metric(tt, "p50_us"), "4. time to first byte, p50", "µs")
    handles = [Patch(color=colors[k], label=label(k)) for k in keys]
    fig.legend(handles=handles, loc="lower center", ncol=len(keys), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _metric(data: dict[str, dict[str, Records]], metric: str) -> Getter:
    """A chart getter: the spread of ``metric`` for (group, target)."""

    def get(group: str, key: str) -> dict[str, Any] | None:
        recs = data[group].get(key)
        return spread(recs, metric) if recs else None

    return get


def _scaled(s: dict[str, Any] | None, factor: float) -> dict[str, Any] | None:
    if s is None or s["median"] is None:
        return s
    return {k: (v * factor if isinstance(v, float) else v) for k, v in s.items()}


def write(results: dict[str, Any], out: Path) -> None:
    """Write results.json, results.md and chart.png into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    results = dict(results)
    results["goals"] = goals(results)
    (out / "results.json").write_text(json.dumps(_clean(results), indent=1, allow_nan=False) + "\n")
    (out / "results.md").write_text(markdown(results))
    chart(results, out / "chart.png")


def load(path: Path) -> dict[str, Any]:
    """Read a results.json back (the strings "inf" and "nan" become floats again)."""
    return dict(_unclean(json.loads(path.read_text())))


def _unclean(value: Any) -> Any:
    if value in ("inf", "-inf", "nan"):
        return float(value)
    if isinstance(value, dict):
        return {k: _unclean(v) for k, v in value.items() if k != "goals"}
    if isinstance(value, list):
        return [_unclean(v) for v in value]
    return value


DOC_START, DOC_END = "<!-- results:start -->", "<!-- results:end -->"


def update_doc(results: dict[str, Any], doc: Path, chart_link: str) -> bool:
    """Replace the results section of ``doc`` (between the DOC_START and DOC_END
    markers) with this run's tables; False when the file or its markers are missing."""
    try:
        text = doc.read_text()
    except FileNotFoundError:
        return False
    start, end = text.find(DOC_START), text.find(DOC_END)
    if start < 0 or end < start:
        return False
    results = dict(results, goals=goals(results))
    body = markdown(results).replace("](chart.png)", f"]({chart_link})")
    body = "\n".join(("#" + line) if line.startswith("#") else line for line in body.splitlines()[1:])
    doc.write_text(text[: start + len(DOC_START)] + "\n" + body.strip() + "\n" + text[end:])
    return True


def _clean(value: Any) -> Any:
    """JSON has no infinity or NaN: write them as the strings "inf" and "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value
