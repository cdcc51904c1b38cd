"""FastAPI's own streaming under StreamMiddleware: ``EventSourceResponse`` path operations
and JSON Lines generators (FastAPI ≥ 0.135) get TokenStream's generator lifecycle.

FastAPI iterates a *sync* (``def``) streaming path operation on its thread pool, one
``next()`` per pool call, and iterates every streaming generator with ``async for``, which
never closes it: when the client leaves while a generator is suspended (a sync one always
is, between pool calls; an async one when FastAPI was blocked sending), its ``finally``
(releasing a model slot, a DB session, a lock) waits for the garbage collector. For
requests that pass through :class:`~asgi_stream.StreamMiddleware`, and path operations that
are generator functions:

* a sync generator runs on one worker thread of its own (:class:`ThreadIterator`, as
  TokenStream runs sync generators), which runs every ``next()`` and then ``close()``, right
  after the step in flight returns, and exits; it no longer takes a slot of the thread pool;
* when the request ends, whatever ended it (client gone, send timeout, shutdown drain, an
  error, completion), the path operation's generator is closed: a sync one on its thread,
  an async one left suspended at a ``yield`` at once (one blocked in an ``await`` is closed
  by the cancellation itself). This happens before FastAPI tears down the path operation's
  ``yield`` dependencies, so a ``finally`` may still use them; the request waits for it at
  most the middleware's ``close_timeout``.

StreamMiddleware installs this by itself when FastAPI is imported (:func:`install_if_imported`
from ``StreamMiddleware.__init__``); :func:`install` does the same explicitly. It rebinds
three names of the ``fastapi.routing`` module, once per process; requests that do not carry
StreamMiddleware's context run FastAPI's own code:

* ``solve_dependencies``: calls FastAPI's, then registers the request's stream closing on
  FastAPI's request-scoped exit stack (``scope["fastapi_inner_astack"]``);
* ``iterate_in_threadpool`` (FastAPI's sync SSE path): returns a :class:`ThreadIterator`;
* ``StreamingResponse`` (the SSE and JSON Lines responses FastAPI builds): a subclass that
  iterates a sync body on a :class:`ThreadIterator` and finds the path operation's generator
  object among the locals of the FastAPI frame constructing it (the local whose code object
  is the endpoint's), to close it when the request ends.

With a FastAPI that lacks any of these (before 0.135: no ``fastapi.sse``), nothing is
rebound and :func:`install` returns False. :func:`uninstall` puts FastAPI's names back.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Generator, Iterable, Iterator
from contextlib import AsyncExitStack
from contextvars import ContextVar
from types import FrameType
from typing import Any, TypeVar

import anyio

from ..lifecycle import Ending
from ..scope import CTX_KEY, endpoint_name
from ..source import TokenSource

logger = logging.getLogger("asgi_stream")

T = TypeVar("T")

#: Seconds a request waits for a sync generator to finish closing, when the middleware's
#: own ``close_timeout`` cannot be read.
DEFAULT_CLOSE_TIMEOUT = 5.0

_SCOPE_KEY = "asgi_stream.fastapi"

#: The names of ``fastapi.routing`` this module rebinds.
_NAMES = ("solve_dependencies", "iterate_in_threadpool", "StreamingResponse")
_lock = threading.Lock()
#: The names this module replaced in ``fastapi.routing``, with FastAPI's originals.
_originals: dict[str, Any] = {}
#: The streams of the request whose generator path operation the current task handles.
_current: ContextVar[_RequestStreams | None] = ContextVar("asgi_stream_fastapi_request", default=None)


class ThreadIterator(AsyncIterator[T]):
    """An async iterator over a sync iterable, run on one worker thread of its own.

    Each ``__anext__`` runs one ``next()`` on that thread. If the awaiting task is
    cancelled meanwhile, the iterator is closed on the thread right after that ``next()``
    returns (its ``finally`` blocks run there) and the thread exits; the cancelled task
    waits for that, up to ``close_timeout`` seconds, as it would for FastAPI's thread
    pool. :meth:`aclose` does the same.
    """

    __slots__ = ("_source",)

    def __init__(
        self, iterable: Iterable[T], *, name: str = "stream", close_timeout: float = DEFAULT_CLOSE_TIMEOUT
    ) -> None:
        self._source = TokenSource(iterable, name=name, close_timeout=close_timeout)

    def __aiter__(self) -> ThreadIterator[T]:
        return self

    async def __anext__(self) -> T:
        try:
            item: T = await self._source.next()
        except StopAsyncIteration:
            raise
        except BaseException:
            # Cancelled mid-step: close right after it, on its thread — and wait for that
            # (shielded, up to close_timeout), as FastAPI's thread pool would, so what the
            # step did (a background task it added, the values it handed FastAPI's own
            # tasks) is there before the response goes on.
            await self._source.aclose()
            raise
        return item

    async def aclose(self) -> None:
        """Close the iterator right after its current ``next()`` (if any) and wait, up to
        ``close_timeout``, for its ``finally`` blocks. Idempotent; never raises."""
        await self._source.aclose()


class _RequestStreams:
    """The streaming bodies of one request, closed when FastAPI's request stack unwinds."""

    __slots__ = ("close_timeout", "items", "scope")

    def __init__(self, scope: dict[str, Any], stack: AsyncExitStack) -> None:
        self.scope = scope
        config = getattr(scope.get(CTX_KEY), "config", None)
        timeout = getattr(config, "close_timeout", DEFAULT_CLOSE_TIMEOUT)
        self.close_timeout: float = timeout if isinstance(timeout, int | float) else DEFAULT_CLOSE_TIMEOUT
        self.items: list[Any] = []
        stack.push_async_exit(self._exit)

    @property
    def name(self) -> str:
        """The endpoint, for thread names and logs."""
        return endpoint_name(self.scope)

    async def _exit(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        """The request stack unwinds: close what is open; and swallow the one error
        FastAPI's own SSE teardown raises when asgi-stream ended the stream while its
        body task was blocked in a send (the keepalive task, blocked sending too, finds
        its receiver closed: ``BrokenResourceError``). Without the middleware such a
        stream never ends; nothing else is swallowed."""
        await self.close()
        if isinstance(exc, BaseExceptionGroup) and self._aborted():
            rest = exc.split(anyio.BrokenResourceError)[1]
            if rest is None:
                logger.debug("asgi_stream: FastAPI's SSE teardown after an aborted stream: %r", exc)
                return True
        return False

    def _aborted(self) -> bool:
        stream = getattr(self.scope.get(CTX_KEY), "stream", None)
        lifecycle = getattr(stream, "lifecycle", None)
        return lifecycle is not None and lifecycle.ending is Ending.ABORT

    async def close(self) -> None:
        # What is still open: sync generators' iterators (closing a finished one costs
        # nothing), and the path operation's async generator if FastAPI left it suspended
        # at a yield (its consumer was cancelled while sending). A running one is closed
        # by its own cancellation.
        pending = [i for i in self.items if isinstance(i, ThreadIterator) or (i.ag_frame and not i.ag_running)]
        if not pending:
            return
        with anyio.CancelScope(shield=True):
            for item in pending:
                if isinstance(item, ThreadIterator):
                    await item.aclose()
                    continue
                try:
                    with anyio.move_on_after(self.close_timeout):
                        await item.aclose()
                except Exception:
                    logger.exception("asgi_stream: closing the generator of %s raised", self.name)


def _path_operation_generator(frame: FrameType, scope: dict[str, Any]) -> Any:
    """The generator object the path operation returned, found among the locals of
    FastAPI's request handler (the frame building the response): the one whose code is
    the endpoint's. None when there is no such local (another FastAPI layout)."""
    endpoint = scope.get("endpoint")
    if endpoint is None:
        return None
    code = getattr(endpoint, "__code__", None)
    if code is None or hasattr(endpoint, "__wrapped__"):
        try:
            code = inspect.unwrap(endpoint).__code__
        except (AttributeError, ValueError):
            return None
    for value in frame.f_locals.values():
        if getattr(value, "ag_code", None) is code or getattr(value, "gi_code", None) is code:
            return value
    return None


def _closing(body: Iterator[T], generator: Generator[Any, Any, Any]) -> Iterator[T]:
    """``body`` (FastAPI's sync JSON Lines wrapper around ``generator``); closing it closes
    ``generator`` too, on the same thread, instead of leaving that to reference counting."""
    try:
        yield from body
    finally:
        generator.close()


# ------------------------------------------------------------ the replacements
async def _solve_dependencies(*args: Any, **kwargs: Any) -> Any:
    """FastAPI's ``solve_dependencies``; then, for a generator path operation under
    StreamMiddleware, registers the request's stream closing on FastAPI's request stack
    (after the dependencies, so it runs before their teardown and after FastAPI's own
    SSE producer has stopped)."""
    result = await _originals["solve_dependencies"](*args, **kwargs)
    streams = None
    scope = getattr(kwargs.get("request"), "scope", None)
    if scope is not None and scope.get("type") == "http" and CTX_KEY in scope:
        call = getattr(kwargs.get("dependant"), "call", None)
        stack = scope.get("fastapi_inner_astack", kwargs.get("async_exit_stack"))
        generator_function = inspect.isgeneratorfunction(call) or inspect.isasyncgenfunction(call)
        if generator_function and isinstance(stack, AsyncExitStack):
            streams = _RequestStreams(scope, stack)
    _current.set(streams)
    return result


def _iterate_in_thread(iterator: Iterable[T]) -> AsyncIterator[T]:
    """``iterate_in_threadpool`` for FastAPI's sync SSE path operations."""
    streams = _current.get()
    if streams is None:
        original: Callable[[Iterable[T]], AsyncIterator[T]] = _originals["iterate_in_threadpool"]
        return original(iterator)
    driven: ThreadIterator[T] = ThreadIterator(iterator, name=streams.name, close_timeout=streams.close_timeout)
    streams.items.append(driven)
    return driven


def _response_class(base: type[Any]) -> type[Any]:
    class StreamingResponse(base):  # type: ignore[misc]
        """FastAPI's SSE / JSON Lines response; under StreamMiddleware a sync body runs on
        a :class:`ThreadIterator` and the body is closed when the request ends."""

        def __init__(self, content: Any, *args: Any, **kwargs: Any) -> None:
            streams = _current.get()
            if streams is not None:
                generator = _path_operation_generator(sys._getframe(1), streams.scope)
                if not isinstance(content, AsyncIterable):
                    if inspect.isgenerator(generator) and generator is not content:
                        content = _closing(content, generator)
                    content = ThreadIterator(content, name=streams.name, close_timeout=streams.close_timeout)
                    streams.items.append(content)
                elif inspect.isasyncgen(generator):
                    streams.items.append(generator)
            super().__init__(content, *args, **kwargs)

    StreamingResponse.__module__ = __name__
    StreamingResponse.__qualname__ = "StreamingResponse"
    return StreamingResponse


# ------------------------------------------------------------ install
def supported() -> bool:
    """Whether the installed FastAPI has the streaming this module hooks into (≥ 0.135:
    ``fastapi.sse`` and the three names in ``fastapi.routing``). Imports FastAPI."""
    try:
        import fastapi.routing as routing
        import fastapi.sse  # noqa: F401  (present from 0.135 on)
        from starlette.responses import StreamingResponse
    except ImportError:
        return False
    solve = _originals.get("solve_dependencies", getattr(routing, "solve_dependencies", None))
    response = _originals.get("StreamingResponse", getattr(routing, "StreamingResponse", None))
    iterate = _originals.get("iterate_in_threadpool", getattr(routing, "iterate_in_threadpool", None))
    if not (inspect.iscoroutinefunction(solve) and callable(iterate)):
        return False
    if not (isinstance(response, type) and issubclass(response, StreamingResponse)):
        return False
    try:
        return "request" in inspect.signature(solve).parameters
    except (TypeError, ValueError):
        return False


def install() -> bool:
    """Hook FastAPI's SSE and JSON Lines streaming (see the module doc for exactly what is
    rebound). Idempotent and thread-safe. Returns False, changing nothing, when the
    installed FastAPI does not have that streaming or is missing."""
    with _lock:
        if _originals:
            return True
        if not supported():
            logger.debug("asgi_stream: this FastAPI has no SSE / JSON Lines streaming to hook")
            return False
        routing: Any = importlib.import_module("fastapi.routing")
        originals = {name: getattr(routing, name) for name in _NAMES}
        routing.solve_dependencies = _solve_dependencies
        routing.iterate_in_threadpool = _iterate_in_thread
        routing.StreamingResponse = _response_class(originals["StreamingResponse"])
        _originals.update(originals)
        return True


def install_if_imported() -> bool:
    """:func:`install` when FastAPI is already imported (what StreamMiddleware calls, so a
    plain Starlette app never imports FastAPI). Returns whether the hooks are in place."""
    if "fastapi.routing" not in sys.modules:
        return False
    return install()


def installed() -> bool:
    """Whether the hooks are in place."""
    return bool(_originals)


def uninstall() -> None:
    """Put FastAPI's own names back (each one only if it is still this module's)."""
    with _lock:
        if not _originals:
            return
        routing: Any = importlib.import_module("fastapi.routing")
        for name, original in _originals.items():
            current = getattr(routing, name, None)
            ours = current is _solve_dependencies or current is _iterate_in_thread
            ours = ours or getattr(current, "__module__", None) == __name__
            if ours:
                setattr(routing, name, original)
        _originals.clear()


__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "ThreadIterator",
    "install",
    "install_if_imported",
    "installed",
    "supported",
    "uninstall",
]
