"""``python -m conformance.peers``: the suite, from outside (``--url``), against the
peers and asgi-stream on uvicorn and hypercorn, direct and behind nginx; writes the
table and the findings into ``docs/conformance.md`` (between the peer-report markers).

Every peer serves the same stream (:mod:`conformance.peers.apps`): 3 tokens, a pause
longer than the keepalive budget (a slow prefill or a tool call), then the rest, and a
gauge of running generators for ``client-close-cancel``, which is run on an async and
on a sync generator. ``transformers serve`` (SmolLM2-135M-Instruct saved to a local
folder with ``python -m asgi_stream.demo.export``) streams a real answer; it has no
such gauge. Not run in CI: it takes a few minutes.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..cases import CASES, Timing
from ..html import to_html
from ..metrics import ActiveMetric
from ..report import cell, table
from ..runner import SuiteResult, run_suite, stop_all
from ..targets import (
    HOST,
    Endpoint,
    ServerProcess,
    Target,
    TargetFailed,
    external_target,
    find_nginx,
    free_port,
    start_hypercorn,
    start_nginx,
    start_uvicorn,
    wait_ready,
)
from .apps import GAUGE, PEERS

APP = "conformance.peers.apps:app"
SERVERS = ("uvicorn", "hypercorn")
VIAS = ("direct", "nginx")
START = "<!-- peer-report:start -->"
END = "<!-- peer-report:end -->"
#: The cases of the table, with their column titles.
COLUMNS = (
    ("headers", "headers"),
    ("per-token", "pacing"),
    ("sse-parse", "SSE"),
    ("keepalive", "keepalive"),
    ("client-close-cancel", "cancel (async)"),
    ("client-close-cancel@sync", "cancel (sync)"),
    ("h1-slow-reader", "slow reader"),
    ("head", "HEAD"),
    ("h1-http10", "HTTP/1.0"),
    ("h1-keepalive-reuse", "reuse"),
    ("h1-half-close", "half-close"),
    ("h1-zero-chunk", "end"),
    ("utf8-split", "UTF-8"),
)
PROMPT = "Write a short story about a robot who learns to paint."


@dataclass(slots=True)
class Stream:
    """One thing the suite is pointed at: a URL, its request, its gauge."""

    name: str
    url: str
    method: str = "GET"
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    metric: str | None = None
    #: Cases at once against it (``transformers serve`` generates one answer at a time).
    concurrency: int | None = None


@dataclass(slots=True)
class Deployment:
    """A peer on a server, direct or behind nginx, and the processes to stop."""

    peer: str
    server: str
    via: str
    holder: Target
    streams: list[Stream] = field(default_factory=list)

    @property
    def name(self) -> str:
        """``fastapi/uvicorn/nginx``."""
        return f"{self.peer}/{self.server}/{self.via}"


def _query(pause: float) -> str:
    return f"?n=12&interval=0.1&pause_after=3&pause={pause:g}"


def deploy_app(peer: str, server: str, via: str, pause: float) -> Deployment:
    """Start one peer app (and nginx in front of it)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"peers-{peer}-{server}-{via}-".replace("+", "-")))
    env = {"CONFORMANCE_PEER": peer}
    if server == "uvicorn":
        proc, ep = start_uvicorn(workdir, APP, name=f"{peer}-uvicorn", env=env)
    else:
        proc, ep = start_hypercorn(workdir, APP, name=f"{peer}-hypercorn", env=env)
    holder = Target(f"{peer}/{server}/{via}", "h1", ep, server, processes=[proc], workdir=workdir)
    try:
        wait_ready(proc, ep, "/metrics")
        front = ep
        if via == "nginx":
            nproc, front = start_nginx(workdir, ep, name=f"{peer}-nginx")
            holder.processes.append(nproc)
    except BaseException:
        holder.stop(1.0)
        raise
    d = Deployment(peer, server, via, holder)
    base = f"http://{front.host}:{front.port}"
    metrics = f"http://{ep.host}:{ep.port}/metrics"
    d.streams.append(Stream(d.name, base + "/async" + _query(pause), metric=metrics))
    d.streams.append(Stream(d.name + "@sync", base + "/sync" + _query(pause), metric=metrics))
    return d


def deploy_transformers(model: Path, via: str, max_tokens: int) -> Deployment:
    """``transformers serve`` with the local SmolLM2 folder (and nginx in front)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"peers-transformers-{via}-"))
    script = Path(sys.executable).with_name("transformers")
    launcher = [str(script)] if script.exists() else [sys.executable, "-m", "transformers.cli.transformers"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    last = ""
    for _ in range(3):
        port = free_port()
        argv = [*launcher, "serve", str(model), "--host", HOST, "--port", str(port), "--device", "cpu"]
        log_path = workdir / "transformers.log"
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        proc = ServerProcess("transformers-serve", popen, log_path)
        ep = Endpoint(HOST, port)
        holder = Target(
            f"transformers/uvicorn/{via}", "h1", ep, "transformers serve", processes=[proc], workdir=workdir
        )
        try:
            wait_ready(proc, ep, "/health", timeout=300)
            break
        except TargetFailed as exc:
            last = str(exc)
            proc.stop(1.0)
    else:
        raise TargetFailed(f"transformers serve did not start: {last}")
    front = ep
    if via == "nginx":
        try:
            nproc, front = start_nginx(workdir, ep, name="transformers-nginx")
        except BaseException:
            holder.stop(1.0)
            raise
        holder.processes.append(nproc)
    d = Deployment("transformers serve", "uvicorn", via, holder)
    body = {
        "model": str(model),
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": True,
        "max_tokens": max_tokens,
    }
    d.streams.append(
        Stream(
            d.name,
            f"http://{front.host}:{front.port}/v1/chat/completions",
            method="POST",
            body=json.dumps(body).encode(),
            headers=[("content-type", "application/json")],
            concurrency=1,
        )
    )
    return d


def model_folder(path: Path) -> Path:
    """The local SmolLM2 folder, exported on first use."""
    if not (path / "config.json").is_file():
        print(f"exporting SmolLM2 to {path} …", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "asgi_stream.demo.export", str(path)], check=True)
    return path


def _targets(deployments: Sequence[Deployment], sync: bool, read_timeout: float) -> list[Target]:
    out = []
    for d in deployments:
        for s in d.streams:
            if s.name.endswith("@sync") != sync:
                continue
            metric = ActiveMetric(s.metric, GAUGE) if s.metric else None
            out.append(
                external_target(
                    s.url,
                    method=s.method,
                    body=s.body,
                    headers=s.headers,
                    read_timeout=read_timeout,
                    active_metric=metric,
                    name=s.name,
                    concurrency=s.concurrency,
                )
            )
    return out


def merge(a: SuiteResult, b: SuiteResult) -> SuiteResult:
    """One report of two runs (different targets, the first run's cases)."""
    cases = list(a.cases) + [c for c in b.cases if c not in a.cases]
    return SuiteResult(a.targets + b.targets, cases, a.results + b.results, a.duration + b.duration, a.timing)


def versions() -> str:
    """The versions the report was measured with."""
    out = []
    for dist in ("asgi-stream", "fastapi", "sse-starlette", "starlette", "uvicorn", "hypercorn", "transformers"):
        try:
            out.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    nginx = find_nginx()
    if nginx:
        try:
            v = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=10).stderr.strip()
            out.append(v.replace("nginx version: ", "").replace("/", " "))
        except (OSError, subprocess.SubprocessError):
            pass
    return ", ".join(out)


def markdown(suite: SuiteResult, rows: Sequence[str], timing: Timing, pause: float, took: float) -> str:
    """The published section: how it was run, the table, the findings."""
    lines = [
        START,
        "",
        "Generated by `python -m conformance.peers` (not run in CI; "
        f"{took / 60:.0f} min on this 2-core machine). Versions: {versions()}.",
        "",
        f"Each app streams 12 tokens 100 ms apart with a {pause:g} s pause after the third (a slow prefill or a "
        "tool call), from an async and from a sync generator, and counts its running generators in a gauge "
        f"(`{GAUGE}`); `transformers serve` streams a real SmolLM2-135M-Instruct answer, has no such gauge, and is "
        "checked one case at a time (it generates one answer at a time). "
        f"The suite runs in `--url` mode: `--keepalive-budget {timing.keepalive_budget:g} --pacing-budget "
        f"{timing.pacing_budget:g} --cancel-budget {timing.cancel_budget:g} --stall-budget {timing.stall_budget:g}`. "
        "nginx is configured as people deploy it (gzip on for event streams, proxy_buffering on).",
        "",
    ]
    header = ["target", *(title for _, title in COLUMNS)]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for row in rows:
        cells = [f"`{row}`"]
        for case, _ in COLUMNS:
            target = row + "@sync" if case.endswith("@sync") else row
            r = suite.get(case.split("@")[0], target)
            cells.append(cell(r.status, r.fault, r.attempts) if r else "—")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "What the failures say (one target quoted per peer and case):", ""]
    seen: set[tuple[str, str]] = set()
    for r in suite.results:
        if r.status != "fail":
            continue
        peer = r.target.split("/")[0]
        case = r.case + (" (sync generator)" if r.target.endswith("@sync") else "")
        where = [
            x.target.removesuffix("@sync")
            for x in suite.results
            if x.case == r.case
            and x.status == "fail"
            and x.target.split("/")[0] == peer
            and x.target.endswith("@sync") == r.target.endswith("@sync")
        ]
        if (peer, case) in seen:
            continue
        seen.add((peer, case))
        evidence = re.sub(r"\s+", " ", r.evidence)
        evidence = evidence if len(evidence) <= 420 else evidence[:419] + "…"
        lines.append(f"- **{peer}**, {case} ({len(where)} of its targets): {evidence}")
    lines += ["", END]
    return "\n".join(lines)


def write_section(doc: Path, section: str) -> None:
    """Replace the text between the markers (or append it under its own heading)."""
    text = doc.read_text(encoding="utf-8") if doc.exists() else ""
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + section + tail
    else:
        text = text.rstrip() + "\n\n## Peer report\n\n" + section + "\n"
    doc.write_text(text, encoding="utf-8")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(prog="python -m conformance.peers", description=__doc__.split("\n\n")[0])
    p.add_argument("--peers", default=",".join(PEERS + ("transformers",)), help="comma-separated peers to run")
    p.add_argument("--servers", default=",".join(SERVERS), help="uvicorn,hypercorn")
    p.add_argument("--via", default=",".join(VIAS), help="direct,nginx")
    p.add_argument("--doc", default="docs/conformance.md", help="the page to write the section into")
    p.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    p.add_argument("--json", metavar="FILE", help="also write the raw report as JSON")
    p.add_argument("--html", metavar="FILE", help="also write the report as HTML (arrival plots)")
    p.add_argument("--pause", type=float, default=21.0, help="seconds of silence in each stream (default 21)")
    p.add_argument("--keepalive-budget", type=float, default=20.0)
    p.add_argument("--cancel-budget", type=float, default=2.0)
    p.add_argument("--stall-budget", type=float, default=30.0)
    p.add_argument("--max-tokens", type=int, default=32, help="length of the transformers serve answer")
    p.add_argument(
        "--model-dir",
        default=os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "asgi-stream", "SmolLM2-135M-Instruct"),
        help="the SmolLM2 folder for transformers serve (exported there if missing)",
    )
    p.add_argument("--max-duration", type=float, default=120.0, help="the longest one stream is read (default 120)")
    p.add_argument("--cases", help="comma-separated cases (default: the table's)")
    p.add_argument("--jobs", type=int, default=32, help="cases run at once (the streams are mostly silent)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Deploy, run, write; returns 0 (the report is the product, failures are findings)."""
    args = build_parser().parse_args(argv)
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    vias = [v.strip() for v in args.via.split(",") if v.strip()]
    if "nginx" in vias and find_nginx() is None:
        print("no nginx binary: running direct only", file=sys.stderr)
        vias = [v for v in vias if v != "nginx"]
    t0 = time.monotonic()
    jobs = [(p, s, v) for p in peers for s in (servers if p != "transformers" else ["uvicorn"]) for v in vias]
    if "transformers" in peers:
        model_folder(Path(args.model_dir).expanduser())
    started: dict[tuple[str, str, str], Deployment] = {}
    lock = threading.Lock()

    def start(job: tuple[str, str, str]) -> None:
        peer, server, via = job
        try:
            if peer == "transformers":
                d = deploy_transformers(Path(args.model_dir).expanduser(), via, args.max_tokens)
            else:
                d = deploy_app(peer, server, via, args.pause)
        except Exception as exc:
            print(f"could not deploy {peer}/{server}/{via}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return
        with lock:
            started[job] = d

    threads = [threading.Thread(target=start, args=(j,)) for j in jobs]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    deployments = [started[j] for j in jobs if j in started]
    timing = Timing(
        request_timeout=args.max_duration,
        max_duration=args.max_duration,
        keepalive_budget=args.keepalive_budget,
        pacing_budget=1.0,
        cancel_budget=args.cancel_budget,
        stall_budget=args.stall_budget,
    )
    wanted = {c.strip() for c in args.cases.split(",")} if args.cases else {c.split("@")[0] for c, _ in COLUMNS}
    cases = [c for c in CASES if c in wanted]
    try:
        first = run_suite(
            [], cases, prebuilt=_targets(deployments, False, args.max_duration), timing=timing, jobs=args.jobs
        )
        sync_cases = ["client-close-cancel"] if "client-close-cancel" in cases else []
        second = run_suite(
            [], sync_cases, prebuilt=_targets(deployments, True, args.max_duration), timing=timing, jobs=args.jobs
        )
    finally:
        stop_all([d.holder for d in deployments], timeout=2.0)
    suite = merge(first, second)
    took = time.monotonic() - t0
    section = markdown(suite, [d.name for d in deployments], timing, args.pause, took)
    print(table(suite), file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(suite.as_dict(), indent=1), encoding="utf-8")
    if args.html:
        Path(args.html).write_text(to_html(suite, "asgi-stream conformance: peer report"), encoding="utf-8")
    if args.no_write:
        print(section)
    else:
        write_section(Path(args.doc), section)
        print(f"wrote {args.doc} ({took:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
