"""Integrations of asgi-stream with model runtimes.

Each integration lives in its own module and imports its runtime lazily, so
``import asgi_stream`` never pulls in heavy dependencies:

* :mod:`asgi_stream.integrations.transformers` — ``model.generate`` from Hugging Face
  transformers in a worker thread, with incremental detokenisation and a cancel token
  that stops generation within one decode step.
"""
