"""Integrations of asgi-stream with model runtimes and web frameworks.

Each integration lives in its own module and imports its runtime lazily, so
``import asgi_stream`` never pulls in heavy dependencies:

* :mod:`asgi_stream.integrations.transformers` — ``model.generate`` from Hugging Face
  transformers in a worker thread, with incremental detokenisation and a cancel token
  that stops generation within one decode step.
* :mod:`asgi_stream.integrations.fastapi` — FastAPI's own SSE / JSON Lines path
  operations (FastAPI ≥ 0.135): sync generators on a worker thread of their own, every
  such generator closed when its request ends. StreamMiddleware installs it by itself.
"""
