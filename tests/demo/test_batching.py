"""The serving engine on the tiny model: continuous batching (transformers'
ContinuousBatchingManager) and the thread path — overlap, greedy text identical alone
and in a batch, cancellation within one decode step with siblings unharmed, queued
cancellation freeing its slot at once, the text layer's stop, per-request sampling,
admission limits, a batch error restarting the manager, the thread count."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
import torch

from asgi_stream.cancel import CancelReason
from asgi_stream.demo.batching import BatchSettings, unsupported_reason
from asgi_stream.demo.engine import Job, ModelEngine, QueueFull, SamplingParams, apply_threads, default_threads
from asgi_stream.demo.model import LoadedModel

from ..support.waiting import wait_for

PATHS = ["batched", "thread"]


@pytest.fixture
def engine(tiny: LoadedModel) -> Iterator[Callable[..., ModelEngine]]:
    """``engine(path, **options)``: a loaded engine on the tiny model; closed at teardown."""
    made: list[ModelEngine] = []

    def make(
        path: str = "batched", *, max_batch: int = 8, model: LoadedModel | None = None, **options: Any
    ) -> ModelEngine:
        batching = BatchSettings(max_batch=max_batch) if path == "batched" else None
        eng = ModelEngine(lambda: model or tiny, batching=batching, **options)
        made.append(eng)
        eng.load()
        assert eng.mode == path
        return eng

    yield make
    for eng in made:
        eng.close()


def _text(job: Job, timeout: float = 60) -> str:
    """The whole output of a job once it ended (the channel holds it)."""
    assert job.stats.wait(timeout), f"job {job.id} never ended"

    async def collect() -> str:
        return "".join([piece async for piece in job])

    return anyio.run(collect)


def _greedy(n: int, **extra: Any) -> SamplingParams:
    return SamplingParams(max_tokens=n, temperature=0.0, **extra)


def _ids(tiny: LoadedModel, text: str) -> list[int]:
    return list(tiny.tokenizer(text, add_special_tokens=False)["input_ids"])


PROMPTS = ["alpha", "beta beta", "gamma γ", "δέλτα", "epsilon e", "zeta"]


def test_both_paths_give_the_same_greedy_text_alone_and_batched(engine: Any, tiny: LoadedModel) -> None:
    thread = engine("thread")
    alone = {p: _text(thread.submit(_ids(tiny, p), _greedy(48))) for p in PROMPTS}
    assert len(set(alone.values())) == len(PROMPTS)
    assert all(len(t) >= 16 and "\ufffd" not in t for t in alone.values())  # valid text, multi-byte too
    batched = engine("batched")
    assert {p: _text(batched.submit(_ids(tiny, p), _greedy(48))) for p in PROMPTS[:2]} == {
        p: alone[p] for p in PROMPTS[:2]
    }
    jobs = {p: batched.submit(_ids(tiny, p), _greedy(48)) for p in PROMPTS}  # all in one batch
    assert {p: _text(j) for p, j in jobs.items()} == alone
    for job in jobs.values():
        assert job.stats.finish_reason == "length" and job.stats.completion_tokens == 48


def test_batched_streams_overlap(engine: Any, tiny: LoadedModel) -> None:
    eng = engine("batched")
    jobs = [eng.submit(_ids(tiny, p), _greedy(300)) for p in PROMPTS[:4]]
    wait_for(lambda: eng.running == 4 or any(j.stats.done.is_set() for j in jobs), timeout=30)
    for job in jobs:
        assert job.stats.wait(60)
    firsts = [j.stats.first_token_at for j in jobs]
    ends = [j.stats.stopped_at for j in jobs]
    assert all(f is not None for f in firsts) and all(e is not None for e in ends)
    assert max(firsts) < min(ends)  # every stream had its first token before any stream finished
    assert eng.running == 0 and eng.queue_depth == 0


def test_thread_path_serialises(engine: Any, tiny: LoadedModel) -> None:
    eng = engine("thread")
    jobs = [eng.submit(_ids(tiny, p), _greedy(60)) for p in PROMPTS[:3]]
    assert eng.running == 1 and eng.queue_depth == 2
    for job in jobs:
        assert job.stats.wait(60)
    assert jobs[0].stats.stopped_at <= jobs[1].stats.first_token_at  # one at a time
    assert jobs[2].queue_wait is not None and jobs[2].queue_wait > 0


@pytest.mark.parametrize("path", PATHS)
def test_cancel_stops_within_one_step_and_siblings_are_unharmed(engine: Any, tiny: LoadedModel, path: str) -> None:
    eng = engine(path)
    ids = [_ids(tiny, p) for p in PROMPTS[:3]]
    alone = [_text(eng.submit(i, _greedy(400))) for i in ids[1:]] if path == "batched" else []
    jobs = [eng.submit(i, _greedy(400 if path == "batched" else 4000)) for i in ids]
    victim = jobs[0]
    wait_for(lambda: victim.stats.completion_tokens >= 10, timeout=30)
    victim.cancel_token.cancel(CancelReason.DISCONNECT)
    assert victim.stats.wait(10)
    stats = victim.stats
    assert stats.finish_reason == "cancelled"
    assert stats.steps_after_cancel <= 1
    assert stats.cancel_to_stop is not None
    if path == "batched":
        assert [_text(j) for j in jobs[1:]] == alone  # the siblings' greedy text is unchanged
        assert all(j.stats.finish_reason == "length" for j in jobs[1:])
    else:
        for job in jobs[1:]:
            job.cancel_token.cancel(CancelReason.DISCONNECT)


def test_running_gauge_drops_when_the_cancel_reaches_the_batch(engine: Any, tiny: LoadedModel) -> None:
    eng = engine("batched")
    jobs = [eng.submit(_ids(tiny, p), _greedy(4000)) for p in PROMPTS[:3]]
    assert eng.running == 3
    wait_for(lambda: all(j.stats.completion_tokens > 2 for j in jobs), timeout=30)
    jobs[0].cancel_token.cancel(CancelReason.DISCONNECT)
    wait_for(lambda: eng.running == 2, timeout=10)
    assert jobs[0].stats.done.is_set()  # the count dropped when its compute ended, not before
    steps_then = jobs[1].stats.steps
    for job in jobs[1:]:
        job.cancel_token.cancel(CancelReason.DISCONNECT)
    wait_for(lambda: eng.running == 0, timeout=10)
    assert all(j.stats.steps_after_cancel <= 1 for j in jobs)
    assert jobs[1].stats.steps >= steps_then  # it kept decoding after its sibling left


@pytest.mark.parametrize("path", PATHS)
def test_a_queued_cancel_frees_its_slot_at_once(engine: Any, tiny: LoadedModel, path: str) -> None:
    eng = engine(path, max_batch=1, max_queue=2)
    running = eng.submit(_ids(tiny, "a"), _greedy(4000))
    queued = eng.submit(_ids(tiny, "b"), _greedy(20))
    assert eng.queue_depth == 1 and eng.running == 1
    wait_for(lambda: running.stats.completion_tokens > 0, timeout=30)
    queued.cancel_token.cancel(CancelReason.DISCONNECT)
    assert eng.queue_depth == 0  # at once, not when the worker gets to it
    assert queued.stats.done.is_set() and queued.stats.finish_reason == "cancelled"
    assert queued.stats.completion_tokens == 0 and queued.queue_wait is None
    assert queued.stats.cancel_to_stop is not None and queued.stats.cancel_to_stop < 1.0  # not the queue time
    # Its place in the queue is free: two more fit, the third is refused.
    extra = [eng.submit(_ids(tiny, "c"), _greedy(5)), eng.submit(_ids(tiny, "d"), _greedy(5))]
    with pytest.raises(QueueFull):
        eng.submit(_ids(tiny, "e"), _greedy(5))
    running.cancel_token.cancel(CancelReason.DISCONNECT)
    assert [len(_text(j).encode()) >= 5 for j in extra] == [True, True]
    assert all(j.queue_wait is not None and j.queue_wait > 0 for j in extra)


def test_admission_bounds_running_and_waiting(engine: Any, tiny: LoadedModel) -> None:
    eng = engine("batched", max_batch=2, max_queue=1)
    jobs = [eng.submit(_ids(tiny, p), _greedy(4000)) for p in PROMPTS[:3]]
    assert (eng.running, eng.queue_depth) == (2, 1)
    with pytest.raises(QueueFull):
        eng.submit(_ids(tiny, "x"), _greedy(5))
    jobs[0].cancel_token.cancel(CancelReason.DISCONNECT)
    wait_for(lambda: eng.queue_depth == 0 and eng.running == 2, timeout=10)  # the waiting one took the slot
    assert jobs[2].started_at is not None
    for job in jobs[1:]:
        job.cancel_token.cancel(CancelReason.DISCONNECT)
    wait_for(lambda: eng.running == 0, timeout=10)


@pytest.mark.parametrize("path", PATHS)
def test_stop_from_the_text_layer_ends_with_its_finish_reason(engine: Any, tiny: LoadedModel, path: str) -> None:
    eng = engine(path)
    job = eng.submit(_ids(tiny, "stop me"), _greedy(4000))
    wait_for(lambda: job.stats.completion_tokens >= 5, timeout=30)
    job.stop("stop")
    assert job.stats.finish_reason == "stop"  # at once, for the text layer's final chunk
    text = _text(job, timeout=10)  # the iterator ends normally
    assert text and "\ufffd" not in text
    assert job.stats.finish_reason == "stop" and not job.cancel_token.cancelled
    assert job.stats.completion_tokens < 4000
    wait_for(lambda: eng.running == 0, timeout=10)


def test_sampling_is_per_request_inside_a_batch(engine: Any, tiny: LoadedModel) -> None:
    eng = engine("batched")
    ids = _ids(tiny, "sample")
    sampled = SamplingParams(max_tokens=40, temperature=1.0, top_p=0.9, seed=7)
    alone = _text(eng.submit(ids, sampled))
    greedy_alone = _text(eng.submit(ids, _greedy(40)))
    together = [
        eng.submit(ids, sampled),
        eng.submit(ids, _greedy(40)),
        eng.submit(ids, dataclasses.replace(sampled, seed=8)),
    ]
    texts = [_text(j) for j in together]
    assert texts[0] == alone  # same seed, same sample, whoever shares the batch
    assert texts[1] == greedy_alone  # a sampled neighbour does not make greedy sample
    assert texts[2] != alone  # another seed, another sample
    top1 = _text(eng.submit(ids, SamplingParams(max_tokens=40, temperature=1.5, top_k=1, seed=3)))
    assert top1 == greedy_alone  # top_k=1 is greedy


class FailingConstraint:
    """The tiny model's constraint, raising once, at a given call (a batch step failing)."""

    def __init__(self, inner: Any, fail_at: int) -> None:
        self.inner, self.window, self.fail_at, self.calls = inner, inner.window, fail_at, 0

    def allowed(self, tail: Any) -> Any:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("device lost")
        return self.inner.allowed(tail)


def test_a_failing_batch_fails_its_jobs_and_the_next_ones_run(engine: Any, tiny: LoadedModel) -> None:
    failing = FailingConstraint(tiny.constraint, fail_at=30)
    model = dataclasses.replace(tiny, constraint=failing, generate_kwargs={"logits_processor": [failing]})
    eng = engine("batched", model=model, max_batch=2)
    backend: Any = eng.backend
    jobs = [eng.submit(_ids(tiny, p), _greedy(200)) for p in PROMPTS[:2]]
    queued = eng.submit(_ids(tiny, "queued"), _greedy(10))  # waits for a place in the batch
    for job in jobs:
        assert job.stats.wait(30)
        assert job.stats.finish_reason == "error"
        with pytest.raises(RuntimeError):
            _text(job)
    assert len(_text(queued).encode()) >= 10 and queued.stats.finish_reason == "length"  # on a fresh manager
    after = eng.submit(_ids(tiny, "again"), _greedy(10))
    assert len(_text(after).encode()) >= 10 and after.stats.finish_reason == "length"
    assert backend.starts == 2
    wait_for(lambda: eng.running == 0, timeout=10)


def test_the_thread_path_serves_what_the_manager_cannot(tiny: LoadedModel) -> None:
    assert unsupported_reason(tiny) is None
    custom = dataclasses.replace(tiny, generate_kwargs={"logits_processor": [object()]})
    assert "logits processors" in (unsupported_reason(custom) or "")
    extra = dataclasses.replace(tiny, generate_kwargs={"repetition_penalty": 1.2})
    assert "repetition_penalty" in (unsupported_reason(extra) or "")


def test_thread_count_is_chosen_for_the_machine_and_configurable(
    engine: Any, tiny: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    assert default_threads() == 1
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    assert default_threads() == 15
    before = torch.get_num_threads()
    try:
        engine("batched", threads=2)
        assert torch.get_num_threads() == 2
        assert apply_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError):
        ModelEngine(lambda: tiny, threads=0)


def test_close_ends_running_and_queued_jobs(engine: Any, tiny: LoadedModel) -> None:
    eng = engine("batched", max_batch=1, max_queue=1)
    running = eng.submit(_ids(tiny, "a"), _greedy(4000))
    queued = eng.submit(_ids(tiny, "b"), _greedy(10))
    wait_for(lambda: running.stats.completion_tokens > 0, timeout=30)
    started = time.monotonic()
    eng.close()
    assert queued.stats.done.is_set() and queued.stats.finish_reason == "cancelled"
    assert running.stats.wait(10) and running.stats.finish_reason == "cancelled"
    assert time.monotonic() - started < 10
    with pytest.raises(QueueFull):
        eng.submit(_ids(tiny, "c"), _greedy(5))
