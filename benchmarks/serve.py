"""Server process: ``python -m benchmarks.serve TARGET KIND PORT CORE``.

Pins itself (and so every thread it starts) to CPU ``CORE`` (-1: no pinning), raises
its open-file limit to the hard limit, and serves the target's app with the given
server kind until killed.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import resource
import sys
from typing import Any


def load_app(spec: str) -> Any:
    """Import ``module:attribute``."""
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def raise_nofile() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def serve(app: Any, kind: str, port: int) -> None:
    """Run ``app`` on 127.0.0.1:``port`` with the server ``kind`` (blocks)."""
    if kind.startswith("uvicorn"):
        import uvicorn

        loop, http = ("asyncio", "h11") if kind == "uvicorn-h11" else ("uvloop", "httptools")
        uvicorn.run(
            app,
            host="127.0.0.1",
            port=port,
            loop=loop,
            http=http,
            access_log=False,
            log_level="warning",
            backlog=4096,
            timeout_keep_alive=60,
        )
    elif kind.startswith("hypercorn"):
        from hypercorn.asyncio import serve as hyper_serve
        from hypercorn.config import Config

        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.accesslog = None
        config.errorlog = None
        config.loglevel = "WARNING"
        config.backlog = 4096
        config.keep_alive_timeout = 60
        config.h2_max_concurrent_streams = 1000
        asyncio.run(hyper_serve(app, config))
    else:
        raise SystemExit(f"unknown server kind {kind!r}")


def main(argv: list[str] | None = None) -> None:
    """Entry point (see the module docstring)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 4:
        raise SystemExit("usage: python -m benchmarks.serve TARGET_APP KIND PORT CORE")
    spec, kind, port, core = args[0], args[1], int(args[2]), int(args[3])
    if core >= 0:
        os.sched_setaffinity(0, {core})
    raise_nofile()
    logging.basicConfig(level=logging.WARNING)
    serve(load_app(spec), kind, port)


if __name__ == "__main__":
    main()
