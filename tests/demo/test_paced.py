"""Paced mode: fixed tokens at a fixed interval, each flushed on its own, no model."""

from __future__ import annotations

import itertools
import json
import threading
import time
from typing import Any

import httpx

from asgi_stream.demo.engine import PACED_TOKENS

from ..support.sse import SSEParser
from ..support.waiting import wait_for
from .conftest import stats_entry


def _timed_events(
    url: str, body: dict[str, Any], accept: str = "text/event-stream", stop_after: int | None = None
) -> list[tuple[float, bytes]]:
    chunks = []
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", url + "/generate", json=body, headers={"Accept": accept}) as response:
            assert response.status_code == 200
            for chunk in response.iter_raw():
                chunks.append((time.monotonic(), chunk))
                if stop_after and len(chunks) >= stop_after:
                    break
    return chunks


def test_paced_tokens_arrive_one_per_interval(live: Any) -> None:
    app, url = live(paced=True, paced_interval=0.1, paced_tokens=8)
    assert app.state.service.engine.loaded is None  # no model in paced mode
    chunks = _timed_events(url, {"prompt": "go"})
    parser = SSEParser()
    for t, c in chunks:
        parser.feed(c, t)
    parser.close()
    assert [e.data for e in parser.events] == list(PACED_TOKENS[:8])
    times = list(dict.fromkeys(e.t for e in parser.events))  # one per read that completed events
    assert len(times) >= 6  # sent one by one (a loaded machine may merge a pair on read)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(g > 0.05 for g in gaps), gaps  # paced, not a burst at the end
    assert 0.6 < times[-1] - times[0] < 3.0


def test_paced_interval_and_count_per_request(live: Any) -> None:
    _, url = live(paced=True, paced_interval=5.0)
    started = time.monotonic()
    text = httpx.post(url + "/generate", json={"prompt": "go", "max_tokens": 20, "interval": 0.01}, timeout=30).text
    assert time.monotonic() - started < 3.0
    expected = "".join(PACED_TOKENS[i % len(PACED_TOKENS)] for i in range(20))
    assert text == expected
    nd = httpx.post(
        url + "/generate",
        json={"prompt": "go", "max_tokens": 3, "interval": 0},
        headers={"Accept": "application/x-ndjson"},
    )
    assert [json.loads(line) for line in nd.text.splitlines()] == list(PACED_TOKENS[:3])
    bad = httpx.post(url + "/generate", json={"prompt": "go", "interval": -1})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "interval"


def test_paced_streams_run_concurrently(live: Any) -> None:
    _, url = live(paced=True, paced_interval=0.1, paced_tokens=5)
    durations: list[float] = []

    def run() -> None:
        t0 = time.monotonic()
        httpx.post(url + "/generate", json={"prompt": "x"}, timeout=30)
        durations.append(time.monotonic() - t0)

    threads = [threading.Thread(target=run) for _ in range(10)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(durations) == 10
    assert time.monotonic() - t0 < 3.0  # ten 0.4 s streams side by side, not in sequence


def test_paced_disconnect_is_recorded(live: Any) -> None:
    _, url = live(paced=True, paced_interval=0.1, paced_tokens=50)
    _timed_events(url, {"prompt": "go"}, stop_after=3)
    entry = wait_for(lambda: stats_entry(url, endpoint="generate"))
    assert entry["outcome"] == "cancelled" and entry["finish_reason"] == "cancelled"
    assert entry["cancel_reason"] == "disconnect"
    assert 3 <= entry["completion_tokens"] <= 5
    assert entry["steps_after_cancel"] == 0


def test_paced_openai_stream(live: Any) -> None:
    _, url = live(paced=True, paced_interval=0.01, paced_tokens=4)
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    pieces = [
        c.choices[0].delta.content
        for c in client.chat.completions.create(
            model="paced", messages=[{"role": "user", "content": "a b c"}], stream=True
        )
        if c.choices and c.choices[0].delta.content
    ]
    assert pieces == list(PACED_TOKENS[:4])
    whole = client.chat.completions.create(model="paced", messages=[{"role": "user", "content": "a b c"}])
    assert whole.choices[0].message.content == "".join(PACED_TOKENS[:4])
    assert whole.usage.prompt_tokens == 3 and whole.usage.completion_tokens == 4
