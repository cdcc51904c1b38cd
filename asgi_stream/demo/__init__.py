"""The bundled model app: OpenAI-compatible streaming endpoints, a native ``/generate``,
Prometheus metrics and a live web page, on a real transformers model.

    from asgi_stream.demo import create_app
    app = create_app()                # or create_app("tiny"), create_app(paced=True)

Run it with ``asgi-stream demo`` (see docs/demo.md).
"""

from .app import DemoSettings, create_app

__all__ = ["DemoSettings", "create_app"]
