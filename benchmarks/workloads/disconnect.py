"""Workload 3: client disconnect → generator closed.

Each trial streams a generator that yields one token, then blocks for ``block``
seconds between tokens (``await asyncio.sleep`` in an async generator, ``time.sleep``
in a sync one). The client closes the socket a fixed fraction of the way into the
first blocking step. The server logs (CLOCK_MONOTONIC, shared by all processes on
Linux) the end of every step, the moment the generator's ``finally`` runs and, for
asgi-stream, the moment the stream's CancelToken is set; the client reports the
moment it closed. All trials of a round run concurrently: they are idle but for a
few microseconds each.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..runner import run_client
from ..servers import Server

GENERATORS = ("async", "sync")


def read_log(path: Path) -> dict[str, dict[str, Any]]:
    """``{trial: {"closed": ns, "token": ns, "steps": [ns, ...]}}`` from an event log."""
    trials: dict[str, dict[str, Any]] = {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        return trials
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        kind, trial, ns = parts[0], parts[1], int(parts[2])
        rec = trials.setdefault(trial, {"steps": []})
        if kind == "step":
            rec["steps"].append(ns)
        elif kind not in rec:
            rec[kind] = ns
    return trials


def plan(servers: list[Server], blocks: tuple[float, ...], trials: int, rep: int) -> list[list[Any]]:
    """The round's trials: ``[trial_id, port, path, close_offset_s]``. Close offsets
    are spread evenly over 10–90 % of the blocking step, interleaved across targets
    and generator kinds so no two trials close at the same moment."""
    out: list[list[Any]] = []
    slots = len(servers) * len(GENERATORS) * len(blocks)
    slot = 0
    for s in servers:
        for gen in GENERATORS:
            for block in blocks:
                for k in range(trials):
                    frac = 0.1 + 0.8 * (k + (slot + 0.5) / slots) / trials
                    trial_id = f"r{rep}~{s.target.key}~{gen}~{block:g}~{k}"
                    path = f"/block?trial={trial_id}&block={block}&mode={gen}"
                    out.append([trial_id, s.port, path, round(frac * block, 4)])
                slot += 1
    return out


def measure(
    servers: list[Server],
    blocks: tuple[float, ...],
    trials: int,
    reps: int,
    timeout: float,
    core: int,
    progress: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Run ``reps`` rounds; one record per trial (times in ms; None = did not happen
    within ``timeout`` s of the disconnect)."""
    records: list[dict[str, Any]] = []
    by_port = {s.port: s for s in servers}
    for rep in range(reps):
        planned = plan(servers, blocks, trials, rep)
        closed_at = run_client("disconnect", {"trials": planned, "core": core}, timeout=max(blocks) * 2 + 120)[
            "closed_ns"
        ]
        wanted = {t[0] for t in planned}
        deadline = max(closed_at.values()) + int(timeout * 1e9)
        while True:
            logs: dict[str, dict[str, Any]] = {}
            for s in servers:
                logs.update(read_log(s.event_log))
            done = all("closed" in logs.get(t, {}) for t in wanted)
            if done or time.monotonic_ns() > deadline:
                break
            time.sleep(0.1)
        for trial_id, port, _path, offset in planned:
            _, _target, gen, block, _k = trial_id.split("~")
            t_close = closed_at[trial_id]
            log = logs.get(trial_id, {"steps": []})
            closed = log.get("closed")
            token = log.get("token")
            step_end = next((ns for ns in log["steps"] if ns >= t_close), None)
            ok = closed is not None and closed - t_close <= timeout * 1e9
            records.append(
                {
                    "rep": rep,
                    "target": by_port[port].target.key,
                    "generator": gen,
                    "block": float(block),
                    "offset_s": offset,
                    "closed_ms": (closed - t_close) / 1e6 if ok else None,
                    "token_ms": (token - t_close) / 1e6 if token is not None else None,
                    "after_step_ms": (closed - step_end) / 1e6
                    if ok and step_end is not None and closed >= step_end
                    else None,
                }
            )
        progress(f"disconnect round {rep + 1}/{reps}: {len(planned)} trials")
    return records
