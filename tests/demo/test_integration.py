"""asgi_stream.integrations.transformers: detokenisation, cancellation that stops the
model's compute, bounded buffering, errors — on the tiny model, and over a real server."""

from __future__ import annotations

import threading
import time
from typing import Any

import anyio
import httpx
import pytest
import torch
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from asgi_stream import CancelReason, StreamMiddleware
from asgi_stream.channel import TokenChannel
from asgi_stream.demo.model import LoadedModel
from asgi_stream.errors import BufferOverflowError
from asgi_stream.integrations.transformers import (
    GenerationStats,
    IncrementalDetokenizer,
    default_device,
    default_dtype,
    generate_into,
    start_generation,
)

from ..support.sse import SSEParser
from ..support.waiting import wait_for


class ForwardLog:
    """Records when each forward pass of a model starts and ends (independent of the
    integration's own step counting)."""

    def __init__(self, model: Any) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []
        self._handles = [
            model.register_forward_pre_hook(lambda *a: self.starts.append(time.monotonic())),
            model.register_forward_hook(lambda *a: self.ends.append(time.monotonic())),
        ]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()

    def after(self, t: float) -> tuple[int, int]:
        """(forward passes started after t, forward passes ended after t)."""
        return sum(1 for s in self.starts if s > t), sum(1 for e in self.ends if e > t)


def _ids(tiny: LoadedModel, text: str) -> list[int]:
    return tiny.tokenizer(text, add_special_tokens=False).input_ids


def _greedy(tiny: LoadedModel, prompt: str, n: int) -> str:
    ids = torch.tensor([_ids(tiny, prompt)])
    with torch.inference_mode():
        out = tiny.model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=0, **tiny.generate_kwargs)
    return tiny.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


# ---------------------------------------------------------------- detokenisation
@pytest.mark.parametrize("text", ["aé🙂b", "日本語のテキスト", "naïve café — ok", "\u0301e\u0301", "🙂🙃😀"])
def test_detokenizer_never_emits_broken_or_empty_characters(tiny: LoadedModel, text: str) -> None:
    detok = IncrementalDetokenizer(tiny.tokenizer)
    deltas = [detok.push(i) for i in _ids(tiny, text)]
    deltas.append(detok.flush())
    emitted = [d for d in deltas if d]
    assert "".join(emitted) == text
    for delta in emitted:
        assert "\ufffd" not in delta
        delta.encode("utf-8")  # no lone surrogates either
    # Multi-byte characters really were split across tokens (held back, then whole).
    assert len(emitted) < len(deltas)


def test_detokenizer_uses_prompt_context_and_skips_special_tokens(tiny: LoadedModel) -> None:
    context = _ids(tiny, "Hello")
    detok = IncrementalDetokenizer(tiny.tokenizer, context=context)
    out = [detok.push(i) for i in [*_ids(tiny, " wörld"), tiny.tokenizer.eos_token_id]]
    assert "".join(out) == " wörld"
    assert out[-1] == ""  # the end-of-sequence token adds no text


def test_device_and_dtype_defaults() -> None:
    assert default_dtype("cpu") == torch.float32
    assert default_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------- generation
def test_streamed_text_equals_plain_generate(tiny: LoadedModel) -> None:
    expected = _greedy(tiny, "Once upon", 120)

    async def main() -> tuple[list[str], GenerationStats]:
        gen = start_generation(
            tiny.model,
            tiny.tokenizer,
            _ids(tiny, "Once upon"),
            max_new_tokens=120,
            do_sample=False,
            **tiny.generate_kwargs,
        )
        pieces = [p async for p in gen]
        assert gen.join(5)
        return pieces, gen.stats

    pieces, stats = anyio.run(main)
    assert "".join(pieces) == expected
    assert all(pieces)  # never an empty string
    assert any(len(p.encode()) > len(p) for p in pieces)  # multi-byte text came through
    assert stats.finish_reason == "length"
    assert stats.completion_tokens == stats.steps == 120
    assert stats.prompt_tokens == len("Once upon")
    assert stats.tokens_per_second and stats.tokens_per_second > 0


@pytest.mark.parametrize("interrupt", [True, False], ids=["layer-checks", "stopping-criteria-only"])
def test_cancel_stops_compute_within_one_decode_step(tiny: LoadedModel, interrupt: bool) -> None:
    log = ForwardLog(tiny.model)
    try:

        async def main() -> GenerationStats:
            gen = start_generation(
                tiny.model,
                tiny.tokenizer,
                _ids(tiny, "Count"),
                interrupt=interrupt,
                max_new_tokens=4000,
                min_new_tokens=4000,
                do_sample=False,
                **tiny.generate_kwargs,
            )
            received = 0
            async for piece in gen:
                received += len(piece)
                if received >= 40:
                    gen.cancel(CancelReason.DISCONNECT)
                    break
            assert gen.join(10), "generate did not return after cancellation"
            forwards_at_return = len(log.starts)
            assert gen.thread is not None
            gen.thread.join(10)  # the thread that ran the model is gone: nothing more can compute
            assert not gen.thread.is_alive()
            assert len(log.starts) == forwards_at_return, "the model kept computing after generate returned"
            return gen.stats

        stats = anyio.run(main)
    finally:
        log.remove()
    assert stats.cancelled_at is not None
    started_after, ended_after = log.after(stats.cancelled_at)
    assert started_after <= 1 and ended_after <= 1, (started_after, ended_after)
    assert stats.steps_after_cancel <= 1
    assert stats.finish_reason == "cancelled"
    assert stats.completion_tokens < 4000
    assert stats.cancel_to_stop is not None and stats.cancel_to_stop < 2.0
    if not interrupt:
        assert not stats.interrupted


def test_layer_checks_abandon_the_forward_pass_in_flight(tiny: LoadedModel) -> None:
    """Cancelled while a forward pass runs: it stops at the next layer, before the
    model's output exists (the forward never completes)."""
    from asgi_stream.integrations.transformers import install_layer_checks

    assert install_layer_checks(tiny.model) == install_layer_checks(tiny.model) >= 2  # idempotent
    layers = [m for m in tiny.model.modules() if type(m).__name__.endswith("DecoderLayer")]
    channel = TokenChannel()
    seen = []

    def first_layer(module: Any, args: Any) -> None:
        # The client leaves while the 12th forward pass runs its first layer: the check
        # before the second layer must abandon that pass.
        seen.append(module)
        if len(seen) == 12:
            channel.cancel_token.cancel(CancelReason.DISCONNECT)

    handle = layers[0].register_forward_pre_hook(first_layer)
    log = ForwardLog(tiny.model)
    try:
        stats = generate_into(
            tiny.model,
            tiny.tokenizer,
            _ids(tiny, "z"),
            channel,
            max_new_tokens=100,
            min_new_tokens=100,
            do_sample=False,
        )
    finally:
        handle.remove()
        log.remove()
    assert stats.interrupted and stats.finish_reason == "cancelled"
    assert stats.steps_after_cancel == 0
    assert len(log.ends) == len(log.starts) - 1  # the last forward pass never finished
    assert stats.steps == len(log.ends) == 11


def test_layer_checks_are_per_thread(tiny: LoadedModel) -> None:
    """Two generations share the model in two threads; cancelling one leaves the other whole."""
    expected = _greedy(tiny, "peer", 300)

    async def main() -> tuple[str, GenerationStats]:
        kwargs = {"max_new_tokens": 300, "do_sample": False, **tiny.generate_kwargs}
        victim = start_generation(tiny.model, tiny.tokenizer, _ids(tiny, "x"), **{**kwargs, "max_new_tokens": 3000})
        peer = start_generation(tiny.model, tiny.tokenizer, _ids(tiny, "peer"), **kwargs)
        async for _ in victim:
            victim.cancel()
            break
        text = await peer.text()
        assert victim.join(10) and peer.join(10)
        return text, victim.stats

    text, victim = anyio.run(main)
    assert victim.finish_reason == "cancelled"
    assert text == expected


def test_cancel_before_start_runs_no_forward_pass(tiny: LoadedModel) -> None:
    log = ForwardLog(tiny.model)
    try:
        channel = TokenChannel()
        channel.cancel_token.cancel()
        stats = generate_into(tiny.model, tiny.tokenizer, _ids(tiny, "x"), channel, max_new_tokens=50)
    finally:
        log.remove()
    assert log.starts == []
    assert stats.finish_reason == "cancelled" and stats.steps == 0


def test_consumer_leaving_stops_generation(tiny: LoadedModel) -> None:
    async def main() -> GenerationStats:
        gen = start_generation(
            tiny.model,
            tiny.tokenizer,
            _ids(tiny, "a"),
            max_new_tokens=4000,
            min_new_tokens=4000,
            do_sample=False,
            **tiny.generate_kwargs,
        )
        iterator = gen.channel.__aiter__()
        await iterator.__anext__()
        await gen.channel.aclose()  # what TokenStream does when its stream ends
        assert gen.join(10)
        return gen.stats

    stats = anyio.run(main)
    assert stats.finish_reason == "cancelled"
    assert stats.steps_after_cancel <= 1
    assert stats.completion_tokens < 4000


def test_slow_reader_is_bounded_and_loses_nothing(tiny: LoadedModel) -> None:
    expected = _greedy(tiny, "slow", 300)

    async def main() -> tuple[list[str], Any]:
        gen = start_generation(
            tiny.model, tiny.tokenizer, _ids(tiny, "slow"), max_new_tokens=300, do_sample=False, **tiny.generate_kwargs
        )
        pieces = []
        async for piece in gen:
            pieces.append(piece)
            await anyio.sleep(0.05)  # a reader far slower than the model
        return pieces, gen

    pieces, gen = anyio.run(main)
    assert "".join(pieces) == expected
    assert len(pieces) < 300  # text produced meanwhile was merged, not queued per token
    assert gen.channel.high_water <= len(expected.encode())


def test_overflow_cancels_generation(tiny: LoadedModel) -> None:
    async def main() -> tuple[BaseException | None, GenerationStats]:
        gen = start_generation(
            tiny.model,
            tiny.tokenizer,
            _ids(tiny, "b"),
            max_buffer=64,
            max_new_tokens=2000,
            min_new_tokens=2000,
            do_sample=False,
            **tiny.generate_kwargs,
        )
        assert gen.join(20)  # nobody reads: the producer overruns the cap and is stopped
        error = None
        try:
            async for _ in gen:
                pass
        except BufferOverflowError as exc:
            error = exc
        return error, gen.stats

    error, stats = anyio.run(main)
    assert isinstance(error, BufferOverflowError)
    assert stats.finish_reason == "cancelled"
    assert stats.completion_tokens < 2000


def test_generate_error_reaches_the_consumer(tiny: LoadedModel) -> None:
    async def main() -> tuple[BaseException | None, GenerationStats]:
        gen = start_generation(tiny.model, tiny.tokenizer, _ids(tiny, "c"), max_new_tokens=5, no_such_option=1)
        try:
            async for _ in gen:
                pass
        except Exception as exc:
            return exc, gen.stats
        return None, gen.stats

    error, stats = anyio.run(main)
    assert error is not None
    assert stats.finish_reason == "error" and stats.error is error


def test_empty_prompt_is_refused(tiny: LoadedModel) -> None:
    channel = TokenChannel()
    stats = generate_into(tiny.model, tiny.tokenizer, [], channel, max_new_tokens=5)
    assert stats.finish_reason == "error" and isinstance(stats.error, ValueError)


# ---------------------------------------------------------------- over a real server
def test_client_disconnect_over_http_stops_generate(tiny: LoadedModel, server: Any) -> None:
    generations: list[Any] = []
    log = ForwardLog(tiny.model)

    async def endpoint(request: Request) -> Any:
        gen = start_generation(
            tiny.model,
            tiny.tokenizer,
            _ids(tiny, "stream"),
            max_new_tokens=4000,
            min_new_tokens=4000,
            do_sample=False,
            **tiny.generate_kwargs,
        )
        generations.append(gen)
        return gen.response(format="sse")

    app = Starlette(routes=[Route("/g", endpoint)])
    app.add_middleware(StreamMiddleware)
    running = server(app)
    try:
        with httpx.Client(timeout=10) as client:
            with client.stream("GET", running.url + "/g") as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                parser = SSEParser()
                for chunk in response.iter_raw():
                    parser.feed(chunk)
                    if len(parser.events) >= 5:
                        break
        gen = wait_for(lambda: generations and generations[0].stats.done.is_set() and generations[0])
    finally:
        log.remove()
    stats = gen.stats
    assert gen.cancel_token.reason is CancelReason.DISCONNECT
    assert stats.finish_reason == "cancelled"
    started_after, ended_after = log.after(stats.cancelled_at)
    assert started_after <= 1 and ended_after <= 1
    assert stats.cancel_to_stop < 2.0
    assert stats.completion_tokens < 4000


def test_worker_thread_is_daemon_and_ends(tiny: LoadedModel) -> None:
    async def main() -> Any:
        gen = start_generation(tiny.model, tiny.tokenizer, _ids(tiny, "d"), max_new_tokens=10, do_sample=False)
        await gen.text()
        return gen

    gen = anyio.run(main)
    assert isinstance(gen.thread, threading.Thread) and gen.thread.daemon
    gen.thread.join(5)
    assert not gen.thread.is_alive()
