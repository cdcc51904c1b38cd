"""The registry of cases. Importing this package registers them all, in report order."""

from __future__ import annotations

from collections.abc import Callable

from .base import Case, CaseContext, Fail, Result, ServerFault, Skip, Timing

#: Case name → case, in registration (report) order.
CASES: dict[str, Case] = {}


def case(
    name: str,
    title: str,
    *,
    protocols: tuple[str, ...] = ("h1", "h2"),
    needs_app: bool = False,
    needs_hooks: bool = False,
    proxy: bool | None = None,
    timing: bool = False,
    heavy: bool = False,
    needs_demo: bool = False,
    alone: bool = False,
    shared: bool = False,
) -> Callable[[Callable[[CaseContext], str]], Callable[[CaseContext], str]]:
    """Register ``run(ctx) -> evidence`` as a case (see :class:`~.base.Case`)."""

    def register(fn: Callable[[CaseContext], str]) -> Callable[[CaseContext], str]:
        if name in CASES:
            raise ValueError(f"duplicate case name {name!r}")
        CASES[name] = Case(
            name=name,
            title=title,
            run=fn,
            protocols=frozenset(protocols),
            needs_app=needs_app,
            needs_hooks=needs_hooks,
            proxy=proxy,
            timing=timing,
            heavy=heavy,
            needs_demo=needs_demo,
            alone=alone,
            shared=shared,
        )
        return fn

    return register


# Registration order is report order.
# isort: off
from . import common, http1, http2, http3, proxy as _proxy, demo  # noqa: E402,F401
# isort: on

__all__ = ["CASES", "Case", "CaseContext", "Fail", "Result", "ServerFault", "Skip", "Timing", "case"]
