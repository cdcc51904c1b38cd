"""The demo's generation engines, their admission policy and the interface the text
layer (``app.py``, ``openai.py``) uses.

The interface
-------------
``engine.submit(prompt_ids, params) -> Job`` admits a request or raises
:class:`QueueFull` (the endpoint answers 429 + ``Retry-After``); it never blocks.
A :class:`Job` is read as an async iterator of text pieces (never empty strings,
never a broken character) and carries:

* ``job.params`` — its :class:`SamplingParams`, honoured per request even when
  requests share a batch (greedy, ``temperature``, ``top_p``, ``top_k``, ``seed``,
  ``ignore_eos``, ``max_tokens``);
* ``job.cancel_token`` — the stream's token: set by the stream when the client
  leaves (or a send times out, or the server shuts down). Queued: the job leaves
  the queue at once. Running: its sequence leaves the batch within one decode step.
* ``job.stop(finish_reason="stop")`` — the text layer ends a running job early (a
  stop sequence matched): generation stops within one decode step, the iterator
  ends normally at once (nothing more is emitted), ``job.stats.finish_reason`` is
  ``"stop"`` and ``completion_tokens`` counts the tokens the text layer received.
* ``job.stats`` — a :class:`~asgi_stream.integrations.transformers.GenerationStats`
  (tokens, timings, ``finish_reason`` ``"stop"`` | ``"length"`` | ``"cancelled"`` |
  ``"error"``), final once ``job.stats.done`` is set; ``job.queue_wait``.

For ``n`` completions of one prompt, submit ``n`` jobs (each is admitted, counted
and cancelled on its own; give each its own ``seed`` for distinct samples).

The policy (:class:`ModelEngine`)
---------------------------------
At most ``max_running`` generations run at once (the batch; 1 on the thread path)
and at most ``max_queue`` admitted requests wait for a slot, in FIFO order; beyond
that ``submit`` refuses. Time queued counts toward TTFT (the stream's record starts
when the request arrives); SSE keepalives cover the wait. A queued job whose client
leaves is removed at once (``queue_depth`` drops, its ``cancel_to_stop`` is the
removal, not the wait). Two backends generate:

* **continuous batching** (:mod:`asgi_stream.demo.batching`): transformers'
  ``ContinuousBatchingManager`` with a bounded paged cache — every running request
  shares each forward pass; used whenever the manager can run the model;
* **one worker thread** running ``model.generate`` for one request at a time — kept
  for models the manager cannot run (see :func:`batching.unsupported_reason`) and
  for ``batching=None``.

:class:`PacedEngine` runs no model: fixed tokens at a fixed interval, each stream on
its own (no queue), for timing tests and conformance checks.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.to_thread

from ..cancel import CancelReason, CancelToken
from ..channel import TokenChannel
from ..integrations.transformers import GenerationStats, generate_into
from .model import LoadedModel

if TYPE_CHECKING:
    from .batching import BatchSettings

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
    """How to generate one completion (each request's own, also inside a batch)."""

    max_tokens: int
    #: 0 = greedy.
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False
    #: Paced mode only: seconds between tokens (None: the engine's default).
    interval: float | None = None
    #: Keep only the k most likely tokens before sampling (0: off).
    top_k: int = 0

    @property
    def greedy(self) -> bool:
        """Whether decoding is greedy (deterministic)."""
        return self.temperature <= 0


def default_threads() -> int:
    """Torch threads for generation on this machine: the CPUs this process may use,
    less one for the event loop and the rest of the server when there are more than
    two, and one on a machine of one or two CPUs.

    Torch's default (all cores) collapses when anything else wants a core: measured
    on two shared cores, a single stream fell from ~25 to 0.5–2.7 tokens/s with two
    threads under contention, while one thread kept ~10.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus - 1) if cpus > 2 else 1


def apply_threads(threads: int | None) -> int:
    """Set torch's intra-op thread count (``None``: :func:`default_threads`);
    returns the count in force. It is process-wide."""
    import torch

    count = default_threads() if threads is None else threads
    if count < 1:
        raise ValueError(f"threads must be >= 1, got {count!r}")
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count


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
        #: Set when the job must stop computing: the stream's token, or :meth:`stop`.
        self.compute_token = CancelToken()
        #: The finish reason given to :meth:`stop`, once called.
        self.stop_reason: str | None = None
        self._lock = threading.Lock()
        self.channel.cancel_token.add_callback(lambda token: self.compute_token.cancel(token.reason or "application"))

    @property
    def cancel_token(self) -> CancelToken:
        """The stream's token. Set it to cancel the job (queued: removed at once;
        running: stopped within one decode step)."""
        return self.channel.cancel_token

    @property
    def queue_wait(self) -> float | None:
        """Seconds between admission and the start of generation."""
        if self.started_at is None:
            return None
        return self.started_at - self.submitted_at

    def stop(self, finish_reason: str = "stop") -> None:
        """End the job early from the text layer (e.g. a stop sequence matched).

        Nothing more is emitted, the iterator ends normally (after the text already
        queued), generation stops within one decode step and ``stats.finish_reason``
        becomes ``finish_reason``. No effect once the job has ended or was cancelled.
        """
        with self._lock:
            if self.stop_reason is not None or self.cancel_token.cancelled or self.stats.done.is_set():
                return
            self.stop_reason = finish_reason
            self.stats.finish_reason = finish_reason
        self.compute_token.cancel(CancelReason.APPLICATION)
        self.channel.close()

    def emit(self, text: str) -> bool:
        """Producer side: queue ``text`` unless the job is stopping; returns whether
        it was queued. (A refused put from a closed or overflowing channel sets the
        stream's token, which stops the job.)"""
        with self._lock:
            if self.compute_token.cancelled:
                return False
            if self.stats.first_token_at is None:
                self.stats.first_token_at = time.monotonic()
            if self.channel.put(text):
                return True
        if self.stop_reason is None:
            self.cancel_token.cancel(CancelReason.APPLICATION)
        return False

    def __aiter__(self) -> AsyncIterator[Any]:
        return self.channel.__aiter__()


class Backend(Protocol):
    """What generates the jobs :class:`ModelEngine` admits."""

    #: Jobs it runs at once.
    capacity: int
    #: ``"batched"`` or ``"thread"``.
    mode: str

    def start(self, job: Job) -> None:
        """Begin generating ``job``; call ``finished(job)`` exactly once when its compute is over."""

    def cancel(self, job: Job) -> None:
        """Stop the running ``job`` (its ``compute_token`` is set)."""

    def close(self) -> None:
        """Stop for good; running jobs end (cancelled) or finish."""


class ModelEngine:
    """A loaded-once model behind bounded admission: ``max_running`` generations at
    once (continuous batching, or one worker thread), ``max_queue`` waiting."""

    kind = "model"

    def __init__(
        self,
        loader: Callable[[], LoadedModel],
        *,
        max_queue: int = 8,
        max_buffer: int = 1 << 20,
        on_done: Callable[[Job], None] | None = None,
        batching: BatchSettings | None = None,
        threads: int | None = None,
    ) -> None:
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {max_queue!r}")
        if batching is not None and batching.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {batching.max_batch!r}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads!r}")
        self._loader = loader
        self.max_queue = max_queue
        self.max_buffer = max_buffer
        self.on_done = on_done
        self.batching = batching
        self.threads = threads
        self.loaded: LoadedModel | None = None
        self.load_error: BaseException | None = None
        self._load_lock = threading.Lock()
        #: Serialises tokenizer use between request handlers and the generating thread.
        self.tokenizer_lock = threading.Lock()
        self.backend: Backend | None = None
        #: Why the thread path serves this model (None when batched or not loaded).
        self.fallback_reason: str | None = None
        self._lock = threading.Lock()
        self._waiting: deque[Job] = deque()
        self._running: dict[int, Job] = {}
        self._closed = False

    # ------------------------------------------------------------ loading
    def load(self) -> LoadedModel:
        """Load the model once, set torch's thread count and pick the backend
        (thread-safe; later calls return at once)."""
        if self.loaded is not None:
            return self.loaded
        with self._load_lock:
            if self.loaded is None:
                try:
                    apply_threads(self.threads)
                    loaded = self._loader()
                    self.backend = self._make_backend(loaded)
                    self.loaded = loaded
                except Exception as exc:
                    self.load_error = exc
                    logger.exception("asgi-stream demo: loading the model failed")
                    raise
        return self.loaded

    def _make_backend(self, loaded: LoadedModel) -> Backend:
        if self.batching is not None:
            from .batching import BatchBackend, unsupported_reason

            reason = unsupported_reason(loaded)
            if reason is None:
                try:
                    return BatchBackend(loaded, self.batching, self._finished, self.tokenizer_lock)
                except Exception as exc:  # the manager refused this model
                    reason = f"the continuous batching manager refused it ({type(exc).__name__}: {exc})"
            self.fallback_reason = reason
        else:
            self.fallback_reason = "batching is off"
        logger.info("asgi-stream demo: one generation thread (%s)", self.fallback_reason)
        return ThreadBackend(loaded, self._finished, self.tokenizer_lock)

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

    @property
    def mode(self) -> str:
        """``"batched"``, ``"thread"``, or ``"loading"``."""
        return self.backend.mode if self.backend is not None else "loading"

    @property
    def max_running(self) -> int:
        """Generations that run at once."""
        if self.backend is not None:
            return self.backend.capacity
        return self.batching.max_batch if self.batching is not None else 1

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
        """Jobs admitted and waiting for a slot."""
        return len(self._waiting)

    @property
    def running(self) -> int:
        """Generations running now (sequences in the batch, or the worker's job)."""
        return len(self._running)

    @property
    def current(self) -> Job | None:
        """The oldest running job, if any."""
        running = list(self._running.values())
        return running[0] if running else None

    def running_jobs(self) -> list[Job]:
        """The running jobs, oldest first."""
        return list(self._running.values())

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> Job:
        """Admit a job, or raise :class:`QueueFull`. Never blocks."""
        backend = self.backend
        if backend is None:
            self.load()
            backend = self.backend
            assert backend is not None
        job = Job(prompt_ids, params, max_buffer=self.max_buffer)
        with self._lock:
            if self._closed:
                raise QueueFull("the server is shutting down")
            if len(self._running) < backend.capacity and not self._waiting:
                self._running[job.id] = job
                start = True
            elif len(self._waiting) < self.max_queue:
                self._waiting.append(job)
                start = False
            else:
                raise QueueFull(
                    f"{len(self._running)} generations are running and {len(self._waiting)} requests are waiting"
                )
        job.compute_token.add_callback(lambda _: self._on_cancel(job))
        if start:
            self._start(job, backend)
        return job

    def _start(self, job: Job, backend: Backend) -> None:
        job.started_at = time.monotonic()
        try:
            backend.start(job)
        except Exception as exc:
            logger.exception("asgi-stream demo: job %d could not start", job.id)
            _end(job, "error", exc)
            self._finished(job)

    def _on_cancel(self, job: Job) -> None:
        """The job's compute token was set (client gone, stop, overflow)."""
        with self._lock:
            try:
                self._waiting.remove(job)
                queued = True
            except ValueError:
                queued = False
            running = job.id in self._running
        if queued:  # never started: nothing to stop, its slot in the queue is free now
            _end(job, "cancelled")
            self._done(job)
        elif running and self.backend is not None:
            self.backend.cancel(job)

    def _finished(self, job: Job) -> None:
        """A backend's job is over: free its slot and start the next waiting one."""
        backend = self.backend
        with self._lock:
            self._running.pop(job.id, None)
            nxt = None
            if backend is not None and not self._closed and self._waiting and len(self._running) < backend.capacity:
                nxt = self._waiting.popleft()
                self._running[nxt.id] = nxt
        self._done(job)
        if nxt is not None and backend is not None:
            self._start(nxt, backend)

    def close(self) -> None:
        """Refuse new jobs, cancel queued and running ones (the server has drained its
        streams by now) and stop the backend."""
        with self._lock:
            self._closed = True
            waiting, self._waiting = list(self._waiting), deque()
            running = list(self._running.values())
        for job in waiting:
            job.cancel_token.cancel(CancelReason.SHUTDOWN)
            _end(job, "cancelled")
            self._done(job)
        for job in running:
            job.cancel_token.cancel(CancelReason.SHUTDOWN)
        if self.backend is not None:
            self.backend.close()

    def _done(self, job: Job) -> None:
        if self.on_done is not None:
            try:
                self.on_done(job)
            except Exception:
                logger.exception("asgi-stream demo: on_done hook failed")


def _end(job: Job, reason: str, error: BaseException | None = None) -> None:
    """Finalise a job that generated nothing (skipped, refused, failed to start)."""
    now = time.monotonic()
    stats = job.stats
    stats.finish_reason = job.stop_reason or reason
    if stats.started_at is None:
        stats.started_at = now
    stats.stopped_at = now
    stats.cancelled_at = job.cancel_token.cancelled_at
    stats.error = error
    stats.done.set()
    job.channel.close(error)


class ThreadBackend:
    """``model.generate`` for one job at a time in a worker thread (the fallback)."""

    capacity = 1
    mode = "thread"

    def __init__(self, loaded: LoadedModel, finished: Callable[[Job], None], tokenizer_lock: threading.Lock) -> None:
        self.loaded = loaded
        self._finished = finished
        self._tokenizer_lock = tokenizer_lock
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="asgi-stream demo generation", daemon=True)
        self._worker.start()

    def start(self, job: Job) -> None:
        """Hand the job to the worker."""
        self._queue.put(job)

    def cancel(self, job: Job) -> None:
        """Nothing to do: the generation reads ``job.compute_token`` every layer and step."""

    def close(self) -> None:
        """Let the worker exit after its current job."""
        self._queue.put(None)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                if job.compute_token.cancelled:
                    _end(job, "cancelled")
                else:
                    self._generate(job)
            except Exception as exc:  # never let one job take the worker down
                logger.exception("asgi-stream demo: job %d failed", job.id)
                if not job.stats.done.is_set():
                    _end(job, "error", exc)
            self._finished(job)

    def _generate(self, job: Job) -> None:
        loaded = self.loaded
        params = job.params
        kwargs: dict[str, Any] = {**loaded.generate_kwargs, "max_new_tokens": params.max_tokens}
        if params.ignore_eos:
            kwargs["min_new_tokens"] = params.max_tokens
        if params.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(
                do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or None
            )
        if params.seed is not None:
            import torch

            torch.manual_seed(params.seed)
        generate_into(
            loaded.model,
            loaded.tokenizer,
            job.prompt_ids,
            job.channel,
            stats=job.stats,
            decode_lock=self._tokenizer_lock,
            cancel=job.compute_token,
            **kwargs,
        )
        if job.stop_reason is not None:
            job.stats.finish_reason = job.stop_reason


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

    def stop(self, finish_reason: str = "stop") -> None:
        """End the paced stream early with ``finish_reason``."""
        if self.stop_reason is None and not self._finished:
            self.stop_reason = finish_reason

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
    mode = "paced"
    max_context = 1 << 20
    fallback_reason = None

    def __init__(self, *, interval: float = 0.1, max_streams: int = 10_000, on_done: Any = None) -> None:
        if not interval >= 0:
            raise ValueError(f"interval must be >= 0 seconds, got {interval!r}")
        self.interval = interval
        self.max_streams = max_streams
        self.max_running = max_streams
        self.on_done = on_done
        self.active = 0
        self.queue_depth = 0
        self.max_queue = 0
        self.loaded = None
        self.current = None

    @property
    def running(self) -> int:
        """Paced streams running now."""
        return self.active

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
