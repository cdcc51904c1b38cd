"""Continuous batching for the demo: transformers' ``ContinuousBatchingManager``
(``model.init_continuous_batching``) behind the engine's :class:`~.engine.Backend`
interface.

Every running request shares each forward pass; a request joins the batch as soon
as it is admitted and leaves it as soon as it ends. Per request:

* **outputs** (``add_request(..., streaming=True)``) are handled as the manager
  delivers them, in its own thread — the result handler is registered as
  ``register_result_handler`` does, but called directly rather than through an
  asyncio loop, so any async backend works and the event loop only carries bytes:
  ids are detokenised incrementally into the job's bounded
  :class:`~asgi_stream.TokenChannel`, exactly as on the thread path;
* **sampling** is the request's own (greedy, temperature, top-p, top-k, its own
  seeded generator) although the manager has one generation config: a per-request
  logits processor picks each row's token, and the manager's greedy pick then
  takes it;
* **cancellation**: ``cancel_request`` is applied by the manager before its next
  forward pass, so a sequence stops within one decode step and the others continue
  unharmed. A cancelled request never yields a finished result: the engine learns
  the moment it left the batch from the scheduler (its cancelled requests are
  reported as they are cleared), and ends the job then.

The paged cache is bounded (:class:`BatchSettings`): the manager's default sizes it
from free memory, which on a CPU means gigabytes.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..integrations.transformers import IncrementalDetokenizer
from .engine import Job
from .model import LoadedModel, TokenConstraint

logger = logging.getLogger("asgi_stream.demo")

#: Prompt tokens given to the detokeniser as context (see the integration).
_CONTEXT_TOKENS = 6


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """Continuous batching limits (the paged KV cache and the batch)."""

    #: Sequences in the batch at once; further admitted requests wait in the queue.
    max_batch: int = 16
    #: Cache blocks, each of ``page_size`` tokens per layer (256 × 64 = 16,384 tokens
    #: shared by all running sequences: ~0.75 GB for SmolLM2-135M in float32).
    num_blocks: int = 256
    page_size: int = 64
    #: Prompt + decode tokens in one forward pass (longer prompts prefill in chunks).
    max_batch_tokens: int = 512


def unsupported_reason(loaded: LoadedModel) -> str | None:
    """Why the continuous batching manager cannot serve ``loaded`` (None: it can).

    The thread path serves models that have no ``init_continuous_batching``,
    encoder-decoder models, models whose ``generate`` keyword arguments carry more
    than the model's own :class:`~.model.TokenConstraint` (custom logits processors
    read whole 2-D histories, which a batch does not have), and devices other than
    CPU and CUDA. An attention implementation the manager refuses (it takes eager,
    SDPA and flash) is found when the manager is created, with the same fallback.
    """
    model = loaded.model
    if not hasattr(model, "init_continuous_batching"):
        return f"{type(model).__name__} has no continuous batching support"
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder models are not supported by the manager"
    kwargs = dict(loaded.generate_kwargs)
    processors = list(kwargs.pop("logits_processor", None) or ())
    if kwargs:
        return f"generate keyword arguments the manager cannot apply: {sorted(kwargs)}"
    if any(p is not loaded.constraint for p in processors):
        return "custom logits processors the manager cannot apply"
    device = torch.device(loaded.device).type
    if device not in ("cpu", "cuda"):
        return f"device {device} is not supported here"
    return None


class _Direct:
    """Stands in for the event loop in the manager's output router: the handler runs
    at once, in the manager's thread."""

    @staticmethod
    def call_soon_threadsafe(callback: Callable[..., object], *args: object) -> None:
        callback(*args)


class _Sequence:
    """One job's state in the batch (touched only by the manager's thread, except
    for creation)."""

    __slots__ = ("detok", "eos", "generator", "job", "last_id", "request_id", "seen")

    def __init__(self, job: Job, request_id: str, detok: IncrementalDetokenizer, eos: set[int]) -> None:
        self.job = job
        self.request_id = request_id
        self.detok = detok
        self.eos = eos
        self.seen = 0
        self.last_id: int | None = None
        params = job.params
        self.generator: torch.Generator | None = None
        if not params.greedy and params.seed is not None:
            self.generator = torch.Generator().manual_seed(params.seed)


def _import_processor_base() -> type:
    from transformers.generation.continuous_batching.cb_logits_processors import (
        ContinuousBatchingLogitsProcessor,
    )

    return ContinuousBatchingLogitsProcessor


def _make_sampler(sequences: dict[str, _Sequence], constraint: TokenConstraint | None) -> Any:
    """The per-request sampling processor, as a manager logits processor."""
    base = _import_processor_base()

    class RequestSampler(base):  # type: ignore[misc, valid-type]
        """Picks each row's next token by its request's own parameters. Rows it does
        not sample keep their scores (the manager's argmax is then greedy decoding);
        a sampled row keeps only its chosen token."""

        supported_kwargs: ClassVar[dict[str, type]] = {}
        ignored_kwargs: tuple[str, ...] = ()

        def __init__(self) -> None:
            self.rows: list[Any] = []

        def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
            int32_tensor.fill_(0)

        def prepare_tensor_args(self, requests_with_new_token: list[Any]) -> torch.Tensor:
            # Called just before the forward pass whose logits __call__ receives, in the
            # same thread (no CUDA graphs, no async batching: see BatchBackend).
            self.rows = [future.state for future in requests_with_new_token]
            return torch.zeros(len(self.rows), dtype=torch.int32)

        def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
            rows = self.rows
            if len(rows) != scores.size(0):  # never expected; greedy for every row then
                logger.warning("asgi-stream demo: %d rows for %d logits", len(rows), scores.size(0))
                return scores
            for i, state in enumerate(rows):
                row = scores[i]
                if constraint is not None:
                    tail = (state.initial_tokens + state.generated_tokens)[-constraint.window :]
                    allowed = constraint.allowed(tail)
                    if allowed.device != row.device:
                        allowed = allowed.to(row.device)
                    row.masked_fill_(~allowed, -math.inf)
                seq = sequences.get(state.request_id)
                if seq is None or seq.job.params.greedy:
                    continue
                token = _sample(row, seq)
                row.fill_(-math.inf)
                row[token] = 0.0
            return scores

    return RequestSampler()


def _sample(row: torch.Tensor, seq: _Sequence) -> int:
    """Sample one token from ``row`` (logits) by the sequence's parameters; greedy if
    the distribution is not usable (never raises: an error would fail the batch)."""
    params = seq.job.params
    try:
        logits = row.double() / params.temperature
        if params.top_k and params.top_k < logits.numel():
            kth = torch.topk(logits, params.top_k).values[-1]
            logits = logits.masked_fill(logits < kth, -math.inf)
        probs = torch.softmax(logits, dim=-1)
        if params.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            cumulative = torch.cumsum(sorted_probs, dim=-1)
            drop = cumulative - sorted_probs >= params.top_p  # keep the smallest set reaching top_p
            sorted_probs = sorted_probs.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
        if not bool(torch.isfinite(probs).all()) or float(probs.sum()) <= 0:
            return int(row.argmax())
        return int(torch.multinomial(probs, 1, generator=seq.generator))
    except Exception:
        logger.exception("asgi-stream demo: sampling failed; greedy for this token")
        return int(row.argmax())


class BatchBackend:
    """Jobs generated together by a ``ContinuousBatchingManager``."""

    mode = "batched"

    def __init__(
        self,
        loaded: LoadedModel,
        settings: BatchSettings,
        finished: Callable[[Job], None],
        tokenizer_lock: threading.Lock,
    ) -> None:
        self.loaded = loaded
        self.settings = settings
        self.capacity = settings.max_batch
        self._finished = finished
        self._tokenizer_lock = tokenizer_lock
        self._lock = threading.Lock()
        self._sequences: dict[str, _Sequence] = {}
        self._by_job: dict[int, _Sequence] = {}
        self._eos = _eos_ids(loaded)
        self._closed = False
        self.manager: Any = None
        #: How many times the manager was (re)started (a fatal batch error restarts it).
        self.starts = 0
        self._start_manager()

    # ------------------------------------------------------------ the manager
    def _start_manager(self) -> None:
        from transformers import ContinuousBatchingConfig, GenerationConfig

        s = self.settings
        model = self.loaded.model
        tokenizer = self.loaded.tokenizer
        pad = getattr(tokenizer, "pad_token_id", None)
        generation = GenerationConfig(  # type: ignore[no-untyped-call]
            do_sample=False,  # each request's own sampling is done by the RequestSampler
            max_new_tokens=256,
            eos_token_id=sorted(self._eos) if self._eos else -1,
            pad_token_id=pad if pad is not None else (min(self._eos) if self._eos else 0),
        )
        config = ContinuousBatchingConfig(
            num_blocks=s.num_blocks,
            page_size=s.page_size,
            max_batch_tokens=s.max_batch_tokens,
            max_requests_per_batch=s.max_batch,
            # The sampler reads each row's request in the host code of every step:
            # no graph replays, no step prepared ahead.
            use_cuda_graph=False,
            use_async_batching=False,
        )
        manager = model.init_continuous_batching(generation_config=generation, continuous_batching_config=config)
        processors = manager.logit_processor
        processors.logits_processor.append(_make_sampler(self._sequences, self.loaded.constraint))
        processors.tensors_required += 1
        processors.do_processing = True
        # The batch processor (its paged cache and scheduler) is created by the
        # generation thread itself, as the manager does when it is not warmed up: torch
        # then runs that thread's forward passes with its own OpenMP team (created in
        # another thread, measured: the second torch thread sat idle). The cancelled-
        # request hook is installed as it is created.
        create = manager._create_batch_processor
        report = self._left

        def create_and_hook() -> Any:
            processor = create()
            scheduler = processor.scheduler
            clear = scheduler.clear_cancelled_requests
            if not getattr(clear, "_asgi_stream_hook", False):

                def clear_and_report() -> list[Any]:
                    states = clear()
                    for state in states:
                        report(state.request_id)
                    return list(states)

                clear_and_report._asgi_stream_hook = True  # type: ignore[attr-defined]
                scheduler.clear_cancelled_requests = clear_and_report
            return processor

        manager._create_batch_processor = create_and_hook

        def start() -> None:
            with torch.inference_mode():
                manager.start()

        # Started from a daemon thread, its generation thread is a daemon too: an app
        # that is never closed cannot keep the process alive.
        starter = threading.Thread(target=start, name="asgi-stream demo batch start", daemon=True)
        starter.start()
        starter.join()
        # Ready means the cache exists: wait for the generation thread to create it
        # (an error creating it ends that thread, and is raised here).
        while manager.batch_processor is None:
            status = manager.background_thread_status
            if status.fatal_error is not None:
                raise RuntimeError("the continuous batching manager failed to start") from status.fatal_error
            if not manager.is_running():
                raise RuntimeError("the continuous batching manager stopped while starting")
            time.sleep(0.005)
        self.manager = manager
        self.starts += 1

    def _healthy_manager(self) -> Any:
        manager = self.manager
        if manager is not None and manager.is_running():
            status = manager.background_thread_status
            if status.fatal_error is None and status.can_accept_new_requests() is None:
                return manager
        logger.warning("asgi-stream demo: restarting the continuous batching manager")
        if manager is not None:
            try:
                manager.stop(block=False)
            except Exception:
                logger.exception("asgi-stream demo: stopping the failed manager")
        self._start_manager()
        return self.manager

    # ------------------------------------------------------------ Backend
    def start(self, job: Job) -> None:
        """Add the job's sequence to the batch."""
        if self._closed:
            raise RuntimeError("the engine is closed")
        with self._lock:
            manager = self._healthy_manager()
            request_id = f"asgi-{job.id}"
            context = job.prompt_ids[-_CONTEXT_TOKENS:]
            detok = IncrementalDetokenizer(self.loaded.tokenizer, context=context, lock=self._tokenizer_lock)
            seq = _Sequence(job, request_id, detok, self._eos)
            self._sequences[request_id] = seq
            self._by_job[job.id] = seq
        stats = job.stats
        stats.started_at = time.monotonic()
        router = manager.output_router
        with router._lock:  # what register_result_handler does, minus the asyncio loop
            router.result_handlers[request_id] = (lambda output: self._on_output(seq, output), _Direct)
        params = job.params
        added = manager.add_request(
            list(job.prompt_ids),
            request_id=request_id,
            max_new_tokens=params.max_tokens,
            streaming=True,
            eos_token_id=-1 if params.ignore_eos else None,
        )
        if added is None:
            self._forget(seq)
            raise RuntimeError("the continuous batching manager refused the request")
        if job.compute_token.cancelled:  # cancelled while being added: the callback may have missed it
            manager.cancel_request(request_id)

    def cancel(self, job: Job) -> None:
        """Remove the job's sequence from the batch before the next forward pass."""
        seq = self._by_job.get(job.id)
        manager = self.manager
        if seq is not None and manager is not None:
            manager.cancel_request(seq.request_id)

    def close(self) -> None:
        """Stop the manager (running sequences are cancelled first). Idempotent."""
        if self._closed:
            return
        self._closed = True
        manager = self.manager
        if manager is None:
            return
        for seq in list(self._sequences.values()):
            manager.cancel_request(seq.request_id)
        try:
            manager.stop(block=True, timeout=10)
        except Exception:
            logger.exception("asgi-stream demo: stopping the continuous batching manager")
        for seq in list(self._sequences.values()):  # the loop is gone: end what is left
            self._end(seq, "cancelled")

    # ------------------------------------------------------------ events (manager thread)
    def _on_output(self, seq: _Sequence, output: Any) -> None:
        job = seq.job
        if job.stats.done.is_set():
            return
        try:
            if output.error is not None:
                self._end(seq, "error", RuntimeError(f"generation failed: {output.error}"))
                return
            stats = job.stats
            tokens = output.generated_tokens
            new = tokens[seq.seen :]
            seq.seen = len(tokens)
            stopping = job.compute_token.cancelled
            for token_id in new:
                stats.steps += 1
                if stopping:
                    stats.steps_after_cancel += 1
                    continue
                stats.completion_tokens += 1
                seq.last_id = int(token_id)
                text = seq.detok.push(token_id)
                if text and not job.emit(text):
                    stopping = True
            if output.is_finished():
                if not stopping:
                    tail = seq.detok.flush()
                    if tail:
                        job.emit(tail)
                if job.compute_token.cancelled:
                    reason = "cancelled"
                elif seq.last_id is not None and seq.last_id in seq.eos:
                    reason = "stop"
                else:
                    reason = "length"
                self._end(seq, reason)
        except Exception as exc:  # a handler error must not reach the manager's loop
            logger.exception("asgi-stream demo: handling the output of job %d failed", job.id)
            self._end(seq, "error", exc)
            manager = self.manager
            if manager is not None:
                manager.cancel_request(seq.request_id)

    def _left(self, request_id: str) -> None:
        """The manager removed a cancelled request: its compute is over."""
        seq = self._sequences.get(request_id)
        if seq is not None:
            self._end(seq, "cancelled")

    def _end(self, seq: _Sequence, reason: str, error: BaseException | None = None) -> None:
        job = seq.job
        if job.stats.done.is_set():
            return
        self._forget(seq)
        stats = job.stats
        if error is not None:
            stats.finish_reason = "error"
            stats.error = error
        else:
            stats.finish_reason = job.stop_reason or reason
        stats.stopped_at = time.monotonic()
        stats.cancelled_at = job.cancel_token.cancelled_at
        stats.done.set()
        job.channel.close(error)
        self._finished(job)

    def _forget(self, seq: _Sequence) -> None:
        with self._lock:
            self._sequences.pop(seq.request_id, None)
            self._by_job.pop(seq.job.id, None)
        manager = self.manager
        if manager is not None:
            router = manager.output_router
            with router._lock:
                router.result_handlers.pop(seq.request_id, None)


def _eos_ids(loaded: LoadedModel) -> set[int]:
    eos = getattr(getattr(loaded.model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = getattr(loaded.tokenizer, "eos_token_id", None)
    if eos is None:
        return set()
    return {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}
