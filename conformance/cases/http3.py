"""HTTP/3 cases: the common cases that run over any transport, plus the end of a
response (FIN), concurrent request streams, and cancellation of one request with
STOP_SENDING / RESET_STREAM (H3_REQUEST_CANCELLED). Closing the whole connection is
``client-close-cancel`` (its HTTP/3 branch is :func:`close_connection_cancel`).

Cancellation is judged with what the ASGI server told the app (the target app's
:class:`~conformance.asgi_tap.AsgiTap`): a generator left running because the server
never reported the disconnect, and gave the app no failing send either, is the
server's fault, not the app's.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from ..tokens import expected_tokens
from . import CASES, case
from ._checks import cancelled_in_budget, require_sse_tokens
from .base import FAULT_SERVER, FAULT_TARGET, SSE, CaseContext, Fail, ServerFault, observe_h3, require

H3 = ("h3",)

#: Common cases whose logic does not depend on the transport: they run over HTTP/3 as
#: they are (``fetch`` speaks HTTP/3 to an h3 target).
COMMON_OVER_H3 = (
    "headers",
    "per-token",
    "per-token-sync",
    "coalesce",
    "sse-parse",
    "ndjson-parse",
    "utf8-split",
    "keepalive",
    "client-close-cancel",
)
for _name in COMMON_OVER_H3:
    CASES[_name] = dataclasses.replace(CASES[_name], protocols=CASES[_name].protocols | {"h3"})


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


# ---------------------------------------------------------------- end of a response
@case("h3-end-stream", "the response ends with a FIN right after the last token (no RESET_STREAM)", protocols=H3)
def end_stream(ctx: CaseContext) -> str:
    """The request stream's FIN follows the last DATA frame."""
    t = ctx.timing
    n = 3
    # Our own endpoint's stream lasts n intervals: waiting longer only delays the verdict.
    timeout = t.request_timeout if ctx.external else n * t.iv + t.s(3.0)
    with ctx.target.h3(timeout=t.request_timeout) as c:
        st = c.request(ctx.method(), ctx.path(n=n, interval=f"{t.iv:.3f}"), ctx.headers(SSE), ctx.body())
        ended = c.read_all([st.stream_id], timeout=timeout)
    require(
        ended,
        f"the response did not end within {timeout:.1f} s: neither FIN nor RESET_STREAM after "
        f"{len(st.chunks)} DATA frames ({observe_h3(st).describe_chunks(4)})",
    )
    require(
        st.reset_by_server is None,
        f"the server reset the stream (error 0x{st.reset_by_server or 0:x})",
        fault=FAULT_SERVER,
    )
    require(st.chunks, "no DATA")
    lag = (st.t_end or 0) - st.chunks[-1].t
    require(lag <= t.s(0.5), f"the FIN came {_ms(lag)} after the last token")
    how = "an empty DATA frame" if not st.frames[-1].data else f"the last DATA frame ({len(st.frames[-1].data)} B)"
    return f"{len(st.chunks)} DATA frames; FIN with {how}, {lag * 1000:.1f} ms after the last token"


# ---------------------------------------------------------------- concurrent requests
@case(
    "h3-concurrent",
    "several concurrent request streams on one QUIC connection interleave and all complete",
    protocols=H3,
    timing=True,
)
def concurrent(ctx: CaseContext) -> str:
    """Three paced requests at once on one connection."""
    n = 6
    labels = [ctx.label(x) for x in "abc"]
    with ctx.target.h3(timeout=ctx.timing.request_timeout) as c:
        streams = [
            c.request(
                ctx.method(), ctx.path(n=n, interval=f"{ctx.timing.iv:.3f}", label=lab), ctx.headers(SSE), ctx.body()
            )
            for lab in labels
        ]
        ended = c.read_all(timeout=ctx.timing.request_timeout)
        state = ", ".join(
            f"stream {st.stream_id}: status {st.status}, {len(st.chunks)} DATA frames, {'FIN' if st.ended else 'open'}"
            for st in streams
        )
        require(ended, f"not all streams ended within {ctx.timing.request_timeout:.0f} s ({state})")
    for st in streams:
        obs = observe_h3(st)
        if ctx.external:
            require(obs.complete, f"stream {st.stream_id} did not complete")
        else:
            require_sse_tokens(obs, obs.sse(), expected_tokens(n))
    order = [f.stream_id for f in sorted((f for s in streams for f in s.chunks), key=lambda f: f.t)]
    spans = {s.stream_id: (s.chunks[0].t, s.chunks[-1].t) for s in streams if s.chunks}
    by_id = {s.stream_id: lab for s, lab in zip(streams, labels)}
    for a, (a0, _) in spans.items():
        for b, (_, b1) in spans.items():
            if a != b and a0 >= b1:
                serial = _app_serialised(ctx, by_id[a], by_id[b])
                why = {
                    True: "; the app produced its first token only after the other's last: the app serialises requests",
                    False: "; the app produced both at once: the server held one stream back",
                    None: "",
                }[serial]
                raise Fail(
                    f"stream {a} started only after stream {b} finished: frame order {order}{why}",
                    fault=FAULT_TARGET if serial else FAULT_SERVER,
                )
    switches = sum(1 for x, y in zip(order, order[1:]) if x != y)
    return (
        f"3 streams × {n} tokens on one connection, frame order {','.join(map(str, order[:12]))}… ({switches} switches)"
    )


def _app_serialised(ctx: CaseContext, a: str, b: str) -> bool | None:
    """Whether the app produced request ``a``'s first token only after request ``b``'s
    last (from the hooks; None: unknown)."""
    if ctx.external or ctx.target.hooks is None:
        return None
    logs = ctx.server_logs([a, b], timeout=0)
    pa, pb = logs[a].get("produced_at") or [], logs[b].get("produced_at") or []
    if not pa or not pb:
        return None
    return bool(pa[0] >= pb[-1])


# ---------------------------------------------------------------- cancelling one request
@case(
    "h3-stream-cancel",
    "STOP_SENDING + RESET_STREAM (H3_REQUEST_CANCELLED) on a request cancels its generator "
    "(async, sync, and one in a silence); the other request on the connection completes",
    protocols=H3,
    needs_app=True,
    needs_hooks=True,
)
def stream_cancel(ctx: CaseContext) -> str:
    """Four requests on one connection; three are cancelled after their first bytes."""
    from ..clients.h3 import H3Error

    t = ctx.timing
    n = 12
    ka = t.s(t.keepalive)
    labels = {m: ctx.label(m) for m in ("keep", "async", "sync", "silent")}
    params: dict[str, dict[str, Any]] = {
        "keep": {"n": n, "interval": f"{t.iv:.3f}"},
        "async": {"n": 50, "interval": f"{t.iv:.3f}"},
        "sync": {"n": 50, "interval": f"{t.iv:.3f}", "mode": "sync"},
        # Silent (a long prefill) but for keepalive comments: the next send is a keepalive.
        "silent": {"n": 3, "interval": f"{t.iv:.3f}", "idle": f"{t.s(5.0):.3f}", "keepalive": f"{ka:.3f}"},
    }
    with ctx.target.h3(timeout=t.request_timeout) as c:
        streams = {m: c.request("GET", ctx.path(label=lab, **params[m]), ctx.headers(SSE)) for m, lab in labels.items()}

        def ready() -> bool:
            # Two tokens each; the silent one only its headers (asgi-stream sends them
            # with the first keepalive comment).
            talking = all(len(s.chunks) >= 2 for m, s in streams.items() if m != "silent")
            return talking and streams["silent"].status is not None

        ok = c.run_until(ready, timeout=t.s(3.0))
        frames = {m: len(s.chunks) for m, s in streams.items()}
        require(ok, f"streams did not start within {t.s(3.0):.0f} s: DATA frames {frames}")
        victims = ("async", "sync", "silent")
        t_cancel = time.monotonic()
        for m in victims:
            c.cancel(streams[m].stream_id)
        keep = streams["keep"]
        try:
            done = c.read_all([keep.stream_id], timeout=t.request_timeout)
        except H3Error as exc:
            raise Fail(f"the connection failed after the cancel: {exc}", fault=FAULT_SERVER) from exc
        require(done, "the other request did not complete after three were cancelled")
        late = {m: len([f for f in streams[m].frames if f.t > t_cancel + 0.05]) for m in victims}
        sent = _sent(c.sent)
        answers = {m: streams[m].reset_by_server for m in victims}
    require_sse_tokens(observe_h3(keep), observe_h3(keep).sse(), expected_tokens(n))
    logs = _wait_for_end(ctx, [labels[m] for m in labels])
    keep_log = logs[labels["keep"]]
    require(
        keep_log.get("outcome") == "completed" and keep_log.get("finally_reason") == "exhausted",
        f"the request left alone ended as {keep_log.get('outcome')!r} ({keep_log.get('cancel_reason')}) on the server",
    )
    verdicts = [judge_cancel(ctx, logs[labels[m]], t_cancel, m) for m in victims]
    answered = ", ".join(f"{m} 0x{code:x}" if code is not None else f"{m} none" for m, code in answers.items())
    note = (
        f"client sent {sent}; server's RESET_STREAM: {answered}; DATA frames >50 ms after the cancel: {late}; "
        f"the other request completed ({n} tokens)"
    )
    return _conclude(verdicts, note)


# ---------------------------------------------------------------- closing the connection
def close_connection_cancel(ctx: CaseContext, labels: dict[str, str], paths: dict[str, str]) -> str:
    """``client-close-cancel`` over HTTP/3: two streams on one connection, then the
    client sends CONNECTION_CLOSE (H3_NO_ERROR) and closes its socket."""
    with ctx.target.h3(timeout=ctx.timing.request_timeout) as c:
        streams = [c.request("GET", p, headers=ctx.headers(SSE)) for p in paths.values()]
        ok = c.run_until(lambda: all(len(s.chunks) >= 2 for s in streams), timeout=ctx.timing.s(3.0))
        require(ok, f"streams did not start: {[len(s.chunks) for s in streams]} DATA frames")
        t_close = time.monotonic()
        c.close_connection()
        sent = _sent(c.sent)
    logs = _wait_for_end(ctx, list(labels.values()))
    verdicts = [judge_cancel(ctx, logs[lab], t_close, mode) for mode, lab in labels.items()]
    return _conclude(verdicts, f"client sent {sent} after 2 tokens of each stream")


# ---------------------------------------------------------------- judging a cancel
def _sent(sent: list[tuple[float, str]]) -> str:
    """The client's actions, same ones merged: ``X on stream 4, 8``."""
    merged: dict[str, list[str]] = {}
    for _, what in sent:
        head, sep, stream = what.partition(" on stream ")
        merged.setdefault(head, []).append(stream if sep else "")
    return "; ".join(f"{h} on streams {', '.join(s)}" if any(s) else h for h, s in merged.items())


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """One cancelled request: the evidence, and whether a server fault was diagnosed."""

    evidence: str
    server_fault: bool


def _wait_for_end(ctx: CaseContext, labels: list[str]) -> dict[str, dict[str, Any]]:
    """Hook logs once every generator finished and every ASGI call returned, or the
    cancel budget (+0.5 s) passed."""
    budget = ctx.timing.s(ctx.timing.cancel_budget)

    def over(v: dict[str, Any]) -> bool:
        tap = v.get("asgi") or {}
        return v.get("finally_at") is not None and (not tap or tap.get("returned_at") is not None)

    return ctx.server_logs(labels, until=over, timeout=budget + ctx.timing.s(0.5))


def judge_cancel(ctx: CaseContext, log: dict[str, Any], t_close: float, who: str) -> Verdict:
    """Judge one request the client gave up at ``t_close``.

    The server reported the disconnect (``http.disconnect`` within the budget): the
    generator must have been closed within the budget. It did not: a server fault,
    and the evidence says what the app could still see (a send that raised, or sends
    the server accepted into a dead stream). An app that was told (a failing send)
    must still end the stream, and its ASGI call must return.
    """
    budget = ctx.timing.s(ctx.timing.cancel_budget)
    tap = log.get("asgi")
    if tap is None:  # the app has no tap: judge the generator alone
        return Verdict(cancelled_in_budget(ctx, log, t_close, who), False)
    disc = tap.get("disconnect_at")
    if disc is not None and disc - t_close <= budget:
        evidence = cancelled_in_budget(ctx, log, t_close, who)
        return Verdict(f"{evidence}; http.disconnect reached the app after {_ms(disc - t_close)}", False)
    fin = log.get("finally_at")
    closed = fin is not None and fin - t_close <= budget and log.get("finally_reason") == "closed"
    returned = tap.get("returned_at")
    err, err_at = tap.get("send_error"), tap.get("send_error_at")
    told = err is not None and err_at is not None and err_at - t_close <= budget
    silent = f"no http.disconnect reached the app within {_ms(budget)}"
    if told:
        seen = f"{silent}; its next send() raised {err} after {_ms(err_at - t_close)}"
    else:
        last = tap.get("last_send_at")
        ran_on = last is not None and last > t_close
        seen = f"{silent}, and every send() succeeded" + (
            f" (the server accepted body sends into the dead stream for {_ms(last - t_close)})" if ran_on else ""
        )
    if not closed:
        if told:
            raise Fail(
                f"{who}: {seen}, yet the generator had not been closed {_ms(budget)} later "
                f"({len(log.get('produced_at') or [])} tokens produced): the app did not end it when send() failed"
            )
        produced = [p for p in log.get("produced_at") or [] if p > t_close]
        return Verdict(
            f"{who}: {seen}; nothing told the app the client had gone: the generator ran on "
            f"({len(produced)} tokens produced after the client left)",
            True,
        )
    if returned is None or returned - t_close > budget + ctx.timing.s(0.5):
        raise Fail(
            f"{who}: {seen}; the generator was closed after {_ms(fin - t_close)}, but the request never ended "
            f"(the app's ASGI call had not returned {_ms(budget + ctx.timing.s(0.5))} later; on_end outcome "
            f"{log.get('outcome')!r}): a leaked request task"
        )
    how = f"reason {log.get('cancel_reason')}, outcome {log.get('outcome')}"
    return Verdict(
        f"{who}: {seen}; the app still ended it: generator closed after {_ms(fin - t_close)} ({how})",
        True,
    )


def _conclude(verdicts: list[Verdict], note: str) -> str:
    """Pass with the evidence, or raise ServerFault if the server kept any request
    from being reported."""
    text = "; ".join(v.evidence for v in verdicts) + f". {note}"
    if any(v.server_fault for v in verdicts):
        raise ServerFault("the server does not report the client's cancel to the app (http.disconnect): " + text)
    return text
