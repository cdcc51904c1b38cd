"""``tests/anyio_compat.py`` for sse-starlette's tests (absent from its sdist): the
tests import ``collapse_excgroups`` from here; it is the package's own helper."""

from sse_starlette._utils import collapse_excgroups

__all__ = ["collapse_excgroups"]
