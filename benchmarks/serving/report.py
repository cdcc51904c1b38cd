"""serving.md and serving.png from the serving benchmark's results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..stats import percentile

OURS, PEER, PEER_CB = "asgi-stream", "serve", "serve-cb"
#: Single-stream speed of the demo before batching relative to ``transformers serve``
#: in the same run (25.6 against 24.4 tokens/s, SmolLM2-135M, 2 torch threads): absolute
#: figures move with the machine, the ratio is what the goal keeps.
BASELINE_SINGLE_RATIO = 25.6 / 24.4


def table(results: dict[str, Any]) -> dict[tuple[str, int], dict[str, float | None]]:
    """(server, concurrency) → TTFT p50/p99, per-stream and aggregate tokens/s."""
    cells: dict[tuple[str, int], dict[str, Any]] = {}
    for run in results["runs"]:
        key = (run["server"], run["concurrency"])
        cell = cells.setdefault(key, {"ttft": [], "tps": [], "agg": [], "errors": 0})
        ok = [s for s in run["streams"] if not s["error"]]
        cell["errors"] += len(run["streams"]) - len(ok)
        cell["ttft"] += [s["ttft_s"] for s in ok if s["ttft_s"] is not None]
        cell["tps"] += [s["tokens_per_s"] for s in ok if s["tokens_per_s"] is not None]
        cell["agg"].append(sum(s["tokens"] for s in ok) / run["wall_s"] if run["wall_s"] else 0.0)
    out: dict[tuple[str, int], dict[str, float | None]] = {}
    for key, cell in cells.items():
        out[key] = {
            "ttft_p50": percentile(cell["ttft"], 50) if cell["ttft"] else None,
            "ttft_p99": percentile(cell["ttft"], 99) if cell["ttft"] else None,
            "stream_tps": percentile(cell["tps"], 50) if cell["tps"] else None,
            "agg_tps": percentile(cell["agg"], 50) if cell["agg"] else None,
            "errors": float(cell["errors"]),
        }
    return out


def same_text(results: dict[str, Any]) -> dict[str, bool]:
    """Per server: is every greedy stream's text the one the demo gave alone (c=1) or,
    for stream i > 0, the demo's text for stream i at the lowest concurrency?"""
    reference: dict[int, str] = {}
    for run in sorted(results["runs"], key=lambda r: r["concurrency"]):
        if run["server"] == OURS:
            for s in run["streams"]:
                reference.setdefault(s["index"], s["text"])
    verdict: dict[str, bool] = {}
    for run in results["runs"]:
        ok = all(s["text"] == reference.get(s["index"], s["text"]) for s in run["streams"] if not s["error"])
        verdict[run["server"]] = verdict.get(run["server"], True) and ok
    return verdict


def _f(value: float | None, fmt: str = "{:.1f}") -> str:
    return "–" if value is None else fmt.format(value)


def goals(results: dict[str, Any], cells: dict[tuple[str, int], dict[str, float | None]]) -> list[tuple[str, str]]:
    """The goals and whether this run met them."""

    def get(server: str, conc: int, metric: str) -> float | None:
        return cells.get((server, conc), {}).get(metric)

    rows: list[tuple[str, str]] = []

    def check(name: str, ours: float | None, peer: float | None, higher: bool, fmt: str = "{:.1f}") -> None:
        if ours is None or peer is None:
            rows.append((name, "not measured"))
            return
        met = ours >= peer if higher else ours <= peer
        rows.append((name, f"{'met' if met else 'MISSED'}: {fmt.format(ours)} vs {fmt.format(peer)}"))

    concs = sorted({c for _, c in cells})
    if 8 in concs:
        check("aggregate tok/s at 8 ≥ batched peer", get(OURS, 8, "agg_tps"), get(PEER_CB, 8, "agg_tps"), True)
        check(
            "TTFT p99 at 8 ≤ batched peer (s)", get(OURS, 8, "ttft_p99"), get(PEER_CB, 8, "ttft_p99"), False, "{:.2f}"
        )
    if 16 in concs:
        check(
            "aggregate tok/s at 16 ahead of batched peer", get(OURS, 16, "agg_tps"), get(PEER_CB, 16, "agg_tps"), True
        )
        check(
            "TTFT p99 at 16 ≤ batched peer (s)",
            get(OURS, 16, "ttft_p99"),
            get(PEER_CB, 16, "ttft_p99"),
            False,
            "{:.2f}",
        )
    single = get(OURS, 1, "stream_tps")
    peers_single = [t for t in (get(PEER, 1, "stream_tps"), get(PEER_CB, 1, "stream_tps")) if t is not None]
    if single is not None and peers_single:
        best = max(peers_single)
        rows.append(
            (
                f"single stream ≥ the fastest peer in this run (before batching: {BASELINE_SINGLE_RATIO:.2f}× `serve`)",
                f"{'met' if single >= best else 'MISSED'}: {single:.1f} tok/s, {single / best:.2f}× "
                f"(serve {_f(get(PEER, 1, 'stream_tps'))}, serve-cb {_f(get(PEER_CB, 1, 'stream_tps'))})",
            )
        )
    cancel = results.get("cancel", {}).get(OURS)
    if cancel:
        single_c = cancel["single"]
        stop, step = single_c.get("cpu_stop_ms"), single_c.get("decode_step_ms")
        steps_after = [e.get("steps_after_cancel") for e in cancel.get("server_stats") or []]
        within = stop is not None and step is not None and stop <= step + 100  # + the probe's 100 ms window
        rows.append(
            (
                "cancel → compute stopped within one decode step",
                f"{'met' if within else 'MISSED'}: CPU dropped {_f(stop, '{:.0f}')} ms after the close "
                f"(decode step {_f(step, '{:.0f}')} ms, probe window 100 ms); steps after cancel {steps_after}",
            )
        )
    return rows


def write(results: dict[str, Any], out: Path) -> None:
    """Write serving.md and serving.png into ``out``."""
    cells = table(results)
    servers = [s for s in (OURS, PEER_CB, PEER) if any(k[0] == s for k in cells)]
    concs = sorted({c for _, c in cells})
    labels = results.get("servers", {})
    lines = [
        "# Serving: the demo against `transformers serve`",
        "",
        f"`{results.get('command', 'python -m benchmarks.serving')}` — {results.get('started', '')}, "
        f"device {results.get('device')}, {results.get('threads')} torch thread(s) for every server, "
        f"greedy, {results.get('max_tokens')} tokens per stream, {max(r['round'] for r in results['runs']) + 1} "
        f"interleaved round(s); paged cache for both batched servers: {results.get('cache')}.",
        "",
    ]
    quiet = results.get("quiet")
    if quiet:
        lines += [
            f"Machine: {results.get('machine', {}).get('cpus')} CPUs; during the run other processes used "
            f"{quiet['other_cores']:.2f} cores on average (the benchmark itself {quiet['benchmark_cores']:.2f}), "
            f"load average {quiet['loadavg_end']:.2f} at the end.",
            "",
        ]
    lines += [
        "| concurrency | server | aggregate tok/s | per-stream tok/s | TTFT p50 (s) | TTFT p99 (s) |",
        "|---|---|---|---|---|---|",
    ]
    for conc in concs:
        for server in servers:
            cell = cells.get((server, conc))
            if cell is None:
                continue
            err = f" ({int(cell['errors'] or 0)} errors)" if cell["errors"] else ""
            lines.append(
                f"| {conc} | {labels.get(server, server)}{err} | {_f(cell['agg_tps'])} | {_f(cell['stream_tps'])} "
                f"| {_f(cell['ttft_p50'], '{:.2f}')} | {_f(cell['ttft_p99'], '{:.2f}')} |"
            )
    verdict = same_text(results)
    lines += [
        "",
        "Greedy text identical to the demo's at the lowest concurrency: "
        + ", ".join(f"{labels.get(k, k)}: {'yes' if v else 'no'}" for k, v in verdict.items())
        + ".",
        "",
    ]
    cancel = results.get("cancel")
    if cancel:
        lines += [
            "## A client leaves",
            "",
            "| server | decode step (ms) | close → server CPU drop (ms) | CPU after (cores) "
            "| 3 siblings: identical text | siblings' chunks/s before → after |",
            "|---|---|---|---|---|---|",
        ]
        reference = {}
        for run in results["runs"]:
            if run["server"] == OURS:
                for s in run["streams"]:
                    reference.setdefault(s["index"], s["text"])
        for server in servers:
            c = cancel.get(server)
            if not c:
                continue
            single, sib = c["single"], c["sibling"]
            same = all(
                text == reference.get(i, text)
                for i, text in zip(sib["sibling_indexes"], sib["sibling_texts"], strict=False)
            )
            lines.append(
                f"| {labels.get(server, server)} | {_f(single['decode_step_ms'], '{:.0f}')} "
                f"| {_f(single['cpu_stop_ms'], '{:.0f}')} | {_f(single['cpu_after_cores'], '{:.2f}')} "
                f"| {'yes' if same and not sib['sibling_errors'] else 'no'} "
                f"| {_f(sib['sibling_chunks_per_s_before'])} → {_f(sib['sibling_chunks_per_s_after'])} |"
            )
        ours = cancel.get(OURS, {}).get("server_stats")
        if ours:
            lines += [
                "",
                "The demo's own record of those cancellations (`/stats`): "
                + "; ".join(
                    f"{e.get('steps_after_cancel')} decode step(s) after cancel, "
                    f"cancel → stop {_f(e.get('cancel_to_stop_ms'), '{:.0f}')} ms"
                    for e in ours
                )
                + ".",
            ]
        lines += [
            "",
            "Close → CPU drop: the server's CPU use, sampled every 10 ms, first falls below 0.15 cores over "
            "a 100 ms window; it includes that window's granularity.",
            "",
        ]
    rows = goals(results, cells) if results.get("mode") != "smoke" else []
    if rows:
        lines += ["## Goals", "", "| goal | this run |", "|---|---|"]
        lines += [f"| {name} | {verdict_} |" for name, verdict_ in rows]
        lines.append("")
    (out / "serving.md").write_text("\n".join(lines))
    _chart(cells, servers, concs, labels, out / "serving.png")


def _chart(
    cells: dict[tuple[str, int], dict[str, float | None]],
    servers: list[str],
    concs: list[int],
    labels: dict[str, str],
    path: Path,
) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for server in servers:
        xs = [c for c in concs if (server, c) in cells]
        left.plot(xs, [cells[(server, c)]["agg_tps"] or 0 for c in xs], marker="o", label=labels.get(server, server))
        right.plot(xs, [cells[(server, c)]["ttft_p99"] or 0 for c in xs], marker="o", label=labels.get(server, server))
    left.set(xlabel="concurrent streams", ylabel="aggregate tokens/s", title="Throughput (higher is better)")
    right.set(xlabel="concurrent streams", ylabel="TTFT p99 (s)", title="TTFT p99 (lower is better)", yscale="log")
    for ax in (left, right):
        ax.set_xticks(concs)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
