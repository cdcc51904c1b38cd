"""The servers under test: one small ASGI app module per target.

Each target answers the same paths (see :func:`~benchmarks.targets.common.source_for`)
with the same generators; only the streaming layer differs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """One streaming layer under test."""

    key: str
    label: str
    app: str  # "module:attribute"


TARGETS: tuple[Target, ...] = (
    Target("raw", "raw ASGI", "benchmarks.targets.raw:app"),
    Target("starlette", "Starlette StreamingResponse", "benchmarks.targets.starlette_stream:app"),
    Target("sse-starlette", "sse-starlette", "benchmarks.targets.sse_starlette_app:app"),
    Target("fastapi", "FastAPI EventSourceResponse", "benchmarks.targets.fastapi_sse:app"),
    Target("fastapi-line", "FastAPI EventSourceResponse + the line", "benchmarks.targets.fastapi_sse:line_app"),
    Target("asgi-stream", "asgi-stream per-token", "benchmarks.targets.asgi_stream_app:per_token_app"),
    Target("asgi-stream-coalesce", "asgi-stream coalescing", "benchmarks.targets.asgi_stream_app:coalesce_app"),
)
BY_KEY = {t.key: t for t in TARGETS}
#: The baselines ratios are computed against.
RAW, SSE_STARLETTE = "raw", "sse-starlette"
