"""A simulated household: its devices and the weather, stepped together; measured net power out.

``Household`` is the plant. ``state()`` is what the HEMS may know for planning: device states as measured and
forecasts (the base-load profile, PV from the day's mean cloudiness, the temperature forecast), never the
seeded noise the plant will actually produce.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time

import numpy as np

from hems_client.control.planning import BatteryState, EvState, Forecast, HeatPumpState, HouseholdState
from hems_client.devices.base import Device
from hems_client.devices.base_load import BaseLoad
from hems_client.devices.battery import HomeBattery
from hems_client.devices.ev import ElectricVehicle, EvDeparture, next_local_time
from hems_client.devices.heat_pump import HeatPump
from hems_client.devices.pv import PvSystem
from hems_client.devices.weather import Weather
from protocol.contract import HouseholdContract
from protocol.timebase import INTERVAL, INTERVALS_PER_DAY, floor_to_interval


@dataclass(frozen=True)
class StepResult:
    start: datetime
    dt_s: float
    power_kw: Mapping[str, float]
    """Measured mean power per device over the step (consumption-positive)."""
    net_import_kw: float
    departures: tuple[EvDeparture, ...] = ()

    @property
    def import_kw(self) -> float:
        return max(self.net_import_kw, 0.0)

    @property
    def export_kw(self) -> float:
        return max(-self.net_import_kw, 0.0)


class Household:
    def __init__(
        self,
        *,
        weather: Weather,
        base_load: BaseLoad,
        pv: PvSystem | None = None,
        heat_pump: HeatPump | None = None,
        ev: ElectricVehicle | None = None,
        battery: HomeBattery | None = None,
    ) -> None:
        self.weather = weather
        self.base_load = base_load
        self.pv = pv
        self.heat_pump = heat_pump
        self.ev = ev
        self.battery = battery
        devices: list[Device] = [d for d in (base_load, pv, heat_pump, ev, battery) if d is not None]
        names = [device.name for device in devices]
        if len(set(names)) != len(names):
            raise ValueError(f"device names must be unique, not {names}")
        self.devices: tuple[Device, ...] = tuple(devices)
        self._departures_seen = 0

    @property
    def indoor_temp_c(self) -> float | None:
        return None if self.heat_pump is None else self.heat_pump.indoor_temp_c

    def power_ranges_kw(self, now: datetime, dt_s: float) -> dict[str, tuple[float, float]]:
        conditions = self.weather.conditions(now)
        return {device.name: device.power_range_kw(conditions, dt_s) for device in self.devices}

    def step(self, now: datetime, dt_s: float, setpoints: Mapping[str, float | None]) -> StepResult:
        """Run every device for ``dt_s`` seconds from ``now``; setpoints are keyed by device name."""
        if not dt_s > 0:
            raise ValueError(f"dt_s must be > 0, not {dt_s}")
        conditions = self.weather.conditions(now)
        powers = {device.name: device.step(setpoints.get(device.name), dt_s, conditions) for device in self.devices}
        departures: tuple[EvDeparture, ...] = ()
        if self.ev is not None and len(self.ev.departures) > self._departures_seen:
            departures = tuple(self.ev.departures[self._departures_seen:])
            self._departures_seen = len(self.ev.departures)
        return StepResult(start=now, dt_s=dt_s, power_kw=powers, net_import_kw=sum(powers.values()),
                          departures=departures)

    def forecast(self, now: datetime, count: int = INTERVALS_PER_DAY) -> Forecast:
        start = floor_to_interval(now)
        middles = [start + (index + 0.5) * INTERVAL for index in range(count)]
        base = tuple(self.base_load.expected_kw(moment) for moment in middles)
        if self.pv is None:
            pv = (0.0,) * count
        else:
            pv = tuple(self.pv.available_kw(moment, self.weather.forecast_clear_sky_index(moment))
                       for moment in middles)
        temps = tuple(self.weather.outdoor_temp_c(moment) for moment in middles)
        return Forecast(start=start, base_load_kw=base, pv_available_kw=pv, outdoor_temp_c=temps)

    def state(self, now: datetime, count: int = INTERVALS_PER_DAY) -> HouseholdState:
        heat_pump = battery = ev = None
        if self.heat_pump is not None:
            hp = self.heat_pump
            heat_pump = HeatPumpState(
                name=hp.name, indoor_temp_c=hp.indoor_temp_c, max_electric_kw=hp.max_electric_kw,
                thermal_capacity_kwh_per_k=hp.thermal_capacity_kwh_per_k,
                thermal_resistance_k_per_kw=hp.thermal_resistance_k_per_kw, supply_temp_c=hp.supply_temp_c,
                internal_gains_kw=hp.internal_gains_kw,
            )
        if self.battery is not None:
            b = self.battery
            battery = BatteryState(name=b.name, soc_kwh=b.soc_kwh, capacity_kwh=b.capacity_kwh, max_kw=b.max_kw,
                                   efficiency=b.efficiency, min_soc_kwh=b.min_soc_kwh)
        if self.ev is not None:
            car = self.ev
            departure = car.next_departure(now)
            arrival = car.next_arrival(now)
            ev = EvState(name=car.name, plugged_in=bool(car.plugged_in), soc_kwh=car.soc_kwh,
                         capacity_kwh=car.capacity_kwh, charger_kw=car.charger_kw,
                         charge_efficiency=car.charge_efficiency, kwh_per_km=car.kwh_per_km, departure=departure,
                         expected_arrival=arrival,
                         expected_arrival_soc_kwh=None if arrival is None
                         else max(0.0, car.soc_kwh - car.expected_trip_kwh),
                         departure_after_arrival=None if arrival is None
                         else next_local_time(arrival, car.departure_local, car.timezone))
        return HouseholdState(now=now, forecast=self.forecast(now, count),
                              pv_name=None if self.pv is None else self.pv.name,
                              heat_pump=heat_pump, battery=battery, ev=ev)


def make_household(
    contract: HouseholdContract,
    *,
    weather: Weather,
    seed: int,
    annual_kwh: float | None = None,
    pv_kw: float | None = None,
    heat_pump: bool = True,
    ev: bool = True,
    battery: bool = True,
    indoor_temp_c: float | None = None,
) -> Household:
    """A typical electrified household, varied by ``seed``: annual base load 2,500–4,500 kWh, PV 4–8 kWp,
    an 8 kW air-source heat pump, a 60 kWh EV leaving at the contract's departure time, a 10 kWh battery.
    Devices can be left out; values given explicitly win over the seeded ones."""
    rng = np.random.default_rng(seed)
    comfort = contract.comfort
    annual = annual_kwh if annual_kwh is not None else float(rng.uniform(2500, 4500))
    peak = pv_kw if pv_kw is not None else float(rng.uniform(4, 8))
    arrival_hour = int(rng.integers(16, 20))
    ev_soc = float(rng.uniform(10, 35))
    battery_soc = float(rng.uniform(2, 8))
    return Household(
        weather=weather,
        base_load=BaseLoad(annual_kwh=annual, timezone=comfort.timezone, seed=seed),
        pv=PvSystem(peak_kw=peak, location=weather.location) if peak > 0 else None,
        heat_pump=HeatPump(indoor_temp_c=indoor_temp_c if indoor_temp_c is not None else comfort.indoor_setpoint_c)
        if heat_pump else None,
        ev=ElectricVehicle(departure_local=comfort.ev_departure_local, arrival_local=time(arrival_hour, 0),
                           timezone=comfort.timezone, soc_kwh=ev_soc, seed=seed + 1) if ev else None,
        battery=HomeBattery(soc_kwh=battery_soc) if battery else None,
    )

