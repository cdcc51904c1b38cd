"""``GET /v1/stream``: the resumable EventSource endpoint. A client whose connection
drops reconnects with ``Last-Event-ID`` and gets the rest of the same generation —
the model runs once — checked with raw reads and with real reconnecting clients
(chromium's EventSource; the npm ``eventsource`` client when Node.js and the package
are available), whose connections the server cuts every few events."""

from __future__ import annotations

import asyncio
import json
import os
import re
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from asgi_stream.demo.engine import PACED_TOKENS
from asgi_stream.demo.eventsource import parse_query
from asgi_stream.demo.schemas import APIError, Limits

from ..support.sse import SSEParser, first_event, parse
from ..support.waiting import wait_for
from .conftest import stats_entry

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]  # fmt: skip
ID = re.compile(r"([A-Za-z0-9_-]{16})\.(\d+)")


class CutEvery:
    """Outermost ASGI layer: drops each ``/v1/stream`` connection after ``k`` events
    of its response (as a mobile network would); the stream itself goes on."""

    def __init__(self, app: Any, k: int) -> None:
        self.app, self.k = app, k
        self.cuts = 0
        self.background: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/v1/stream"):
            await self.app(scope, receive, send)
            return
        cut = asyncio.Event()
        seen = 0

        async def cutting_send(message: dict[str, Any]) -> None:
            nonlocal seen
            if cut.is_set():
                raise OSError("connection cut by the test")
            await send(message)
            seen += message.get("body", b"").count(b"\nid: ")
            if seen >= self.k:
                cut.set()

        async def cutting_receive() -> dict[str, Any]:
            if cut.is_set():
                return {"type": "http.disconnect"}
            get, stop = asyncio.ensure_future(receive()), asyncio.ensure_future(cut.wait())
            done, _ = await asyncio.wait({get, stop}, return_when=asyncio.FIRST_COMPLETED)
            (stop if get in done else get).cancel()
            return get.result() if get in done else {"type": "http.disconnect"}

        task = asyncio.ensure_future(self.app(scope, cutting_receive, cutting_send))
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        waiter = asyncio.ensure_future(cut.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if cut.is_set():
            self.cuts += 1
            return  # the response unfinished: the server drops the connection
        await task


def _events(body: str | SSEParser) -> list[tuple[str, str, str]]:
    """(type, data, last event id) of each complete SSE event."""
    parser = parse(body) if isinstance(body, str) else body
    return [(e.type, e.data, e.last_event_id) for e in parser.events]


def _text(events: list[tuple[str, str, str]]) -> str:
    return "".join(json.loads(data)["text"] for kind, data, _ in events if kind == "message")


def _stream_entries(base: str) -> list[dict[str, Any]]:
    return [s for s in httpx.get(base + "/stats", timeout=5).json()["streams"] if s["endpoint"] == "stream"]


def test_query_parsing() -> None:
    limits = Limits()
    parsed, retry = parse_query(
        [("message", "hi"), ("max_tokens", "7"), ("temperature", "0"), ("stop", "a"), ("stop", "bc"),
         ("retry", "250"), ("ignore_eos", "true"), ("last_event_id", "x")], limits,
    )  # fmt: skip
    assert parsed.messages == [{"role": "user", "content": "hi"}] and retry == 250
    assert parsed.params.max_tokens == 7 and parsed.params.temperature == 0 and parsed.params.ignore_eos
    assert parsed.stop == ("a", "bc")
    parsed, retry = parse_query([("prompt", "raw"), ("top_p", "0.5")], limits)
    assert parsed.prompt == "raw" and parsed.params.top_p == 0.5 and retry == 1000
    for items, param in [
        ([], "message"),
        ([("message", "a"), ("prompt", "b")], "message"),
        ([("message", "a"), ("max_tokens", "lots")], "max_tokens"),
        ([("message", "a"), ("max_tokens", "1" * 5000)], "max_tokens"),
        ([("message", "a"), ("temperature", "nan")], "temperature"),
        ([("message", "a"), ("temperature", "1e-38")], None),
        ([("message", "a"), ("n", "2")], "n"),
        ([("message", "a"), ("seed", "1"), ("seed", "2")], "seed"),
        ([("message", "a"), ("stop", "1"), ("stop", "2"), ("stop", "3"), ("stop", "4"), ("stop", "5")], "stop"),
        ([("message", "a"), ("retry", "-1")], "retry"),
        ([("message", "a"), ("ignore_eos", "maybe")], "ignore_eos"),
    ]:
        if param is None:
            assert parse_query(items, limits)[0].params.temperature == 0.0
            continue
        with pytest.raises(APIError) as info:
            parse_query(items, limits)
        assert info.value.status == 400 and info.value.param == param


def test_stream_wire_shape_and_a_manual_resume(live: Any) -> None:
    _, url = live()
    query = urlencode({"message": "Say something", "max_tokens": 80, "temperature": 0, "retry": 300})
    whole = httpx.get(f"{url}/v1/stream?{query}", timeout=30)
    assert whole.status_code == 200 and whole.headers["content-type"].startswith("text/event-stream")
    assert re.fullmatch(r"[A-Za-z0-9_-]{16}", whole.headers["x-stream-id"])
    start, before = first_event(whole.content)
    assert start.type == "start" and before.retry == 300 and not before.comments  # retry with the first event
    events = _events(whole.text)
    kinds = [kind for kind, _, _ in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and set(kinds[1:-1]) == {"message"}
    ids = [ID.fullmatch(last_id) for _, _, last_id in events]
    assert all(ids), events
    assert [int(m.group(2)) for m in ids] == list(range(1, len(events) + 1))  # every event has an id, in order
    done = json.loads(events[-1][1])
    assert done["finish_reason"] == "length" and done["usage"]["completion_tokens"] == 80
    text = _text(events)
    # The same conversation through /generate gives the same (greedy) text.
    native = httpx.post(
        url + "/generate",
        json={"messages": [{"role": "user", "content": "Say something"}], "max_tokens": 80, "temperature": 0},
        timeout=30,
    )
    assert native.text == text

    # A client that read part of a stream resumes from its last event id: the rest, once.
    with httpx.stream("GET", f"{url}/v1/stream?{query}", timeout=30) as response:
        head, parser = response.headers, SSEParser()
        for chunk in response.iter_bytes():
            parser.feed(chunk)
            if len(parser.events) >= 10:
                break
    first = _events(parser)
    resumed = httpx.get(f"{url}/v1/stream?{query}", headers={"Last-Event-ID": first[-1][2]}, timeout=30)
    assert resumed.status_code == 200
    rest = _events(resumed.text)
    assert int(rest[0][2].rsplit(".", 1)[1]) == int(first[-1][2].rsplit(".", 1)[1]) + 1
    assert _text(first + rest) == text and {e[2].split(".")[0] for e in first + rest} == {head["x-stream-id"]}
    # After the end, a reconnect gets 204 (an EventSource stops).
    final = httpx.get(f"{url}/v1/stream?{query}", headers={"Last-Event-ID": rest[-1][2]}, timeout=30)
    assert final.status_code == 204
    assert len(wait_for(lambda: [s for s in _stream_entries(url) if s["generation_done"]] or None)) == 2


def test_bad_queries_get_a_json_4xx(live: Any) -> None:
    _, url = live()
    for query, param in [("", "message"), ("message=hi&n=3", "n"), ("message=hi&max_tokens=0", "max_tokens")]:
        response = httpx.get(f"{url}/v1/stream?{query}", timeout=10)
        assert response.status_code == 400 and response.json()["error"]["param"] == param
    assert httpx.head(f"{url}/v1/stream?message=hi", timeout=10).status_code == 200
    assert _stream_entries(url) == []  # nothing was generated


RECONNECTING_CLIENT = """
([url, timeoutMs]) => new Promise((resolve) => {
  const messages = [], ids = [], starts = [], dones = [], errors = [];
  let opens = 0;
  const es = new EventSource(url);
  const finish = (reason) => { es.close(); resolve({reason, opens, messages, ids, starts, dones, errors}); };
  es.onopen = () => { opens += 1; };
  es.onmessage = (e) => { messages.push(JSON.parse(e.data).text); ids.push(e.lastEventId); };
  es.addEventListener("start", (e) => starts.push(JSON.parse(e.data)));
  es.addEventListener("done", (e) => dones.push(JSON.parse(e.data)));
  es.onerror = () => { errors.push(es.readyState); if (es.readyState === EventSource.CLOSED) finish("closed"); };
  setTimeout(() => finish("timeout"), timeoutMs);
})
"""


def _chromium_eventsource(origin: str, path: str, timeout_s: float) -> dict[str, Any]:
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.goto(origin + "/health")
            return page.evaluate(RECONNECTING_CLIENT, [path, int(timeout_s * 1000)])
        finally:
            browser.close()


@pytest.mark.parametrize("mode", ["tiny", "paced"])
def test_a_reconnecting_eventsource_gets_one_generation(mode: str, server: Any, make_app: Any) -> None:
    """Chromium's EventSource, cut every 6 events, reconnects by itself (sending
    Last-Event-ID) until the end; the text is complete, in order, without duplicates,
    from a single generation — then the 204 after the end stops it."""
    paced = mode == "paced"
    app = make_app(paced=True, paced_interval=0.02) if paced else make_app(limits=Limits(max_tokens=400))
    cutter = CutEvery(app, 6)
    origin = server(cutter, lifespan="on").url
    tokens = 60 if paced else 150
    query = urlencode({"message": "Say something", "max_tokens": tokens, "temperature": 0, "retry": 50})
    result = _chromium_eventsource(origin, f"/v1/stream?{query}", 60)

    assert result["reason"] == "closed", result
    assert cutter.cuts >= 5 and result["opens"] >= 5  # it really reconnected, many times
    assert len(result["starts"]) == 1 and len(result["dones"]) == 1
    text = "".join(result["messages"])
    if paced:
        assert text == "".join(PACED_TOKENS[i % len(PACED_TOKENS)] for i in range(tokens))
    else:
        reference = httpx.post(
            origin + "/generate",
            json={"messages": [{"role": "user", "content": "Say something"}], "max_tokens": tokens, "temperature": 0},
            timeout=30,
        ).text
        assert text == reference
    seqs = [int(i.rsplit(".", 1)[1]) for i in result["ids"]]
    assert seqs == list(range(2, len(seqs) + 2))  # event 1 is "start": no gap, no repeat
    assert result["dones"][0]["usage"]["completion_tokens"] == tokens
    # The model (or the paced source) ran exactly once for all those connections.
    entries = wait_for(lambda: [s for s in _stream_entries(origin) if s["generation_done"]] or None)
    assert len(entries) == 1 and entries[0]["completion_tokens"] == tokens
    assert entries[0]["outcome"] == "completed"


def test_the_npm_eventsource_client_resumes_too(server: Any, make_app: Any) -> None:
    from tests.resume.test_eventsource import run_node

    cutter = CutEvery(make_app(paced=True, paced_interval=0.02), 5)
    origin = server(cutter, lifespan="on").url
    query = urlencode({"message": "go", "max_tokens": 40, "retry": 50})
    result = run_node(f"{origin}/v1/stream?{query}", 40)
    assert result["reason"] == "closed" and result["errors"][-1]["code"] == 204
    assert cutter.cuts >= 5
    text = "".join(json.loads(m["data"])["text"] for m in result["messages"])
    assert text == "".join(PACED_TOKENS[i % len(PACED_TOKENS)] for i in range(40))
    entries = wait_for(lambda: [s for s in _stream_entries(origin) if s["generation_done"]] or None)
    assert len(entries) == 1


def test_stop_sequences_apply(live: Any) -> None:
    _, url = live(paced=True, paced_interval=0.0)
    query = urlencode([("message", "go"), ("max_tokens", 30), ("stop", " lazy"), ("stop", "zz")])
    events = _events(httpx.get(f"{url}/v1/stream?{query}", timeout=10).text)
    assert _text(events) == "".join(PACED_TOKENS[:7])  # "The quick brown fox jumps over the"
    assert json.loads(events[-1][1])["finish_reason"] == "stop"
    assert wait_for(lambda: stats_entry(url, endpoint="stream"))["finish_reason"] == "stop"
