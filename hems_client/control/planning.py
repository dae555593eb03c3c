"""What a planner sees and what it decides: the household's state and forecasts in, setpoints and a plan out.

Pure data. Any planner (the rule planner today, the convex optimiser next) implements :class:`Planner`;
the controller and the transport never change when it is swapped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from protocol.contract import HouseholdContract
from protocol.effective import EffectiveLimit
from protocol.reports import Plan
from protocol.signals import TouTariff


@dataclass(frozen=True)
class Forecast:
    """What the HEMS expects per 15-minute interval from ``start`` (interval means)."""

    start: datetime
    base_load_kw: tuple[float, ...]
    pv_available_kw: tuple[float, ...]
    """Production the panels could deliver, a magnitude >= 0."""
    outdoor_temp_c: tuple[float, ...]

    def __post_init__(self) -> None:
        lengths = {len(self.base_load_kw), len(self.pv_available_kw), len(self.outdoor_temp_c)}
        if len(lengths) != 1:
            raise ValueError(f"forecast series must have equal lengths, not {sorted(lengths)}")

    def __len__(self) -> int:
        return len(self.base_load_kw)


@dataclass(frozen=True)
class HeatPumpState:
    name: str
    indoor_temp_c: float
    max_electric_kw: float
    thermal_capacity_kwh_per_k: float
    thermal_resistance_k_per_kw: float
    supply_temp_c: float
    internal_gains_kw: float


@dataclass(frozen=True)
class BatteryState:
    name: str
    soc_kwh: float
    capacity_kwh: float
    max_kw: float
    efficiency: float
    min_soc_kwh: float


@dataclass(frozen=True)
class EvState:
    name: str
    plugged_in: bool
    soc_kwh: float
    capacity_kwh: float
    charger_kw: float
    charge_efficiency: float
    kwh_per_km: float
    departure: datetime | None
    """When the car leaves next (None when it is not plugged in)."""
    expected_arrival: datetime | None = None
    """While the car is away: when it is expected home (the household's habit, as a HEMS learns it)."""
    expected_arrival_soc_kwh: float | None = None
    """While the car is away: the energy it is expected to come home with."""
    departure_after_arrival: datetime | None = None
    """While the car is away: when it is expected to leave after that arrival."""


@dataclass(frozen=True)
class HouseholdState:
    now: datetime
    forecast: Forecast
    pv_name: str | None = None
    heat_pump: HeatPumpState | None = None
    battery: BatteryState | None = None
    ev: EvState | None = None


@dataclass(frozen=True)
class ControlDecision:
    """Setpoints for the interval now running, and the plan of net import for the horizon.

    ``setpoints`` maps device names to kW in the household sign convention (``hems_client.devices.base``);
    a missing name or ``None`` means "no instruction". ``notes`` say where the plan had to break a rule and
    why (an import limit that the inflexible load alone exceeds, comfort given up for the grid limit, EV
    energy short at departure): a plan above the limit always says which rule forced it.
    """

    created_at: datetime
    setpoints: Mapping[str, float | None]
    plan: Plan
    notes: tuple[str, ...] = ()
    schedule: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    """Planned power per device per interval, for inspection and plots."""


class Planner(Protocol):
    def plan(
        self,
        now: datetime,
        state: HouseholdState,
        limits: Sequence[EffectiveLimit],
        tariff: TouTariff,
        contract: HouseholdContract,
    ) -> ControlDecision:
        """Plan the horizon covered by ``limits`` (one per interval, the first holding ``now``); ``tariff``
        covers the same intervals; ``state.forecast`` at least as many."""
        ...
