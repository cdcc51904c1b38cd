"""Helpers on the ASGI scope shared by the middleware and the responses."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ._types import Scope

#: Where StreamMiddleware leaves its per-request context in the scope.
CTX_KEY = "asgi_stream.context"


def full_path(scope: Scope) -> str:
    """The request path including any mount prefix (``root_path``), whichever ASGI
    convention the server and router follow."""
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", ""))
    return path if not root or path.startswith(root) else root + path


def endpoint_name(scope: Scope) -> str:
    """A readable name for the endpoint serving this scope (for logs and metrics)."""
    endpoint: Any = scope.get("endpoint")
    if endpoint is None:
        route = scope.get("route")
        return str(getattr(route, "path", None) or scope.get("path", "?"))
    module = getattr(endpoint, "__module__", None)
    name = getattr(endpoint, "__qualname__", None) or getattr(endpoint, "__name__", None) or repr(endpoint)
    return f"{module}.{name}" if module else name


@contextlib.contextmanager
def unwrap_task_group_error() -> Iterator[None]:
    """Around one of asgi-stream's own task groups: re-raise the single exception the
    group wraps as itself, so error handlers that expect plain exceptions (Starlette's,
    FastAPI's) see what the application raised.

    Only the one level of grouping the task group added is removed (a group the
    application raised itself stays a group), and the exception keeps its own
    ``__cause__``, ``__context__`` and traceback chain.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1:
            raise
        exc = group.exceptions[0]
        cause, context, suppress = exc.__cause__, exc.__context__, exc.__suppress_context__
        try:
            raise exc  # the chain is restored below
        finally:
            exc.__cause__, exc.__context__, exc.__suppress_context__ = cause, context, suppress
