"""Side-by-side benchmarks of asgi-stream against a raw ASGI app, Starlette's
StreamingResponse and sse-starlette.

Run everything with one command::

    python -m benchmarks            # full run (~20 min), writes benchmarks/results/
    python -m benchmarks --quick    # a few minutes
    python -m benchmarks --smoke    # seconds; checks every target produces figures

See docs/benchmarks.md for the methodology.
"""
