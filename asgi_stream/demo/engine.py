"""The demo's generation engines and their concurrency policy.

:class:`ModelEngine` runs a real model: **one generation worker thread behind a
bounded FIFO queue**. A request is admitted if the queue has room (else the endpoint
answers 429 at once), waits its turn (that wait counts toward its TTFT; SSE keepalive
comments cover it), then generates alone on the model, streaming through a bounded
:class:`~asgi_stream.TokenChannel`. A request whose client left while queued is
skipped without running the model. One request at a time keeps outputs independent
(greedy output is identical alone or under load) and the model's memory flat.

:class:`PacedEngine` runs no model: fixed tokens at a fixed interval, each stream on
its own (no queue), for timing tests and conformance checks.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
import torch
from transformers import StoppingCriteria

from ..cancel import CancelReason, CancelToken
from ..channel import TokenChannel
from ..integrations.transformers import GenerationStats, generate_into
from .model import LoadedModel

logger = logging.getLogger("asgi_stream.demo")

_ids = itertools.count(1)

#: The paced mode's tokens, cycled: words, punctuation and multi-byte characters.
PACED_TOKENS: tuple[str, ...] = (
    "The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog",
    " —", " café", " naïve", " 日本語", " 🙂", ".",
)  # fmt: skip


class QueueFull(Exception):
    """The engine cannot admit another request now."""


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to generate one completion."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False
    #: Paced mode only: seconds between tokens (None: the engine's default).
    interval: float | None = None


class Job:
    """One admitted request: its prompt, its output channel and what happened."""

    def __init__(self, prompt_ids: list[int], params: SamplingParams, *, max_buffer: int = 1 << 20) -> None:
        self.id = next(_ids)
        self.prompt_ids = prompt_ids
        self.params = params
        self.channel = TokenChannel(max_buffer=max_buffer)
        self.stats = GenerationStats(prompt_tokens=len(prompt_ids))
        self.submitted_at = time.monotonic()
        self.started_at: float | None = None
        #: Set by :meth:`stop`: the finish reason of an early, normal end.
        self.stop_reason: str | None = None

    def stop(self, reason: str = "stop") -> None:
        """End generation early as a normal finish (e.g. a stop sequence matched):
        no further decode step starts, the channel ends as usual and
        ``stats.finish_reason`` becomes ``reason``. Unlike setting
        :attr:`cancel_token`, the stream is not cancelled."""
        if self.stop_reason is None:
            self.stop_reason = reason

    @property
    def cancel_token(self) -> CancelToken:
        """Set it to stop the job (queued: skipped; running: within one decode step)."""
        return self.channel.cancel_token

    @property
    def queue_wait(self) -> float | None:
        """Seconds between admission and the start of generation."""
        if self.started_at is None:
            return None
        return self.started_at - self.submitted_at

    def __aiter__(self) -> AsyncIterator[Any]:
        return self.channel.__aiter__()


class ModelEngine:
    """A loaded-once model served by one worker thread behind a bounded queue."""

    kind = "model"

    def __init__(
        self,
        loader: Callable[[], LoadedModel],
        *,
        max_queue: int = 8,
        max_buffer: int = 1 << 20,
        on_done: Callable[[Job], None] | None = None,
    ) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue!r}")
        self._loader = loader
        self.max_queue = max_queue
        self.max_buffer = max_buffer
        self.on_done = on_done
        self.loaded: LoadedModel | None = None
        self.load_error: BaseException | None = None
        self._load_lock = threading.Lock()
        #: Serialises tokenizer use between request handlers and the worker.
        self.tokenizer_lock = threading.Lock()
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self._admit = threading.Lock()
        self._worker: threading.Thread | None = None
        self._closed = False
        self.current: Job | None = None

    # ------------------------------------------------------------ loading
    def load(self) -> LoadedModel:
        """Load the model once (thread-safe; later calls return it at once)."""
        if self.loaded is not None:
            return self.loaded
        with self._load_lock:
            if self.loaded is None:
                try:
                    self.loaded = self._loader()
                except Exception as exc:
                    self.load_error = exc
                    logger.exception("asgi-stream demo: loading the model failed")
                    raise
        return self.loaded

    async def ready(self) -> LoadedModel:
        """The loaded model, loading it in a thread on first use."""
        if self.loaded is not None:
            return self.loaded
        return await anyio.to_thread.run_sync(self.load)

    @property
    def name(self) -> str:
        """The model's name (once loaded)."""
        return self.loaded.name if self.loaded is not None else "loading"

    @property
    def max_context(self) -> int:
        """Prompt + completion tokens the model accepts."""
        return self.loaded.max_context if self.loaded is not None else 2048

    # ------------------------------------------------------------ prompts
    def _encode(self, text: str, *, special: bool) -> list[int]:
        tokenizer = self.load().tokenizer
        with self.tokenizer_lock:
            ids = list(tokenizer(text, add_special_tokens=special)["input_ids"])
        eos = getattr(tokenizer, "eos_token_id", None)
        if special and ids and eos is not None and ids[-1] == eos:
            ids.pop()  # some tokenizers (T5 family) append end-of-sequence to inputs
        return ids

    def encode_prompt(self, text: str) -> list[int]:
        """Token ids of a raw completion prompt."""
        return self._encode(text, special=True)

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of a chat, through the tokenizer's chat template when it has one."""
        tokenizer = self.load().tokenizer
        if getattr(tokenizer, "chat_template", None):
            with self.tokenizer_lock:
                text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return self._encode(text, special=False)
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
        return self._encode(text, special=True)

    # ------------------------------------------------------------ admission
    @property
    def queue_depth(self) -> int:
        """Jobs admitted and not yet started."""
        return self._queue.qsize()

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> Job:
        """Admit a job, or raise :class:`QueueFull`. Never blocks."""
        if self._closed:
            raise QueueFull("the server is shutting down")
        job = Job(prompt_ids, params, max_buffer=self.max_buffer)
        with self._admit:
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="asgi-stream demo generation", daemon=True)
                self._worker.start()
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                raise QueueFull(f"{self.max_queue} requests are already waiting") from None
        return job

    def close(self) -> None:
        """Refuse new jobs, cancel queued ones, and let the worker exit after the
        current job (whose stream the server's shutdown drain ends)."""
        self._closed = True
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.cancel_token.cancel(CancelReason.SHUTDOWN)
                self._finish_skipped(job)
        if self._worker is not None:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                pass

    # ------------------------------------------------------------ the worker
    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self.current = job
            try:
                if job.cancel_token.cancelled:
                    self._finish_skipped(job)  # the client left while it waited
                else:
                    self._generate(job)
            except Exception:  # never let one job take the worker down
                logger.exception("asgi-stream demo: job %d failed", job.id)
                if not job.stats.done.is_set():
                    self._finish_skipped(job)
            finally:
                self.current = None
            self._done(job)

    def _generate(self, job: Job) -> None:
        loaded = self.load()
        params = job.params
        kwargs: dict[str, Any] = {**loaded.generate_kwargs, "max_new_tokens": params.max_tokens}
        if params.ignore_eos:
            kwargs["min_new_tokens"] = params.max_tokens
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if params.seed is not None:
            import torch

            torch.manual_seed(params.seed)
        job.started_at = time.monotonic()
        generate_into(
            loaded.model,
            loaded.tokenizer,
            job.prompt_ids,
            job.channel,
            stats=job.stats,
            decode_lock=self.tokenizer_lock,
            stopping_criteria=[_StopRequested(job)],
            **kwargs,
        )
        if job.stop_reason is not None and job.stats.finish_reason == "length":
            job.stats.finish_reason = job.stop_reason

    def _finish_skipped(self, job: Job) -> None:
        now = time.monotonic()
        stats = job.stats
        stats.finish_reason = "cancelled"
        stats.started_at = stats.stopped_at = now
        stats.cancelled_at = job.cancel_token.cancelled_at
        stats.done.set()
        job.channel.close()

    def _done(self, job: Job) -> None:
        if self.on_done is not None:
            try:
                self.on_done(job)
            except Exception:
                logger.exception("asgi-stream demo: on_done hook failed")


class _StopRequested(StoppingCriteria):
    """Ends ``generate`` after the step during which
    :meth:`Job.stop` was called."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        return torch.full(
            (input_ids.shape[0],), self.job.stop_reason is not None, dtype=torch.bool, device=input_ids.device
        )


class PacedJob(Job):
    """A paced stream: fixed tokens at a fixed interval, read as an async iterator.

    Closing it (the stream ending, for any reason) records the outcome exactly once,
    even if it was never started.
    """

    def __init__(self, prompt_ids: list[int], params: SamplingParams, interval: float, on_done: Any) -> None:
        super().__init__(prompt_ids, params, max_buffer=1)
        self._token = CancelToken()
        self.interval = interval
        self._on_done = on_done
        self._next = 0
        self._finished = False
        self.started_at = self.submitted_at
        self.stats.started_at = self.submitted_at

    @property
    def cancel_token(self) -> CancelToken:
        """Set by the stream when the client leaves; ends the paced iterator."""
        return self._token

    def __aiter__(self) -> PacedJob:
        return self

    async def __anext__(self) -> str:
        stats, token, i = self.stats, self._token, self._next
        if self._finished or i >= self.params.max_tokens or token.cancelled or self.stop_reason is not None:
            self._finish()
            raise StopAsyncIteration
        if i:
            try:
                await anyio.sleep(self.interval)
            except BaseException:
                self._finish()
                raise
            if token.cancelled or self.stop_reason is not None:
                self._finish()
                raise StopAsyncIteration
        self._next = i + 1
        stats.steps += 1
        stats.completion_tokens += 1
        if stats.first_token_at is None:
            stats.first_token_at = time.monotonic()
        return PACED_TOKENS[i % len(PACED_TOKENS)]

    async def aclose(self) -> None:
        """The consumer is done: record the outcome."""
        self._finish()

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        stats, token = self.stats, self._token
        if self.stop_reason is not None and not token.cancelled:
            stats.finish_reason = self.stop_reason
        elif token.cancelled or self._next < self.params.max_tokens:
            stats.finish_reason = "cancelled"
            token.cancel(CancelReason.APPLICATION)  # no-op when already set
        else:
            stats.finish_reason = "length"
        stats.stopped_at = time.monotonic()
        stats.cancelled_at = token.cancelled_at
        stats.done.set()
        if self._on_done is not None:
            try:
                self._on_done(self)
            except Exception:
                logger.exception("asgi-stream demo: on_done hook failed")


class PacedEngine:
    """Deterministic timing source: no model, no queue, each stream independent."""

    kind = "paced"
    name = "paced"
    max_context = 1 << 20

    def __init__(self, *, interval: float = 0.1, max_streams: int = 10_000, on_done: Any = None) -> None:
        if not interval >= 0:
            raise ValueError(f"interval must be >= 0 seconds, got {interval!r}")
        self.interval = interval
        self.max_streams = max_streams
        self.on_done = on_done
        self.active = 0
        self.queue_depth = 0
        self.max_queue = 0
        self.loaded = None
        self.current = None

    async def ready(self) -> None:
        """Nothing to load."""

    def encode_prompt(self, text: str) -> list[int]:
        """One "token" per whitespace-separated word."""
        return list(range(len(text.split())))

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """One "token" per word of every message."""
        return self.encode_prompt(" ".join(m["content"] for m in messages))

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> PacedJob:
        """A paced stream (up to ``max_streams`` at once)."""
        if self.active >= self.max_streams:
            raise QueueFull(f"{self.max_streams} paced streams are already running")
        interval = self.interval if params.interval is None else params.interval
        self.active += 1
        return PacedJob(prompt_ids, params, interval, self._done)

    def _done(self, job: Job) -> None:
        self.active -= 1
        if self.on_done is not None:
            self.on_done(job)

    def close(self) -> None:
        """Nothing to stop."""
