"""Streaming chat clients for the serving benchmark, and the server CPU probe.

Every server is driven the same way: ``POST /v1/chat/completions`` with
``stream: true``, greedy, the same prompts; the client times each stream's first
content and its last, and reads the completion's token count from the usage the
server reports (all three report it), else counts content chunks.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil

#: Chat prompts: stream i of a run asks QUESTIONS[i].
QUESTIONS = [
    "What is the capital of France?",
    "Name three colours of the rainbow.",
    "Write a haiku about rivers.",
    "Why is the sky blue?",
    "Give me a tip for learning Python.",
    "What do bees make?",
    "Describe a cat in one sentence.",
    "What is the boiling point of water?",
    "Suggest a name for a pet dog.",
    "How many days are in a week?",
    "What is a rainbow?",
    "Tell me a fact about the Moon.",
    "What is the largest ocean?",
    "Write a sentence about autumn.",
    "What do plants need to grow?",
    "Name a famous painter.",
]


@dataclass
class Stream:
    """One streamed completion as the client saw it."""

    index: int
    sent: float = 0.0
    first: float | None = None
    last: float | None = None
    text: str = ""
    chunks: int = 0
    usage_tokens: int | None = None
    finish: str | None = None
    error: str | None = None
    arrivals: list[float] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        """Completion tokens (the server's usage, else content chunks)."""
        return self.usage_tokens if self.usage_tokens is not None else self.chunks

    @property
    def ttft(self) -> float | None:
        """Request sent → first content, seconds."""
        return None if self.first is None else self.first - self.sent

    @property
    def tokens_per_second(self) -> float | None:
        """Decode speed after the first content."""
        if self.first is None or self.last is None or self.tokens < 2 or self.last <= self.first:
            return None
        return (self.tokens - 1) / (self.last - self.first)


def body(model: str, question: str, max_tokens: int) -> dict[str, Any]:
    """The request every server gets."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def stream_one(
    client: httpx.AsyncClient,
    url: str,
    payload: dict[str, Any],
    record: Stream,
    *,
    close_after: int | None = None,
    closed: asyncio.Event | None = None,
) -> Stream:
    """Run one stream; with ``close_after``, hang up after that many content chunks."""
    record.sent = time.monotonic()
    try:
        async with client.stream("POST", url + "/v1/chat/completions", json=payload) as response:
            if response.status_code != 200:
                record.error = f"HTTP {response.status_code}"
                return record
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                usage = chunk.get("usage")
                if usage and usage.get("completion_tokens") is not None:
                    record.usage_tokens = int(usage["completion_tokens"])
                for choice in chunk.get("choices") or ():
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        now = time.monotonic()
                        if record.first is None:
                            record.first = now
                        record.last = now
                        record.arrivals.append(now)
                        record.text += content
                        record.chunks += 1
                    if choice.get("finish_reason"):
                        record.finish = choice["finish_reason"]
                if close_after is not None and record.chunks >= close_after:
                    if closed is not None:
                        closed.set()
                    break  # leaving the block closes the connection
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        record.error = f"{type(exc).__name__}: {exc}"
    return record


async def run_concurrent(url: str, model: str, concurrency: int, max_tokens: int) -> tuple[list[Stream], float]:
    """``concurrency`` streams started together; returns them and the wall time."""
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits) as client:
        records = [Stream(i) for i in range(concurrency)]
        started = time.monotonic()
        await asyncio.gather(
            *(
                stream_one(client, url, body(model, QUESTIONS[i % len(QUESTIONS)], max_tokens), records[i])
                for i in range(concurrency)
            )
        )
        return records, time.monotonic() - started


class CpuProbe:
    """Samples a process's CPU use (in cores) every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (time, cumulative CPU seconds)
        self._task: asyncio.Task[None] | None = None

    def _cpu(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    async def _run(self) -> None:
        while True:
            self.samples.append((time.monotonic(), self._cpu()))
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        """Begin sampling (in the running loop)."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """End sampling."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def rate(self, start: float, end: float) -> float | None:
        """Mean CPU use (cores) between two times."""
        inside = [(t, c) for t, c in self.samples if start <= t <= end]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return None
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

    def stopped_after(self, t0: float, *, window: float = 0.1, idle: float = 0.15) -> float | None:
        """Seconds from ``t0`` until the process's CPU use over ``window`` falls below
        ``idle`` cores (its compute stopped), or None if it never did."""
        for t, _ in self.samples:
            if t < t0:
                continue
            rate = self.rate(t, t + window)
            if rate is not None and rate < idle:
                return t - t0
        return None


async def cancel_single(url: str, model: str, pid: int, *, close_after: int, max_tokens: int) -> dict[str, Any]:
    """One stream; the client hangs up after ``close_after`` tokens. How long until the
    server's CPU use drops (its compute stopped), against its decode step time."""
    probe = CpuProbe(pid)
    probe.start()
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits) as client:
        record = Stream(0)
        await stream_one(
            client, url, body(model, "Tell a long story about a dragon.", max_tokens), record, close_after=close_after
        )
        closed_at = time.monotonic()
    await asyncio.sleep(1.5)
    await probe.stop()
    gaps = [b - a for a, b in zip(record.arrivals, record.arrivals[1:], strict=False)]
    step = sorted(gaps)[len(gaps) // 2] if gaps else None
    stop = probe.stopped_after(closed_at)
    return {
        "decode_step_ms": None if step is None else step * 1000,
        "busy_cores": probe.rate(record.first or closed_at, closed_at),
        "cpu_stop_ms": None if stop is None else stop * 1000,
        "cpu_after_cores": probe.rate(closed_at + 0.5, closed_at + 1.5),
        "tokens_before_close": record.chunks,
        "error": record.error,
    }


async def cancel_sibling(
    url: str, model: str, pid: int, *, siblings: int, close_after: int, max_tokens: int
) -> dict[str, Any]:
    """``siblings + 1`` streams; one hangs up early. The others' text (compared by the
    caller with their text alone) and their speed before and after."""
    probe = CpuProbe(pid)
    probe.start()
    closed = asyncio.Event()
    limits = httpx.Limits(max_connections=siblings + 4, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits) as client:
        victim = Stream(0)
        others = [Stream(i + 1) for i in range(siblings)]
        closed_at: list[float] = []

        async def leave() -> None:
            await stream_one(
                client,
                url,
                body(model, "Tell a long story about a dragon.", max_tokens),
                victim,
                close_after=close_after,
                closed=closed,
            )
            closed_at.append(time.monotonic())

        await asyncio.gather(
            leave(),
            *(stream_one(client, url, body(model, QUESTIONS[o.index], max_tokens), o) for o in others),
        )
    await probe.stop()
    t = closed_at[0] if closed_at else time.monotonic()

    def rate(a: float, b: float) -> float:
        n = sum(1 for o in others for x in o.arrivals if a <= x < b)
        return n / (b - a) if b > a else 0.0

    end = min((o.last or t) for o in others)
    return {
        "sibling_texts": [o.text for o in others],
        "sibling_indexes": [o.index for o in others],
        "sibling_errors": [o.error for o in others if o.error],
        "sibling_chunks_per_s_before": rate(max(t - 2.0, min(o.first or t for o in others)), t),
        "sibling_chunks_per_s_after": rate(t + 0.2, max(end, t + 0.3)),
        "cpu_before_cores": probe.rate(t - 1.0, t),
        "cpu_after_cores": probe.rate(t + 0.2, end),
    }
