"""A scripted, sans-I/O ASGI server double: no sockets, no sleeps of its own.

It runs one HTTP request (after the app's lifespan startup) and records every message
the app sends. ``receive()`` returns the request body, then blocks until the client is
made to leave (``http.disconnect``). Hooks see every ``receive()`` and ``send()`` call
before it is answered, and controls change what the server does from then on:

* :meth:`FakeServer.disconnect` — the client leaves: a pending or later ``receive()``
  returns ``http.disconnect``; later sends are dropped silently (ASGI spec 2.3, like
  uvicorn and hypercorn);
* :meth:`FakeServer.break_pipe` — every send from now on raises ``OSError``;
* :meth:`FakeServer.hang_sends` — every send from now on blocks until cancelled;
* :meth:`FakeServer.slow_next_send` — the next send takes that long (virtual seconds);
* :meth:`FakeServer.cancel_request` — the server cancels the request task (its
  graceful-shutdown timeout expired);
* :meth:`FakeServer.lifespan_shutdown` — deliver ``lifespan.shutdown`` now.

Everything is timed with ``anyio.current_time()``, so on a virtual clock a run costs
no real time however long its deadlines are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc

Message = dict[str, Any]

START, BODY, FINAL, OTHER = "start", "body", "final", "other"


@dataclass
class Sent:
    """One ``send()`` call: when, what, and what the server did with it."""

    at: float
    message: Message
    role: str
    #: "delivered", "dropped" (client gone), "failed" (raised OSError), "blocked"
    #: (never returned), or "slow" (delivered late).
    fate: str = "delivered"
    #: Another send() call was still in progress when this one started.
    concurrent: bool = False


@dataclass
class Outcome:
    """What one request did, as the server saw it."""

    sent: list[Sent] = field(default_factory=list)
    receives: list[tuple[float, str]] = field(default_factory=list)
    started_at: float = 0.0
    returned_at: float | None = None
    #: The app's call did not return before the server's bound: it was cancelled then.
    hung: bool = False
    #: An exception the app let escape (what a real server would log).
    exception: BaseException | None = None
    #: The server cancelled the request itself (:meth:`FakeServer.cancel_request`).
    server_cancelled: bool = False
    lifespan_events: list[str] = field(default_factory=list)

    @property
    def start(self) -> Message | None:
        """The ``http.response.start`` message the app sent, if any."""
        return next((s.message for s in self.sent if s.role == START), None)

    def body(self, fates: tuple[str, ...] = ("delivered", "slow")) -> bytes:
        """The body bytes that reached the client."""
        return b"".join(s.message.get("body", b"") for s in self.sent if s.role in (BODY, FINAL) and s.fate in fates)

    def finals(self) -> list[Sent]:
        """The ``more_body: False`` messages the app sent."""
        return [s for s in self.sent if s.role == FINAL]


def role_of(message: Message) -> str:
    """start, body (``more_body: True``), final (``more_body: False``) or other."""
    kind = message.get("type")
    if kind == "http.response.start":
        return START
    if kind == "http.response.body":
        return BODY if message.get("more_body", False) else FINAL
    return OTHER


class FakeServer:
    """Runs one request of ``app`` under a script of hooks and controls."""

    def __init__(
        self,
        app: Any,
        *,
        method: str = "GET",
        path: str = "/",
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes = b"",
        spec_version: str = "2.3",
        lifespan: bool = True,
        on_receive: Callable[[int], None] | None = None,
        on_send: Callable[[int, str, Message], None] | None = None,
    ) -> None:
        self.app = app
        self.scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": spec_version},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"testserver"), *(headers or [])],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        self.request_body = body
        self.lifespan = lifespan
        self.on_receive = on_receive
        self.on_send = on_send
        self.result = Outcome()
        self.tg: anyio.abc.TaskGroup | None = None
        self._body_sent = False
        self._gone = False
        self._gone_event = anyio.Event()
        self._broken = False
        self._hang = False
        self._slow: float | None = None
        self._request_scope: anyio.CancelScope | None = None
        self._lifespan_queue: list[Message] = []
        self._lifespan_wakeup = anyio.Event()
        self._lifespan_done = anyio.Event()
        self._startup_done = anyio.Event()
        self._shutdown_sent = False
        self._receive_calls = 0
        self._send_calls = 0
        self._in_flight = 0

    # ------------------------------------------------------------ controls
    def disconnect(self) -> None:
        """The client leaves now."""
        if not self._gone:
            self._gone = True
            self._gone_event.set()

    @property
    def gone(self) -> bool:
        """Whether the client has left."""
        return self._gone

    def break_pipe(self) -> None:
        """Every send from now on raises OSError (an ASGI 2.4 server, a reset socket)."""
        self._broken = True

    def hang_sends(self) -> None:
        """Every send from now on blocks until cancelled (a client that stopped reading)."""
        self._hang = True

    def slow_next_send(self, seconds: float) -> None:
        """The next send returns only after ``seconds``."""
        self._slow = seconds

    def cancel_request(self) -> None:
        """Cancel the request task, as a server does when its graceful timeout expires."""
        self.result.server_cancelled = True
        if self._request_scope is not None:
            self._request_scope.cancel()

    def lifespan_shutdown(self) -> None:
        """Deliver ``lifespan.shutdown`` to the app now (once)."""
        if not self._shutdown_sent:
            self._shutdown_sent = True
            self._lifespan_push({"type": "lifespan.shutdown"})

    def later(self, seconds: float, action: Callable[[], None]) -> None:
        """Run ``action()`` ``seconds`` from now."""

        async def timer() -> None:
            await anyio.sleep(seconds)
            action()

        assert self.tg is not None
        self.tg.start_soon(timer)

    # ------------------------------------------------------------ the ASGI callables
    async def receive(self) -> Message:
        self._receive_calls += 1
        if self.on_receive is not None:
            self.on_receive(self._receive_calls)
        if not self._body_sent:
            self._body_sent = True
            self.result.receives.append((anyio.current_time(), "http.request"))
            return {"type": "http.request", "body": self.request_body, "more_body": False}
        if not self._gone:
            await self._gone_event.wait()
        self.result.receives.append((anyio.current_time(), "http.disconnect"))
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self._send_calls += 1
        role = role_of(message)
        if self.on_send is not None:
            self.on_send(self._send_calls, role, message)
        record = Sent(anyio.current_time(), message, role, concurrent=self._in_flight > 0)
        self.result.sent.append(record)
        if self._broken:
            record.fate = "failed"
            raise OSError(104, "Connection reset by peer")
        self._in_flight += 1
        try:
            if self._hang:
                record.fate = "blocked"
                await anyio.sleep_forever()
            slow, self._slow = self._slow, None
            if slow is not None:
                record.fate = "blocked"
                await anyio.sleep(slow)
                record.fate = "slow"
        finally:
            self._in_flight -= 1
        if self._gone:
            record.fate = "dropped"

    # ------------------------------------------------------------ lifespan
    def _lifespan_push(self, message: Message) -> None:
        self._lifespan_queue.append(message)
        self._lifespan_wakeup.set()

    async def _lifespan_receive(self) -> Message:
        while not self._lifespan_queue:
            self._lifespan_wakeup = anyio.Event()
            await self._lifespan_wakeup.wait()
        return self._lifespan_queue.pop(0)

    async def _lifespan_send(self, message: Message) -> None:
        self.result.lifespan_events.append(message["type"])
        if message["type"].startswith("lifespan.startup"):
            self._startup_done.set()
        elif message["type"].startswith("lifespan.shutdown"):
            self._lifespan_done.set()

    async def _run_lifespan(self) -> None:
        try:
            await self.app(
                {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}},
                self._lifespan_receive,
                self._lifespan_send,
            )
        finally:
            self._startup_done.set()
            self._lifespan_done.set()

    # ------------------------------------------------------------ the run
    async def run(
        self,
        bound: float,
        *,
        before: Callable[[], Any] | None = None,
        on_hang: Callable[[], Any] | None = None,
        after: Callable[[], Any] | None = None,
    ) -> Outcome:
        """Run lifespan startup, ``before()``, the request, then ``after()`` (async),
        then lifespan shutdown. A request still running ``bound`` virtual seconds after
        it started is reported hung: ``on_hang()`` sees it as it is, then it is cancelled."""
        result = self.result
        async with anyio.create_task_group() as tg:
            self.tg = tg
            if self.lifespan:
                tg.start_soon(self._run_lifespan)
                self._lifespan_push({"type": "lifespan.startup"})
                await self._startup_done.wait()
            if before is not None:
                before()
            result.started_at = anyio.current_time()
            watch = anyio.CancelScope()
            with anyio.CancelScope() as self._request_scope:

                async def watchdog() -> None:
                    with watch:
                        await anyio.sleep(bound)
                        result.hung = True
                        if on_hang is not None:
                            on_hang()
                        scope.cancel()

                with anyio.CancelScope() as scope:
                    tg.start_soon(watchdog)
                    try:
                        await self.app(self.scope, self.receive, self.send)
                    except Exception as exc:
                        result.exception = exc
            result.returned_at = anyio.current_time()
            watch.cancel()
            self._request_scope = None
            if after is not None:
                await after()
            if self.lifespan:
                self.lifespan_shutdown()
                with anyio.move_on_after(10):
                    await self._lifespan_done.wait()
            tg.cancel_scope.cancel()
        return result
