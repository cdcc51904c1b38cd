"""The demo app on a real server: framing negotiation, the queue in front of the one
generation worker (429, keepalive while queued, TTFT counting the wait, skipping
requests whose client left), independence of concurrent requests, metrics."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from asgi_stream.demo.batching import BatchSettings
from asgi_stream.demo.schemas import Limits

from ..support.sse import SSEParser, nothing_after, parse, sse_data
from ..support.waiting import wait_for
from .conftest import stats_entry

LONG = Limits(max_tokens=4000)
ONE = BatchSettings(max_batch=1)  # one generation at a time: the next request queues


def _generate(url: str, prompt: str, n: int, accept: str | None = None) -> httpx.Response:
    headers = {"Accept": accept} if accept else {}
    return httpx.post(
        url + "/generate", json={"prompt": prompt, "max_tokens": n, "temperature": 0}, headers=headers, timeout=30
    )


def test_generate_negotiates_text_sse_and_ndjson(live: Any) -> None:
    _, url = live()
    text = _generate(url, "Hello", 40)
    assert text.status_code == 200
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    assert text.text and "\ufffd" not in text.text

    sse = _generate(url, "Hello", 40, "text/event-stream")
    assert sse.headers["content-type"].startswith("text/event-stream")
    assert sse.headers.get("x-accel-buffering") == "no"
    assert sse.text.startswith("data:")
    events = sse_data(sse.content)
    assert len(events) > 1 and "".join(events) == text.text

    nd = _generate(url, "Hello", 40, "application/x-ndjson")
    assert nd.headers["content-type"].startswith("application/x-ndjson")
    lines = nd.text.splitlines()
    assert len(lines) > 1 and "".join(json.loads(line) for line in lines) == text.text


def test_concurrent_requests_do_not_corrupt_each_other(live: Any) -> None:
    _, url = live()
    prompts = ["alpha", "beta beta", "gamma γ", "δέλτα"]
    alone = {p: _generate(url, p, 60).text for p in prompts}
    assert len(set(alone.values())) == len(prompts)
    results: dict[str, str] = {}
    barrier = threading.Barrier(len(prompts))

    def run(prompt: str) -> None:
        barrier.wait()
        results[prompt] = _generate(url, prompt, 60, "text/event-stream").text

    threads = [threading.Thread(target=run, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for prompt in prompts:
        assert "".join(sse_data(results[prompt])) == alone[prompt]


class Reader(threading.Thread):
    """Reads a streamed response in the background, timestamping every chunk."""

    def __init__(self, url: str, body: dict[str, Any], *, stop_after_data: int | None = None) -> None:
        super().__init__(daemon=True)
        self.url, self.body, self.stop_after_data = url, body, stop_after_data
        self.chunks: list[tuple[float, bytes]] = []
        self.sse = SSEParser()
        self.status: int | None = None
        self.started_at = 0.0
        self.close = threading.Event()

    def run(self) -> None:
        self.started_at = time.monotonic()
        with httpx.Client(timeout=30) as client:
            with client.stream("POST", self.url, json=self.body, headers={"Accept": "text/event-stream"}) as response:
                self.status = response.status_code
                for chunk in response.iter_raw():
                    self.chunks.append((time.monotonic(), chunk))
                    self.sse.feed(chunk)
                    if self.close.is_set() or (self.stop_after_data and len(self.sse.events) >= self.stop_after_data):
                        return

    @property
    def body_bytes(self) -> bytes:
        return b"".join(c for _, c in self.chunks)


def test_queue_full_gets_429_and_queued_stream_gets_keepalives(live: Any) -> None:
    app, url = live(max_queue=1, keepalive=0.2, limits=LONG, batching=ONE)
    engine = app.state.service.engine
    running = Reader(url + "/generate", {"prompt": "a", "max_tokens": 4000, "temperature": 0})
    running.start()
    wait_for(lambda: running.chunks)
    queued = Reader(
        url + "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "b"}], "stream": True, "max_tokens": 20, "temperature": 0},
    )
    queued.start()
    wait_for(lambda: engine.queue_depth == 1)
    queued_by = time.monotonic()  # it was queued by now
    refused = httpx.post(url + "/v1/completions", json={"prompt": "c", "max_tokens": 5}, timeout=10)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    error = refused.json()["error"]
    assert error["code"] == "queue_full" and set(error) == {"message", "type", "param", "code"}
    # Kept alive while it waits: keepalives every 0.2 s before any event.
    wait_for(lambda: len(parse(queued.body_bytes).comments) >= 2, message=lambda: queued.body_bytes)
    released = time.monotonic()
    running.close.set()  # the running client leaves: its generation stops, the queued one starts
    queued.join(30)
    body = parse(queued.body_bytes)
    assert queued.status == 200
    waited = [c.text for c in body.comments if c.events_before == 0]
    assert len(waited) >= 2 and set(waited) == {" keepalive"}, queued.body_bytes  # headers and keepalives first
    # (Once tokens flow, a keepalive may still come in a gap longer than 0.2 s: a loaded machine.)
    assert body.events[-1].data == "[DONE]" and nothing_after(body), queued.body_bytes
    entry = wait_for(lambda: stats_entry(url, endpoint="chat.completions"))
    assert entry["queue_wait_s"] >= released - queued_by  # queued before the one, started after the other
    assert entry["ttft_s"] >= entry["queue_wait_s"]  # time queued counts toward TTFT
    first = wait_for(lambda: stats_entry(url, endpoint="generate"))
    assert first["outcome"] == "cancelled" and first["steps_after_cancel"] <= 1


def test_client_leaving_while_queued_is_skipped(live: Any) -> None:
    app, url = live(max_queue=2, limits=LONG, batching=ONE)
    engine = app.state.service.engine
    running = Reader(url + "/generate", {"prompt": "a", "max_tokens": 4000, "temperature": 0})
    running.start()
    wait_for(lambda: running.chunks)
    # Headers come with the first token or keepalive, so a raw socket: send, then hang up.
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"prompt": "q", "max_tokens": 50}).encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /generate HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        wait_for(lambda: engine.queue_depth == 1)
    running.close.set()
    running.join(30)

    def finished() -> list[dict[str, Any]] | None:
        streams = httpx.get(url + "/stats").json()["streams"]
        done = [e for e in streams if e["generation_done"] and e["outcome"]]
        return done if len(done) == 2 else None

    skipped = wait_for(finished)[1]
    assert skipped["outcome"] == "cancelled"
    assert skipped["decode_steps"] == 0 and skipped["completion_tokens"] == 0


def _samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_per_stream(live: Any) -> None:
    _, url = live(limits=LONG)
    for _ in range(2):
        assert _generate(url, "m", 30, "text/event-stream").status_code == 200
    with httpx.Client(timeout=10) as client:
        with client.stream(
            "POST", url + "/generate", json={"prompt": "x", "max_tokens": 4000}, headers={"Accept": "text/event-stream"}
        ) as r:
            next(r.iter_raw())
    assert httpx.post(url + "/generate", json={"prompt": ""}).status_code == 400
    wait_for(
        lambda: (
            stats_entry(url, endpoint="generate") and stats_entry(url, endpoint="generate")["outcome"] == "cancelled"
        )
    )
    s = _samples(url)
    prefix = "asgi_stream_demo_"
    assert s[(prefix + "streams_total", (("endpoint", "generate"), ("outcome", "completed")))] == 2
    assert s[(prefix + "streams_total", (("endpoint", "generate"), ("outcome", "cancelled")))] == 1
    assert s[(prefix + "rejected_total", (("status", "400"),))] == 1
    assert s[(prefix + "ttft_seconds_count", (("endpoint", "generate"),))] == 3
    assert s[(prefix + "queue_wait_seconds_count", ())] == 3
    assert s[(prefix + "stream_tokens_count", ())] == 3
    with_speed = [e for e in httpx.get(url + "/stats").json()["streams"] if e["tokens_per_s"] is not None]
    assert len(with_speed) >= 2  # the cancelled one too if it got two tokens out before it stopped
    assert s[(prefix + "tokens_per_second_count", ())] == len(with_speed)
    assert s[(prefix + "generated_tokens_total", ())] >= 60
    assert s[(prefix + "decode_steps_after_cancel_count", ())] == 1
    assert s[(prefix + "decode_steps_after_cancel_bucket", (("le", "1.0"),))] == 1
    assert (prefix + "queue_depth", ()) in s


def test_two_apps_in_one_process_have_separate_metrics(live: Any) -> None:
    _, url1 = live()
    _, url2 = live()
    assert _generate(url1, "one", 5).status_code == 200
    key = ("asgi_stream_demo_streams_total", (("endpoint", "generate"), ("outcome", "completed")))
    wait_for(lambda: _samples(url1).get(key) == 1)
    assert key not in _samples(url2)


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/static/sse.js", "/health", "/stats"])
def test_pages(live: Any, path: str) -> None:
    _, url = live()
    response = httpx.get(url + path, timeout=10)
    assert response.status_code == 200


class FailAt:
    """A logits processor that raises at a given decode step (a model failing mid-way)."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.calls = 0

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        self.calls += 1
        if self.calls >= self.step:
            raise RuntimeError("device lost")
        return scores


def test_generation_failure_is_an_error_never_a_hang(live: Any, tiny: Any) -> None:
    import dataclasses

    import openai

    failing = dataclasses.replace(
        tiny, generate_kwargs={"logits_processor": [*tiny.generate_kwargs["logits_processor"], FailAt(20)]}
    )
    failing.generate_kwargs["logits_processor"][-1].calls = 0
    _, url = live(model=failing)
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=30)
    received = []
    with pytest.raises(openai.APIError) as info:  # the in-band SSE error event
        for chunk in client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], stream=True, max_tokens=100, temperature=0
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert received  # it failed mid-stream, after some tokens
    assert info.value.body["type"] == "server_error"  # type: ignore[index]
    assert "device lost" not in str(info.value)  # internals are not leaked
    entry = wait_for(lambda: stats_entry(url, endpoint="chat.completions"))
    assert entry["outcome"] == "error" and entry["finish_reason"] == "error"

    failing.generate_kwargs["logits_processor"][-1].calls = 0
    whole = httpx.post(url + "/v1/completions", json={"prompt": "hi", "max_tokens": 100}, timeout=30)
    assert whole.status_code == 500
    assert whole.json()["error"]["type"] == "server_error"
    # The worker survived: the next request (failing again at step 20) still gets an answer.
    failing.generate_kwargs["logits_processor"][-1].calls = 0
    short = httpx.post(url + "/v1/completions", json={"prompt": "hi", "max_tokens": 5, "temperature": 0}, timeout=30)
    assert short.status_code == 200 and short.json()["usage"]["completion_tokens"] == 5
