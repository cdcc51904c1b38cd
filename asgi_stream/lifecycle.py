"""The stream lifecycle: one explicit state machine per stream, sans-I/O.

Every stream — a TokenStream's pump, a passthrough response, a resumable stream's
producer — moves through the same states, and every event that can happen to it
goes through :meth:`Lifecycle.handle`, the one transition function::

    CREATED ──start──► PENDING ──headers──► STREAMING
       │                  │                     │
       │ cancel           │ finish/fail/cancel  │ finish/fail/cancel
       ▼                  ▼                     ▼
       └───────────────► ENDING ◄───────────────┘  (cancel: a clean ending may become an abort)
                            │ close
                            ▼
                          CLOSED                   (effects ran exactly once)

A cancel that arrives before the stream's driver runs is not a race: it moves
CREATED to ENDING, and the driver, on ``start``, finds the stream already ending.
While ENDING, the final bytes may still be in flight; a disconnect or a send timeout
then turns the ending into an abort (nothing more is sent). Events that no longer
matter (a generator finishing after a cancel, a cancel after the close) are ignored;
an event that cannot happen in a state is a bug and raises :class:`LifecycleError`.

This module does no I/O: the stream that owns a lifecycle performs the effects of a
transition (cancel its task, close its generator, send the final bytes, run hooks).
"""

from __future__ import annotations

import enum

from .cancel import CancelReason
from .record import Outcome


class State(enum.Enum):
    """Where a stream is in its life."""

    #: It exists; its driver has not started (the endpoint may still be running).
    CREATED = "created"
    #: The generator runs; nothing is on the wire yet (headers are sent lazily).
    PENDING = "pending"
    #: The response started: body bytes flow.
    STREAMING = "streaming"
    #: The end is decided (see :class:`Ending`); final bytes and the generator's close
    #: may be in progress.
    ENDING = "ending"
    #: Over: the generator is closed, the record finished, ``on_end`` called.
    CLOSED = "closed"


class Event(enum.Enum):
    """What can happen to a stream."""

    START = "start"  # its driver begins
    HEADERS = "headers"  # http.response.start went out
    FINISH = "finish"  # the generator is exhausted (or the app sent its final body)
    FAIL = "fail"  # the generator (or the app) raised
    CANCEL = "cancel"  # disconnect, send timeout, shutdown, application, abandoned, error
    CLOSE = "close"  # every effect of the ending has run


class Ending(enum.Enum):
    """How a stream that is ENDING ends on the wire."""

    #: The source finished: send what remains and end the body.
    COMPLETE = "complete"
    #: The source raised: an in-band error event then the end (or, before the first
    #: byte or without an in-band channel, the error propagates / the body is aborted).
    ERROR = "error"
    #: Cancelled while the client is there (shutdown, the application): end the body.
    CLEAN = "clean"
    #: The client is gone or stuck (disconnect, send timeout): send nothing more.
    ABORT = "abort"


class Transition(enum.Enum):
    """What :meth:`Lifecycle.handle` did."""

    IGNORED = "ignored"  # the event no longer matters in this state
    MOVED = "moved"  # the state changed
    ESCALATED = "escalated"  # ENDING stayed, but the ending became an abort


class LifecycleError(RuntimeError):
    """An event that cannot happen in the stream's state (a bug in asgi-stream)."""


S, E = State, Event

#: (state, event) → next state. Pairs absent from both tables are impossible.
_MOVES: dict[tuple[State, Event], State] = {
    (S.CREATED, E.START): S.PENDING,
    (S.CREATED, E.CANCEL): S.ENDING,
    (S.PENDING, E.HEADERS): S.STREAMING,
    (S.PENDING, E.FINISH): S.ENDING,
    (S.PENDING, E.FAIL): S.ENDING,
    (S.PENDING, E.CANCEL): S.ENDING,
    (S.STREAMING, E.FINISH): S.ENDING,
    (S.STREAMING, E.FAIL): S.ENDING,
    (S.STREAMING, E.CANCEL): S.ENDING,
    (S.ENDING, E.CLOSE): S.CLOSED,
}
#: Events that are no-ops in a state (handled inside ENDING for CANCEL and HEADERS).
_IGNORED: frozenset[tuple[State, Event]] = frozenset(
    {
        (S.ENDING, E.START),  # cancelled before its driver ran
        (S.ENDING, E.FINISH),  # the generator ended because it was cancelled
        (S.ENDING, E.FAIL),
        (S.ENDING, E.HEADERS),  # the final bytes of an ending carry the headers
        (S.ENDING, E.CANCEL),  # unless it escalates (see handle)
        (S.CLOSED, E.CANCEL),
        (S.CLOSED, E.FINISH),
        (S.CLOSED, E.FAIL),
    }
)

#: Cancel reasons that mean the client cannot receive anything more.
_ABORTING = frozenset({CancelReason.DISCONNECT, CancelReason.SEND_TIMEOUT, CancelReason.ERROR})


class Lifecycle:
    """The state of one stream, changed only by :meth:`handle`."""

    __slots__ = ("ending", "error", "outcome", "reason", "state")

    def __init__(self) -> None:
        self.state = State.CREATED
        self.ending: Ending | None = None
        self.outcome: Outcome | None = None
        #: The first cancel reason (None unless cancelled).
        self.reason: CancelReason | None = None
        self.error: BaseException | None = None

    def handle(
        self,
        event: Event,
        *,
        reason: CancelReason | None = None,
        error: BaseException | None = None,
        client_gone: bool = False,
    ) -> Transition:
        """Apply ``event``; the one place a stream's state changes.

        ``reason`` goes with CANCEL, ``error`` with FAIL; ``client_gone`` says whether
        the client is known to be gone (a cancel then aborts whatever its reason).
        """
        state = self.state
        target = _MOVES.get((state, event))
        if target is None:
            if (state, event) not in _IGNORED:
                raise LifecycleError(f"stream event {event.value!r} cannot happen while {state.value}")
            if event is E.CANCEL and state is S.ENDING:
                return self._escalate(reason, client_gone)
            if event is E.FAIL and state is S.ENDING and self.ending is Ending.COMPLETE and self.error is None:
                # The body is complete, then the application raised: the ending stays,
                # the outcome records the error.
                self.outcome, self.error = Outcome.ERROR, error
            return Transition.IGNORED
        self.state = target
        if event is E.FINISH:
            self.ending, self.outcome = Ending.COMPLETE, Outcome.COMPLETED
        elif event is E.FAIL:
            self.ending, self.outcome, self.error = Ending.ERROR, Outcome.ERROR, error
        elif event is E.CANCEL:
            assert reason is not None, "CANCEL needs a reason"
            self.reason = reason
            self.ending = Ending.ABORT if client_gone or reason in _ABORTING else Ending.CLEAN
            self.outcome = _outcome_for(reason)
        return Transition.MOVED

    def _escalate(self, reason: CancelReason | None, client_gone: bool) -> Transition:
        """A cancel while ENDING: the client left or stopped reading while the final
        bytes were in flight — abort them. Any other cancel changes nothing."""
        if self.ending is Ending.ABORT or not (client_gone or reason in _ABORTING):
            return Transition.IGNORED
        assert reason is not None
        self.ending = Ending.ABORT
        if self.reason is None:
            self.reason = reason
        if self.outcome is not Outcome.ERROR:
            self.outcome = _outcome_for(reason)
        return Transition.ESCALATED

    # Cheap views for the hot path and the guard.
    @property
    def running(self) -> bool:
        """PENDING or STREAMING: the source may be pulled and bytes sent."""
        return self.state is S.PENDING or self.state is S.STREAMING

    @property
    def closed(self) -> bool:
        """CLOSED: nothing more will happen."""
        return self.state is S.CLOSED

    def __repr__(self) -> str:
        detail = f" {self.ending.value}" if self.ending is not None else ""
        return f"<Lifecycle {self.state.value}{detail}>"


def _outcome_for(reason: CancelReason) -> Outcome:
    if reason is CancelReason.SEND_TIMEOUT:
        return Outcome.TIMED_OUT
    if reason is CancelReason.ERROR:
        return Outcome.ERROR
    return Outcome.CANCELLED


__all__ = ["Ending", "Event", "Lifecycle", "LifecycleError", "State", "Transition"]
