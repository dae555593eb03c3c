"""Air-source heat pump heating a 1R1C building.

Building: C dT/dt = COP * P_el + Q_gains - (T - T_out) / R, with C in kWh/K and R in K/kW; stepped exactly
(exponential solution with the inputs held over the step), so any step length is stable.
COP (Staffell et al. 2012, air source): 6.81 - 0.121 dT + 0.00063 dT², dT = supply - outdoor, clipped to >= 1 K.
The HEMS sets the electric power (0..max, modulating); the heat pump has no thermostat of its own here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from hems_client.devices.base import Conditions, DeviceKind, clip


def cop_air_source(supply_temp_c: ArrayLike, outdoor_temp_c: ArrayLike) -> Any:
    """Staffell et al. 2012 air-source fit, ΔT = supply − outdoor clipped to >= 1 K (the fit is meaningless for
    ΔT <= 0). The plant and the optimiser's model share it; works on floats (a numpy float back) and arrays."""
    delta_k = np.maximum(np.subtract(supply_temp_c, outdoor_temp_c, dtype=float), 1.0)
    return 6.81 - 0.121 * delta_k + 0.00063 * delta_k**2


def indoor_after(
    indoor_c: float, *, outdoor_c: float, heat_kw: float, dt_s: float, capacity_kwh_per_k: float,
    resistance_k_per_kw: float,
) -> float:
    """Indoor temperature after ``dt_s`` seconds of constant heat input ``heat_kw`` (pump + gains)."""
    equilibrium = outdoor_c + resistance_k_per_kw * heat_kw
    decay = math.exp(-(dt_s / 3600) / (resistance_k_per_kw * capacity_kwh_per_k))
    return equilibrium + (indoor_c - equilibrium) * decay


def heat_to_reach(
    indoor_c: float, target_c: float, *, outdoor_c: float, dt_s: float, capacity_kwh_per_k: float,
    resistance_k_per_kw: float,
) -> float:
    """Constant heat input (kW, may be negative) that brings ``indoor_c`` to ``target_c`` in ``dt_s``."""
    decay = math.exp(-(dt_s / 3600) / (resistance_k_per_kw * capacity_kwh_per_k))
    equilibrium = (target_c - indoor_c * decay) / (1 - decay)
    return (equilibrium - outdoor_c) / resistance_k_per_kw


class HeatPump:
    kind = DeviceKind.HEAT_PUMP
    flexible = True
    priority = 30
    """Shed last: after battery charging and EV charging (see ``hems_client.control.guard``)."""

    def __init__(
        self,
        name: str = "heat_pump",
        *,
        max_electric_kw: float = 8.0,
        thermal_capacity_kwh_per_k: float = 10.0,
        thermal_resistance_k_per_kw: float = 5.0,
        supply_temp_c: float = 35.0,
        internal_gains_kw: float = 0.3,
        indoor_temp_c: float = 20.0,
    ) -> None:
        if not (max_electric_kw >= 0 and thermal_capacity_kwh_per_k > 0 and thermal_resistance_k_per_kw > 0):
            raise ValueError("max_electric_kw must be >= 0, the thermal capacity and resistance > 0")
        self.name = name
        self.max_electric_kw = max_electric_kw
        self.thermal_capacity_kwh_per_k = thermal_capacity_kwh_per_k
        self.thermal_resistance_k_per_kw = thermal_resistance_k_per_kw
        self.supply_temp_c = supply_temp_c
        self.internal_gains_kw = internal_gains_kw
        self.indoor_temp_c = indoor_temp_c

    def cop(self, outdoor_temp_c: float) -> float:
        return cop_air_source(self.supply_temp_c, outdoor_temp_c)

    def power_range_kw(self, conditions: Conditions, dt_s: float) -> tuple[float, float]:
        return 0.0, self.max_electric_kw

    def step(self, setpoint_kw: float | None, dt_s: float, conditions: Conditions) -> float:
        electric = clip(setpoint_kw or 0.0, 0.0, self.max_electric_kw)
        heat = electric * self.cop(conditions.outdoor_temp_c) + self.internal_gains_kw
        self.indoor_temp_c = indoor_after(
            self.indoor_temp_c, outdoor_c=conditions.outdoor_temp_c, heat_kw=heat, dt_s=dt_s,
            capacity_kwh_per_k=self.thermal_capacity_kwh_per_k, resistance_k_per_kw=self.thermal_resistance_k_per_kw,
        )
        return electric
