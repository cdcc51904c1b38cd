"""The per-stream guard: one task that watches for the client leaving and wakes at the
stream's next deadline (keepalive, coalescing flush, send timeout, shutdown drain).

It is the only timer a stream has: it sleeps until the earliest deadline and is
re-armed only when a deadline moves earlier (a new coalescing batch, a shutdown),
never per token. It runs until the stream is CLOSED — through the ending too, so the
final send is bounded by the send timeout like every other, even one still hanging
after the client left.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Protocol

import anyio

from . import _clock
from .cancel import CancelReason
from .receive import ReceiveHub

if TYPE_CHECKING:
    from .lifecycle import Lifecycle

logger = logging.getLogger("asgi_stream")


class Guarded(Protocol):
    """What the guard needs from a stream."""

    lifecycle: Lifecycle

    def next_deadline(self) -> float:
        """The earliest ``_clock.monotonic()`` at which :meth:`on_deadline` has work."""

    async def on_deadline(self, now: float) -> None:
        """Do what is due at ``now``."""

    def cancel(self, reason: CancelReason) -> None:
        """Cancel the stream."""


class Guard:
    """Runs the guard loop for one stream; :meth:`rearm` moves its wake-up earlier."""

    __slots__ = ("_hub", "_offset", "_scope", "_stopped", "_stream")

    def __init__(self, stream: Guarded, hub: ReceiveHub) -> None:
        self._stream = stream
        self._hub = hub
        self._scope: anyio.CancelScope | None = None
        self._offset = 0.0
        self._stopped = False

    def rearm(self, deadline: float) -> None:
        """Make the guard wake no later than ``deadline`` (``_clock`` seconds)."""
        scope = self._scope
        if scope is not None and deadline + self._offset < scope.deadline:
            scope.deadline = deadline + self._offset

    def stop(self) -> None:
        """End the guard task (the stream is over)."""
        self._stopped = True
        if self._scope is not None:
            self._scope.cancel()

    async def run(self) -> None:
        """The guard task body: one cancel scope at a time (streams are many)."""
        stream, hub = self._stream, self._hub
        lifecycle = stream.lifecycle
        # anyio deadlines are on the loop's clock (trio offsets it); keep state on _clock.
        self._offset = anyio.current_time() - _clock.monotonic()
        try:
            while not (self._stopped or lifecycle.closed):
                deadline = stream.next_deadline()
                with anyio.CancelScope(deadline=deadline + self._offset if deadline != math.inf else math.inf) as scope:
                    self._scope = scope
                    if hub.disconnected:
                        await anyio.sleep_forever()  # only deadlines are left to watch
                    else:
                        await hub.wait_disconnect()
                self._scope = None
                if self._stopped:
                    return
                if hub.disconnected:
                    stream.cancel(CancelReason.DISCONNECT)
                if scope.cancelled_caught:
                    await stream.on_deadline(_clock.monotonic())
        except anyio.get_cancelled_exc_class():
            raise
        except Exception:  # the guard must never take the request down
            logger.exception("asgi_stream: stream guard failed; cancelling the stream")
            stream.cancel(CancelReason.ERROR)
