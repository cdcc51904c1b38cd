"""asgi-stream conformance suite: raw-wire HTTP/1.1 and HTTP/2 checks of token streaming.

Run it with ``python -m conformance`` (or ``asgi-stream-conformance``). The measuring
path uses only the hand-rolled clients in :mod:`conformance.clients` (h11 and h2 over
plain sockets), which record every chunk or DATA frame with a monotonic timestamp.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
