"""Skipping send wrappers that only watch for ``http.response.start``.

Starlette wraps ``send`` at several layers (ServerErrorMiddleware, ExceptionMiddleware,
each route's exception handler) with closures that set a ``response_started`` flag on
the start message and pass every message on unchanged. A token stream sends its start
through the full chain, so every layer knows the response started; its body messages —
one per token — can then go to the innermost ``send`` directly, skipping one coroutine
call per layer per token.

Only wrappers recognised by their exact code object are skipped; anything else (a
user's middleware, a compressor, a different Starlette version) stops the walk, and the
stream keeps using the ``send`` it was given.
"""

from __future__ import annotations

import types
from functools import lru_cache

from ._types import Send

_MAX_DEPTH = 16


@lru_cache(maxsize=1)
def _transparent_codes() -> frozenset[types.CodeType]:
    """Code objects of Starlette's pass-through send wrappers, found in its modules."""
    codes: set[types.CodeType] = set()

    def collect(code: types.CodeType, names: tuple[str, ...]) -> None:
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                if const.co_name in names and "send" in const.co_freevars and "response_started" in const.co_freevars:
                    codes.add(const)
                collect(const, names)

    try:
        from starlette import _exception_handler
        from starlette.middleware import errors

        collect(_exception_handler.wrap_app_handling_exceptions.__code__, ("sender",))
        collect(errors.ServerErrorMiddleware.__call__.__code__, ("_send",))
    except (ImportError, AttributeError):  # another Starlette layout: skip nothing
        pass
    return frozenset(codes)


def unwrap(send: Send, stop: Send | None = None) -> Send:
    """The innermost ``send`` behind known pass-through wrappers (``send`` itself if
    it is not one). Stops early at ``stop``."""
    codes = _transparent_codes()
    for _ in range(_MAX_DEPTH):
        if send is stop:
            return send
        code = getattr(send, "__code__", None)
        if code not in codes:
            return send
        cells = dict(zip(code.co_freevars, getattr(send, "__closure__", None) or ()))
        try:
            inner: Send = cells["send"].cell_contents
        except (KeyError, ValueError):
            return send
        send = inner
    return send
