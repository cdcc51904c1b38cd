"""The bundled model app: OpenAI-compatible streaming endpoints, a native ``/generate``,
Prometheus metrics and a live web page, on a real transformers model.

    from asgi_stream.demo import create_app
    app = create_app()                # or create_app("tiny"), create_app(paced=True)

Run it with ``asgi-stream demo`` (see docs/demo.md). The web framework and model
modules load on first use of :func:`create_app`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import DemoSettings, create_app

__all__ = ["DemoSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
