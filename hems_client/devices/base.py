"""The driver interface every household device implements, simulated or real.

Sign convention (the whole of ``hems_client``): power is **consumption-positive** at the device's grid side, in kW.
A load draws +kW, PV produces -kW, a battery charging is +kW and discharging -kW. The household's net import
is the sum of its devices' powers; import = max(net, 0), export = max(-net, 0).

A setpoint uses the same sign: for a heat pump or an EV it is the electric power to draw, for a battery the
charge (+) or discharge (-) power, for PV a cap on production written as a negative number (-2.0: produce at
most 2 kW). ``None`` means "no instruction": loads draw nothing, PV produces all it can, a battery idles.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable


class DeviceKind(StrEnum):
    BASE_LOAD = "base_load"
    PV = "pv"
    HEAT_PUMP = "heat_pump"
    EV = "ev"
    BATTERY = "battery"


@dataclass(frozen=True)
class Conditions:
    """What the world outside the devices looks like during one step."""

    now: datetime
    outdoor_temp_c: float
    clear_sky_index: float
    """Share (0..1) of the clear-sky irradiance that reaches the ground; 1 is a cloudless sky."""


@runtime_checkable
class Device(Protocol):
    """One device behind the HEMS. Drivers of real devices implement the same four members."""

    @property
    def name(self) -> str:
        """Unique within a household; the key of its setpoint."""
        ...

    @property
    def kind(self) -> DeviceKind: ...

    @property
    def flexible(self) -> bool:
        """True when the HEMS may change its power through a setpoint."""
        ...

    @property
    def priority(self) -> int:
        """Shedding order when import must come down: lower is shed first (see ``hems_client.control.guard``)."""
        ...

    def power_range_kw(self, conditions: Conditions, dt_s: float) -> tuple[float, float]:
        """The (lowest, highest) mean power the device can hold over the next ``dt_s`` seconds,
        consumption-positive (a nearly full battery cannot absorb 5 kW for a whole minute)."""
        ...

    def step(self, setpoint_kw: float | None, dt_s: float, conditions: Conditions) -> float:
        """Run ``dt_s`` seconds at ``setpoint_kw`` (clipped to what is physically possible) and return the
        mean measured power in kW over the step."""
        ...


def clip(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)
