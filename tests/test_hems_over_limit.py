"""Over the limit only where it cannot be helped, and always with a reason: the guard's aim at a 0 kW limit,
the attribution table row by row, attribution in the controller, and the cold week of issue 12."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from types import ModuleType

import pytest

from hems_client.control.controller import Controller
from hems_client.control.failsafe import FailsafeState
from hems_client.control.guard import guard_aims_kw
from hems_client.control.over_limit import METER_RESOLUTION_KW, IntervalLog, OverLimitReason, attribute
from hems_client.control.signal_book import SignalBook
from hems_client.devices import BaseLoad, HeatPump, HomeBattery, Household, Weather
from hems_client.devices.base import Conditions
from hems_client.kpi import KpiTracker
from hems_client.settings import ControllerSettings
from protocol import (
    INTERVAL,
    BandwidthInterval,
    CapacityBandwidth,
    ComfortTerms,
    Firmness,
    HouseholdContract,
    make_ean18,
)
from protocol.clock import ManualClock
from protocol.oadr20b.events import DecodedEvent, EventMeta, EventStatus

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2025, 1, 15, 0, 0, tzinfo=UTC)
CONTRACT = HouseholdContract(
    connection_point_id=make_ean18("87168712000000005"), contracted_max_import_kw=17.0,
    contracted_max_export_kw=10.0, failsafe_import_kw=4.2, failsafe_export_kw=4.2, failsafe_duration_s=7200,
    comfort=ComfortTerms(indoor_setpoint_c=20.0, temperature_band_k=1.0, ev_departure_local=time(6, 0),
                         ev_required_range_km=150.0, timezone="UTC"),
)
R = OverLimitReason


def zero_limit(hours: int, *, start: datetime = T0) -> DecodedEvent:
    payload = CapacityBandwidth(firmness=Firmness.FIRM, intervals=tuple(
        BandwidthInterval(start=start + k * INTERVAL, import_limit_kw=0.0, export_limit_kw=5.0)
        for k in range(hours * 4)))
    return DecodedEvent(EventMeta("zero", 0, EventStatus.FAR, T0), payload)


def home(*, seed: int, battery_soc_kwh: float, base_load: BaseLoad | None = None) -> Household:
    return Household(weather=Weather.constant(start=T0, outdoor_temp_c=-5.0),
                     base_load=base_load or BaseLoad(annual_kwh=4000.0, timezone="UTC", seed=seed, noise_sigma=0.5),
                     heat_pump=HeatPump(indoor_temp_c=20.0), battery=HomeBattery(soc_kwh=battery_soc_kwh))


def exact_kpi() -> KpiTracker:
    return KpiTracker(timezone="UTC", tolerance_kw=0.0)  # every interval over its limit at all


# ------------------------------------------------------------------------------------------- the guard's aim


def test_the_guard_aims_below_zero_at_a_zero_limit_and_halfway_when_both_limits_are_zero() -> None:
    assert guard_aims_kw(import_limit_kw=3.0, export_limit_kw=5.0, margin_kw=0.1) == pytest.approx((2.9, -4.9))
    # Import once drawn cannot be undone: at a 0 kW budget (or below) the aim is a small export.
    assert guard_aims_kw(import_limit_kw=0.0, export_limit_kw=5.0, margin_kw=0.1) == pytest.approx((-0.1, -4.9))
    assert guard_aims_kw(import_limit_kw=-0.4, export_limit_kw=5.0, margin_kw=0.1) == pytest.approx((-0.1, -4.9))
    assert guard_aims_kw(import_limit_kw=0.0, export_limit_kw=0.0, margin_kw=0.1) == (0.0, 0.0)
    assert guard_aims_kw(import_limit_kw=2.0, export_limit_kw=5.0, margin_kw=0.0,
                         export_margin_kw=0.2) == pytest.approx((2.0, -4.8))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_at_a_zero_limit_with_battery_room_no_interval_goes_measurably_over(seed: int) -> None:
    """Four hours at 0 kW, a heat pump at -5 °C and a noisy base load (sigma 0.5) on a full battery: the guard
    used to aim at net zero and leave 0.01-0.025 kW of mean import in many intervals (base-load noise seen a
    sub-step late); now no interval's mean reaches a meter's 1 Wh."""
    book = SignalBook()
    book.apply(zero_limit(4), now=T0)
    household = home(seed=seed, battery_soc_kwh=10.0)
    controller = Controller(contract=CONTRACT, household=household, clock=ManualClock(T0), signal_book=book,
                            kpi=exact_kpi())
    asyncio.run(controller.run(until=T0 + timedelta(hours=4)))
    assert len(controller.telemetry) == 16
    assert max(i.import_kw for i in controller.telemetry) < METER_RESOLUTION_KW
    assert household.battery is not None and household.battery.soc_kwh > 2.0  # there was room all along
    reasons = {o.reason for day in controller.kpi.days() for o in day.over_limit}
    assert reasons <= {R.BELOW_METER_RESOLUTION}


# ------------------------------------------------------------------------------------------- attribution


def log(**fields: object) -> IntervalLog:
    entry = IntervalLog(seconds=900.0, uncontrolled_kws=0.5 * 900, forecast_base_kw=0.5)
    for name, value in fields.items():
        setattr(entry, name, value)
    return entry


@pytest.mark.parametrize(("entry", "import_kw", "earlier_kwh", "reason", "says"), [
    (log(unshed_kws=900.0), 0.003, 0.0, R.BELOW_METER_RESOLUTION, "0.75 Wh over"),
    (log(limit_changes=1, unshed_kws=900.0), 0.5, 0.0, R.LIMIT_TIGHTENED, "the limit fell 1 time(s)"),
    (log(planned_over_kw=0.4, planned_note="import limit 0.00 kW exceeded: heat pump 0.40 kW ran because",
         comfort_forced=True), 0.4, 0.0, R.COMFORT_RULE, "to keep a comfort or EV term"),
    (log(uncontrolled_kws=0.8 * 900, unshed_kws=0.2 * 900), 0.2, 0.0, R.BASE_LOAD_UNDER_FORECAST,
     "the base load was 0.80 kW against 0.50 kW forecast"),
    (log(planned_over_kw=0.3, planned_note="the base load 0.50 kW alone exceeds it"), 0.3, 0.2,
     R.BASE_LOAD_UNDER_FORECAST, "ran 0.20 kWh above its forecast, more than the 0.075 kWh over"),
    (log(planned_over_kw=0.3, planned_note="the base load 0.50 kW alone exceeds it"), 0.3, 0.05,
     R.UNSHEDDABLE_LOAD_PLANNED, "(the plan: the base load 0.50 kW alone exceeds it)"),
    (log(unshed_kws=0.1 * 900), 0.1, 0.0, R.PHYSICALLY_UNAVOIDABLE, "no flexible device had room left for 0.100"),
    (log(), 0.05, 0.0, R.GUARD_LAG, "the devices had room throughout"),
], ids=lambda value: value.value if isinstance(value, R) else None)
def test_each_row_of_the_attribution_table(entry: IntervalLog, import_kw: float, earlier_kwh: float,
                                           reason: OverLimitReason, says: str) -> None:
    got, detail = attribute(entry, import_kw=import_kw, limit_kw=0.0, earlier_excess_kwh=earlier_kwh, earlier_h=6)
    assert got is reason and says in detail, detail
    assert reason.avoidable is (reason is R.GUARD_LAG)


class UnderForecastBaseLoad(BaseLoad):
    """Draws 1.6 times the profile its forecast says."""

    def step(self, setpoint_kw: float | None, dt_s: float, conditions: Conditions) -> float:
        super().step(setpoint_kw, dt_s, conditions)
        assert self.last_kw is not None
        self.last_kw *= 1.6
        return self.last_kw


def test_the_controller_attributes_an_under_forecast_base_load_on_an_emptying_battery() -> None:
    book = SignalBook()
    book.apply(zero_limit(3), now=T0)
    base = UnderForecastBaseLoad(annual_kwh=4000.0, timezone="UTC", seed=1, noise_sigma=0.1)
    controller = Controller(contract=CONTRACT, household=home(seed=1, battery_soc_kwh=2.5, base_load=base),
                            clock=ManualClock(T0), signal_book=book, kpi=exact_kpi())
    asyncio.run(controller.run(until=T0 + timedelta(hours=3)))
    over = [o for day in controller.kpi.days() for o in day.over_limit if o.reason is not R.BELOW_METER_RESOLUTION]
    assert over, "the scenario should run the battery empty"
    assert {o.reason for o in over} == {R.BASE_LOAD_UNDER_FORECAST}
    assert all("forecast" in o.detail for o in over)


def test_a_failsafe_inside_an_interval_is_attributed_to_the_tightened_limit() -> None:
    class Link:
        last_attempt_at = None

        def __init__(self) -> None:
            self.last_contact_at: datetime | None = T0

    book = SignalBook()
    controller = Controller(contract=CONTRACT, household=home(seed=2, battery_soc_kwh=0.5), clock=ManualClock(T0),
                            signal_book=book, link=Link(), kpi=exact_kpi(),
                            settings=ControllerSettings(failsafe_after_s=600))
    # A cold house: the heat pump runs hard (no DSO limit), until the failsafe's 4.2 kW comes at 00:10.
    controller.household.heat_pump.indoor_temp_c = 17.0  # type: ignore[union-attr]
    asyncio.run(controller.run(until=T0 + 2 * INTERVAL))
    assert controller.failsafe_state is FailsafeState.FAILSAFE
    (day,) = controller.kpi.days()
    (first,) = [o for o in day.over_limit if o.start == T0]
    assert first.reason is R.LIMIT_TIGHTENED and first.import_limit_kw == 4.2 and first.import_kw > 4.2 + 0.1


# ------------------------------------------------------------------------------------------- the cold week


def cold_week_module() -> ModuleType:
    name = "examples_cold_week"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / "cold_week.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.mark.slow
def test_the_cold_week_attributes_every_interval_over_its_limit() -> None:
    """Issue 12's cold week (7 days, -8…+2 °C, heat pump, EV, battery, PV, evening limits 0-3 kW): every interval
    whose mean import exceeds its limit at all has a reason, none of them "the devices had room", and the
    household keeps its comfort and its EV range."""
    week = cold_week_module().run_cold_week(days=7)
    controller, household = week.controller, week.household
    days = controller.kpi.days()
    assert len(days) == 7 and sum(day.intervals for day in days) == 7 * 96
    over = [o for day in days for o in day.over_limit]
    limits = {i.start: controller.limits_applied[i.start].import_limit_kw for i in controller.telemetry}
    assert {o.start for o in over} == {i.start for i in controller.telemetry if i.import_kw > limits[i.start]}
    assert all(not o.reason.avoidable and o.detail for o in over), [(o.start, o.reason) for o in over]
    # Measurably over (the KPI's 0.01 kW): rare, and never where the devices had room.
    measurable = [o for o in over if o.import_kw > o.import_limit_kw + 0.01]
    assert len(measurable) <= 2, measurable
    assert all(o.reason in (R.BASE_LOAD_UNDER_FORECAST, R.PHYSICALLY_UNAVOIDABLE, R.UNSHEDDABLE_LOAD_PLANNED)
               for o in measurable)
    assert sum(day.degree_hours_outside_band for day in days) == 0.0
    assert household.ev is not None and len(household.ev.departures) == 7
    assert all(departure.range_km >= 150.0 for departure in household.ev.departures)
