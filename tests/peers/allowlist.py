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
        (_SSE + "test_stream_whenEncodingFails_thenClosesSuspendedGenerator[*]",),
        "An exception the app raises after its stream started still propagates (the test's "
        "pytest.raises holds), and the line also sends the documented in-band error event "
        "(`event: error`) before ending the body; the test asserts that exactly one body "
        "message was sent.",
    ),
    Entry(
        "sse-starlette",
        (_SSE + "test_ping_whenConcurrentWithEvents_thenRespectsLocking",),
        "The middleware serialises the body sends of a response (its keepalive and the app's own "
        "tasks never write at once), so the ping sent while an event's send is in flight waits "
        "for it instead of reaching the server concurrently; the test asserts the overlap.",
    ),
)

#: Empty: every defect the gate found is fixed. A regression found later gets its entry
#: here, naming its defect, until it is fixed.
KNOWN_REGRESSIONS: tuple[Entry, ...] = ()
