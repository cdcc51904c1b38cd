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
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    return path if not root or path.startswith(root) else root + path


def endpoint_name(scope: Scope) -> str:
    """A readable name for the endpoint serving this scope (for logs and metrics)."""
    endpoint: Any = scope.get("endpoint")
    if endpoint is None:
        route = scope.get("route")
        return getattr(route, "path", None) or scope.get("path", "?")
    module = getattr(endpoint, "__module__", None)
    name = getattr(endpoint, "__qualname__", None) or getattr(endpoint, "__name__", None) or repr(endpoint)
    return f"{module}.{name}" if module else name


@contextlib.contextmanager
def collapse_excgroups() -> Iterator[None]:
    """Re-raise a task group's single exception as itself, so error handlers that
    expect plain exceptions (Starlette's, FastAPI's) keep working."""
    try:
        yield
    except BaseExceptionGroup as group:
        while isinstance(group, BaseExceptionGroup) and len(group.exceptions) == 1:
            group = group.exceptions[0]
        raise group from None
