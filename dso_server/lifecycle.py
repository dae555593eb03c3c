"""The pure rules of the VTN: how a published signal may change, and what each VEN is sent.

Theory of operation
-------------------
A signal (one OpenADR event) is *open* from its publication until it is cancelled or its last interval ends.
OpenADR 2.0b (conformance rules 4 and 5): a new event has modificationNumber 0; every change to what it says
increments it, and so does a cancellation. Event ids never change. The table ``SIGNAL_MOVES`` lists every
(state, action) pair: the state after the move, or the rule that forbids it.

Delivery: every oadrDistributeEvent carries *all* of a VEN's relevant events (2.0b: an event missing from a
later oadrDistributeEvent is an implied cancellation). Relevant are the events that have not ended, and of the
cancelled ones those whose cancellation the VEN has not yet acknowledged (an oadrCreatedEvent naming the
cancellation's modification number). The VTN remembers per VEN the set of (event id, modification number,
status) it last delivered; a poll is answered with an oadrDistributeEvent when the current set holds something
the VEN has not seen, or when the VEN has not yet answered an event version it was sent (PROFILE.md §7.4.3: the
distribution, or its answer, may have been lost; sending it again is harmless). A set that only shrank (an event
ended or its cancellation was acknowledged) needs no message: the VEN already knows.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from enum import StrEnum
from typing import Protocol, TypeVar

from dso_server.errors import IllegalSignalChange
from dso_server.records import Signal
from protocol.oadr20b import EventStatus


class SignalState(StrEnum):
    OPEN = "open"
    CANCELLED = "cancelled"
    ENDED = "ended"


class SignalAction(StrEnum):
    MODIFY = "modify"
    CANCEL = "cancel"


SIGNAL_MOVES: dict[tuple[SignalState, SignalAction], SignalState | str] = {
    (SignalState.OPEN, SignalAction.MODIFY): SignalState.OPEN,
    (SignalState.OPEN, SignalAction.CANCEL): SignalState.CANCELLED,
    (SignalState.CANCELLED, SignalAction.MODIFY): "a cancelled event cannot be modified (OpenADR 2.0b); publish a "
                                                  "new signal instead",
    (SignalState.CANCELLED, SignalAction.CANCEL): "it was cancelled before",
    (SignalState.ENDED, SignalAction.MODIFY): "its last interval is over; publish a new signal instead",
    (SignalState.ENDED, SignalAction.CANCEL): "its last interval is over, there is nothing left to cancel",
}
"""(state, action) -> the state after the move, or the rule (a text) that forbids it."""


def signal_state(signal: Signal, now: datetime) -> SignalState:
    if signal.cancelled:
        return SignalState.CANCELLED
    if signal.ended_at(now):
        return SignalState.ENDED
    return SignalState.OPEN


def check_move(signal: Signal, action: SignalAction, now: datetime) -> SignalState:
    """The state ``signal`` is in after ``action``; raise IllegalSignalChange naming state and rule if forbidden.

    Every allowed move increments the modification number by exactly one.
    """
    state = signal_state(signal, now)
    outcome = SIGNAL_MOVES[(state, action)]
    if isinstance(outcome, SignalState):
        return outcome
    raise IllegalSignalChange(signal.event_id, state.value, action.value, outcome)


DeliveryKey = tuple[str, int, str]
"""(event id, modification number, eventStatus) of one delivered event."""


class EventLike(Protocol):
    """What the delivery rules read of an event: a ``Signal``, or the VTN's ``SignalHead`` of one."""

    @property
    def event_id(self) -> str: ...
    @property
    def modification_number(self) -> int: ...
    @property
    def cancelled(self) -> bool: ...
    @property
    def start(self) -> datetime: ...
    def status_at(self, now: datetime) -> EventStatus: ...
    def ended_at(self, now: datetime) -> bool: ...


_E = TypeVar("_E", bound=EventLike)


def relevant_signals(
    signals: Iterable[_E], *, acknowledged: Collection[tuple[str, int]], now: datetime
) -> list[_E]:
    """The signals a VEN must hold now, in delivery order: by start, otherwise as given (the store gives them
    in publication order).

    ``acknowledged`` holds the (event id, modification number) pairs the VEN answered with oadrCreatedEvent.
    """
    keep = [
        signal for signal in signals
        if not signal.ended_at(now)
        and not (signal.cancelled and (signal.event_id, signal.modification_number) in acknowledged)
    ]
    return sorted(keep, key=lambda signal: signal.start)


def delivery_keys(signals: Iterable[EventLike], now: datetime) -> frozenset[DeliveryKey]:
    return frozenset(
        (signal.event_id, signal.modification_number, signal.status_at(now).value) for signal in signals
    )


def delivery_due(previous: frozenset[DeliveryKey] | None, current: frozenset[DeliveryKey],
                 answered: Collection[tuple[str, int]] = frozenset()) -> bool:
    """Whether a poll must be answered with an oadrDistributeEvent: something in ``current`` is news to the VEN, or
    it was sent an event version it still holds but has not answered (``answered``: the (event id, modification
    number) pairs it did answer).

    ``previous`` is None when nothing was delivered since the VEN registered.
    """
    if current - (previous or frozenset()):
        return True
    sent = {(event_id, modification) for event_id, modification, _ in previous or ()}
    return any((event_id, modification) in sent and (event_id, modification) not in answered
               for event_id, modification, _ in current)
