"""Electric vehicle with a home charger: leaves in the morning, drives, comes back in the evening.

While plugged in it charges at the setpoint (0..charger kW) through the charge efficiency. At departure it
records the range it leaves with (for the KPIs) and unplugs; at arrival it plugs in again with the day's
trip energy (seeded random distance * kWh/km) taken out. Times are local wall-clock times in ``timezone``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from hems_client.devices.base import Conditions, DeviceKind, clip


@dataclass(frozen=True)
class EvDeparture:
    at: datetime
    soc_kwh: float
    range_km: float


def next_local_time(after: datetime, local: time, timezone: str) -> datetime:
    """The first UTC moment strictly after ``after`` at which the wall clock in ``timezone`` shows ``local``."""
    zone = ZoneInfo(timezone)
    day = after.astimezone(zone).date()
    for offset in range(3):
        candidate = datetime.combine(day + timedelta(days=offset), local, tzinfo=zone).astimezone(UTC)
        if candidate > after:
            return candidate
    raise AssertionError("unreachable: a wall-clock time recurs within three days")


class ElectricVehicle:
    kind = DeviceKind.EV
    flexible = True
    priority = 20
    """Shed after battery charging, before the heat pump."""

    def __init__(
        self,
        name: str = "ev",
        *,
        capacity_kwh: float = 60.0,
        charger_kw: float = 11.0,
        charge_efficiency: float = 0.92,
        kwh_per_km: float = 0.18,
        departure_local: time = time(6, 0),
        arrival_local: time = time(18, 0),
        timezone: str = "Europe/Amsterdam",
        soc_kwh: float = 20.0,
        plugged_in: bool | None = None,
        daily_km_mean: float = 60.0,
        daily_km_sd: float = 25.0,
        seed: int = 0,
    ) -> None:
        if not (capacity_kwh > 0 and charger_kw >= 0 and 0 < charge_efficiency <= 1 and kwh_per_km > 0):
            raise ValueError("need capacity_kwh > 0, charger_kw >= 0, 0 < charge_efficiency <= 1, kwh_per_km > 0")
        self.name = name
        self.capacity_kwh = capacity_kwh
        self.charger_kw = charger_kw
        self.charge_efficiency = charge_efficiency
        self.kwh_per_km = kwh_per_km
        self.departure_local = departure_local
        self.arrival_local = arrival_local
        self.timezone = timezone
        self.soc_kwh = clip(soc_kwh, 0.0, capacity_kwh)
        self.plugged_in = plugged_in
        """None until the first step, which infers it from the time of day."""
        self.daily_km_mean = daily_km_mean
        self.daily_km_sd = daily_km_sd
        self._rng = np.random.default_rng(seed)
        self._next_change: datetime | None = None
        self.departures: list[EvDeparture] = []
        """Every departure so far; the controller reads new ones into the KPIs."""

    @property
    def range_km(self) -> float:
        return self.soc_kwh / self.kwh_per_km

    def _home_at(self, moment: datetime) -> bool:
        """By the schedule, is the car home at ``moment``? (Home from arrival until the next departure.)"""
        return next_local_time(moment, self.departure_local, self.timezone) < next_local_time(
            moment, self.arrival_local, self.timezone)

    def _advance(self, now: datetime) -> None:
        if self.plugged_in is None:
            self.plugged_in = self._home_at(now)
        if self._next_change is None:
            local = self.departure_local if self.plugged_in else self.arrival_local
            self._next_change = next_local_time(now, local, self.timezone)
        while now >= self._next_change:
            moment = self._next_change
            if self.plugged_in:
                self.departures.append(EvDeparture(at=moment, soc_kwh=self.soc_kwh, range_km=self.range_km))
                self.plugged_in = False
                self._next_change = next_local_time(moment, self.arrival_local, self.timezone)
            else:
                km = float(np.clip(self._rng.normal(self.daily_km_mean, self.daily_km_sd), 5.0, 400.0))
                self.soc_kwh = max(0.0, self.soc_kwh - km * self.kwh_per_km)
                self.plugged_in = True
                self._next_change = next_local_time(moment, self.departure_local, self.timezone)

    def next_departure(self, now: datetime) -> datetime | None:
        """When the car leaves next, if it is plugged in now."""
        self._advance(now)
        return self._next_change if self.plugged_in else None

    def next_arrival(self, now: datetime) -> datetime | None:
        """When the car comes home next by its schedule, if it is away now."""
        self._advance(now)
        return None if self.plugged_in else self._next_change

    @property
    def expected_trip_kwh(self) -> float:
        """The energy a day's drive takes on average (what a HEMS learns from the car's past arrivals)."""
        return self.daily_km_mean * self.kwh_per_km

    def power_range_kw(self, conditions: Conditions, dt_s: float) -> tuple[float, float]:
        self._advance(conditions.now)
        if not self.plugged_in:
            return 0.0, 0.0
        room_kw = (self.capacity_kwh - self.soc_kwh) / (self.charge_efficiency * dt_s / 3600)
        return 0.0, max(min(self.charger_kw, room_kw), 0.0)

    def step(self, setpoint_kw: float | None, dt_s: float, conditions: Conditions) -> float:
        self._advance(conditions.now)
        if not self.plugged_in:
            return 0.0
        hours = dt_s / 3600
        power = clip(setpoint_kw or 0.0, 0.0, self.charger_kw)
        power = min(power, (self.capacity_kwh - self.soc_kwh) / (self.charge_efficiency * hours))
        self.soc_kwh = min(self.capacity_kwh, self.soc_kwh + power * self.charge_efficiency * hours)
        return power
