"""Failsafe on communication loss, with EEBus LPC semantics. Pure: times come in as arguments.

Theory of operation
-------------------
The HEMS watches the clock time of its last successful exchange with the VTN (``HemsVen.last_contact_at``).

* NORMAL: the limits in force come from the DSO's signals (``protocol.effective``).
* No contact for ``after_s`` (LPC: 120 s) -> FAILSAFE: the contract's failsafe import/export limits replace the
  signal-based limits (capped by the contracted maximum), from the moment the loss is noticed.
* Contact again -> FAILSAFE_RECONNECTED: still failsafe limits, until either
  - fresh limits arrive: the DSO added, modified or cancelled a capacity bandwidth after contact was lost
    (``SignalBook.limits_changed_at``), or
  - the failsafe limits have been held for ``hold_s`` (the contract's ``failsafe_duration_s``, LPC's
    FailsafeDurationMinimum, 2–24 h) with contact back;
  then -> NORMAL. Contact lost again before that -> FAILSAFE, the hold still counted from the first entry.

Where LPC lets a device become "unlimited/autonomous" once FailsafeDurationMinimum has passed without a
heartbeat, this HEMS keeps the failsafe limits until contact returns: a DSO that cannot reach its households
can then count on the failsafe limits it agreed in the contract (one of them is the §14a-style 4.2 kW floor).

Before the first contact, the silence is counted from the moment watching began (``watch_from``: the
controller's start). The failsafe is noticed on the controller's steps; the controller wakes at
``next_deadline`` so that it engages exactly ``after_s`` after the last contact.

The failsafe engages exactly ``after_s`` after the last contact once the link has shown the silence is real:
an attempt ended without an answer since that contact (``last_attempt_at`` later than ``last_contact_at``), or
the link gives no attempt information. Then silence is judged up to ``now``, so the controller, waking at
``next_deadline``, engages on the dot (PROFILE §10, EEBus LPC: 120 s), not at the next failed poll. Without a
failed attempt since the last contact the VEN simply has not asked: on an accelerated clock a household whose
event loop is busy (compiling or solving plans for many households) lets many clock seconds pass without
polling, and that is not a lost VTN; silence is then judged up to the last ended attempt, and the failsafe
engages at the first failed attempt that ends after ``after_s`` (a VTN that does not answer still ends each
attempt: connection refused, or the transport's timeouts).

The moves are the table ``TRANSITIONS``; :func:`next_state` refuses any other move with
:class:`IllegalFailsafeTransition`, naming the state and the event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from protocol.contract import HouseholdContract
from protocol.effective import EffectiveLimit

DEFAULT_FAILSAFE_AFTER_S = 120.0
"""EEBus LPC: failsafe after 120 s without a heartbeat."""


class FailsafeState(StrEnum):
    NORMAL = "normal"
    FAILSAFE = "failsafe"
    FAILSAFE_RECONNECTED = "failsafe_reconnected"

    @property
    def failsafe_limits(self) -> bool:
        """True when the contract's failsafe limits are in force."""
        return self is not FailsafeState.NORMAL


class FailsafeEvent(StrEnum):
    CONTACT_LOST = "contact_lost"
    """No successful exchange with the VTN for ``after_s``."""
    CONTACT_RESTORED = "contact_restored"
    FRESH_LIMITS = "fresh_limits"
    """A capacity bandwidth was added, modified or cancelled after contact was lost."""
    HOLD_ELAPSED = "hold_elapsed"
    """The failsafe limits have been held for the contract's failsafe duration."""


TRANSITIONS: dict[tuple[FailsafeState, FailsafeEvent], FailsafeState] = {
    (FailsafeState.NORMAL, FailsafeEvent.CONTACT_LOST): FailsafeState.FAILSAFE,
    (FailsafeState.FAILSAFE, FailsafeEvent.CONTACT_RESTORED): FailsafeState.FAILSAFE_RECONNECTED,
    (FailsafeState.FAILSAFE_RECONNECTED, FailsafeEvent.CONTACT_LOST): FailsafeState.FAILSAFE,
    (FailsafeState.FAILSAFE_RECONNECTED, FailsafeEvent.FRESH_LIMITS): FailsafeState.NORMAL,
    (FailsafeState.FAILSAFE_RECONNECTED, FailsafeEvent.HOLD_ELAPSED): FailsafeState.NORMAL,
}


class IllegalFailsafeTransition(ValueError):
    def __init__(self, state: FailsafeState, event: FailsafeEvent) -> None:
        self.state = state
        self.event = event
        allowed = sorted(e.value for (s, e) in TRANSITIONS if s is state)
        super().__init__(f"failsafe: event {event.value!r} is not allowed in state {state.value!r} "
                         f"(allowed there: {', '.join(allowed) or 'none'})")


def next_state(state: FailsafeState, event: FailsafeEvent) -> FailsafeState:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalFailsafeTransition(state, event) from None


def failsafe_limit(contract: HouseholdContract, start: datetime) -> EffectiveLimit:
    """The contract's failsafe limits for the interval at ``start``: min(failsafe, contracted maximum)."""
    return EffectiveLimit(
        start=start,
        import_limit_kw=min(contract.failsafe_import_kw, contract.contracted_max_import_kw),
        export_limit_kw=min(contract.failsafe_export_kw, contract.contracted_max_export_kw),
        constrained_by_dso=False,
    )


@dataclass(frozen=True)
class FailsafeSnapshot:
    """What the local store keeps of the failsafe, so that a restarted HEMS resumes in the same state."""

    state: FailsafeState
    entered_at: datetime | None
    """When the failsafe limits came into force (None in NORMAL)."""
    contact_lost_after: datetime | None
    """The last contact before the loss (or the start of watching): contact or limits later than this are new."""


@dataclass(frozen=True)
class FailsafeTransition:
    at: datetime
    event: FailsafeEvent
    before: FailsafeState
    after: FailsafeState
    hold_until: datetime | None

    def describe(self, contract: HouseholdContract) -> str:
        """One line for ``ControlDecision.notes`` and logs."""
        limit = failsafe_limit(contract, self.at)
        limits = f"{limit.import_limit_kw:.2f} kW import / {limit.export_limit_kw:.2f} kW export"
        stamp = f"{self.at:%Y-%m-%d %H:%M:%S}Z"
        held = f"{self.hold_until:%Y-%m-%d %H:%M:%S}Z" if self.hold_until is not None else "?"
        text = {
            FailsafeEvent.CONTACT_LOST: f"no contact with the VTN: contract failsafe limits {limits} in force, "
                                        f"held at least until {held} and until contact returns",
            FailsafeEvent.CONTACT_RESTORED: f"contact with the VTN restored; failsafe limits {limits} stay until "
                                            f"fresh limits arrive or {held}",
            FailsafeEvent.FRESH_LIMITS: "fresh limits from the DSO after contact returned: back to the "
                                        "signal-based limits",
            FailsafeEvent.HOLD_ELAPSED: "failsafe duration held with contact back: back to the signal-based limits",
        }[self.event]
        return f"failsafe {self.before.value} -> {self.after.value} at {stamp}: {text}"


class Failsafe:
    """The failsafe's state and the timing rules that turn observations into events (see the module doc)."""

    def __init__(
        self,
        *,
        after_s: float = DEFAULT_FAILSAFE_AFTER_S,
        hold_s: float,
        watch_from: datetime,
        snapshot: FailsafeSnapshot | None = None,
    ) -> None:
        if not after_s > 0 or not hold_s >= 0:
            raise ValueError(f"need after_s > 0 and hold_s >= 0, not {after_s} and {hold_s}")
        self.after = timedelta(seconds=after_s)
        self.hold = timedelta(seconds=hold_s)
        self.watch_from = watch_from
        self.state = FailsafeState.NORMAL
        self.entered_at: datetime | None = None
        self.contact_lost_after: datetime | None = None
        if snapshot is not None and snapshot.state.failsafe_limits:
            if snapshot.entered_at is None or snapshot.contact_lost_after is None:
                raise ValueError(f"failsafe snapshot in state {snapshot.state.value!r} needs entered_at and "
                                 "contact_lost_after")
            # After a restart contact must be made again, so a HEMS that had it back resumes without it.
            self.state = FailsafeState.FAILSAFE
            self.entered_at = snapshot.entered_at
            self.contact_lost_after = snapshot.contact_lost_after

    @property
    def hold_until(self) -> datetime | None:
        return None if self.entered_at is None else self.entered_at + self.hold

    def snapshot(self) -> FailsafeSnapshot:
        return FailsafeSnapshot(self.state, self.entered_at, self.contact_lost_after)

    def _latest_contact(self, last_contact_at: datetime | None) -> datetime:
        return self.watch_from if last_contact_at is None else max(last_contact_at, self.watch_from)

    def next_deadline(self, last_contact_at: datetime | None) -> datetime | None:
        """The next moment at which time alone could change the state (None: only contact can)."""
        if self.state is FailsafeState.FAILSAFE:
            return None
        deadline = self._latest_contact(last_contact_at) + self.after
        if self.state is FailsafeState.FAILSAFE_RECONNECTED and self.hold_until is not None:
            deadline = min(deadline, self.hold_until)
        return deadline

    def update(
        self,
        *,
        now: datetime,
        last_contact_at: datetime | None,
        limits_changed_at: datetime | None,
        last_attempt_at: datetime | None = None,
    ) -> list[FailsafeTransition]:
        """Apply what has been observed by ``now``; the transitions made, in order (usually none)."""
        transitions: list[FailsafeTransition] = []
        latest = self._latest_contact(last_contact_at)
        # A failed attempt since the last contact (or no attempt information) makes the silence real up to now.
        judged_at = now if last_attempt_at is None or last_attempt_at > latest else min(now, last_attempt_at)
        while True:
            event = self._event(now, judged_at - latest, last_contact_at, limits_changed_at)
            if event is None:
                return transitions
            before = self.state
            self.state = next_state(before, event)
            if event is FailsafeEvent.CONTACT_LOST:
                self.contact_lost_after = latest
                if before is FailsafeState.NORMAL:
                    self.entered_at = now  # the hold counts from when the failsafe limits applied
            elif self.state is FailsafeState.NORMAL:
                self.entered_at = self.contact_lost_after = None
            transitions.append(FailsafeTransition(now, event, before, self.state, self.hold_until))

    def _event(self, now: datetime, silence: timedelta, last_contact_at: datetime | None,
               limits_changed_at: datetime | None) -> FailsafeEvent | None:
        silent = silence >= self.after  # silence counts from the start of watching too
        if self.state is FailsafeState.NORMAL:
            return FailsafeEvent.CONTACT_LOST if silent else None
        assert self.contact_lost_after is not None and self.hold_until is not None
        if self.state is FailsafeState.FAILSAFE:
            # Only a real exchange restores contact, not the start of watching (a restart in failsafe).
            restored = last_contact_at is not None and last_contact_at > self.contact_lost_after
            return FailsafeEvent.CONTACT_RESTORED if restored else None
        if silent:
            return FailsafeEvent.CONTACT_LOST
        if limits_changed_at is not None and limits_changed_at > self.contact_lost_after:
            return FailsafeEvent.FRESH_LIMITS
        if now >= self.hold_until:
            return FailsafeEvent.HOLD_ELAPSED
        return None
