"""Stream ``model.generate`` from Hugging Face transformers, with cancellation that
reaches the model.

``generate`` blocks, so it runs in a worker thread and pushes text into a
:class:`~asgi_stream.TokenChannel` (bounded; text produced while the client is slow
is merged into the next send). Token ids are detokenised incrementally: a character
whose bytes span several tokens is held back until it is complete, and empty
strings are never emitted. The stream's :class:`~asgi_stream.CancelToken` reaches the
model two ways: a check before every layer abandons the forward pass in flight at the
next layer boundary, and a ``StoppingCriteria`` ends ``generate`` after any step that
completes (the fallback for compiled models, whose layers run no Python hooks). So when
the client leaves, at most one more forward pass runs, usually a fraction of one.

    from asgi_stream.integrations.transformers import start_generation

    @app.post("/generate")
    async def generate(request):
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        return start_generation(model, tokenizer, ids, max_new_tokens=200).response()
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from ..cancel import CancelReason, CancelToken
from ..channel import TokenChannel
from ..response import TokenStream

logger = logging.getLogger("asgi_stream")

__all__ = [
    "CancelCriteria",
    "ChannelStreamer",
    "Generation",
    "GenerationStats",
    "IncrementalDetokenizer",
    "default_device",
    "default_dtype",
    "generate_into",
    "install_layer_checks",
    "start_generation",
]

#: Prompt tokens given to the detokeniser as context, so the first generated token
#: decodes with the spacing it has after the prompt (SentencePiece drops a leading space).
_CONTEXT_TOKENS = 6

#: The cancel token of the generation running in each thread (read by the layer checks,
#: so generations sharing one model in several threads never stop each other).
_running = threading.local()


class _Interrupted(Exception):
    """Raised before a layer to abandon the forward pass of a cancelled generation."""


def _check_layer(module: Any, args: Any) -> None:
    token = getattr(_running, "token", None)
    if token is not None and token.cancelled:
        raise _Interrupted


def install_layer_checks(model: Any) -> int:
    """Check the running generation's cancel token before every layer of ``model``
    (every module held in an ``nn.ModuleList``). Idempotent; returns how many layers
    are checked. A check costs a thread-local read and a flag test."""
    count = getattr(model, "_asgi_stream_layer_checks", None)
    if count is not None:
        return int(count)
    count = 0
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList):
            for layer in module:
                layer.register_forward_pre_hook(_check_layer)
                count += 1
    model._asgi_stream_layer_checks = count
    return count


def default_device() -> torch.device:
    """CUDA when a GPU is visible, the CPU otherwise."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def default_dtype(device: torch.device | str) -> torch.dtype:
    """Half precision on CUDA (bfloat16 where supported, else float16), float32 on CPU."""
    if torch.device(device).type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


@dataclass(slots=True, eq=False)
class GenerationStats:
    """What one ``generate`` call did. Times are ``time.monotonic()`` seconds.

    Written by the generating thread; final once :attr:`done` is set (which happens
    before the channel is closed, so a consumer that reached the end sees it final).
    """

    prompt_tokens: int = 0
    #: Token ids generated (the end-of-sequence token included).
    completion_tokens: int = 0
    #: Decode steps (forward passes, the prompt's prefill included) that completed.
    steps: int = 0
    #: Decode steps that completed after the cancel token was set (0 or 1).
    steps_after_cancel: int = 0
    #: The forward pass in flight was abandoned at a layer boundary.
    interrupted: bool = False
    started_at: float | None = None
    first_token_at: float | None = None
    stopped_at: float | None = None
    cancelled_at: float | None = None
    #: "stop" (end of sequence), "length" (token limit), "cancelled" or "error".
    finish_reason: str | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def cancel_to_stop(self) -> float | None:
        """Seconds from the cancel token being set to ``generate`` returning."""
        if self.cancelled_at is None or self.stopped_at is None:
            return None
        return max(0.0, self.stopped_at - self.cancelled_at)

    @property
    def tokens_per_second(self) -> float | None:
        """Generated tokens per second after the first one (decode speed)."""
        if self.first_token_at is None or self.stopped_at is None or self.completion_tokens < 2:
            return None
        span = self.stopped_at - self.first_token_at
        return (self.completion_tokens - 1) / span if span > 0 else None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until generation has stopped; returns whether it has."""
        return self.done.wait(timeout)


class IncrementalDetokenizer:
    """Turns token ids into text deltas, one id at a time.

    It decodes a short window of ids twice (with and without the newest ones) and
    emits the difference, so each step costs O(1). Text that ends in an incomplete
    character (U+FFFD from a byte-level tokenizer, or nothing new from one that drops
    partial bytes) is held back until the character completes; after ``max_held``
    ids without a complete character the text is emitted as the tokenizer decodes it.
    Empty strings are never returned as a delta worth sending (callers may skip ``""``).
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        context: Sequence[int] = (),
        skip_special_tokens: bool = True,
        lock: threading.Lock | None = None,
        max_held: int = 8,
    ) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.lock = lock
        self.max_held = max_held
        self.ids: list[int] = [int(i) for i in context]
        self._prefix = 0
        self._read = len(self.ids)

    def _decode(self, ids: list[int]) -> str:
        if not ids:
            return ""
        kwargs = {"skip_special_tokens": self.skip_special_tokens, "clean_up_tokenization_spaces": False}
        if self.lock is None:
            return str(self.tokenizer.decode(ids, **kwargs))
        with self.lock:
            return str(self.tokenizer.decode(ids, **kwargs))

    def push(self, token_id: int) -> str:
        """Add one id; returns the text it completes (possibly ``""``)."""
        self.ids.append(int(token_id))
        return self._advance(final=False)

    def flush(self) -> str:
        """The text still held back (at the end of generation)."""
        return self._advance(final=True)

    def _advance(self, *, final: bool) -> str:
        ids = self.ids
        if self._read >= len(ids):
            return ""
        before = self._decode(ids[self._prefix : self._read])
        after = self._decode(ids[self._prefix :])
        held = len(ids) - self._read
        if not final and (len(after) <= len(before) or after.endswith("\ufffd")) and held < self.max_held:
            return ""
        delta = after[len(before) :]
        self._prefix, self._read = self._read, len(ids)
        return delta


class CancelCriteria(StoppingCriteria):
    """A ``StoppingCriteria`` that stops generation once ``token`` is set.

    ``generate`` evaluates it after every decode step, so at most the step that was
    running when the token was set completes. It also counts steps into ``stats``.
    """

    def __init__(self, token: CancelToken, stats: GenerationStats | None = None) -> None:
        self.token = token
        self.stats = stats if stats is not None else GenerationStats()

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        stats = self.stats
        stats.steps += 1
        stop = self.token.cancelled
        if stop:
            stats.steps_after_cancel += 1
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]


class ChannelStreamer(BaseStreamer):
    """A transformers streamer that detokenises incrementally into a TokenChannel.

    When the channel refuses text (its consumer is gone, or it overflowed) the cancel
    token is set, which :class:`CancelCriteria` turns into the end of ``generate``.
    Only batch size 1 is supported.
    """

    def __init__(
        self,
        detokenizer: IncrementalDetokenizer,
        channel: TokenChannel,
        stats: GenerationStats,
        *,
        skip_prompt: bool = True,
        stop: CancelToken | None = None,
    ) -> None:
        self.detokenizer = detokenizer
        self.channel = channel
        self.stats = stats
        self._skip_prompt = skip_prompt
        #: Once set, nothing more is emitted (default: the channel's token).
        self.stop = stop if stop is not None else channel.cancel_token
        #: The last generated id (to tell end-of-sequence from the length limit).
        self.last_id: int | None = None

    def put(self, value: torch.Tensor) -> None:
        """Called by ``generate`` with the prompt ids, then with each new id."""
        if value.dim() > 1:
            if value.shape[0] != 1:
                raise ValueError("ChannelStreamer supports batch size 1 only")
            value = value[0]
        if self._skip_prompt:
            self._skip_prompt = False
            return
        for token_id in value.tolist():
            self.stats.completion_tokens += 1
            self.last_id = token_id
            text = self.detokenizer.push(token_id)
            if text:
                self._emit(text)

    def end(self) -> None:
        """Called by ``generate`` when it finishes: flush held-back text."""
        text = self.detokenizer.flush()
        if text:
            self._emit(text)

    def _emit(self, text: str) -> None:
        token = self.channel.cancel_token
        if token.cancelled or self.stop.cancelled:
            return
        if self.stats.first_token_at is None:
            self.stats.first_token_at = time.monotonic()
        if not self.channel.put(text) and not self.stop.cancelled:
            token.cancel(CancelReason.APPLICATION)


def _as_input_ids(input_ids: Any) -> torch.Tensor:
    if isinstance(input_ids, torch.Tensor):
        tensor = input_ids
    else:
        tensor = torch.tensor(list(input_ids), dtype=torch.long)
    if tensor.dim() == 1:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != 2 or tensor.shape[0] != 1:
        raise ValueError(f"input_ids must be one sequence (batch size 1), got shape {tuple(tensor.shape)}")
    if tensor.shape[1] == 0:
        raise ValueError("input_ids is empty: generation needs at least one prompt token")
    return tensor.long()


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        return set()
    return {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}


def generate_into(
    model: Any,
    tokenizer: Any,
    input_ids: Any,
    channel: TokenChannel,
    *,
    stats: GenerationStats | None = None,
    decode_lock: threading.Lock | None = None,
    skip_special_tokens: bool = True,
    interrupt: bool = True,
    cancel: CancelToken | None = None,
    **generate_kwargs: Any,
) -> GenerationStats:
    """Run ``model.generate`` in the calling thread, streaming text into ``channel``.

    Generation stops at the end of sequence, at the length limit, or once the
    ``cancel`` token (default ``channel.cancel_token``: client gone, send timeout,
    shutdown, overflow) is set — a separate ``cancel`` token lets the caller end
    generation without cancelling the stream (nothing more is emitted once it is set):
    with ``interrupt`` (default) at the next layer boundary of the forward pass in
    flight (see :func:`install_layer_checks`), else after that pass. The channel is always closed at the end — with the error if
    ``generate`` raised, so the stream fails visibly; this function itself never raises
    for a generation error (it is in ``stats.error``).

    ``generate_kwargs`` go to ``model.generate`` (``max_new_tokens``, ``do_sample``,
    ``temperature``...); a ``stopping_criteria`` list given there is kept.
    """
    stats = stats if stats is not None else GenerationStats()
    token = cancel if cancel is not None else channel.cancel_token
    error: BaseException | None = None
    stats.started_at = time.monotonic()
    try:
        ids = _as_input_ids(input_ids)
        stats.prompt_tokens = int(ids.shape[1])
        if token.cancelled:
            stats.finish_reason = stats.finish_reason or "cancelled"
            return stats
        device = getattr(model, "device", None)
        if device is not None:
            ids = ids.to(device)
        criteria = StoppingCriteriaList(list(generate_kwargs.pop("stopping_criteria", None) or ()))
        criteria.append(CancelCriteria(token, stats))
        context = ids[0, -_CONTEXT_TOKENS:].tolist()
        detokenizer = IncrementalDetokenizer(
            tokenizer, context=context, skip_special_tokens=skip_special_tokens, lock=decode_lock
        )
        streamer = ChannelStreamer(detokenizer, channel, stats, stop=token)
        eos = _eos_ids(model, tokenizer)
        if "pad_token_id" not in generate_kwargs:
            pad = getattr(tokenizer, "pad_token_id", None)
            generate_kwargs["pad_token_id"] = pad if pad is not None else (min(eos) if eos else 0)
        if interrupt:
            install_layer_checks(model)
        previous = getattr(_running, "token", None)
        _running.token = token if interrupt else None
        try:
            with torch.inference_mode():
                model.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    streamer=streamer,
                    stopping_criteria=criteria,
                    **generate_kwargs,
                )
        except _Interrupted:
            stats.interrupted = True
        finally:
            _running.token = previous
        if token.cancelled:
            stats.finish_reason = stats.finish_reason or "cancelled"  # a caller's own reason (a stop) is kept
        elif streamer.last_id is not None and streamer.last_id in eos:
            stats.finish_reason = "stop"
        else:
            stats.finish_reason = "length"
    except Exception as exc:
        error = exc
        stats.error = exc
        stats.finish_reason = "error"
        logger.exception("asgi_stream: generate failed")
        # The token is left alone: the consumer gets the error from the channel, so the
        # stream can report it (an SSE error event) rather than be cut off as cancelled.
    finally:
        stats.stopped_at = time.monotonic()
        stats.cancelled_at = token.cancelled_at
        stats.done.set()
        channel.close(error)
    return stats


class Generation:
    """A ``generate`` call running in its own thread, read as an async iterable of text."""

    def __init__(self, channel: TokenChannel, stats: GenerationStats, thread: threading.Thread | None) -> None:
        self.channel = channel
        self.stats = stats
        self.thread = thread

    @property
    def cancel_token(self) -> CancelToken:
        """The token that stops this generation (set it from anywhere)."""
        return self.channel.cancel_token

    def cancel(self, reason: CancelReason | str = CancelReason.APPLICATION) -> None:
        """Stop generating after the current decode step."""
        self.channel.cancel_token.cancel(reason)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self.channel.__aiter__()

    async def text(self) -> str:
        """Collect the whole output (for non-streaming responses)."""
        parts = [str(piece) async for piece in self.channel]
        return "".join(parts)

    def join(self, timeout: float | None = None) -> bool:
        """Block until ``generate`` has returned; returns whether it has."""
        return self.stats.wait(timeout)

    def response(self, **options: Any) -> TokenStream:
        """A :class:`~asgi_stream.TokenStream` of this generation, sharing its cancel
        token (a client disconnect stops ``generate``); ``options`` go to TokenStream."""
        return TokenStream(self.channel, cancel=self.cancel_token, **options)


def start_generation(
    model: Any,
    tokenizer: Any,
    input_ids: Any,
    *,
    cancel: CancelToken | None = None,
    max_buffer: int = 1 << 20,
    decode_lock: threading.Lock | None = None,
    interrupt: bool = True,
    **generate_kwargs: Any,
) -> Generation:
    """Start ``model.generate`` in a new daemon thread and return its :class:`Generation`.

    ``max_buffer`` caps the text held for a slow client (bytes); past it generation
    is cancelled and the stream ends with :class:`~asgi_stream.BufferOverflowError`.
    For a single worker shared by many requests, call :func:`generate_into` from it.
    """
    channel = TokenChannel(max_buffer=max_buffer, cancel=cancel)
    stats = GenerationStats()
    thread = threading.Thread(
        target=generate_into,
        args=(model, tokenizer, input_ids, channel),
        kwargs={"stats": stats, "decode_lock": decode_lock, "interrupt": interrupt, **generate_kwargs},
        name="asgi-stream generate",
        daemon=True,
    )
    generation = Generation(channel, stats, thread)
    thread.start()
    return generation
