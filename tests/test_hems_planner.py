"""Behaviour of the rule planner, the local guard and the controller loop on a simulated household.

The controller scenarios run with both planners behind the same ``Planner`` call: the rule planner and the
convex optimiser (the default)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta

import pytest

from hems_client.control.controller import Controller, IntervalMeter, OptimiserPlanner, Planner, RulePlanner
from hems_client.control.guard import guard_setpoints
from hems_client.control.signal_book import SignalBook
from hems_client.devices import BaseLoad, ElectricVehicle, HeatPump, HomeBattery, Household, PvSystem, Weather
from hems_client.kpi import KpiTracker, format_kpi_table
from protocol import (
    INTERVAL,
    BandwidthInterval,
    CapacityBandwidth,
    ComfortStatus,
    ComfortTerms,
    EffectiveLimit,
    Firmness,
    HouseholdContract,
    Plan,
    TariffInterval,
    Telemetry,
    TouTariff,
    floor_to_interval,
    make_ean18,
)
from protocol.clock import ManualClock
from protocol.oadr20b.events import DecodedEvent, EventMeta, EventStatus

T0 = datetime(2025, 1, 15, 0, 0, tzinfo=UTC)
CONTRACT = HouseholdContract(
    connection_point_id=make_ean18("87168712000000001"), contracted_max_import_kw=17.0, contracted_max_export_kw=10.0,
    failsafe_import_kw=4.2, failsafe_export_kw=4.2, failsafe_duration_s=7200,
    comfort=ComfortTerms(indoor_setpoint_c=20.0, temperature_band_k=1.0, ev_departure_local=time(7, 0),
                         ev_required_range_km=150.0, timezone="UTC"),
)


def household(*, outdoor_c: float = -5.0, pv_kw: float = 0.0, seed: int = 1, ev_soc: float = 5.0,
              battery_soc: float = 5.0, start: datetime = T0) -> Household:
    weather = Weather.constant(start=start, outdoor_temp_c=outdoor_c)
    return Household(
        weather=weather,
        base_load=BaseLoad(annual_kwh=3500.0, timezone="UTC", seed=seed),
        pv=PvSystem(peak_kw=pv_kw) if pv_kw else None,
        heat_pump=HeatPump(indoor_temp_c=20.0),
        ev=ElectricVehicle(soc_kwh=ev_soc, departure_local=time(7, 0), arrival_local=time(17, 0), timezone="UTC",
                           seed=seed),
        battery=HomeBattery(soc_kwh=battery_soc),
    )


def limit_event(event_id: str, start: datetime, count: int, import_kw: float, export_kw: float = 10.0,
                modification: int = 0) -> DecodedEvent:
    payload = CapacityBandwidth(firmness=Firmness.FIRM, intervals=tuple(
        BandwidthInterval(start=start + i * INTERVAL, import_limit_kw=import_kw, export_limit_kw=export_kw)
        for i in range(count)))
    return DecodedEvent(EventMeta(event_id, modification, EventStatus.FAR, T0), payload)


def tariff_event(start: datetime, prices: list[float]) -> DecodedEvent:
    payload = TouTariff(intervals=tuple(
        TariffInterval(start=start + i * INTERVAL, import_price_eur_per_kwh=p, export_price_eur_per_kwh=0.05)
        for i, p in enumerate(prices)))
    return DecodedEvent(EventMeta("tou", 0, EventStatus.FAR, T0), payload)


def evening_tou() -> DecodedEvent:
    """Two days of prices: 0.15 at night (00-06), 0.40 in the evening peak (16-21), 0.25 otherwise."""
    prices = []
    for index in range(2 * 96):
        hour = (index % 96) / 4
        prices.append(0.15 if hour < 6 else 0.40 if 16 <= hour < 21 else 0.25)
    return tariff_event(T0, prices)


def run(controller: Controller, hours: float) -> None:
    asyncio.run(controller.run(until=controller.clock.now() + timedelta(hours=hours)))


PLANNERS = pytest.mark.parametrize("make_planner", [RulePlanner, OptimiserPlanner], ids=["rule", "optimiser"])


@PLANNERS
def test_cold_day_with_3kw_evening_limit_is_kept_with_comfort_and_ev_ready(make_planner: type[Planner]) -> None:
    """-5 °C, a 3 kW limit from 16:00 to 21:00, the EV home at 17:00 needing 27 kWh by 07:00."""
    book = SignalBook()
    book.apply(limit_event("evening", T0 + timedelta(hours=16), 20, 3.0), now=T0)
    book.apply(evening_tou(), now=T0)
    home = household()
    controller = Controller(contract=CONTRACT, household=home, clock=ManualClock(T0), signal_book=book,
                            planner=make_planner())
    run(controller, 32)  # through the evening, the night and the next morning's departure
    over = [(i.start, round(i.import_kw, 2)) for i in controller.telemetry
            if i.import_kw > controller.limits_applied[i.start].import_limit_kw + 0.01]
    assert over == []
    evening = [i for i in controller.telemetry if T0 + timedelta(hours=16) <= i.start < T0 + timedelta(hours=21)]
    assert len(evening) == 20 and max(i.import_kw for i in evening) <= 3.0 + 0.01
    day = controller.kpi.days()
    assert sum(d.degree_hours_outside_band for d in day) < 0.5
    departures = home.ev.departures
    assert departures and departures[-1].range_km >= 150.0 - 0.5
    assert day[1].ev_ready is True and day[0].intervals_over_limit == 0
    assert day[0].min_import_limit_kw == 3.0
    text = format_kpi_table([("house", d) for d in day])
    assert "2025-01-15" in text and "3.00" in text


@PLANNERS
def test_impossible_limit_is_met_as_closely_as_possible_and_reported(make_planner: type[Planner]) -> None:
    book = SignalBook()
    book.apply(limit_event("tiny", T0, 8, 0.05), now=T0)
    home = household(battery_soc=0.0)
    controller = Controller(contract=CONTRACT, household=home, clock=ManualClock(T0), signal_book=book,
                            planner=make_planner())
    run(controller, 1)
    # The plan in force says the limit is broken and why, whichever planner made it.
    assert controller.decision is not None
    assert any("import limit" in note for note in controller.decision.notes), \
        controller.decision.notes
    run(controller, 1)
    assert controller.telemetry, "no interval metered"
    # Only the base load (and nothing flexible) is drawn while the limit cannot be met.
    first_hour = controller.telemetry[:4]
    base = [home.base_load.expected_kw(i.start) for i in first_hour]
    assert all(i.import_kw <= 1.6 * b + 0.05 for i, b in zip(first_hour, base, strict=True))
    now = T0 + timedelta(hours=2)
    limits = [EffectiveLimit(start=now + k * INTERVAL, import_limit_kw=0.05, export_limit_kw=10.0,
                             constrained_by_dso=True) for k in range(96)]
    decision = RulePlanner().plan(now, home.state(now), limits, SignalBook().tariff(start=now, count=96), CONTRACT)
    assert any("import limit unreachable" in note for note in decision.notes)
    assert any("comfort" in note for note in decision.notes)


@PLANNERS
def test_export_above_the_limit_goes_to_the_battery_then_pv_is_curtailed(make_planner: type[Planner]) -> None:
    summer = datetime(2025, 6, 21, 10, 0, tzinfo=UTC)
    book = SignalBook()
    book.apply(limit_event("export", summer, 12, 17.0, export_kw=1.0), now=summer)
    home = household(outdoor_c=22.0, pv_kw=8.0, battery_soc=8.0, ev_soc=59.0, start=summer)
    controller = Controller(contract=CONTRACT, household=home, clock=ManualClock(summer), signal_book=book,
                            planner=make_planner())
    run(controller, 3)
    assert max(i.export_kw for i in controller.telemetry) <= 1.0 + 0.01
    assert home.battery.soc_kwh == pytest.approx(10.0, abs=0.01)
    assert home.pv.curtailed_kwh > 1.0


def test_ev_charges_in_the_cheapest_intervals_before_departure() -> None:
    home = household(ev_soc=10.0)
    start = T0 + timedelta(hours=18)
    home.ev.step(None, 1, home.weather.conditions(start))  # plug in (home after 17:00)
    prices = [0.30] * 96
    for index in range(24, 32):  # 00:00-02:00 is cheapest
        prices[index] = 0.10
    book = SignalBook()
    book.apply(tariff_event(start, prices), now=start)
    decision = RulePlanner().plan(start, home.state(start), book.effective_limits(CONTRACT, start=start, count=96),
                                  book.tariff(start=start, count=96), CONTRACT)
    ev = decision.schedule["ev"]
    charging = [k for k, value in enumerate(ev) if value > 1e-6]
    assert set(charging) <= set(range(24, 32))  # 17 kWh fit into the cheap window (8 x 2.75 kWh)
    assert sum(ev) * 0.25 * 0.92 == pytest.approx(27.0 - 10.0, abs=0.01)
    # Needing more than the cheap window holds, the rest goes to the next cheapest (earliest) intervals,
    # and nothing after the 07:00 departure.
    home.ev.soc_kwh = 0.0
    decision = RulePlanner().plan(start, home.state(start), book.effective_limits(CONTRACT, start=start, count=96),
                                  book.tariff(start=start, count=96), CONTRACT)
    ev = decision.schedule["ev"]
    assert all(value == pytest.approx(11.0) for value in ev[24:32])
    assert sum(ev) * 0.25 * 0.92 == pytest.approx(27.0, abs=0.01)
    assert ev[0] > 0 and all(value == 0 for value in ev[52:])


def test_heat_pump_preheats_when_cheap_and_coasts_when_expensive() -> None:
    home = household(outdoor_c=0.0)
    prices = [0.10] * 16 + [0.25] * 16 + [0.40] * 64
    book = SignalBook()
    book.apply(tariff_event(T0, prices), now=T0)
    decision = RulePlanner().plan(T0, home.state(T0), book.effective_limits(CONTRACT, start=T0, count=96),
                                  book.tariff(start=T0, count=96), CONTRACT)
    hp = decision.schedule["heat_pump"]
    assert sum(hp[:8]) > sum(hp[40:48])
    assert decision.plan.intervals[0].start == T0 and len(decision.plan.intervals) == 96


def test_guard_sheds_battery_then_ev_then_heat_pump() -> None:
    devices = (BaseLoad(), PvSystem(), HomeBattery(), ElectricVehicle(), HeatPump())
    ranges = {"base_load": (0.5, 0.5), "pv": (0.0, 0.0), "battery": (-5.0, 5.0), "ev": (0.0, 11.0),
              "heat_pump": (0.0, 8.0)}
    wanted = {"battery": 2.0, "ev": 6.0, "heat_pump": 3.0}
    result = guard_setpoints(devices=devices, setpoints=wanted, ranges=ranges, uncontrolled_kw=0.5,
                             import_limit_kw=4.0, export_limit_kw=5.0, margin_kw=0.0)
    # 11.5 kW wanted against 4 kW: the battery goes to full discharge (-7), then the EV loses 0.5.
    assert result.setpoints["battery"] == -5.0 and result.setpoints["ev"] == pytest.approx(5.5)
    assert result.setpoints["heat_pump"] == 3.0 and result.expected_net_import_kw == pytest.approx(4.0)
    empty = dict(ranges, battery=(0.0, 5.0))
    result = guard_setpoints(devices=devices, setpoints=wanted, ranges=empty, uncontrolled_kw=0.5,
                             import_limit_kw=1.0, export_limit_kw=5.0, margin_kw=0.0)
    assert result.setpoints == {"battery": 0.0, "ev": 0.0, "heat_pump": pytest.approx(0.5), "pv": None}
    result = guard_setpoints(devices=devices, setpoints={}, ranges=empty, uncontrolled_kw=2.0,
                             import_limit_kw=1.0, export_limit_kw=5.0, margin_kw=0.0)
    assert result.unresolved_kw == pytest.approx(1.0)


def test_guard_handles_export_with_battery_then_pv() -> None:
    devices = (BaseLoad(), PvSystem(), HomeBattery())
    ranges = {"base_load": (0.3, 0.3), "pv": (-6.0, 0.0), "battery": (-5.0, 2.0)}
    result = guard_setpoints(devices=devices, setpoints={}, ranges=ranges, uncontrolled_kw=0.3,
                             import_limit_kw=17.0, export_limit_kw=1.0, margin_kw=0.0)
    assert result.setpoints["battery"] == pytest.approx(2.0)
    assert result.setpoints["pv"] == pytest.approx(-3.3)  # 0.3 + 2.0 - 3.3 = -1.0
    assert result.expected_net_import_kw == pytest.approx(-1.0)


class FlakyReporter:
    """Fails the first ``failures`` telemetry sends, then accepts everything."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.telemetry: list[Telemetry] = []
        self.plans: list[Plan] = []
        self.comfort: list[ComfortStatus] = []

    async def send_telemetry(self, telemetry: Telemetry) -> bool:
        if self.failures > 0:
            self.failures -= 1
            return False
        self.telemetry.append(telemetry)
        return True

    async def send_plan(self, plan: Plan) -> bool:
        self.plans.append(plan)
        return True

    async def send_comfort(self, status: ComfortStatus) -> bool:
        self.comfort.append(status)
        return True


def test_controller_reports_and_resends_telemetry_after_a_lost_link() -> None:
    reporter = FlakyReporter(failures=2)
    controller = Controller(contract=CONTRACT, household=household(), clock=ManualClock(T0),
                            signal_book=SignalBook(), reporter=reporter)
    run(controller, 1)
    sent = [[i.start for i in t.intervals] for t in reporter.telemetry]
    # PROFILE §9.3.3: two lost; when contact is back the interval that just ended goes at once, the two missed
    # ones (oldest first, in one report) after a random wait of at most 300 s, before the next interval ends.
    assert sent == [[T0 + 2 * INTERVAL], [T0, T0 + INTERVAL], [T0 + 3 * INTERVAL]]
    assert reporter.comfort == [] and reporter.plans  # no raw comfort readings without the household's consent
    assert controller.send_failures == 2


def test_raw_comfort_readings_go_out_only_under_consent() -> None:
    reporter = FlakyReporter(failures=0)
    controller = Controller(contract=CONTRACT.model_copy(update={"raw_data_consent": True}), household=household(),
                            clock=ManualClock(T0), signal_book=SignalBook(), reporter=reporter)
    run(controller, 1)
    assert len(reporter.comfort) == 4


def test_controller_replans_when_signals_change() -> None:
    """A new limit in mid-interval is planned for at the next sub-step, not at the next interval boundary."""
    async def scenario() -> None:
        clock = ManualClock(T0)
        book = SignalBook()
        book.apply(tariff_event(T0, [0.10] * 4 + [0.40] * 188), now=T0)  # the first hour is cheap
        reporter = FlakyReporter(failures=0)
        controller = Controller(contract=CONTRACT, household=household(), clock=clock, signal_book=book,
                                reporter=reporter)
        await controller.run(until=T0 + timedelta(minutes=5))
        first, replans = controller.decision, controller.replans
        assert first is not None and max(i.net_import_kw for i in first.plan.intervals[:4]) > 2.0  # EV charging
        book.apply(limit_event("new", T0, 4, 1.0), now=clock.now())
        controller.signals_changed()
        await controller.run(until=T0 + timedelta(minutes=5, seconds=10))  # one sub-step, no boundary
        assert controller.replans == replans + 1
        decision = controller.decision
        assert decision is not None and decision.created_at == T0 + timedelta(minutes=5, seconds=10)
        assert all(i.net_import_kw <= 1.0 + 1e-3 for i in decision.plan.intervals[:4])
        await controller.run(until=T0 + timedelta(hours=1))
        assert all(i.import_kw <= 1.0 + 0.01 for i in controller.telemetry[1:])
        # PROFILE §9.4.1: at most one plan per 15-minute interval, however often it re-planned; the change made
        # in the first interval went with the second interval's plan.
        made = [floor_to_interval(plan.created_at) for plan in reporter.plans]
        assert len(made) == len(set(made)) >= 2 and made[:2] == [T0, T0 + INTERVAL]

    asyncio.run(scenario())


def test_interval_meter_splits_steps_at_boundaries() -> None:
    meter = IntervalMeter()
    meter.add(T0 + timedelta(minutes=10), T0 + timedelta(minutes=20), import_kw=2.0, export_kw=0.0)
    meter.add(T0 + timedelta(minutes=20), T0 + timedelta(minutes=30), import_kw=0.0, export_kw=1.0)
    assert meter.close_before(T0 + timedelta(minutes=14)) == []
    (first,) = meter.close_before(T0 + INTERVAL)
    assert first.start == T0 and first.import_kw == pytest.approx(2.0)  # metered 5 of 15 minutes
    (second,) = meter.close_before(T0 + 2 * INTERVAL)
    assert second.import_kw == pytest.approx(2.0 / 3) and second.export_kw == pytest.approx(2.0 / 3)


def test_kpi_tracker_counts_limit_comfort_ev_and_cost() -> None:
    kpi = KpiTracker(timezone="UTC")
    kpi.record_interval(start=T0, import_kw=4.0, export_kw=0.0, import_limit_kw=3.0, import_price_eur_per_kwh=0.4,
                        export_price_eur_per_kwh=0.1)
    kpi.record_interval(start=T0 + INTERVAL, import_kw=0.0, export_kw=2.0, import_limit_kw=17.0,
                        import_price_eur_per_kwh=0.4, export_price_eur_per_kwh=0.1)
    kpi.record_comfort(at=T0, dt_s=3600, indoor_temp_c=18.5, comfort_min_c=19.0, comfort_max_c=21.0)
    kpi.record_departure(at=T0 + timedelta(hours=7), range_km=120.0, required_range_km=150.0)
    (day,) = kpi.days()
    assert (day.peak_import_kw, day.limit_at_peak_kw, day.min_import_limit_kw) == (4.0, 3.0, 3.0)
    assert day.intervals_over_limit == 1 and day.energy_over_limit_kwh == pytest.approx(0.25)
    assert day.cost_eur == pytest.approx(4.0 * 0.25 * 0.4 - 2.0 * 0.25 * 0.1)
    assert day.degree_hours_outside_band == pytest.approx(0.5)
    assert day.ev_ready is False and day.as_row()["ev_ready"] is False


# ------------------------------------------------------------------------------------ a bad value never stops the loop


class FailingPlanner:
    """The rule planner, except that every call in ``failing`` (call numbers from 0) raises a ValueError."""

    def __init__(self, failing: set[int]) -> None:
        self.failing = failing
        self.calls = 0
        self.inner = RulePlanner()

    def plan(self, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        call, self.calls = self.calls, self.calls + 1
        if call in self.failing:
            raise ValueError("indoor_temp_c must be finite, not nan")
        return self.inner.plan(*args, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("failing", [{0}, {2, 3}], ids=["first-plan", "later-plans"])
def test_a_planner_that_raises_does_not_stop_the_loop_and_the_limit_still_holds(failing: set[int]) -> None:
    book = SignalBook()
    book.apply(limit_event("cap", T0, 8, 2.0), now=T0)
    controller = Controller(contract=CONTRACT, household=household(), clock=ManualClock(T0), signal_book=book,
                            planner=FailingPlanner(failing))
    run(controller, 2)
    assert len(controller.telemetry) == 8  # the loop ran to the end
    assert controller.plan_failures == len(failing)
    assert all(i.import_kw <= 2.0 + 0.02 for i in controller.telemetry)  # the guard kept the limit
    assert controller.kpi.days()[0].intervals == 8


def test_a_failed_plan_is_noted_and_not_sent_and_the_next_one_is() -> None:
    reporter = FlakyReporter(failures=0)
    controller = Controller(contract=CONTRACT, household=household(), clock=ManualClock(T0),
                            signal_book=SignalBook(), reporter=reporter, planner=FailingPlanner({0}))

    async def scenario() -> None:
        task = asyncio.create_task(controller.run(until=T0 + timedelta(minutes=20)))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert controller.decision is not None
        assert controller.decision.notes[0].startswith("planning failed (ValueError: indoor_temp_c must be finite")
        await task

    asyncio.run(scenario())
    assert reporter.plans and all(plan.created_at >= T0 + INTERVAL for plan in reporter.plans)


def test_a_limit_that_cannot_be_computed_falls_back_to_the_failsafe_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    controller = Controller(contract=CONTRACT, household=household(), clock=ManualClock(T0), signal_book=SignalBook())

    def broken(*args: object, **kwargs: object) -> list[EffectiveLimit]:
        raise ValueError("import_limit_kw must be finite, not nan")

    monkeypatch.setattr(controller.signal_book, "effective_limits", broken)
    run(controller, 1)
    assert len(controller.telemetry) == 4 and controller.plan_failures == controller.replans >= 4
    assert controller.limits_in_force(T0).import_limit_kw == 4.2  # the contract's failsafe limit
    assert all(i.import_kw <= 4.2 + 0.02 for i in controller.telemetry)
