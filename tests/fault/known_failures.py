"""The fault matrix's known failures on today's core: ONE table, applied as strict xfails.

Each entry is one defect: where it lives, which invariant breaks and why, the
violation lines it explains (``signature``), and the combinations it breaks (``rows``
of space-separated kinds, events and points; ``point@backend`` limits a point to one
backend). A combination the table names must fail with exactly its entries' lines:

* it passes → XPASS (strict): the defect is fixed, remove its rows;
* one of its entries explains none of its lines → that defect is gone there: remove it;
* a line no entry explains → a new failure (or a fix that changed the symptom).

So every fix shows up as a test to update, never as silence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class KnownFailure:
    """One defect of the core and the combinations it breaks."""

    key: str
    where: str
    diagnosis: str
    #: Regexes over violation lines: the lines this defect explains.
    signature: tuple[str, ...]
    #: (kinds, events, points) rows, space-separated; a point may carry ``@trio`` / ``@asyncio``.
    #: For the churn suite: (kinds, leave modes, servers).
    rows: tuple[tuple[str, str, str], ...]
    #: (kinds, leave modes, servers) rows of the churn test on real servers.
    churn: tuple[tuple[str, str, str], ...] = ()
    _compiled: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", tuple(re.compile(s) for s in self.signature))

    def matches(self, backend: str, kind: str, point: str, event: str, *, suite: str = "matrix") -> bool:
        """Whether this defect breaks that combination."""
        for kinds, events, points in self.rows if suite == "matrix" else self.churn:
            if kind in kinds.split() and event in events.split():
                for spec in points.split():
                    name, _, only = spec.partition("@")
                    if name == point and (not only or only == backend):
                        return True
        return False

    def explains(self, line: str) -> bool:
        """Whether a violation line is a symptom of this defect."""
        return any(p.search(line) for p in self._compiled)

    @property
    def reason(self) -> str:
        """The xfail reason: the defect, where, and why."""
        return f"[{self.key}] {self.where}: {self.diagnosis}"


TABLE: tuple[KnownFailure, ...] = (
    KnownFailure(
        key="cancel-before-pump-scope",
        where="stream.py Stream.cancel / pump.py TokenPump._run",
        diagnosis=(
            "a cancel that arrives before the pump task has created its cancel scope (the client left, "
            "or the token was set, while the endpoint awaited; or the guard read http.disconnect before "
            "the pump task first ran) sets _cancelled but has no scope to cancel, and _run's own "
            "'token already cancelled' check calls cancel() again, which returns early: the scope is "
            "never cancelled and the guard has already exited. The generator runs to its end into the "
            "dead connection; _run then calls _end_cancelled after _finish_ok, so on_end fires twice and "
            "an app cancel sends more_body False twice; a send that blocks is never timed out (hang). "
            "Sync generators hang for good: source.aclose() -> close_soon() while next() is in flight "
            "makes the worker thread (threads.py SyncIteratorDriver._run) drop the item and exit "
            "without waking the pending next()"
        ),
        signature=(
            r"^generator: ran to its end",
            r"^on_end: called 2 times",
            r"messages with more_body False",
            r"^body: messages after more_body False",
            r"^late:",
            r"^hung:",
            r"never answered the event loop",
            r"^generator: finally ran 0 times",
            r"^on_end: outcome completed \(want cancelled\)",
            r"^generator: \d+ of \d+ never closed",
        ),
        rows=(
            ("async channel coalesce resumable sync text", "send_block", "endpoint"),
            ("async channel coalesce sync text", "disconnect", "endpoint recv_body recv_wait"),
            ("async coalesce", "cancel_gen", "endpoint@asyncio"),
            ("async text", "cancel_thread", "endpoint@asyncio recv_body@trio"),
            ("channel", "cancel_thread", "endpoint@asyncio recv_body@trio recv_wait@trio"),
            ("channel sync text", "cancel_gen", "endpoint"),
            ("coalesce", "cancel_thread", "endpoint@asyncio"),
            ("sync", "cancel_thread", "endpoint"),
        ),
        # a client that resets while the endpoint still awaits: the stream runs on forever
        churn=(("async coalesce resumable sync text", "rst_early", "h11 httptools"),),
    ),
    KnownFailure(
        key="no-response-when-cancelled-before-first-byte",
        where="pump.py TokenPump._end_cancelled",
        diagnosis=(
            "an app cancel or a shutdown that ends a stream before its first byte sends nothing at "
            "all: _end_cancelled ends the body only 'if self.started', so the request returns without "
            "http.response.start and the server answers 500 (uvicorn: 'returned without starting "
            "response') instead of the clean end the README promises (an empty 200, or 503 to retry)"
        ),
        signature=(r"^body: want a 200 response, got status None", r"^body: never ended"),
        rows=(
            (
                "async channel coalesce sync text",
                "lifespan_shutdown shutdown",
                "endpoint before_first recv_body recv_wait",
            ),
            ("async coalesce", "cancel_gen", "endpoint@trio before_first"),
            ("async text", "cancel_thread", "endpoint@trio before_first recv_body@asyncio recv_wait"),
            ("channel", "cancel_thread", "endpoint@trio before_first recv_body@asyncio recv_wait@asyncio"),
            ("channel sync text", "cancel_gen", "before_first"),
            ("coalesce", "cancel_thread", "endpoint@trio before_first recv_body recv_wait"),
            ("sync", "cancel_thread", "before_first recv_body recv_wait"),
        ),
    ),
    KnownFailure(
        key="passthrough-cancels-background",
        where="middleware.py RequestContext._start_passthrough (stream.cancel_scope = self.tg.cancel_scope)",
        diagnosis=(
            "a passthrough stream's cancel scope is the request's whole task group, so a disconnect, "
            "send failure, send timeout or shutdown cancels the app itself, including Starlette's "
            "'await self.background()' after the body and FastAPI's background tasks: the "
            "BackgroundTask never runs (without the middleware it does)"
        ),
        signature=(r"^background: ran 0 times",),
        rows=(
            (
                "fastapi_async",
                "send_error send_timeout",
                "endpoint before_first between after_last recv_body recv_wait send_start send_first send_mid",
            ),
            (
                "fastapi_async fastapi_sync sr_async sr_sync sse_starlette",
                "lifespan_shutdown send_block shutdown",
                "endpoint before_first between after_last recv_body recv_wait send_start send_first send_mid",
            ),
            (
                "fastapi_async fastapi_sync sr_async sse_starlette",
                "disconnect",
                "endpoint before_first between after_last recv_body recv_wait send_start send_first send_mid",
            ),
            (
                "fastapi_sync sr_async sr_sync sse_starlette",
                "send_error send_timeout",
                "endpoint before_first between recv_body recv_wait send_start send_first send_mid",
            ),
            (
                "sr_sync",
                "disconnect",
                "endpoint before_first between after_last@asyncio recv_body recv_wait send_start send_first send_mid",
            ),
        ),
    ),
    KnownFailure(
        key="final-send-unguarded",
        where="stream.py Stream.send_body (more_body=False branch)",
        diagnosis=(
            "the final send sets completed and stops the guard before it is sent, and cancel() is a "
            "no-op once completed: a final more_body False that blocks (a client that stopped "
            "reading, or left without the send returning) is watched by neither the send timeout nor "
            "the disconnect, and holds the request forever"
        ),
        signature=(r"^hung:",),
        rows=(
            (
                "async channel coalesce fastapi_sync sr_async sr_sync sse_starlette sync text",
                "send_timeout",
                "after_last send_final",
            ),
            ("async channel coalesce resumable sync text", "send_block", "send_final"),
            ("fastapi_async resumable", "send_timeout", "send_final"),
        ),
    ),
    KnownFailure(
        key="passthrough-swallows-exception",
        where="middleware.py RequestContext.run_app ('if error is not None and await stream.fail(error): error = None')",
        diagnosis=(
            "an exception the app raises after its streaming response started is turned into an "
            "in-band error event and dropped: the app's exception handlers, the server log and error "
            "trackers never see it (without the middleware it propagates)"
        ),
        signature=(r"Boom did not reach the server",),
        rows=(
            ("fastapi_async sr_async sr_sync sse_starlette", "gen_raise", "before_first between after_last"),
            ("fastapi_sync", "gen_raise", "before_first@trio between@trio after_last@trio"),
        ),
    ),
    KnownFailure(
        key="passthrough-start-send-unguarded",
        where="passthrough.py Passthrough.start -> stream.py Stream.send_start (busy not set)",
        diagnosis=(
            "the app's http.response.start is sent without marking the stream busy: next_deadline() "
            "does not apply the send timeout to a blocked start, and the guard writes a keepalive "
            "while that send is still blocked (two concurrent send() calls); the timeout then counts "
            "from the keepalive, so the request ends keepalive + send_timeout after the block (45 s, "
            "not 30)"
        ),
        signature=(r"^late:", r"^send: a .* began while another send\(\) was still blocked"),
        rows=(
            ("fastapi_async", "send_timeout", "endpoint before_first@asyncio recv_body recv_wait send_start"),
            ("fastapi_sync sr_async sr_sync", "send_timeout", "endpoint recv_body recv_wait send_start"),
            ("sse_starlette", "send_timeout", "endpoint recv_body@trio recv_wait@trio send_start"),
        ),
    ),
    KnownFailure(
        key="passthrough-async-iterator-unclosed",
        where="passthrough.py (Stream.close_source_early is a no-op for Passthrough)",
        diagnosis=(
            "asyncio: when a send fails or times out the passthrough cancels the request while the "
            "app's async generator is suspended at a yield (its consumer was in send()); the "
            "cancellation never enters the generator's frame and nobody calls aclose() on the body "
            "iterator, so its finally waits for the cycle collector (the cancelled exception's "
            "traceback keeps the response alive)"
        ),
        signature=(r"^generator: finally ran 0 times",),
        rows=(
            (
                "sr_async",
                "send_error send_timeout",
                "before_first@asyncio between@asyncio send_first@asyncio send_mid@asyncio",
            ),
            ("sr_async", "send_block", "send_first@asyncio send_mid@asyncio"),
        ),
    ),
    KnownFailure(
        key="resumable-server-cancel-recorded-completed",
        where="resume/producer.py Producer.run; pump.py TokenPump._run",
        diagnosis=(
            "when the server cancels the request task, the producer's outer cancellation is neither "
            "caught nor mapped: outcome keeps its initial COMPLETED, the store is finished as "
            "completed and on_end reports completed; on asyncio the consumer pump then ends the body "
            "twice (_finish_ok, then _end_cancelled for the same stream)"
        ),
        signature=(
            r"^on_end: outcome completed \(want cancelled\)",
            r"messages with more_body False",
            r"^body: messages after more_body False",
        ),
        rows=(
            (
                "resumable",
                "server_cancel",
                "before_first between after_last recv_body recv_wait send_start send_first send_mid",
            ),
        ),
    ),
    KnownFailure(
        key="resumable-early-cancel-without-reason",
        where="resume/producer.py Producer.run ('if self.token.cancelled: self.scope.cancel()')",
        diagnosis=(
            "a token set before the producer starts cancels its scope directly, bypassing "
            "Producer.cancel(): record.cancel_reason stays None and on_cancel hooks never run"
        ),
        signature=(r"^on_end: cancel_reason None",),
        rows=(
            ("resumable", "cancel_gen", "endpoint@trio"),
            ("resumable", "cancel_thread", "endpoint@trio recv_wait@trio"),
        ),
    ),
    KnownFailure(
        key="resumable-error-before-first-token-is-200",
        where="resume/replay.py run_resumable / resume/producer.py Producer.run",
        diagnosis=(
            "the producer writes the generator's exception into the store as an in-band error "
            "event, so an exception before the first token answers 200 + 'event: error' and never "
            "reaches the app's error handling; the README's Errors section promises a 500 (either "
            "propagate it while nothing was sent, or document the exception)"
        ),
        signature=(r"complete 500 response", r"Boom did not reach the server"),
        rows=(("resumable", "gen_raise", "before_first"),),
    ),
    KnownFailure(
        key="passthrough-completed-although-app-raised",
        where="middleware.py RequestContext.run_app -> passthrough.py Passthrough.end",
        diagnosis=(
            "asyncio: FastAPI ends the SSE body itself, then re-raises its producer's error from its "
            "exit stack; fail() declines (completed) and end() records COMPLETED although the app "
            "failed: on_end must see ERROR (the exception does propagate)"
        ),
        signature=(r"^on_end: outcome completed \(want error\)",),
        rows=(("fastapi_sync", "gen_raise", "before_first@asyncio between@asyncio after_last@asyncio"),),
    ),
)


def known(backend: str, kind: str, point: str, event: str, *, suite: str = "matrix") -> list[KnownFailure]:
    """The defects the table says break this combination (churn: ``known("", kind,
    server, mode, suite="churn")``)."""
    return [k for k in TABLE if k.matches(backend, kind, point, event, suite=suite)]


def unexplained(entries: Iterable[KnownFailure], violations: Iterable[str]) -> list[str]:
    """Violation lines none of ``entries`` explains."""
    entries = list(entries)
    return [v for v in violations if not any(k.explains(v) for k in entries)]


def stale(entries: Iterable[KnownFailure], violations: Iterable[str]) -> list[KnownFailure]:
    """Entries that explain none of the violations (their defect is gone here)."""
    violations = list(violations)
    return [k for k in entries if not any(k.explains(v) for v in violations)]
