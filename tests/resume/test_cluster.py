"""Two uvicorn workers behind nginx (round robin), the replay store on a real Redis:
resumes that hop workers, grace expiry across workers."""

from __future__ import annotations

import json
import time

import pytest

from ..support.waiting import wait_for
from .helpers import normalise, read

SSE = [("accept", "text/event-stream")]
NDJSON = [("accept", "application/x-ndjson")]
N = 40


def generator_ends(cluster, tag: str) -> list[dict]:
    return [e for e in cluster.events() if e["kind"] == "generator-end" and e.get("tag") == tag]


@pytest.mark.parametrize("when", ["live", "finished"])
def test_sse_resume_on_the_other_worker_is_byte_for_byte_the_rest(cluster, redis_server, when) -> None:
    c = cluster(redis_server.url)
    path = f"/chat?n={N}&interval=0.04&tag=t-{when}"
    whole = read(c.port, path, SSE)
    assert whole.complete and len(whole.events) == N + 1, c.diagnostics()

    first = read(c.port, path, SSE, limit=12)  # the client drops after 12 events
    if when == "finished":
        wait_for(lambda: len(generator_ends(c, f"t-{when}")) == 2, 10, message=c.diagnostics)
    rest = read(c.port, path, SSE + [("last-event-id", first.last_id)])

    assert first.worker != rest.worker, "nginx's round robin should send the reconnect to the other worker"
    assert rest.response.status == 200 and rest.complete
    assert rest.stream_id == first.stream_id
    assert normalise(b"".join(first.events + rest.events)) == normalise(b"".join(whole.events))
    assert rest.messages[0].last_event_id == f"{first.stream_id}.13"
    # The generator ran once, to the end, on the worker that started it.
    ends = generator_ends(c, f"t-{when}")
    wait_for(lambda: len(generator_ends(c, f"t-{when}")) == 2, 10)
    ends = generator_ends(c, f"t-{when}")
    assert [e["produced"] for e in ends] == [N, N] and not any(e["cancelled"] for e in ends)
    assert ends[1]["worker"] == first.worker


def test_ndjson_resume_on_the_other_worker_with_a_line_cursor(cluster, redis_server) -> None:
    c = cluster(redis_server.url)
    path = f"/chat?n={N}&interval=0.04"
    whole = read(c.port, path, NDJSON, separator=b"\n")
    first = read(c.port, path, NDJSON, separator=b"\n", limit=9)
    cursor = f"{first.stream_id}.{len(first.events)}"
    rest = read(c.port, path, NDJSON + [("last-event-id", cursor)], separator=b"\n")
    assert first.worker != rest.worker
    assert rest.response.header_map["content-type"].startswith("application/x-ndjson")
    assert b"".join(first.events + rest.events) == b"".join(whole.events)
    assert json.loads(rest.events[-1]) == "[DONE]"


def test_a_client_that_never_returns_cancels_the_generator_after_the_grace(cluster, redis_server) -> None:
    grace = 1.0
    c = cluster(redis_server.url, grace=grace, heartbeat=0.25)
    first = read(c.port, "/chat?n=400&interval=0.05&tag=gone", SSE, limit=3)
    left = time.time()
    ends = wait_for(lambda: generator_ends(c, "gone"), grace + 8, message=c.diagnostics)
    assert ends[0]["worker"] == first.worker and ends[0]["cancelled"]
    assert 3 <= ends[0]["produced"] < 400
    waited = ends[0]["t"] - left
    assert grace - 0.1 <= waited < grace + 3.0, waited
    # The generator's own finally runs first; the stream's end is recorded once the stream closes.
    records = wait_for(
        lambda: [e for e in c.events() if e["kind"] == "stream-end" and e["stream_id"] == first.stream_id],
        10,
        message=c.diagnostics,
    )
    record = records[0]
    assert record["outcome"] == "cancelled" and record["cancel_reason"] == "abandoned"


def test_a_consumer_on_the_other_worker_keeps_the_generator_alive(cluster, redis_server) -> None:
    grace = 1.0
    c = cluster(redis_server.url, grace=grace, heartbeat=0.25)
    path = "/chat?n=400&interval=0.05&tag=hop"
    first = read(c.port, path, SSE, limit=3)
    # Reattached on the other worker, for three times the grace:
    reader = read(c.port, path, SSE + [("last-event-id", first.last_id)], duration=3 * grace)
    assert reader.worker != first.worker and not reader.complete
    assert len(reader.events) >= 30  # it really read, live, all that time
    left = time.time()
    assert not generator_ends(c, "hop"), "cancelled while a consumer was attached on the other worker"
    ends = wait_for(lambda: generator_ends(c, "hop"), grace + 8, message=c.diagnostics)
    assert ends[0]["cancelled"] and ends[0]["worker"] == first.worker, c.diagnostics()
    waited = ends[0]["t"] - left
    assert grace - 0.1 <= waited < grace + 0.25 + 3.0, waited
