"""The web page in a real headless browser (Debian's chromium, driven by Playwright):
tokens appear incrementally, Stop aborts the fetch and the server cancels generation,
and the page's SSE parser follows the WHATWG rules for any split of the byte stream."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from asgi_stream.demo.engine import PACED_TOKENS
from asgi_stream.demo.schemas import Limits

from ..support.waiting import wait_for
from .conftest import stats_entry

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="chromium is not installed (apt-get install chromium)"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        yield page
    finally:
        context.close()


RECORD_SNAPSHOTS = """() => {
  window.__snapshots = [];
  const out = document.getElementById("output");
  new MutationObserver(() => window.__snapshots.push([performance.now(), out.textContent]))
    .observe(out, {childList: true, characterData: true, subtree: true});
}"""


def _mounted(tiny: Any, server: Any, make_app: Any, **options: Any) -> tuple[Any, str]:
    """The demo mounted under /demo in a FastAPI app: the page must work under a prefix."""
    from fastapi import FastAPI

    demo = make_app(**options)
    outer = FastAPI()
    outer.mount("/demo", demo)
    running = server(outer, lifespan="on")
    return demo, running.url + "/demo"


def test_tokens_appear_incrementally(page: Any, tiny: Any, server: Any, make_app: Any) -> None:
    _, base = _mounted(tiny, server, make_app, paced=True, paced_interval=0.1)
    page.goto(base + "/")
    page.wait_for_function("document.getElementById('model').textContent === 'paced'")
    page.fill("#max-tokens", "20")
    page.evaluate(RECORD_SNAPSHOTS)
    page.click("#send")
    page.wait_for_function("document.getElementById('status').textContent === 'done'")
    expected = "".join(PACED_TOKENS[i % len(PACED_TOKENS)] for i in range(20))
    assert page.text_content("#output") == expected
    snapshots = page.evaluate("window.__snapshots")
    texts = [text for _, text in snapshots if text]
    distinct = list(dict.fromkeys(texts))
    intermediate = [t for t in distinct if t != expected]
    assert len(intermediate) >= 10, distinct  # the text grew token by token
    for shorter, longer in itertools.pairwise(distinct):
        assert longer.startswith(shorter)  # each view extends the previous one
    times = [t for t, text in snapshots if text]
    assert times[-1] - times[0] > 1000  # spread over ~1.9 s, not one burst (ms)
    assert page.text_content("#ttft").endswith(" ms")
    assert float(page.text_content("#tps")) > 0
    assert page.text_content("#tokens") == "20"  # the exact count, from the usage chunk


def test_stop_cancels_generation_on_the_server(page: Any, tiny: Any, server: Any, make_app: Any) -> None:
    _, base = _mounted(tiny, server, make_app, limits=Limits(max_tokens=4000))
    page.goto(base + "/")
    page.wait_for_function("document.getElementById('model').textContent === 'tiny-random-llama'")
    page.fill("#max-tokens", "4000")
    page.fill("#temperature", "0")
    page.click("#send")
    page.wait_for_function("document.getElementById('output').textContent.length >= 100")
    assert page.text_content("#status") == "streaming"
    page.click("#stop")
    page.wait_for_function("document.getElementById('status').textContent === 'stopped'")
    shown = page.text_content("#output")
    entry = wait_for(lambda: stats_entry(base, endpoint="chat.completions"))
    assert entry["outcome"] == "cancelled"
    assert entry["cancel_reason"] == "disconnect"
    assert entry["finish_reason"] == "cancelled"
    assert entry["steps_after_cancel"] <= 1  # compute stopped within one decode step
    assert len(shown) <= entry["completion_tokens"] < 4000
    metrics = httpx.get(base + "/metrics", timeout=10).text
    assert 'asgi_stream_demo_streams_total{endpoint="chat.completions",outcome="cancelled"} 1.0' in metrics
    assert page.is_enabled("#send") and not page.is_enabled("#stop")


def test_error_response_is_shown(page: Any, tiny: Any, server: Any, make_app: Any) -> None:
    _, base = _mounted(tiny, server, make_app, limits=Limits(max_tokens=50))
    page.goto(base + "/")
    page.fill("#max-tokens", "500")
    page.click("#send")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('error')")
    assert "max_tokens" in page.text_content("#status")


# The tricky stream: CRLF (also inside an event), lone CR, empty data, a field without a colon, a comment, a
# value with two leading spaces, an ignored retry, multi-byte characters, an id with
# NUL (ignored), an event with no data (not dispatched), and a final unterminated event.
STREAM = (
    "\ufeffdata: a\r\n\r\n"
    "data:b\rdata: c\r\r"
    "data: p\r\ndata: q\r\n\r\n"
    "id: 7\ndata\n\n"
    ": comment\nevent: x\ndata:  two\n\n"
    "retry: 10\ndata: é🙂\r\n\r\n"
    "id: bad\0id\ndata: z\n\n"
    "event: y\n\n"
    "data: never dispatched"
)
EXPECTED = [
    ["message", "a", ""],
    ["message", "b\nc", ""],
    ["message", "p\nq", ""],
    ["message", "", "7"],
    ["x", " two", "7"],
    ["message", "é🙂", "7"],
    ["message", "z", "7"],
]

PARSE_ALL_SPLITS = """(stream) => {
  const bytes = new TextEncoder().encode(stream);
  const run = (cuts) => {
    const events = [];
    const parser = new SSEParser((e) => events.push([e.type, e.data, e.lastEventId]));
    const decoder = new TextDecoder("utf-8");
    let start = 0;
    for (const cut of [...cuts, bytes.length]) {
      parser.feed(decoder.decode(bytes.subarray(start, cut), {stream: true}));
      start = cut;
    }
    parser.feed(decoder.decode());
    parser.end();
    return JSON.stringify(events);
  };
  const results = new Set();
  results.add(run([]));
  for (let i = 1; i < bytes.length; i++) {
    results.add(run([i]));
    for (let j = i + 1; j < bytes.length; j += 3) results.add(run([i, j]));
  }
  const everyByte = [];
  for (let i = 1; i < bytes.length; i++) everyByte.push(i);
  results.add(run(everyByte));
  return [...results];
}"""


def test_page_sse_parser_follows_the_spec_for_every_split(page: Any, tiny: Any, server: Any, make_app: Any) -> None:
    from conformance.sse import parse_sse

    reference = parse_sse(STREAM.encode("utf-8"))
    assert [[e.type, e.data, e.last_event_id] for e in reference.events] == EXPECTED
    _, base = _mounted(tiny, server, make_app, paced=True)
    page.goto(base + "/")
    results = page.evaluate(PARSE_ALL_SPLITS, STREAM)
    import json

    assert [json.loads(r) for r in results] == [EXPECTED]  # the same events, however split


SPLIT_CHARS = {"—", "é", "ï", "日", "🙂"}  # the first multi-byte character of each paced token that has one


def _rows(page: Any) -> list[dict[str, Any]]:
    return page.evaluate(
        """() => [...document.querySelectorAll('#chunks li.chunk')].map((li) => ({
            bytes: +li.dataset.bytes, events: +li.dataset.events, held: li.dataset.held ? +li.dataset.held : 0,
            split: li.classList.contains('split'), continues: li.classList.contains('continues'),
            splitMark: li.querySelector('mark.split-char')?.textContent ?? null,
            joined: li.querySelector('mark.joined-char')?.textContent ?? null,
            midEvent: li.querySelector('.meta').textContent.includes('mid-event'),
            boundaries: li.querySelectorAll('.event-end').length,
        }))"""
    )


def test_the_page_shows_reads_events_and_split_characters(page: Any, tiny: Any, server: Any, make_app: Any) -> None:
    """With "split sends" the server cuts every send inside its first multi-byte
    character: the page lists each read, marks the read that ended mid-character
    (the bytes the decoder held) and the one that completed it, and still shows the
    exact text; the plot has a point per gap."""
    _, base = _mounted(tiny, server, make_app, paced=True, paced_interval=0.05)
    page.goto(base + "/")
    page.wait_for_function("document.getElementById('model').textContent === 'paced'")
    page.fill("#max-tokens", "20")
    page.check("#split")
    page.click("#send")
    page.wait_for_function("document.getElementById('status').textContent === 'done'")
    expected = "".join(PACED_TOKENS[i % len(PACED_TOKENS)] for i in range(20))
    assert page.text_content("#output") == expected  # the streaming decoder lost nothing

    rows = _rows(page)
    assert len(rows) == int(page.text_content("#chunk-count"))
    assert sum(r["events"] for r in rows) == int(page.text_content("#event-count"))
    assert sum(r["boundaries"] for r in rows) == int(page.text_content("#event-count"))
    splits = [i for i, r in enumerate(rows) if r["split"]]
    # Tokens 9-13 (" —", " café", " naïve", " 日本語", " 🙂") each carry a multi-byte character.
    assert len(splits) >= 5 and int(page.text_content("#split-count")) == len(splits)
    for i in splits:
        row, after = rows[i], rows[i + 1]
        assert row["held"] == 1 and re.fullmatch(r"⟨[0-9a-f]{2}⟩", row["splitMark"])  # one byte held back
        assert row["midEvent"]  # the cut is inside an event too
        assert after["continues"] and after["joined"] in SPLIT_CHARS
    assert {rows[i + 1]["joined"] for i in splits} == SPLIT_CHARS
    # A read that did not end inside a character is not marked.
    assert all(not r["held"] for i, r in enumerate(rows) if i not in splits)

    assert page.get_attribute("#plot", "data-points") == "19"  # 20 content events, 19 gaps
    assert len(page.get_attribute("#gap-line", "points").split()) == 19
    assert len(page.get_attribute("#rate-line", "points").split()) == 19
    assert page.text_content("#ttft").endswith(" ms")
    page.wait_for_function("document.getElementById('server-ttft').textContent.endsWith(' ms')")
    assert page.text_content("#finish") == "length"
    assert page.text_content("#request-id").isdigit()


def test_reads_are_not_marked_split_without_the_option(page: Any, tiny: Any, server: Any, make_app: Any) -> None:
    _, base = _mounted(tiny, server, make_app, paced=True, paced_interval=0.01)
    page.goto(base + "/")
    page.fill("#max-tokens", "30")
    page.click("#send")
    page.wait_for_function("document.getElementById('status').textContent === 'done'")
    rows = _rows(page)
    assert rows and not any(r["split"] or r["continues"] for r in rows)
    assert page.text_content("#split-count") == "0"
    assert page.text_content("#output") == "".join(PACED_TOKENS[i % len(PACED_TOKENS)] for i in range(30))


def test_stop_shows_the_servers_cancel_to_stop(page: Any, tiny: Any, server: Any, make_app: Any) -> None:
    _, base = _mounted(tiny, server, make_app, limits=Limits(max_tokens=4000))
    page.goto(base + "/")
    page.wait_for_function("document.getElementById('model').textContent === 'tiny-random-llama'")
    page.fill("#max-tokens", "4000")
    page.fill("#temperature", "0")
    page.click("#send")
    page.wait_for_function("document.getElementById('output').textContent.length >= 50")
    page.click("#stop")
    page.wait_for_function("document.getElementById('cancel-to-stop').dataset.ms !== undefined")
    entry = wait_for(lambda: stats_entry(base, endpoint="chat.completions"))
    assert float(page.get_attribute("#cancel-to-stop", "data-ms")) == pytest.approx(entry["cancel_to_stop_ms"])
    assert re.fullmatch(r"[0-9.]+ ms \([01] steps? after\)", page.text_content("#cancel-to-stop"))
    assert page.text_content("#request-id") == str(entry["id"])
    assert int(page.get_attribute("#plot", "data-points")) >= 1


RECORD_TIMES = """() => {
  window.__times = [];
  const out = document.getElementById("output");
  new MutationObserver(() => window.__times.push(performance.timeOrigin + performance.now()))
    .observe(out, {childList: true, characterData: true, subtree: true});
}"""


def test_two_tabs_stream_at_once(browser: Any, tiny: Any, server: Any, make_app: Any) -> None:
    """Two tabs send at once: their streams overlap in time (the engine batches them)
    instead of the second waiting for the first to finish."""
    _, base = _mounted(tiny, server, make_app, limits=Limits(max_tokens=300))
    contexts = [browser.new_context() for _ in range(2)]
    try:
        pages = [c.new_page() for c in contexts]
        for p in pages:
            p.set_default_timeout(60_000)
            p.goto(base + "/")
            p.wait_for_function("document.getElementById('model').textContent === 'tiny-random-llama'")
            p.fill("#max-tokens", "300")
            p.fill("#temperature", "0")
            p.evaluate(RECORD_TIMES)
        for p in pages:
            p.click("#send")
        for p in pages:
            p.wait_for_function("document.getElementById('status').textContent === 'done'")
        (a0, a1), (b0, b1) = [(min(t), max(t)) for t in (p.evaluate("window.__times") for p in pages)]
        assert b0 < a1 and a0 < b1, (a0, a1, b0, b1)  # each started before the other ended
        texts = [p.text_content("#output") for p in pages]
        assert texts[0] == texts[1] and len(texts[0]) > 100  # greedy: the same text, uncorrupted
    finally:
        for c in contexts:
            c.close()
