"""The two tables of the peer-suites gate.

``ALLOWED``: differences the line makes on purpose, one reason each. ``KNOWN_REGRESSIONS``:
tests that fail with the line today because of a named core defect; when the defect
is fixed they pass, and the gate fails until their entry is removed. Each entry must
match only tests whose outcome differs (the gate reports a broader or a stale entry).
"""

from __future__ import annotations

from .compare import Entry

#: The core defects the known regressions (and tests/fidelity) wait for (1-8: the
#: drop-in fidelity list; 9-12 found by this gate).
DEFECTS: dict[str, str] = {
    "1": "background tasks are dropped after a disconnect (the request's task group is cancelled, "
    "Starlette's `await self.background()` included)",
    "2": "the last send has no send timeout (`send_body(more_body=False)` stops the guard first)",
    "3": "an exception after a passthrough stream started is swallowed (`Passthrough.fail` sends "
    "an in-band error and drops it)",
    "4": "every exception through the middleware is rewritten (`collapse_excgroups` unwraps the "
    "app's own one-member groups; `raise group from None` drops __cause__/__context__)",
    "5": "sse-starlette's client_close_handler_callable is never called behind a BaseHTTPMiddleware",
    "6": "TokenStream behind a BaseHTTPMiddleware: the send timeout leaves the request stuck",
    "7": "a passthrough stream ended by the send timeout leaves the app's generator unclosed until GC",
    "8": "sse-starlette's own send_timeout stops working (the stricter of the two must win)",
    "9": "a nested StreamMiddleware reads the outer one's ReceiveHub, bypassing every `receive` "
    "wrapper in between (body limits, body rewrites, BaseHTTPMiddleware's replayed body)",
    "10": "a cancellation from outside (the server, an enclosing cancel scope) is held up to 1 s "
    "by a shielded attempt to end the body (`Passthrough.end` on SHUTDOWN)",
    "11": "an exception raised by the server's `send` of a body message (OSError, and since d9de89b "
    "any exception) becomes a disconnect: the app sees a cancellation instead, and the exception "
    "never propagates",
    "12": "the middleware leaves its per-request context in the scope dict: a scope dict used again "
    "for a new request makes the new request adopt the finished one as its parent (its hub, its "
    "disconnect)",
}

_SSE = "tests/test_sse.py::TestEventSourceResponse::"
_217 = "tests/test_issue217.py::"

ALLOWED: tuple[Entry, ...] = (
    Entry(
        "sse-starlette",
        (_SSE + "test_ping_whenConcurrentWithEvents_thenRespectsLocking",),
        "The middleware serialises the body sends of a response (its keepalive and the app's own "
        "tasks never write at once), so the ping sent while an event's send is in flight waits "
        "for it instead of reaching the server concurrently; the test asserts the overlap.",
    ),
)

KNOWN_REGRESSIONS: tuple[Entry, ...] = (
    # ---------------------------------------------------------------- Starlette
    Entry(
        "starlette",
        (
            "tests/middleware/test_base.py::test_custom_middleware[*]",
            "tests/middleware/test_base.py::test_error_context_propagation[*]",
        ),
        "The app's one-member ExceptionGroup arrives unwrapped; the raised exception loses __context__.",
        defects=("4",),
    ),
    Entry(
        "starlette",
        (
            "tests/middleware/test_base.py::test_pr_1519_comment_1236166180_example",
            "tests/middleware/test_body_limit.py::test_received_bytes_are_counted_with_unreliable_content_length[*]",
        ),
        "A Starlette app (its own line) inside request-body middleware inside the outer line: "
        "the body limit is bypassed (200 instead of 413), and BaseHTTPMiddleware's replayed "
        "body never arrives (the request hangs).",
        defects=("9",),
    ),
    # ---------------------------------------------------------------- sse-starlette
    Entry(
        "sse-starlette",
        (
            _SSE + "test_backgroundTask_whenProvided_thenExecutesAfterResponse",
            _SSE + "test_send_whenInterrupted_thenClosesSuspendedGenerator[*-disconnect]",
            _217 + "test_send_whenInterruptedAndCleanupStuck_thenDeadlineCancelsCleanup[disconnect]",
        ),
        "After the client disconnects, the response's BackgroundTask never runs.",
        defects=("1",),
    ),
    Entry(
        "sse-starlette",
        (
            _SSE + "test_send_whenTimeoutOccurs_thenRaisesSendTimeoutError",
            _SSE + "test_stream_whenEncodingFails_thenClosesSuspendedGenerator[*]",
            _217 + "test_stream_whenEncodingFailsAndCleanupStuck_thenDeadlineCancelsCleanup",
            "tests/test_streaming_parity.py::test_call_when_generatorRaises_then_bareExceptionPropagates",
            "tests/test_issue218.py::test_head_whenSendFails_thenErrorPropagatesWithoutBackgroundTask[http.response.start]",
            "tests/test_issue218.py::test_head_whenSendStallsBeyondSendTimeout_thenRaisesSendTimeoutError[http.response.start]",
        ),
        "The response's exception (SendTimeoutError, an encoding error, the generator's error, a "
        "failing send) becomes an in-band error event and never reaches the caller.",
        defects=("3",),
    ),
    Entry(
        "sse-starlette",
        (
            _SSE + "test_ping_whenSendTimesOut_thenTearsDownResponseAndRunsCleanup",
            _SSE + "test_send_whenInterrupted_thenClosesSuspendedGenerator[*-timeout]",
            _217 + "test_send_whenInterruptedAndCleanupStuck_thenDeadlineCancelsCleanup[timeout]",
        ),
        "The frozen client's SendTimeoutError is turned into an in-band error event whose "
        "final send blocks for good (no timeout on it): the request never ends.",
        defects=("2", "3"),
    ),
    Entry(
        "sse-starlette",
        (
            _SSE + "test_send_whenInterrupted_thenClosesSuspendedGenerator[*-cancel]",
            _217 + "test_send_whenInterruptedAndCleanupStuck_thenDeadlineCancelsCleanup[cancel]",
        ),
        "Cancelled from outside while its send blocks, the response ends 1 s late instead of at once.",
        defects=("10",),
    ),
    Entry(
        "sse-starlette",
        (
            _SSE + "test_send_whenInterrupted_thenClosesSuspendedGenerator[*-send_error]",
            _217 + "test_send_whenInterruptedAndCleanupStuck_thenDeadlineCancelsCleanup[send_error]",
            "tests/test_issue218.py::test_head_whenSendFails_thenErrorPropagatesWithoutBackgroundTask[http.response.body]",
        ),
        "The exception the server's send raised (OSError, RuntimeError) does not propagate.",
        defects=("11",),
    ),
)
