"""The stream lifecycle's transition table, exhaustively, and its escalation rules."""

from __future__ import annotations

import itertools

import pytest

from asgi_stream.cancel import CancelReason
from asgi_stream.lifecycle import Ending, Event, Lifecycle, LifecycleError, State, Transition
from asgi_stream.record import Outcome

#: How to put a fresh lifecycle into each state.
_PATHS: dict[State, list[tuple[Event, dict[str, object]]]] = {
    State.CREATED: [],
    State.PENDING: [(Event.START, {})],
    State.STREAMING: [(Event.START, {}), (Event.HEADERS, {})],
    State.ENDING: [(Event.START, {}), (Event.FINISH, {})],
    State.CLOSED: [(Event.START, {}), (Event.FINISH, {}), (Event.CLOSE, {})],
}

_ARGS: dict[Event, dict[str, object]] = {
    Event.CANCEL: {"reason": CancelReason.SHUTDOWN},
    Event.FAIL: {"error": ValueError("boom")},
}

#: The whole table: (state, event) → the resulting state, or None when impossible.
_EXPECTED: dict[tuple[State, Event], State | None] = {
    (State.CREATED, Event.START): State.PENDING,
    (State.CREATED, Event.CANCEL): State.ENDING,
    (State.PENDING, Event.HEADERS): State.STREAMING,
    (State.PENDING, Event.FINISH): State.ENDING,
    (State.PENDING, Event.FAIL): State.ENDING,
    (State.PENDING, Event.CANCEL): State.ENDING,
    (State.STREAMING, Event.FINISH): State.ENDING,
    (State.STREAMING, Event.FAIL): State.ENDING,
    (State.STREAMING, Event.CANCEL): State.ENDING,
    (State.ENDING, Event.START): State.ENDING,
    (State.ENDING, Event.HEADERS): State.ENDING,
    (State.ENDING, Event.FINISH): State.ENDING,
    (State.ENDING, Event.FAIL): State.ENDING,
    (State.ENDING, Event.CANCEL): State.ENDING,
    (State.ENDING, Event.CLOSE): State.CLOSED,
    (State.CLOSED, Event.CANCEL): State.CLOSED,
    (State.CLOSED, Event.FINISH): State.CLOSED,
    (State.CLOSED, Event.FAIL): State.CLOSED,
}


def _in(state: State) -> Lifecycle:
    lc = Lifecycle()
    for event, kwargs in _PATHS[state]:
        lc.handle(event, **kwargs)  # type: ignore[arg-type]
    assert lc.state is state
    return lc


@pytest.mark.parametrize(("state", "event"), list(itertools.product(State, Event)))
def test_every_state_event_pair_is_defined(state: State, event: Event) -> None:
    lc = _in(state)
    expected = _EXPECTED.get((state, event))
    if expected is None:
        with pytest.raises(LifecycleError):
            lc.handle(event, **_ARGS.get(event, {}))  # type: ignore[arg-type]
        assert lc.state is state  # an impossible event changes nothing
        return
    result = lc.handle(event, **_ARGS.get(event, {}))  # type: ignore[arg-type]
    assert lc.state is expected
    assert (result is Transition.MOVED) == (expected is not state)


@pytest.mark.parametrize(
    ("reason", "gone", "ending", "outcome"),
    [
        (CancelReason.DISCONNECT, True, Ending.ABORT, Outcome.CANCELLED),
        (CancelReason.SEND_TIMEOUT, False, Ending.ABORT, Outcome.TIMED_OUT),
        (CancelReason.ERROR, False, Ending.ABORT, Outcome.ERROR),
        (CancelReason.SHUTDOWN, False, Ending.CLEAN, Outcome.CANCELLED),
        (CancelReason.SHUTDOWN, True, Ending.ABORT, Outcome.CANCELLED),
        (CancelReason.APPLICATION, False, Ending.CLEAN, Outcome.CANCELLED),
        (CancelReason.ABANDONED, False, Ending.CLEAN, Outcome.CANCELLED),
    ],
)
def test_a_cancel_decides_the_ending_and_outcome(reason, gone, ending, outcome) -> None:
    lc = _in(State.STREAMING)
    assert lc.handle(Event.CANCEL, reason=reason, client_gone=gone) is Transition.MOVED
    assert (lc.ending, lc.outcome, lc.reason) == (ending, outcome, reason)


def test_a_cancel_before_the_driver_runs_is_a_state_not_a_lost_event() -> None:
    lc = Lifecycle()
    assert lc.handle(Event.CANCEL, reason=CancelReason.DISCONNECT, client_gone=True) is Transition.MOVED
    assert lc.handle(Event.START) is Transition.IGNORED  # the driver finds it ending
    assert (lc.state, lc.ending) == (State.ENDING, Ending.ABORT)


def test_finishing_after_a_cancel_keeps_the_cancel() -> None:
    lc = _in(State.STREAMING)
    lc.handle(Event.CANCEL, reason=CancelReason.SHUTDOWN)
    assert lc.handle(Event.FINISH) is Transition.IGNORED
    assert lc.handle(Event.FAIL, error=RuntimeError()) is Transition.IGNORED
    assert (lc.ending, lc.outcome) == (Ending.CLEAN, Outcome.CANCELLED)


@pytest.mark.parametrize("first", [Event.FINISH, Event.CANCEL])
@pytest.mark.parametrize(
    ("reason", "escalates", "outcome"),
    [
        (CancelReason.DISCONNECT, True, Outcome.CANCELLED),
        (CancelReason.SEND_TIMEOUT, True, Outcome.TIMED_OUT),
        (CancelReason.SHUTDOWN, False, None),
        (CancelReason.APPLICATION, False, None),
    ],
)
def test_only_a_lost_client_turns_an_ending_into_an_abort(first, reason, escalates, outcome) -> None:
    lc = _in(State.STREAMING)
    if first is Event.FINISH:
        lc.handle(Event.FINISH)
    else:
        lc.handle(Event.CANCEL, reason=CancelReason.SHUTDOWN)
    before = (lc.ending, lc.outcome)
    result = lc.handle(Event.CANCEL, reason=reason, client_gone=reason is CancelReason.DISCONNECT)
    if escalates:
        assert result is Transition.ESCALATED
        assert (lc.ending, lc.outcome) == (Ending.ABORT, outcome)
        assert lc.handle(Event.CANCEL, reason=CancelReason.SEND_TIMEOUT) is Transition.IGNORED  # once
    else:
        assert result is Transition.IGNORED
        assert (lc.ending, lc.outcome) == before


def test_an_error_outcome_survives_an_escalation() -> None:
    lc = _in(State.STREAMING)
    lc.handle(Event.FAIL, error=ValueError("x"))
    lc.handle(Event.CANCEL, reason=CancelReason.DISCONNECT, client_gone=True)
    assert (lc.ending, lc.outcome) == (Ending.ABORT, Outcome.ERROR)
    assert isinstance(lc.error, ValueError)


def test_close_happens_once() -> None:
    lc = _in(State.ENDING)
    assert lc.handle(Event.CLOSE) is Transition.MOVED
    with pytest.raises(LifecycleError):
        lc.handle(Event.CLOSE)
