"""The peer report: the suite from outside against the peers' own streaming responses
and asgi-stream (``python -m conformance.peers``; see docs/conformance.md)."""
