"""The failsafe on communication loss (EEBus LPC semantics): its table, its timing, and the controller keeping
a simulated household under the contract's failsafe limits after the VTN goes silent (manual clock, no network).
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, time, timedelta

import pytest

from hems_client.control.controller import Controller
from hems_client.control.failsafe import (
    TRANSITIONS,
    Failsafe,
    FailsafeEvent,
    FailsafeSnapshot,
    FailsafeState,
    IllegalFailsafeTransition,
    next_state,
)
from hems_client.control.signal_book import SignalBook
from hems_client.devices import BaseLoad, ElectricVehicle, HeatPump, HomeBattery, Household, Weather
from hems_client.settings import ControllerSettings
from hems_client.store import HemsStore
from protocol import (
    INTERVAL,
    BandwidthInterval,
    CapacityBandwidth,
    ComfortTerms,
    Firmness,
    HouseholdContract,
    TariffInterval,
    TouTariff,
    make_ean18,
)
from protocol.clock import Clock, ManualClock
from protocol.oadr20b.events import DecodedEvent, EventMeta, EventStatus

T0 = datetime(2025, 1, 15, 0, 0, tzinfo=UTC)
HOLD_S = 7200
CONTRACT = HouseholdContract(
    connection_point_id=make_ean18("87168712000000003"), contracted_max_import_kw=17.0,
    contracted_max_export_kw=10.0, failsafe_import_kw=4.2, failsafe_export_kw=4.2, failsafe_duration_s=HOLD_S,
    comfort=ComfortTerms(indoor_setpoint_c=20.0, temperature_band_k=1.0, ev_departure_local=time(6, 0),
                         ev_required_range_km=150.0, timezone="UTC"),
)
TOLERANCE_KW = 0.02


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


# --------------------------------------------------------------------------------------- the table


@pytest.mark.parametrize(("state", "event"), list(itertools.product(FailsafeState, FailsafeEvent)))
def test_every_move_follows_the_table_and_any_other_is_refused_by_name(
    state: FailsafeState, event: FailsafeEvent
) -> None:
    if (state, event) in TRANSITIONS:
        assert next_state(state, event) is TRANSITIONS[(state, event)]
    else:
        with pytest.raises(IllegalFailsafeTransition, match=f"'{event.value}' is not allowed in state "
                                                            f"'{state.value}'") as raised:
            next_state(state, event)
        assert raised.value.state is state and raised.value.event is event


def test_only_fresh_limits_or_the_hold_release_and_only_with_contact() -> None:
    assert {after for (_, event), after in TRANSITIONS.items()
            if after is FailsafeState.NORMAL} == {FailsafeState.NORMAL}
    releases = {(before, event) for (before, event), after in TRANSITIONS.items() if after is FailsafeState.NORMAL}
    assert releases == {(FailsafeState.FAILSAFE_RECONNECTED, FailsafeEvent.FRESH_LIMITS),
                        (FailsafeState.FAILSAFE_RECONNECTED, FailsafeEvent.HOLD_ELAPSED)}


# --------------------------------------------------------------------------------------- timing


def test_engages_120_s_after_the_last_contact_and_holds_until_the_duration_with_contact_back() -> None:
    failsafe = Failsafe(after_s=120, hold_s=HOLD_S, watch_from=T0)
    assert failsafe.update(now=at(1), last_contact_at=at(1), limits_changed_at=None) == []
    assert failsafe.next_deadline(at(1)) == at(3)
    assert failsafe.update(now=at(2.99), last_contact_at=at(1), limits_changed_at=at(0.5)) == []
    (lost,) = failsafe.update(now=at(3), last_contact_at=at(1), limits_changed_at=at(0.5))
    assert (lost.event, lost.after, lost.hold_until) == (FailsafeEvent.CONTACT_LOST, FailsafeState.FAILSAFE,
                                                         at(3 + 120))
    assert failsafe.next_deadline(at(1)) is None  # only contact can move it now
    (back,) = failsafe.update(now=at(30), last_contact_at=at(30), limits_changed_at=at(0.5))
    assert back.after is FailsafeState.FAILSAFE_RECONNECTED
    assert failsafe.next_deadline(at(30)) == at(32)
    # Contact without fresh limits: held for the whole duration, then released.
    assert failsafe.update(now=at(122.99), last_contact_at=at(122.9), limits_changed_at=at(0.5)) == []
    assert failsafe.next_deadline(at(122.9)) == at(123)
    (release,) = failsafe.update(now=at(123), last_contact_at=at(122.9), limits_changed_at=at(0.5))
    assert (release.event, release.after) == (FailsafeEvent.HOLD_ELAPSED, FailsafeState.NORMAL)
    assert failsafe.snapshot() == FailsafeSnapshot(FailsafeState.NORMAL, None, None)


def test_fresh_limits_after_contact_returns_release_at_once() -> None:
    failsafe = Failsafe(after_s=120, hold_s=HOLD_S, watch_from=T0)
    failsafe.update(now=at(3), last_contact_at=at(1), limits_changed_at=None)
    # A limit change the VEN stored in the exchange that restored contact: both moves in one update.
    moves = failsafe.update(now=at(10), last_contact_at=at(9), limits_changed_at=at(9))
    assert [m.event for m in moves] == [FailsafeEvent.CONTACT_RESTORED, FailsafeEvent.FRESH_LIMITS]
    assert failsafe.state is FailsafeState.NORMAL


def test_never_released_without_contact_and_contact_lost_again_keeps_the_first_hold() -> None:
    failsafe = Failsafe(after_s=120, hold_s=HOLD_S, watch_from=T0)
    assert failsafe.update(now=at(2), last_contact_at=None, limits_changed_at=None)[0].after is FailsafeState.FAILSAFE
    # Ten hours without contact: the hold (2 h) is long over, the failsafe limits stay.
    assert failsafe.update(now=at(600), last_contact_at=None, limits_changed_at=None) == []
    assert failsafe.state is FailsafeState.FAILSAFE
    failsafe2 = Failsafe(after_s=120, hold_s=HOLD_S, watch_from=T0)
    failsafe2.update(now=at(3), last_contact_at=at(1), limits_changed_at=None)
    failsafe2.update(now=at(20), last_contact_at=at(20), limits_changed_at=None)
    (lost,) = failsafe2.update(now=at(23), last_contact_at=at(21), limits_changed_at=None)
    assert lost.after is FailsafeState.FAILSAFE and failsafe2.hold_until == at(123)


def test_released_when_the_hold_is_over_and_contact_returns_later() -> None:
    failsafe = Failsafe(after_s=120, hold_s=HOLD_S, watch_from=T0)
    failsafe.update(now=at(2), last_contact_at=None, limits_changed_at=None)
    moves = failsafe.update(now=at(600), last_contact_at=at(599), limits_changed_at=None)
    assert [m.event for m in moves] == [FailsafeEvent.CONTACT_RESTORED, FailsafeEvent.HOLD_ELAPSED]


def test_silence_is_judged_by_failed_attempts_not_by_a_busy_event_loop() -> None:
    """On an accelerated clock a HEMS busy planning does not poll for many clock seconds: that is not VTN loss.
    The VTN going away shows as attempts that end without an answer."""
    failsafe = Failsafe(after_s=120, hold_s=HOLD_S, watch_from=T0)
    # Last answered and last ended attempt at 00:01; the loop was busy until 00:10: no attempt, no failsafe.
    assert failsafe.update(now=at(10), last_contact_at=at(1), last_attempt_at=at(1), limits_changed_at=None) == []
    # An attempt ended without an answer: the silence since 00:01 is real, judged up to now.
    (lost,) = failsafe.update(now=at(10.5), last_contact_at=at(1), last_attempt_at=at(2.5), limits_changed_at=None)
    assert lost.after is FailsafeState.FAILSAFE and failsafe.contact_lost_after == at(1)


def test_with_failed_attempts_it_engages_on_the_dot_not_at_the_next_failed_poll() -> None:
    """PROFILE §10 / EEBus LPC: 120 s after the last contact, whatever the poll schedule."""
    failsafe = Failsafe(after_s=120, hold_s=HOLD_S, watch_from=T0)
    # Contact at 00:01; polls every 10 s fail from 00:01:10, the last one ended at 00:02:50.
    assert failsafe.update(now=at(2.99), last_contact_at=at(1), last_attempt_at=at(2 + 50 / 60),
                           limits_changed_at=None) == []
    (lost,) = failsafe.update(now=at(3), last_contact_at=at(1), last_attempt_at=at(2 + 50 / 60),
                              limits_changed_at=None)
    assert lost.at == at(3) and lost.after is FailsafeState.FAILSAFE


def test_a_restart_in_failsafe_needs_real_contact_to_leave_it() -> None:
    snapshot = FailsafeSnapshot(FailsafeState.FAILSAFE_RECONNECTED, entered_at=at(3), contact_lost_after=at(1))
    failsafe = Failsafe(after_s=120, hold_s=HOLD_S, watch_from=at(500), snapshot=snapshot)
    assert failsafe.state is FailsafeState.FAILSAFE  # contact has to be made again after a restart
    assert failsafe.update(now=at(501), last_contact_at=None, limits_changed_at=at(0.5)) == []
    moves = failsafe.update(now=at(502), last_contact_at=at(502), limits_changed_at=at(0.5))
    assert [m.after for m in moves] == [FailsafeState.FAILSAFE_RECONNECTED, FailsafeState.NORMAL]  # hold over
    with pytest.raises(ValueError, match="needs entered_at"):
        Failsafe(hold_s=HOLD_S, watch_from=T0, snapshot=FailsafeSnapshot(FailsafeState.FAILSAFE, None, None))


# --------------------------------------------------------------------------------------- controller


class FakeLink:
    """The VEN's link health: while ``up`` every look finds a fresh exchange; when down it stays where it was."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.up = True
        self._last: datetime | None = clock.now()
        self.last_attempt_at: datetime | None = None  # attempts all the time: silence is judged up to now

    @property
    def last_contact_at(self) -> datetime | None:
        if self.up:
            self._last = self.clock.now()
        return self._last


class PollingLink:
    """A VEN polling every ``poll_s`` clock seconds: while ``up`` each poll is answered; when down each poll
    ends without an answer, ``offset_s`` after its slot (not in step with the controller's sub-steps)."""

    def __init__(self, clock: Clock, *, poll_s: float = 10.0, offset_s: float = 3.7) -> None:
        self.clock = clock
        self.poll_s, self.offset_s = poll_s, offset_s
        self.up = True
        self._last = clock.now()

    @property
    def last_contact_at(self) -> datetime:
        if self.up:
            self._last = self.clock.now()
        return self._last

    @property
    def last_attempt_at(self) -> datetime:
        contact = self.last_contact_at
        failed = (self.clock.now() - contact).total_seconds() - self.offset_s
        if self.up or failed < 0:
            return contact
        return contact + timedelta(seconds=self.offset_s + self.poll_s * (failed // self.poll_s))


def test_the_controller_engages_exactly_120_s_after_the_last_contact_not_at_the_next_step() -> None:
    """Polls fail every 10 s, out of step with the 10 s sub-steps: the failsafe still comes at 00:22:00 sharp,
    in the transition, in the stored row and in the KPI's failsafe hours (it used to come at the first
    sub-step after a failed poll had ended past 120 s: 00:22:10)."""
    async def scenario() -> None:
        clock = ManualClock(T0)
        link = PollingLink(clock)
        store = HemsStore(":memory:")
        controller = Controller(contract=CONTRACT, household=ev_household(), clock=clock, link=link, store=store)
        await controller.run(until=at(20))
        link.up = False  # last contact 00:20:00
        await controller.run(until=at(30))
        (lost,) = controller.failsafe_transitions
        assert lost.event is FailsafeEvent.CONTACT_LOST and lost.at == at(22)
        stored = store.load_failsafe()
        assert stored is not None and stored.entered_at == at(22)
        (day,) = controller.kpi.days()
        assert day.failsafe_h == pytest.approx(8 / 60)

    asyncio.run(scenario())


def ev_household() -> Household:
    """-5 °C, the EV home and nearly empty at midnight: it wants 11 kW in the cheap night hours."""
    return Household(
        weather=Weather.constant(start=T0, outdoor_temp_c=-5.0),
        base_load=BaseLoad(annual_kwh=3500.0, timezone="UTC", seed=2),
        heat_pump=HeatPump(indoor_temp_c=20.0),
        ev=ElectricVehicle(soc_kwh=2.0, departure_local=time(6, 0), arrival_local=time(18, 0), timezone="UTC",
                           seed=2),
        battery=HomeBattery(soc_kwh=2.0),
    )


def night_tariff() -> DecodedEvent:
    """0.10 EUR/kWh 00:00-04:00, 0.40 after: charging wants to happen early and fast."""
    payload = TouTariff(intervals=tuple(
        TariffInterval(start=T0 + k * INTERVAL, import_price_eur_per_kwh=0.10 if k < 16 else 0.40,
                       export_price_eur_per_kwh=0.05) for k in range(2 * 96)))
    return DecodedEvent(EventMeta("tou", 0, EventStatus.FAR, T0), payload)


def new_limit(now: datetime) -> DecodedEvent:
    payload = CapacityBandwidth(firmness=Firmness.FIRM, intervals=tuple(
        BandwidthInterval(start=T0 + k * INTERVAL, import_limit_kw=8.0, export_limit_kw=10.0) for k in range(96)))
    return DecodedEvent(EventMeta("fresh", 0, EventStatus.FAR, now), payload)


def imports_between(controller: Controller, start: datetime, end: datetime) -> list[float]:
    return [i.import_kw for i in controller.telemetry if start <= i.start and i.start + INTERVAL <= end]


def test_vtn_loss_applies_failsafe_limits_holds_them_and_releases_after_the_duration() -> None:
    async def scenario() -> None:
        clock = ManualClock(T0)
        link = FakeLink(clock)
        book = SignalBook()
        book.apply(night_tariff(), now=T0)
        controller = Controller(contract=CONTRACT, household=ev_household(), clock=clock, signal_book=book,
                                link=link)
        await controller.run(until=at(20))
        assert controller.failsafe_state is FailsafeState.NORMAL
        assert max(imports_between(controller, T0, at(15))) > 8.0  # charging hard while in contact

        link.up = False  # last contact 00:20
        await controller.run(until=at(22) - timedelta(seconds=1))
        assert controller.failsafe_state is FailsafeState.NORMAL
        await controller.run(until=at(22))  # 120 s of silence: engaged exactly now
        assert controller.failsafe_state is FailsafeState.FAILSAFE
        assert controller.limits_in_force(at(22)).import_limit_kw == 4.2
        decision = controller.decision
        assert decision is not None and decision.notes[0].startswith("failsafe normal -> failsafe at 2025-01-15 "
                                                                     "00:22:00Z: no contact with the VTN")
        assert any(note.startswith("failsafe limits in force") for note in decision.notes)
        # The plan keeps the failsafe limit over the whole horizon: when contact returns is unknown.
        assert max(i.net_import_kw for i in decision.plan.intervals) <= 4.2 + 1e-3

        await controller.run(until=at(60))
        link.up = True  # contact back at 01:00, but no fresh limits: the failsafe holds
        await controller.run(until=at(22 + 119))
        assert controller.failsafe_state is FailsafeState.FAILSAFE_RECONNECTED
        assert controller.limits_in_force(at(22 + 119)).import_limit_kw == 4.2
        held = imports_between(controller, at(30), at(22 + 120))
        assert len(held) == 7 and max(held) <= 4.2 + TOLERANCE_KW
        assert max(held) > 3.8  # the failsafe limit was used, not just respected by idleness
        # With contact back, the plan returns to signal-based limits where the hold certainly ends.
        assert controller.decision is not None
        assert max(i.net_import_kw for i in controller.decision.plan.intervals if i.start >= at(150)) > 4.2

        await controller.run(until=at(180))  # the hold ends at 02:22
        assert controller.failsafe_state is FailsafeState.NORMAL
        assert [t.event for t in controller.failsafe_transitions] == [
            FailsafeEvent.CONTACT_LOST, FailsafeEvent.CONTACT_RESTORED, FailsafeEvent.HOLD_ELAPSED]
        # Contact is noticed at the first 10 s sub-step after it returns at 01:00.
        assert [t.at for t in controller.failsafe_transitions] == [at(22), at(60 + 10 / 60), at(142)]
        assert max(imports_between(controller, at(150), at(180))) > 8.0  # released: charging at full power
        (day,) = controller.kpi.days()
        assert day.failsafe_h == pytest.approx(2.0)
        assert day.intervals_over_limit == 0

    asyncio.run(scenario())


def test_fresh_limits_after_contact_returns_end_the_failsafe_before_the_duration() -> None:
    async def scenario() -> None:
        clock = ManualClock(T0)
        link = FakeLink(clock)
        book = SignalBook()
        book.apply(night_tariff(), now=T0)
        controller = Controller(contract=CONTRACT, household=ev_household(), clock=clock, signal_book=book,
                                link=link)
        await controller.run(until=at(20))
        link.up = False
        await controller.run(until=at(60))
        assert controller.failsafe_state is FailsafeState.FAILSAFE
        link.up = True
        await controller.run(until=at(65))
        assert controller.failsafe_state is FailsafeState.FAILSAFE_RECONNECTED
        book.apply(new_limit(clock.now()), now=clock.now())  # as the VEN does on a new event
        controller.signals_changed()
        await controller.run(until=at(66))
        assert controller.failsafe_state is FailsafeState.NORMAL
        assert controller.failsafe_transitions[-1].event is FailsafeEvent.FRESH_LIMITS
        assert controller.limits_in_force(at(66)).import_limit_kw == 8.0
        assert controller.decision is not None and any("fresh limits" in n for n in controller.decision.notes)
        await controller.run(until=at(120))
        after = imports_between(controller, at(75), at(120))
        assert max(after) <= 8.0 + TOLERANCE_KW and max(after) > 6.0

    asyncio.run(scenario())


def test_without_a_link_or_with_the_failsafe_disabled_nothing_engages() -> None:
    for link, after_s in ((None, 120.0), (FakeLink(ManualClock(T0)), None)):
        if isinstance(link, FakeLink):
            link.up = False
        controller = Controller(contract=CONTRACT, household=ev_household(), clock=ManualClock(T0), link=link,
                                settings=ControllerSettings(failsafe_after_s=after_s))
        asyncio.run(controller.run(until=at(30)))
        assert controller.failsafe_state is FailsafeState.NORMAL and controller.failsafe_transitions == []
