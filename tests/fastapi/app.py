"""A FastAPI app whose path operations use FastAPI's own streaming — SSE
(``response_class=EventSourceResponse``) and JSON Lines (``AsyncIterable[Item]`` /
``Iterable[Item]``), each as an ``async def`` and a ``def`` generator — and record, per
request key, what their generators did."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
from fastapi import APIRouter, Depends, FastAPI
from fastapi.sse import EventSourceResponse
from pydantic import BaseModel

from asgi_stream import StreamMiddleware, StreamRecord

from ..support.waiting import wait_for

KINDS = [("sse", "async"), ("sse", "sync"), ("jsonl", "async"), ("jsonl", "sync")]
KIND_IDS = [f"{fmt}-{mode}" for fmt, mode in KINDS]

#: Set by a dependency, read inside the generators (context propagation).
request_tag: contextvars.ContextVar[str] = contextvars.ContextVar("request_tag", default="unset")


class Item(BaseModel):
    n: int
    pad: str = ""


@dataclass
class Trace:
    """What one request's generator (and its yield dependency) did, in monotonic seconds."""

    steps_started: list[float] = field(default_factory=list)
    produced: list[float] = field(default_factory=list)
    finally_at: float | None = None
    finally_thread: str | None = None
    step_threads: set[str] = field(default_factory=set)
    resource_open_in_finally: bool | None = None
    tag_seen: str | None = None
    dependency_closed_at: float | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def wait_finally(self, timeout: float) -> float:
        assert self.done.wait(timeout), "the generator's finally block did not run in time"
        assert self.finally_at is not None
        return self.finally_at


@dataclass
class Params:
    """How a generator behaves (query parameters)."""

    n: int = 0  # items to yield; 0: forever
    delay: float = 0.0  # seconds each step takes before it yields (sleep / anyio.sleep)
    size: int = 0  # padding bytes per item
    gap_after: int = -1  # after this item index, stay silent for `gap` seconds
    gap: float = 0.0
    fail_after: int = -1  # raise ValueError after this many items


class Resource:
    def __init__(self) -> None:
        self.open = True


class Probes:
    """Traces by request key, and the middleware's stream records."""

    def __init__(self) -> None:
        self.traces: dict[str, Trace] = {}
        self.records: list[StreamRecord] = []
        self.lock = threading.Lock()

    def trace(self, key: str) -> Trace:
        with self.lock:
            return self.traces.setdefault(key, Trace())

    def record(self, key: str, timeout: float = 10.0) -> StreamRecord:
        """The stream record of request ``key``, once the middleware wrote it."""
        return wait_for(
            lambda: next((rec for rec in list(self.records) if rec.path.endswith("/" + key)), None),
            timeout,
            message=f"no stream record for {key}",
        )


def make_app(probes: Probes, *, line: bool = True, **options: Any) -> FastAPI:
    """The app; ``line`` adds ``app.add_middleware(StreamMiddleware, **options)``."""
    app = FastAPI()
    router = APIRouter()

    async def resource(key: str) -> AsyncIterable[Resource]:
        res = Resource()
        try:
            yield res
        finally:
            res.open = False
            probes.trace(key).dependency_closed_at = time.monotonic()

    def sync_resource(key: str) -> Iterable[Resource]:  # run on FastAPI's thread pool
        res = Resource()
        try:
            yield res
        finally:
            res.open = False
            probes.trace(key).dependency_closed_at = time.monotonic()

    async def tagged(key: str) -> str:
        request_tag.set(f"tag-{key}")
        return key

    def params(
        n: int = 0, delay: float = 0.0, size: int = 0, gap_after: int = -1, gap: float = 0.0, fail_after: int = -1
    ) -> Params:
        return Params(n, delay, size, gap_after, gap, fail_after)

    def sync_items(
        key: str = Depends(tagged), p: Params = Depends(params), res: Resource = Depends(resource)
    ) -> Iterable[Item]:
        trace = probes.trace(key)
        trace.tag_seen = request_tag.get()
        i = 0
        try:
            while p.n == 0 or i < p.n:
                trace.steps_started.append(time.monotonic())
                trace.step_threads.add(threading.current_thread().name)
                if p.delay:
                    time.sleep(p.delay)
                if i == p.fail_after:
                    raise ValueError("generator failed")
                trace.produced.append(time.monotonic())
                yield Item(n=i, pad="x" * p.size)
                if i == p.gap_after:
                    time.sleep(p.gap)
                i += 1
        finally:
            trace.resource_open_in_finally = res.open
            trace.finally_thread = threading.current_thread().name
            trace.finally_at = time.monotonic()
            trace.done.set()

    async def async_items(
        key: str = Depends(tagged), p: Params = Depends(params), res: Resource = Depends(resource)
    ) -> AsyncIterable[Item]:
        trace = probes.trace(key)
        trace.tag_seen = request_tag.get()
        i = 0
        try:
            while p.n == 0 or i < p.n:
                trace.steps_started.append(time.monotonic())
                if p.delay:
                    await anyio.sleep(p.delay)
                if i == p.fail_after:
                    raise ValueError("generator failed")
                trace.produced.append(time.monotonic())
                yield Item(n=i, pad="x" * p.size)
                if i == p.gap_after:
                    await anyio.sleep(p.gap)
                i += 1
        finally:
            trace.resource_open_in_finally = res.open
            trace.finally_thread = threading.current_thread().name
            trace.finally_at = time.monotonic()
            trace.done.set()

    @router.get("/sync-dependency/{key}", response_class=EventSourceResponse)
    def with_sync_dependency(key: str, res: Resource = Depends(sync_resource)) -> Iterable[Item]:
        trace = probes.trace(key)
        try:
            while True:
                trace.produced.append(time.monotonic())
                yield Item(n=len(trace.produced), pad="x" * 65536)
        finally:
            trace.resource_open_in_finally = res.open
            trace.finally_at = time.monotonic()
            trace.done.set()

    # One function per kind of generator, each a path operation twice: SSE and JSON Lines.
    router.get("/sse/async/{key}", response_class=EventSourceResponse)(async_items)
    router.get("/sse/sync/{key}", response_class=EventSourceResponse)(sync_items)
    router.get("/jsonl/async/{key}")(async_items)
    router.get("/jsonl/sync/{key}")(sync_items)

    app.include_router(router)
    app.include_router(router, prefix="/included")  # a router included twice, under a prefix
    if line:
        app.add_middleware(StreamMiddleware, on_end=probes.records.append, **options)
    return app
