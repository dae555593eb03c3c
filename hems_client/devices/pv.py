"""Rooftop PV: clear-sky irradiance from the sun's position, times the clear-sky index, times the peak power.

P = kWp * performance_ratio * tilt_gain * GHI_clear * clear_sky_index / 1000 W/m². The tilt gain (1.15) stands
for a south-facing ~35° roof versus the horizontal irradiance the model computes; the performance ratio (0.85)
for inverter, temperature and wiring losses. PV is curtailable: its setpoint caps production.
"""

from __future__ import annotations

from datetime import datetime

from hems_client.devices.base import Conditions, DeviceKind
from hems_client.devices.weather import DEFAULT_LOCATION, Location, clear_sky_ghi_w_per_m2


class PvSystem:
    kind = DeviceKind.PV
    flexible = True
    priority = 0
    """Un-curtailing PV is the first thing to do when import is too high."""

    def __init__(
        self,
        name: str = "pv",
        *,
        peak_kw: float = 5.0,
        performance_ratio: float = 0.85,
        tilt_gain: float = 1.15,
        location: Location = DEFAULT_LOCATION,
    ) -> None:
        if not peak_kw >= 0:
            raise ValueError(f"peak_kw must be >= 0, not {peak_kw}")
        self.name = name
        self.peak_kw = peak_kw
        self.performance_ratio = performance_ratio
        self.tilt_gain = tilt_gain
        self.location = location
        self.curtailed_kwh = 0.0

    def available_kw(self, moment: datetime, clear_sky_index: float) -> float:
        """What the panels could produce (a magnitude >= 0)."""
        irradiance = clear_sky_ghi_w_per_m2(moment, self.location) * clear_sky_index
        return min(self.peak_kw, self.peak_kw * self.performance_ratio * self.tilt_gain * irradiance / 1000.0)

    def power_range_kw(self, conditions: Conditions, dt_s: float) -> tuple[float, float]:
        return -self.available_kw(conditions.now, conditions.clear_sky_index), 0.0

    def step(self, setpoint_kw: float | None, dt_s: float, conditions: Conditions) -> float:
        available = self.available_kw(conditions.now, conditions.clear_sky_index)
        produced = available if setpoint_kw is None else min(available, max(0.0, -setpoint_kw))
        self.curtailed_kwh += (available - produced) * dt_s / 3600
        return -produced
