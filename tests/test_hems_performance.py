"""A HEMS under a performance contract (PROFILE §9.5, §9.6): when it reports its capacity need and what the need
is, and its daily verdict, which agrees with the comfort the simulated household actually had."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from hems_client.control.controller import Controller
from hems_client.control.need_planner import NeedPlanner, NeedWindow, local_day_bounds, needs_due
from hems_client.control.signal_book import DEFAULT_PRICES, SignalBook
from hems_client.control.verdict import PerformanceTracker
from hems_client.devices import Weather, make_household
from protocol import (
    INTERVAL,
    CapacityNeed,
    ComfortStatus,
    ComfortTerms,
    HouseholdContract,
    NeedInterval,
    PerformanceReport,
    PerformanceTerms,
    Plan,
    Telemetry,
    make_ean18,
)
from protocol.clock import ManualClock
from protocol.effective import EffectiveLimit

ZONE = ZoneInfo("Europe/Amsterdam")
CONTRACT = HouseholdContract(
    connection_point_id=make_ean18("87168712000000055"), contracted_max_import_kw=17.0, contracted_max_export_kw=10.0,
    failsafe_import_kw=4.2, failsafe_export_kw=4.2, failsafe_duration_s=7200,
    comfort=ComfortTerms(ev_departure_local=time(6, 0), ev_required_range_km=150.0, timezone="Europe/Amsterdam"),
    performance=PerformanceTerms(need_deadline_local=time(13, 0)),
)


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZONE).astimezone(UTC)


DAY = date(2027, 1, 13)


# ----------------------------------------------------------------------------------------- when

@pytest.mark.parametrize(("hour", "minute", "sent", "days"), [
    (9, 0, set(), [DAY]),  # start-up: the rest of today
    (12, 0, set(), [DAY, DAY + timedelta(days=1)]),  # an hour before the deadline: tomorrow too
    (12, 0, {DAY}, [DAY + timedelta(days=1)]),
    (11, 59, {DAY}, []),
    (15, 0, {DAY, DAY + timedelta(days=1)}, []),
    (23, 45, set(), [DAY + timedelta(days=1)]),  # nothing of today is left to allocate
])
def test_needs_are_due_at_start_and_before_the_deadline(hour: int, minute: int, sent: set[date],
                                                        days: list[date]) -> None:
    due = needs_due(local(DAY, hour, minute), CONTRACT, sent)
    assert [w.day for w in due] == days
    for window in due:
        start, end = local_day_bounds(window.day, "Europe/Amsterdam")
        assert window.end == end and window.start >= start and window.start > local(DAY, hour, minute)
    assert needs_due(local(DAY, 12), CONTRACT.model_copy(update={"performance": None}), set()) == []


def test_a_dst_day_is_covered_whole() -> None:
    spring = date(2027, 3, 28)  # 23 hours in Amsterdam
    (_, window) = needs_due(local(spring - timedelta(days=1), 12, 30), CONTRACT, set())
    assert window.day == spring and (window.end - window.start) == timedelta(hours=23)


# ----------------------------------------------------------------------------------------- how much

def _need_tomorrow(*, ev: bool, tonight_kw: float) -> tuple[CapacityNeed, NeedPlanner]:
    """The need for tomorrow made at 12:30 today, -2 °C, with ``tonight_kw`` allocated for the rest of today."""
    now = local(DAY, 12, 30)
    weather = Weather.constant(start=now - timedelta(hours=1), outdoor_temp_c=-2.0)
    household = make_household(CONTRACT, weather=weather, seed=3, pv_kw=0.0, ev=ev)
    planner = NeedPlanner()
    state = household.state(now, planner.horizon_intervals)
    first = now.replace(minute=30)
    limits = [EffectiveLimit(first + k * INTERVAL, tonight_kw, 10.0, True) for k in range(planner.horizon_intervals)]
    tariff = SignalBook().tariff(start=first, count=planner.horizon_intervals, default=DEFAULT_PRICES)
    start, end = local_day_bounds(DAY + timedelta(days=1), "Europe/Amsterdam")
    need = planner.need(now, state, limits, tariff, CONTRACT, NeedWindow(DAY + timedelta(days=1), start, end))
    assert need is not None
    return need, planner


def test_the_need_for_tomorrow_includes_charging_the_ev_that_is_away_now() -> None:
    need, planner = _need_tomorrow(ev=True, tonight_kw=1.5)
    start, end = local_day_bounds(DAY + timedelta(days=1), "Europe/Amsterdam")
    assert need.start == start and need.end == end and len(need.intervals) == 96
    assert all(0.25 <= i.import_kw <= CONTRACT.contracted_max_import_kw for i in need.intervals)  # margin 0.25 kW
    assert planner.last_result is not None and planner.last_result.comfort_shortfall_kh == 0.0
    assert planner.last_result.ev_shortfall_kwh < 1e-6
    # Tonight's 1.5 kW cannot charge the car (home at 16:00 with ~19 kWh of the 27 it needs at 06:00) beside the
    # heat pump: the need carries the rest of the charging before 06:00.
    without_ev, _ = _need_tomorrow(ev=False, tonight_kw=1.5)
    morning = local(DAY + timedelta(days=1), 6)

    def energy(n: CapacityNeed) -> float:
        return sum(i.import_kw for i in n.intervals if i.start < morning) * 0.25

    assert energy(need) > energy(without_ev) + 2.5  # the battery, charged within the need's peak, helps at night
    assert sum(i.import_kw for i in need.intervals) * 0.25 > sum(i.import_kw for i in without_ev.intervals) * 0.25 + 6
    # Generous limits tonight let the car charge before midnight: tomorrow needs no more than without it.
    generous, _ = _need_tomorrow(ev=True, tonight_kw=6.0)
    assert energy(generous) < energy(without_ev) + 0.5


# ----------------------------------------------------------------------------------------- the verdict

def test_the_ev_verdict_sees_limits_below_the_need_in_its_session_and_keeps_the_range_home() -> None:
    tracker = PerformanceTracker(CONTRACT)
    departure = local(DAY, 6)
    night = [departure - k * INTERVAL for k in range(1, 9)]
    tracker.record_need(CapacityNeed(created_at=night[-1] - timedelta(hours=12), intervals=tuple(
        NeedInterval(start=s, import_kw=5.0) for s in sorted(night))))
    for s in night:
        tracker.record_interval(start=s, limit_kw=4.0 if s == night[3] else 6.0, failsafe=False, plugged=True)
    tracker.record_departure(at=departure, range_km=131.5)
    (report,) = tracker.close_days(local(DAY + timedelta(days=1), 0, 5))
    assert report.ev is not None and report.ev.shortfall_km == 18.5 and report.ev.limit_below_need
    assert report.ev.range_km is None  # no consent: the range stays in the home
    consenting = PerformanceTracker(CONTRACT.model_copy(update={"raw_data_consent": True}))
    consenting.record_interval(start=departure - INTERVAL, limit_kw=6.0, failsafe=False, plugged=True)
    consenting.record_departure(at=departure, range_km=160.0)
    (report,) = consenting.close_days(local(DAY + timedelta(days=1), 0, 5))
    assert report.ev is not None and report.ev.range_km == 160.0 and report.ev.ready and not report.ev.limit_below_need
    assert consenting.close_days(local(DAY + timedelta(days=2), 0, 5)) == []  # each day once


class Recorder:
    def __init__(self) -> None:
        self.sent: list[object] = []

    async def send_telemetry(self, telemetry: Telemetry) -> bool:
        self.sent.append(telemetry)
        return True

    async def send_plan(self, plan: Plan) -> bool:
        self.sent.append(plan)
        return True

    async def send_comfort(self, status: ComfortStatus) -> bool:
        self.sent.append(status)
        return True

    async def send_need(self, need: CapacityNeed) -> bool:
        self.sent.append(need)
        return True

    async def send_performance(self, report: PerformanceReport) -> bool:
        self.sent.append(report)
        return True


def test_the_controller_reports_needs_and_a_verdict_that_agrees_with_the_comfort_delivered() -> None:
    """22:00-01:00 local, a house that starts cold: the need of the rest of the day goes out at once, and after
    midnight the day's verdict, whose degree-hours are those the household's KPIs measured; no raw readings."""
    start = local(DAY, 22)
    weather = Weather.constant(start=start - timedelta(hours=1), outdoor_temp_c=-3.0)
    household = make_household(CONTRACT, weather=weather, seed=4, pv_kw=0.0, indoor_temp_c=17.5)
    recorder = Recorder()
    controller = Controller(contract=CONTRACT, household=household, clock=ManualClock(start), signal_book=SignalBook(),
                            reporter=recorder)
    asyncio.run(controller.run(until=start + timedelta(hours=3)))
    needs = [m for m in recorder.sent if isinstance(m, CapacityNeed)]
    assert needs and needs[0].start == start + INTERVAL and needs[0].end == local(DAY + timedelta(days=1), 0)
    (verdict,) = [m for m in recorder.sent if isinstance(m, PerformanceReport)]
    assert verdict.start == local(DAY, 0) and verdict.end == local(DAY + timedelta(days=1), 0)
    (kpi,) = [day for day in controller.kpi.days() if day.day == DAY]
    assert kpi.degree_hours_outside_band > 0.3  # the cold start shows
    assert verdict.degree_hours_outside_band == pytest.approx(kpi.degree_hours_outside_band, abs=1e-4)
    assert verdict.comfort_losses[0].start == start and verdict.comfort_losses[0].need_kw is None  # before the need
    assert all(loss.need_kw is not None for loss in verdict.comfort_losses[1:])
    assert all(loss.limit_kw == CONTRACT.contracted_max_import_kw for loss in verdict.comfort_losses)
    assert not any(loss.limit_below_need for loss in verdict.comfort_losses)
    assert not any(isinstance(m, ComfortStatus) for m in recorder.sent)
