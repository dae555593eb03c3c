"""The HEMS's local store: what it keeps, and a restarted controller or HemsApp resuming with the same limits
(and the same failsafe) before any new contact with the VTN."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest
from support.security import PLAIN_HTTP  # plain HTTP on loopback: this module is not about security

from hems_client.app import HemsApp
from hems_client.control.controller import Controller
from hems_client.control.failsafe import FailsafeSnapshot, FailsafeState
from hems_client.control.signal_book import SignalBook
from hems_client.devices import BaseLoad, HeatPump, HomeBattery, Household, Weather
from hems_client.store import HemsStore, StoreError
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
CONTRACT = HouseholdContract(
    connection_point_id=make_ean18("87168712000000004"), contracted_max_import_kw=17.0,
    contracted_max_export_kw=10.0, failsafe_import_kw=4.2, failsafe_export_kw=3.0, failsafe_duration_s=7200,
    comfort=ComfortTerms(ev_departure_local=time(6, 0), timezone="UTC"),
)


def bandwidth_event(event_id: str, import_kw: float, modification: int = 0, *, count: int = 96,
                    status: EventStatus = EventStatus.FAR, firmness: Firmness = Firmness.FIRM) -> DecodedEvent:
    payload = CapacityBandwidth(firmness=firmness, intervals=tuple(
        BandwidthInterval(start=T0 + k * INTERVAL, import_limit_kw=import_kw, export_limit_kw=5.0)
        for k in range(count)))
    return DecodedEvent(EventMeta(event_id, modification, status, T0), payload)


def tariff_event() -> DecodedEvent:
    payload = TouTariff(intervals=tuple(
        TariffInterval(start=T0 + k * INTERVAL, import_price_eur_per_kwh=0.1 + 0.01 * (k % 7),
                       export_price_eur_per_kwh=-0.02) for k in range(96)))
    return DecodedEvent(EventMeta("tou", 3, EventStatus.FAR, T0), payload)


def household() -> Household:
    return Household(weather=Weather.constant(start=T0, outdoor_temp_c=0.0),
                     base_load=BaseLoad(annual_kwh=3000.0, timezone="UTC", seed=4),
                     heat_pump=HeatPump(), battery=HomeBattery())


class SilentLink:
    """A VEN that has not reached the VTN (yet)."""

    last_contact_at: datetime | None = None
    last_attempt_at: datetime | None = None


class FakeLink:
    def __init__(self, clock: Clock) -> None:
        self.clock, self.up, self._last = clock, True, clock.now()
        self.last_attempt_at: datetime | None = None

    @property
    def last_contact_at(self) -> datetime | None:
        if self.up:
            self._last = self.clock.now()
        return self._last


def test_contract_signals_and_failsafe_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "hems.db"
    store = HemsStore(path)
    book = SignalBook()
    book.apply(bandwidth_event("firm", 3.0, 2), now=T0)
    book.apply(bandwidth_event("extra", 1.0, firmness=Firmness.NON_FIRM), now=T0)
    book.apply(tariff_event(), now=T0)
    book.apply(bandwidth_event("gone", 1.0, 4, status=EventStatus.CANCELLED), now=T0)
    snapshot = FailsafeSnapshot(FailsafeState.FAILSAFE, entered_at=T0 + timedelta(minutes=3),
                                contact_lost_after=T0 + timedelta(minutes=1))
    store.save_contract(CONTRACT)
    store.save_signal_book(book)
    store.save_failsafe(snapshot)
    store.close()

    again = HemsStore(path)
    assert again.load_contract() == CONTRACT
    assert again.load_failsafe() == snapshot
    restored = again.load_signal_book()
    assert restored.signals == book.signals
    assert restored.version == book.version and restored.limits_changed_at == book.limits_changed_at
    assert restored.effective_limits(CONTRACT, start=T0, count=96) == book.effective_limits(CONTRACT, start=T0,
                                                                                             count=96)
    assert restored.tariff(start=T0, count=96) == book.tariff(start=T0, count=96)
    # What it remembers of versions survives too: stale and cancelled copies stay ignored after a restart.
    assert not restored.apply(bandwidth_event("firm", 9.0, 1), now=T0)
    assert not restored.apply(bandwidth_event("gone", 1.0, 3), now=T0)
    assert restored.apply(bandwidth_event("firm", 2.0, 3), now=T0)
    again.close()


def test_a_store_belongs_to_one_connection_point() -> None:
    store = HemsStore(":memory:")
    store.save_contract(CONTRACT)
    other = CONTRACT.model_copy(update={"connection_point_id": make_ean18("87168712000000099")})
    with pytest.raises(StoreError, match="belongs to connection point"):
        store.save_contract(other)
    with pytest.raises(StoreError):
        Controller(contract=other, household=household(), clock=ManualClock(T0), store=store)


def test_controller_writes_every_change_and_a_restart_resumes_the_limits_before_any_contact(tmp_path: Path) -> None:
    path = tmp_path / "hems.db"
    store = HemsStore(path)
    clock = ManualClock(T0)
    controller = Controller(contract=CONTRACT, household=household(), clock=clock, store=store,
                            link=FakeLink(clock))
    controller.signal_book.apply(bandwidth_event("firm", 2.5, count=8), now=T0)  # what the VEN does ...
    controller.signals_changed()  # ... and tells the controller, which writes at once
    assert HemsStore(path).load_signal_book().signals == controller.signal_book.signals
    asyncio.run(controller.run(until=T0 + timedelta(hours=1)))
    assert max(i.import_kw for i in controller.telemetry) <= 2.5 + 0.02
    store.close()

    # A new process at 01:00: a fresh household, clock and book, the same file, no contact yet.
    later = T0 + timedelta(hours=1)
    for restarted in (
        Controller(contract=CONTRACT, household=household(), clock=ManualClock(later), store=HemsStore(path),
                   link=SilentLink()),
        HemsApp(CONTRACT, household(), ManualClock(later), "http://127.0.0.1:9/OpenADR2/Simple/2.0b",
                store=path, security=PLAIN_HTTP).controller,
    ):
        assert restarted.signal_book.signals == controller.signal_book.signals
        assert restarted.failsafe_state is FailsafeState.NORMAL
        assert restarted.limits_in_force(later).import_limit_kw == 2.5
        assert restarted.horizon_limits(later) == controller.horizon_limits(later)
        assert restarted.store is not None
        restarted.store.close()


def test_a_restart_during_failsafe_resumes_the_failsafe_limits(tmp_path: Path) -> None:
    path = tmp_path / "hems.db"
    clock = ManualClock(T0)
    link = FakeLink(clock)
    controller = Controller(contract=CONTRACT, household=household(), clock=clock, store=HemsStore(path), link=link)
    controller.signal_book.apply(bandwidth_event("firm", 8.0), now=T0)
    controller.signals_changed()
    asyncio.run(controller.run(until=T0 + timedelta(minutes=10)))
    link.up = False
    asyncio.run(controller.run(until=T0 + timedelta(minutes=30)))
    assert controller.failsafe_state is FailsafeState.FAILSAFE
    assert controller.store is not None
    controller.store.close()

    later = T0 + timedelta(minutes=40)
    app = HemsApp(CONTRACT, household(), ManualClock(later), "http://127.0.0.1:9/OpenADR2/Simple/2.0b", store=path,
                  security=PLAIN_HTTP)
    restarted = app.controller
    assert restarted.failsafe_state is FailsafeState.FAILSAFE
    limit = restarted.limits_in_force(later)
    assert (limit.import_limit_kw, limit.export_limit_kw) == (4.2, 3.0)  # the contract's failsafe, not 8 kW
    assert restarted.failsafe is not None and restarted.failsafe.hold_until == T0 + timedelta(minutes=12, hours=2)
    assert restarted.signal_book.signals == controller.signal_book.signals  # the 8 kW comes back after the hold
    asyncio.run(app.stop())
    assert app.store is None  # the app opened the file, so it closed it
