"""``python -m conformance`` / ``asgi-stream-conformance``: run the suite, print the table."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .cases import CASES, Timing
from .html import to_html
from .metrics import ActiveMetric
from .report import render, to_json
from .runner import run_suite
from .targets import TARGETS, external_target


def _csv(value: str) -> list[str]:
    return [x.strip() for x in value.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(
        prog="python -m conformance",
        description="Raw-wire HTTP/1.1 + HTTP/2 + HTTP/3 conformance suite for token streaming. By default it "
        "starts its own targets (uvicorn, hypercorn h1/h2c/TLS/trio/h3, nginx) on loopback; --url checks an "
        "external SSE/NDJSON endpoint instead.",
    )
    p.add_argument("--targets", type=_csv, help=f"comma-separated targets (default all): {', '.join(TARGETS)}")
    p.add_argument("--cases", type=_csv, help="comma-separated case names (default all; see --list)")
    p.add_argument("--list", action="store_true", help="list the cases and targets, then exit")
    p.add_argument("--json", action="store_true", help="print the machine-readable report instead of the table")
    p.add_argument(
        "--html",
        metavar="FILE",
        help="also write the report as one self-contained HTML page (with per-event arrival plots) to FILE",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="also print the evidence of passing cases")
    p.add_argument("--strict", action="store_true", help="also exit non-zero for diagnosed server/proxy faults")
    p.add_argument("--jobs", type=int, default=4, help="cases run at once (default 4)")
    p.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply every interval, budget and bound (e.g. 2 on a loaded machine)",
    )
    ext = p.add_argument_group("external endpoint")
    ext.add_argument("--url", help="check this SSE/NDJSON URL instead of the built-in targets")
    ext.add_argument(
        "--h2", action="store_true", help="speak HTTP/2 to --url (prior knowledge for http://, ALPN for https://)"
    )
    ext.add_argument("-X", "--method", default=None, help="request method for --url (default GET, POST with --data)")
    ext.add_argument("-d", "--data", default=None, help="request body for --url (e.g. a JSON prompt)")
    ext.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="NAME: VALUE",
        help="extra request header for --url (repeatable)",
    )
    ext.add_argument("-k", "--insecure", action="store_true", help="do not verify the --url TLS certificate")
    ext.add_argument("--cacert", metavar="FILE", help="verify the --url TLS certificate with this CA bundle")
    ext.add_argument(
        "--h3",
        action="store_true",
        help="speak HTTP/3 (QUIC) to an https:// --url, on the UDP port its Alt-Svc names (else the URL's)",
    )
    ext.add_argument("--h3-port", type=int, metavar="PORT", help="the UDP port of --h3 (skips the Alt-Svc lookup)")
    ext.add_argument(
        "--max-duration",
        type=float,
        metavar="S",
        help="read one --url stream for at most S seconds; verdicts rest on what arrived (default 300)",
    )
    ext.add_argument(
        "--keepalive-budget",
        type=float,
        metavar="S",
        help="the longest silence on the wire a --url stream may have without a keepalive (default 20)",
    )
    ext.add_argument(
        "--pacing-budget",
        type=float,
        metavar="S",
        help="the longest an event may be held: events released in bursts after longer silences fail (default 1)",
    )
    ext.add_argument(
        "--cancel-budget",
        type=float,
        metavar="S",
        help="seconds within which a closed stream must stop its generation (default 1; 5 with --url)",
    )
    ext.add_argument(
        "--stall-budget",
        type=float,
        metavar="S",
        help="how long the server may keep a stream open to a client that stopped reading (default 60)",
    )
    ext.add_argument(
        "--active-metric",
        nargs=2,
        metavar=("URL", "NAME"),
        help="a Prometheus page and the gauge of running generations on it (e.g. http://host:8000/metrics "
        "vllm:num_requests_running): client-close-cancel checks that it falls after a disconnect",
    )
    ext.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="at most N cases at once against --url (default: --jobs); 1 for a server that generates one "
        "answer at a time",
    )
    ext.add_argument(
        "--behind-proxy",
        action="store_true",
        help="a reverse proxy is in front of --url (headers it legitimately strips become notes)",
    )
    return p


def _url_timing(args: argparse.Namespace, budgets: dict[str, float]) -> Timing:
    """The timing of a --url run: every request may last --max-duration."""
    default = Timing()
    return Timing(
        scale=args.scale,
        request_timeout=budgets.get("max_duration", default.max_duration),
        cancel_budget=args.cancel_budget or 5.0,
        max_duration=budgets.get("max_duration", default.max_duration),
        keepalive_budget=budgets.get("keepalive_budget", default.keepalive_budget),
        pacing_budget=budgets.get("pacing_budget", default.pacing_budget),
        stall_budget=budgets.get("stall_budget", default.stall_budget),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (1 when a case fails, or with --strict a server fault
    was diagnosed; 2 on usage errors)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        for c in CASES.values():
            print(f"{c.name:26} [{'/'.join(sorted(c.protocols))}] {c.title}")
        print("\ntargets:", ", ".join(TARGETS))
        return 0
    if args.cases:
        unknown = [c for c in args.cases if c not in CASES]
        if unknown:
            parser.error(f"unknown case(s) {', '.join(unknown)}; see --list")
    if args.targets:
        unknown = [t for t in args.targets if t not in TARGETS]
        if unknown:
            parser.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    if args.scale <= 0 or args.jobs < 1:
        parser.error("--scale must be > 0 and --jobs >= 1")
    budgets = {
        "max_duration": args.max_duration,
        "keepalive_budget": args.keepalive_budget,
        "pacing_budget": args.pacing_budget,
        "stall_budget": args.stall_budget,
    }
    if any(v is not None and v <= 0 for v in [*budgets.values(), args.cancel_budget]):
        parser.error("budgets and --max-duration must be > 0")
    url_only = [k for k, v in budgets.items() if v is not None]
    url_only += ["active_metric"] * bool(args.active_metric) + ["behind_proxy"] * args.behind_proxy
    url_only += ["concurrency"] * (args.concurrency is not None)
    if args.concurrency is not None and args.concurrency < 1:
        parser.error("--concurrency must be >= 1")
    if url_only and not args.url:
        parser.error(f"--{url_only[0].replace('_', '-')} applies to --url only")
    if args.url:
        timing = _url_timing(args, {k: v for k, v in budgets.items() if v is not None})
    else:
        cancel = {"cancel_budget": args.cancel_budget} if args.cancel_budget else {}
        timing = Timing(scale=args.scale, **cancel)
    prebuilt = []
    targets = args.targets
    if args.url:
        headers = []
        for h in args.header:
            name, sep, value = h.partition(":")
            if not sep or not name.strip():
                parser.error(f"--header must look like 'Name: value', got {h!r}")
            headers.append((name.strip().lower(), value.strip()))
        body = args.data.encode() if args.data is not None else b""
        method = args.method or ("POST" if args.data is not None else "GET")
        try:
            metric = (
                ActiveMetric(args.active_metric[0], args.active_metric[1], insecure=args.insecure)
                if args.active_metric
                else None
            )
            prebuilt.append(
                external_target(
                    args.url,
                    h2=args.h2,
                    method=method,
                    body=body,
                    headers=headers,
                    insecure=args.insecure,
                    h3=args.h3,
                    h3_port=args.h3_port,
                    cafile=args.cacert,
                    read_timeout=timing.max_duration,
                    active_metric=metric,
                    behind_proxy=args.behind_proxy,
                    concurrency=args.concurrency,
                )
            )
        except ValueError as exc:
            parser.error(str(exc))
        targets = args.targets or []
    elif args.h2 or args.data or args.header or args.method:
        parser.error("--h2, --data, --header and --method apply to --url only")
    elif args.h3 or args.h3_port or args.cacert:
        parser.error("--h3, --h3-port and --cacert apply to --url only")
    if args.h3_port is not None and not (args.h3 and 0 < args.h3_port < 65536):
        parser.error("--h3-port takes a port (1-65535) and needs --h3")
    if args.cacert is not None and not os.path.isfile(args.cacert):
        parser.error(f"--cacert: no such file {args.cacert!r}")

    def progress(result: object) -> None:
        if not args.json:
            sys.stderr.write(".")
            sys.stderr.flush()

    suite = run_suite(targets, args.cases, timing=timing, jobs=args.jobs, prebuilt=prebuilt, progress=progress)
    if not args.json:
        sys.stderr.write("\n")
        print(render(suite, verbose=args.verbose))
    else:
        print(to_json(suite))
    if args.html:
        try:
            with open(args.html, "w", encoding="utf-8") as f:
                f.write(to_html(suite))
        except OSError as exc:
            print(f"cannot write {args.html}: {exc}", file=sys.stderr)
            return 2
    return 1 if suite.failed or (args.strict and suite.faults) else 0


if __name__ == "__main__":
    sys.exit(main())
