"""HTTP/3: the measuring client on the wire, the h3 cases proven able to fail and to
pass, what hypercorn 0.18 does with a client's cancel, and ``--url … --h3``.

The targets are started once, in parallel: stock hypercorn (``--quic-bind``) with the
suite's app and with broken apps, and hypercorn with its HTTP/3 disconnect reporting
repaired (``h3_fixed_app``), which is how the cancellation cases are shown to pass
when the server does its part.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

import pytest

pytest.importorskip("aioquic")

from conformance.__main__ import main
from conformance.cases import Result, Timing
from conformance.clients.h3 import H3_REQUEST_CANCELLED, H3Stream
from conformance.report import render
from conformance.runner import run_suite
from conformance.targets import Target, external_target

from .conftest import Servers, flawed

#: Targets: name → (session server, the flaws its requests ask the broken app for).
VIEWS = {
    "stock": ("h3-hypercorn", set()),
    "fixed": ("fixed-h3", set()),
    "fixed-no-cancel": ("fixed-broken-h3", {"no-cancel"}),
    "swallow": ("broken-h3", {"no-cancel", "swallow-send-errors"}),
    "leak": ("broken-h3", {"leak-on-send-error"}),
    "truncate": ("broken-h3", {"truncate"}),
    "serial": ("broken-h3", {"single-worker"}),
}
CANCEL_CASES = ["client-close-cancel", "h3-stream-cancel"]


def _in_parallel(fn: Callable[[str], object], names: Iterable[str]) -> list[BaseException]:
    errors: list[BaseException] = []

    def run(name: str) -> None:
        try:
            fn(name)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in names]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return errors


@pytest.fixture(scope="module")
def h3_targets(servers: Servers) -> dict[str, Target]:
    """Every view of :data:`VIEWS` (the session's servers, started in parallel)."""
    servers.start(*{server for server, _ in VIEWS.values()})
    return {name: flawed(servers.get(server), flaws, f"h3-{name}") for name, (server, flaws) in VIEWS.items()}


@pytest.fixture(scope="module")
def results(h3_targets: dict[str, Target]) -> dict[tuple[str, str], Result]:
    """One parallel run of the h3 cases each view is used for."""
    plan = {
        "stock": [*CANCEL_CASES, "h3-end-stream", "h3-concurrent"],
        "fixed": CANCEL_CASES,
        "fixed-no-cancel": CANCEL_CASES,
        "swallow": ["h3-stream-cancel"],
        "leak": ["h3-stream-cancel"],
        "truncate": ["h3-end-stream"],
        "serial": ["h3-concurrent"],
    }
    out: dict[tuple[str, str], Result] = {}

    def run(view: str) -> None:  # each view only its own cases, all views at once
        # No retries: a retry helps a case pass on a loaded machine; the broken ones must fail.
        suite = run_suite([], plan[view], prebuilt=[h3_targets[view]], jobs=4, timing=Timing(retries=0))
        print(render(suite))
        out.update({(view, r.case): r for r in suite.results})

    errors = _in_parallel(run, plan)
    if errors:
        raise errors[0]
    return {(v, c): out[(v, c)] for v, cs in plan.items() for c in cs}


# ---------------------------------------------------------------- the client
def test_frame_parser_records_whole_data_frames_across_reads() -> None:
    st = H3Stream(stream_id=0, t_request=0.0)
    headers = bytes([0x01, 0x03]) + b"abc"  # HEADERS, 3 bytes (skipped)
    data1 = bytes([0x00, 0x05]) + b"hello"
    grease = bytes([0x21, 0x01]) + b"x"  # a reserved frame type: noted, not data
    data2 = bytes([0x00, 0x40, 0x03]) + b"end"  # two-byte length varint
    wire = headers + data1 + grease + data2 + bytes([0x00, 0x00])
    for i, b in enumerate(wire):  # one byte at a time: frames are still whole
        st._feed(bytes([b]), float(i))
    assert [f.data for f in st.frames] == [b"hello", b"end", b""]
    assert st.frames[0].t == float(len(headers) + len(data1) - 1)  # the time of its last byte
    assert [(t, n) for _, t, n in st.other_frames] == [(0x21, 1)]
    assert st.body == b"helloend" and [c.data for c in st.chunks] == [b"hello", b"end"]


def test_client_records_each_data_frame_and_cancels_on_the_wire(h3_targets: dict[str, Target]) -> None:
    target = h3_targets["stock"]
    with target.h3(timeout=5) as c:
        assert c.alpn == "h3"
        st = c.request("GET", "/stream?n=4&interval=0.05", [("accept", "text/event-stream")])
        assert c.read_all([st.stream_id], timeout=5)
        assert st.status == 200 and st.ended and st.reset_by_server is None
        assert [f.data for f in st.chunks] == [f"data: t00{i} \n\n".encode() for i in range(4)]
        gaps = [b.t - a.t for a, b in zip(st.chunks, st.chunks[1:])]
        assert all(g > 0.02 for g in gaps), gaps  # paced: one frame per token, stamped on arrival
        # STOP_SENDING + RESET_STREAM(H3_REQUEST_CANCELLED): the server's QUIC stack answers
        # with RESET_STREAM carrying the same code; the connection carries on.
        victim = c.request("GET", "/stream?n=50&interval=0.05", [("accept", "text/event-stream")])
        assert c.run_until(lambda: len(victim.chunks) >= 1, timeout=5)
        c.cancel(victim.stream_id)
        assert c.run_until(lambda: victim.reset_by_server is not None, timeout=5)
        assert victim.reset_by_server == victim.stop_sending_by_client == H3_REQUEST_CANCELLED == 0x10C
        assert "STOP_SENDING + RESET_STREAM(0x10c)" in c.sent[-1][1]
        again = c.request("GET", "/stream?n=2&interval=0.01", [("accept", "text/event-stream")])
        assert c.read_all([again.stream_id], timeout=5) and again.ended
        c.close_connection()
        assert c.closed and c.sent[-1][1] == "CONNECTION_CLOSE(0x100)"


# ---------------------------------------------------------------- stock hypercorn
def test_stock_hypercorn_never_reports_an_h3_cancel_to_the_app(results: dict[tuple[str, str], Result]) -> None:
    # STOP_SENDING + RESET_STREAM: no http.disconnect; the next send() raises aioquic's
    # FrameUnexpected, and asgi-stream ends the stream on it (the silent stream at its
    # next keepalive): a diagnosed server fault, not a failure of the app.
    r = results[("stock", "h3-stream-cancel")]
    assert r.status == "fault" and r.fault == "server", r.evidence
    for needle in ("no http.disconnect", "send() raised FrameUnexpected", "reason disconnect, outcome cancelled"):
        assert needle in r.evidence, r.evidence
    assert r.evidence.count("the app still ended it") == 3, r.evidence
    # CONNECTION_CLOSE: nothing at all reaches the app; every send succeeds; the
    # generators run on.
    r = results[("stock", "client-close-cancel")]
    assert r.status == "fault" and r.fault == "server", r.evidence
    for needle in ("CONNECTION_CLOSE(0x100)", "every send() succeeded", "the generator ran on"):
        assert needle in r.evidence, r.evidence
    for case in ("h3-end-stream", "h3-concurrent"):
        assert results[("stock", case)].status == "pass", results[("stock", case)].evidence


def test_cancel_cases_pass_when_the_server_reports_the_disconnect(results: dict[tuple[str, str], Result]) -> None:
    for case in CANCEL_CASES:
        r = results[("fixed", case)]
        assert r.status == "pass", r.evidence
        assert "http.disconnect reached the app" in r.evidence and "reason disconnect" in r.evidence


@pytest.mark.parametrize(
    ("target", "case", "needle"),
    [
        ("fixed-no-cancel", "client-close-cancel", "still running"),
        ("fixed-no-cancel", "h3-stream-cancel", "still running"),
        ("swallow", "h3-stream-cancel", "did not end it when send() failed"),
        ("leak", "h3-stream-cancel", "leaked request task"),
        ("truncate", "h3-end-stream", "did not end"),
        ("serial", "h3-concurrent", "the app serialises requests"),
    ],
)
def test_h3_cases_fail_against_a_broken_app(
    results: dict[tuple[str, str], Result], target: str, case: str, needle: str
) -> None:
    r = results[(target, case)]
    assert r.status == "fail" and r.fault == "target", f"{r.status}/{r.fault}: {r.evidence}"
    assert needle in r.evidence, r.evidence


# ---------------------------------------------------------------- --url … --h3
def test_url_mode_over_h3_finds_the_quic_port_in_alt_svc(h3_targets: dict[str, Target]) -> None:
    t = h3_targets["stock"]
    assert t.endpoint.quic_tls is not None and t.endpoint.quic_tls.ca_file is not None
    url = f"https://{t.endpoint.host}:{t.endpoint.port}/stream?n=5&interval=0.1"  # the TCP port
    ext = external_target(url, h3=True, cafile=str(t.endpoint.quic_tls.ca_file))
    assert ext.endpoint.quic_port == t.endpoint.quic_port != t.endpoint.port, ext.notes
    cases = ["headers", "per-token", "sse-parse", "h3-end-stream", "h3-concurrent", "h3-stream-cancel"]
    suite = run_suite([], cases, prebuilt=[ext], jobs=4)
    statuses = {r.case: r.status for r in suite.results}
    assert statuses == {**dict.fromkeys(cases, "pass"), "h3-stream-cancel": "skip"}, render(suite)


def test_url_mode_h3_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in [
        (["--url", "http://127.0.0.1:1/x", "--h3"], "needs TLS"),
        (["--url", "https://127.0.0.1:1/x", "--h3", "--h2"], "exclude each other"),
        (["--h3"], "apply to --url only"),
        (["--url", "https://127.0.0.1:1/x", "--h3-port", "5"], "needs --h3"),
        (["--url", "https://127.0.0.1:1/x", "--h3", "--cacert", "/nonexistent/ca.pem"], "no such file"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def test_url_mode_h3_unreachable_endpoint_fails_fast() -> None:
    t0 = time.monotonic()
    ext = external_target("https://127.0.0.1:9/x", h3=True, h3_port=9, insecure=True)
    suite = run_suite([], ["h3-end-stream"], prebuilt=[ext])
    (r,) = suite.results
    assert r.status == "fail" and r.fault == "server", r.evidence
    assert time.monotonic() - t0 < 8
