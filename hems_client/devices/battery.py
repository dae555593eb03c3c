"""Home battery: energy in and out through a one-way efficiency, power and state-of-charge limits."""

from __future__ import annotations

from hems_client.devices.base import Conditions, DeviceKind, clip


class HomeBattery:
    kind = DeviceKind.BATTERY
    flexible = True
    priority = 10
    """Shed first: stop charging, then discharge to support the house."""

    def __init__(
        self,
        name: str = "battery",
        *,
        capacity_kwh: float = 10.0,
        max_kw: float = 5.0,
        efficiency: float = 0.95,
        soc_kwh: float = 5.0,
        min_soc_kwh: float = 0.0,
    ) -> None:
        if not (capacity_kwh > 0 and max_kw >= 0 and 0 < efficiency <= 1 and 0 <= min_soc_kwh <= capacity_kwh):
            raise ValueError("need capacity_kwh > 0, max_kw >= 0, 0 < efficiency <= 1, 0 <= min_soc <= capacity")
        self.name = name
        self.capacity_kwh = capacity_kwh
        self.max_kw = max_kw
        self.efficiency = efficiency
        self.min_soc_kwh = min_soc_kwh
        self.soc_kwh = clip(soc_kwh, min_soc_kwh, capacity_kwh)
        self.charged_kwh = 0.0
        """Grid-side energy taken in, over the battery's life."""
        self.discharged_kwh = 0.0
        """Grid-side energy given out, over the battery's life."""

    def power_range_kw(self, conditions: Conditions, dt_s: float) -> tuple[float, float]:
        hours = dt_s / 3600
        low = -min(self.max_kw, (self.soc_kwh - self.min_soc_kwh) * self.efficiency / hours)
        high = min(self.max_kw, (self.capacity_kwh - self.soc_kwh) / (self.efficiency * hours))
        return min(low, 0.0), max(high, 0.0)

    def step(self, setpoint_kw: float | None, dt_s: float, conditions: Conditions) -> float:
        hours = dt_s / 3600
        power = clip(setpoint_kw or 0.0, -self.max_kw, self.max_kw)
        if power > 0:
            room_kwh = self.capacity_kwh - self.soc_kwh
            power = min(power, room_kwh / (self.efficiency * hours))
            self.soc_kwh = min(self.capacity_kwh, self.soc_kwh + power * self.efficiency * hours)
            self.charged_kwh += power * hours
        elif power < 0:
            stored_kwh = self.soc_kwh - self.min_soc_kwh
            power = -min(-power, stored_kwh * self.efficiency / hours)
            self.soc_kwh = max(self.min_soc_kwh, self.soc_kwh + power / self.efficiency * hours)
            self.discharged_kwh += -power * hours
        return power
