"""The HEMS side of the study: simulated homes under the live controller, grouped in shards.

Each :class:`SimulatedHome` is the live :class:`~hems_client.control.controller.Controller` (receding-horizon
planner, local guard every sub-step, interval meter, KPI tracker, signal book) over the live plant
(``hems_client.devices``) on a :class:`~protocol.clock.ManualClock` of its own: ``Controller.run(until)`` runs the
simulated time as fast as the CPU allows, with no sockets. What the VEN would do on the wire is done in process:
the DSO's relevant signals arrive as decoded events and go into the same ``SignalBook.apply_distribution`` the
VEN calls, followed by the controller's ``signals_changed``.

A :class:`Shard` holds a group of homes; the runner advances every shard one interval at a time, possibly in other
processes or on other machines (``feeder_twin.backends``). Homes are independent within an interval, so the
result does not depend on how they are sharded (``tests/test_feeder_study.py`` checks it).

Reports: under a performance contract the controller makes capacity needs and daily verdicts and sends them
through its reporter; here that is an :class:`InProcessReporter`, which keeps them until the runner collects
them with the interval's output (the VEN's report path, without the wire). Homes without a performance contract
get no reporter, as before: their telemetry is read from the controller's meter.

Recording: :class:`RecordingHousehold` is the plant with two additions that do not change what it does: it
records every sub-step (net power, indoor temperature) for the power flow and the time series, and it caches its
forecast per interval midpoint (the HEMS asks for 96 midpoints at every plan, 95 of them the same as a quarter-hour
before; the values are those of ``Household.forecast``, which a test compares).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from feeder_twin.owner import OwnerPlanner
from feeder_twin.scenario import HouseholdSpec, WeatherWeek
from hems_client.control.controller import Controller
from hems_client.control.optimiser_planner import OptimiserPlanner
from hems_client.control.planning import Forecast, Planner
from hems_client.devices.base_load import BaseLoad
from hems_client.devices.battery import HomeBattery
from hems_client.devices.ev import ElectricVehicle
from hems_client.devices.heat_pump import HeatPump
from hems_client.devices.household import Household, StepResult
from hems_client.devices.pv import PvSystem
from hems_client.devices.weather import Weather
from hems_client.settings import ControllerSettings
from protocol.clock import ManualClock
from protocol.oadr20b.events import DecodedEvent
from protocol.performance import CapacityNeed, PerformanceReport
from protocol.reports import ComfortStatus, Plan, Telemetry
from protocol.timebase import INTERVAL, INTERVALS_PER_DAY, floor_to_interval

HEMS_KINDS = ("owner", "optimiser")
OWNER_HORIZON_INTERVALS = 4
"""The owner planner decides the interval now running; the controller's shortest horizon is an hour."""
"""What runs in the home: the owner's device settings (uncontrolled baseline) or the HEMS's optimiser."""


class RecordingHousehold(Household):
    """The plant, recording each sub-step and caching its forecast per moment (see the module docstring)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.net_kw: list[float] = []
        self.indoor_c: list[float] = []
        self.departures: list[tuple[datetime, float, float]] = []
        """(departure, range km, battery kWh) of every departure recorded and not yet collected."""
        self._forecast_cache: dict[datetime, tuple[float, float, float]] = {}

    def step(self, now: datetime, dt_s: float, setpoints: Mapping[str, float | None]) -> StepResult:
        result = super().step(now, dt_s, setpoints)
        self.net_kw.append(result.net_import_kw)
        indoor = self.indoor_temp_c
        self.indoor_c.append(math.nan if indoor is None else indoor)
        self.departures.extend((d.at, d.range_km, d.soc_kwh) for d in result.departures)
        return result

    def _expected(self, moment: datetime) -> tuple[float, float, float]:
        known = self._forecast_cache.get(moment)
        if known is None:
            pv = 0.0 if self.pv is None else self.pv.available_kw(moment,
                                                                 self.weather.forecast_clear_sky_index(moment))
            known = (self.base_load.expected_kw(moment), pv, self.weather.outdoor_temp_c(moment))
            self._forecast_cache[moment] = known
        return known

    def forecast(self, now: datetime, count: int = INTERVALS_PER_DAY) -> Forecast:
        start = floor_to_interval(now)
        for old in [moment for moment in self._forecast_cache if moment < start]:
            del self._forecast_cache[old]
        values = [self._expected(start + (index + 0.5) * INTERVAL) for index in range(count)]
        return Forecast(start=start, base_load_kw=tuple(v[0] for v in values),
                        pv_available_kw=tuple(v[1] for v in values), outdoor_temp_c=tuple(v[2] for v in values))


class InProcessReporter:
    """The controller's reporter in the study: accepts every report at once and keeps the capacity needs and daily
    verdicts for the runner (plans, telemetry and comfort readings are not needed: the runner reads the meter)."""

    def __init__(self) -> None:
        self.needs: list[CapacityNeed] = []
        self.verdicts: list[PerformanceReport] = []

    async def send_telemetry(self, telemetry: Telemetry) -> bool:
        return True

    async def send_plan(self, plan: Plan) -> bool:
        return True

    async def send_comfort(self, status: ComfortStatus) -> bool:
        return True

    async def send_need(self, need: CapacityNeed) -> bool:
        self.needs.append(need)
        return True

    async def send_performance(self, report: PerformanceReport) -> bool:
        self.verdicts.append(report)
        return True


def build_household(spec: HouseholdSpec, weather: Weather) -> RecordingHousehold:
    """The plant of ``spec``: its devices with its parameters and seeds."""
    comfort = spec.contract.comfort
    hp = spec.heat_pump
    ev = spec.ev
    battery = spec.battery
    return RecordingHousehold(
        weather=weather,
        base_load=BaseLoad(annual_kwh=spec.annual_kwh, timezone=comfort.timezone, seed=spec.seed),
        pv=PvSystem(peak_kw=spec.pv_kwp, location=weather.location) if spec.pv_kwp > 0 else None,
        heat_pump=None if hp is None else HeatPump(
            max_electric_kw=hp.max_electric_kw, thermal_capacity_kwh_per_k=hp.thermal_capacity_kwh_per_k,
            thermal_resistance_k_per_kw=hp.thermal_resistance_k_per_kw, supply_temp_c=hp.supply_temp_c,
            internal_gains_kw=hp.internal_gains_kw, indoor_temp_c=spec.indoor_temp_c),
        ev=None if ev is None else ElectricVehicle(
            capacity_kwh=ev.capacity_kwh, charger_kw=ev.charger_kw, kwh_per_km=ev.kwh_per_km,
            departure_local=comfort.ev_departure_local, arrival_local=ev.arrival_local, timezone=comfort.timezone,
            soc_kwh=ev.soc_kwh, daily_km_mean=ev.daily_km_mean, daily_km_sd=ev.daily_km_sd, seed=spec.seed + 1),
        battery=None if battery is None else HomeBattery(capacity_kwh=battery.capacity_kwh, max_kw=battery.max_kw,
                                                         soc_kwh=battery.soc_kwh),
    )


def planner_for(hems: str, spec: HouseholdSpec) -> tuple[Planner, int]:
    """The planner and horizon (intervals) a home runs. A home without a heat pump, EV or battery has nothing to
    steer: it runs the owner planner under the HEMS strategies too (its PV is still curtailed by the guard)."""
    if hems == "owner" or not spec.flexible:
        return OwnerPlanner(), OWNER_HORIZON_INTERVALS
    if hems == "optimiser":
        return OptimiserPlanner(horizon_intervals=INTERVALS_PER_DAY), INTERVALS_PER_DAY
    raise ValueError(f"hems must be one of {HEMS_KINDS}, not {hems!r}")


@dataclass
class SimulatedHome:
    spec: HouseholdSpec
    household: RecordingHousehold
    clock: ManualClock
    controller: Controller
    reporter: InProcessReporter | None = None
    """Set under a performance contract (needs and verdicts to collect)."""


@dataclass(frozen=True)
class ShardSetup:
    """What every shard needs besides its households (picklable, sent once)."""

    week: WeatherWeek
    start: datetime
    end: datetime
    kpi_start: datetime
    """Where the KPI window starts (after the warm-up): counters the homes keep are read from here."""
    substep_s: float
    hems: str


@dataclass(frozen=True)
class IntervalOutput:
    """One interval of a shard's homes, in the order of its specs."""

    eans: tuple[str, ...]
    net_kw: np.ndarray
    """(homes, sub-steps): mean net import of each sub-step (consumption-positive)."""
    indoor_c: np.ndarray
    """(homes, sub-steps): indoor temperature at the end of each sub-step; NaN without a heat pump."""
    telemetry: np.ndarray
    """(homes, 2): the closed interval's mean import and export as the HEMS metered it (what it reports)."""
    departures: tuple[tuple[int, datetime, float, float], ...]
    """(home row, departure, range km, battery kWh) of the EVs that left in the interval."""
    needs: tuple[tuple[int, CapacityNeed], ...] = ()
    """(home row, need) of the capacity needs the HEMSs sent in the interval (performance contracts)."""
    verdicts: tuple[tuple[int, PerformanceReport], ...] = ()
    """(home row, daily verdict) of the performance reports the HEMSs sent in the interval."""


@dataclass(frozen=True)
class HomeSummary:
    """What each HEMS knows of itself at the end (its own KPI tracker and planner counters)."""

    ean: str
    replans: int
    planner_failures: int
    pv_curtailed_kwh: float
    """Since the start of the KPI window."""
    need_failures: int = 0
    """Capacity needs the HEMS could not compute (performance contracts; tried again the next interval)."""
    hems_cost_eur: dict[str, float] = field(default_factory=dict)
    """Per local day (ISO date): import cost minus export revenue, as the HEMS's KPI tracker counted it."""
    hems_degree_hours: dict[str, float] = field(default_factory=dict)
    """Per local day: degree-hours outside the comfort band, as the HEMS's KPI tracker counted them."""


class Shard:
    """A group of simulated homes advanced together, one interval per call."""

    def __init__(self, specs: Sequence[HouseholdSpec], setup: ShardSetup) -> None:
        if not 0 < setup.substep_s <= 900 or 900 % setup.substep_s:
            raise ValueError(f"substep_s must divide 900 s, not {setup.substep_s}")
        self.setup = setup
        weather = setup.week.weather(setup.start, setup.end)
        self.homes: list[SimulatedHome] = []
        for spec in specs:
            household = build_household(spec, weather)
            clock = ManualClock(setup.start)
            planner, horizon = planner_for(setup.hems, spec)
            settings = ControllerSettings(substep_s=setup.substep_s, failsafe_after_s=None, horizon_intervals=horizon)
            reporter = InProcessReporter() if spec.contract.performance is not None else None
            controller = Controller(contract=spec.contract, household=household, clock=clock, planner=planner,
                                    settings=settings, reporter=reporter)
            self.homes.append(SimulatedHome(spec, household, clock, controller, reporter))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._curtailed_at_kpi_start = [0.0] * len(self.homes)

    @property
    def eans(self) -> tuple[str, ...]:
        return tuple(home.spec.ean for home in self.homes)

    def advance(self, until: datetime, deliveries: Mapping[str, Sequence[DecodedEvent]]) -> IntervalOutput:
        """Hand each home the DSO's signals (a full distribution per home listed), then run every home to
        ``until`` (the end of the interval now running)."""
        for home in self.homes:
            events = deliveries.get(home.spec.ean)
            if events is None:
                continue
            book = home.controller.signal_book
            if book.apply_distribution(events, present_ids={e.meta.event_id for e in events}, now=home.clock.now()):
                home.controller.signals_changed()
        if self._loop is None:  # made here, in the thread that runs it (Dask runs actors in a thread of its own)
            self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._run(until))
        if until == self.setup.kpi_start:
            self._curtailed_at_kpi_start = [self._curtailed(home) for home in self.homes]
        net = np.array([home.household.net_kw for home in self.homes], dtype=np.float64)
        indoor = np.array([home.household.indoor_c for home in self.homes], dtype=np.float64)
        telemetry = np.zeros((len(self.homes), 2))
        departures = []
        needs: list[tuple[int, CapacityNeed]] = []
        verdicts: list[tuple[int, PerformanceReport]] = []
        interval_start = floor_to_interval(until - INTERVAL / 2)
        for row, home in enumerate(self.homes):
            household = home.household
            household.net_kw.clear()
            household.indoor_c.clear()
            last = home.controller.telemetry[-1] if home.controller.telemetry else None
            if last is not None and last.start == interval_start:
                telemetry[row] = (last.import_kw, last.export_kw)
            departures.extend((row, at, km, kwh) for at, km, kwh in household.departures)
            household.departures.clear()
            if home.reporter is not None:
                needs.extend((row, need) for need in home.reporter.needs)
                verdicts.extend((row, verdict) for verdict in home.reporter.verdicts)
                home.reporter.needs.clear()
                home.reporter.verdicts.clear()
        return IntervalOutput(eans=self.eans, net_kw=net, indoor_c=indoor, telemetry=telemetry,
                              departures=tuple(departures), needs=tuple(needs), verdicts=tuple(verdicts))

    async def _run(self, until: datetime) -> None:
        await asyncio.gather(*(home.controller.run(until=until) for home in self.homes))

    @staticmethod
    def _curtailed(home: SimulatedHome) -> float:
        return 0.0 if home.household.pv is None else home.household.pv.curtailed_kwh

    def summaries(self) -> list[HomeSummary]:
        out = []
        for home, before in zip(self.homes, self._curtailed_at_kpi_start, strict=True):
            planner = home.controller.planner
            days = home.controller.kpi.days()
            out.append(HomeSummary(
                ean=home.spec.ean, replans=home.controller.replans,
                planner_failures=getattr(planner, "failures", 0),
                pv_curtailed_kwh=self._curtailed(home) - before,
                need_failures=0 if home.controller.performance is None else home.controller.performance.need_failures,
                hems_cost_eur={day.day.isoformat(): day.cost_eur for day in days},
                hems_degree_hours={day.day.isoformat(): day.degree_hours_outside_band for day in days}))
        return out

    def close(self) -> None:
        if self._loop is not None:
            self._loop.close()
            self._loop = None
