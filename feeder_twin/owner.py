"""The uncontrolled baseline: what the devices do as their owners set them up, without a HEMS.

A :class:`~hems_client.control.planning.Planner`, so that the baseline runs under the same controller, plant and
sub-steps as the managed households and differs only in the decisions:

* heat pump: its own room thermostat, modulating: each quarter-hour the electric power that brings the indoor
  temperature to the setpoint by the end of the quarter-hour (weather-compensated, capped at its maximum);
* EV: charges at its charger's full power from arrival until the battery is full;
* home battery: self-consumption, on the quarter-hour's expected load: charges from expected PV surplus,
  discharges to cover expected import;
* PV: produces all it can.

It ignores prices and limits; the controller's guard still keeps the connection within its contracted maximum
(the main fuse). It decides the interval now running and plans the rest of the horizon as more of the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from hems_client.control.planning import ControlDecision, HouseholdState
from hems_client.devices.heat_pump import cop_air_source, heat_to_reach
from protocol.contract import HouseholdContract
from protocol.effective import EffectiveLimit
from protocol.reports import Plan, PlanInterval
from protocol.signals import TouTariff
from protocol.timebase import INTERVAL, INTERVAL_S


class OwnerPlanner:
    def plan(self, now: datetime, state: HouseholdState, limits: Sequence[EffectiveLimit], tariff: TouTariff,
             contract: HouseholdContract) -> ControlDecision:
        forecast = state.forecast
        outdoor = forecast.outdoor_temp_c[0]
        setpoints: dict[str, float | None] = {}
        heat_kw = ev_kw = 0.0
        hp = state.heat_pump
        if hp is not None:
            heat = heat_to_reach(hp.indoor_temp_c, contract.comfort.indoor_setpoint_c, outdoor_c=outdoor,
                                 dt_s=INTERVAL_S, capacity_kwh_per_k=hp.thermal_capacity_kwh_per_k,
                                 resistance_k_per_kw=hp.thermal_resistance_k_per_kw) - hp.internal_gains_kw
            heat_kw = min(max(heat / float(cop_air_source(hp.supply_temp_c, outdoor)), 0.0), hp.max_electric_kw)
            setpoints[hp.name] = heat_kw
        ev = state.ev
        if ev is not None:
            ev_kw = ev.charger_kw if ev.plugged_in and ev.soc_kwh < ev.capacity_kwh - 1e-6 else 0.0
            setpoints[ev.name] = ev_kw
        battery_kw = 0.0
        if state.battery is not None:
            b = state.battery
            expected = forecast.base_load_kw[0] - forecast.pv_available_kw[0] + heat_kw + ev_kw
            battery_kw = min(max(-expected, -b.max_kw), b.max_kw)
            setpoints[b.name] = battery_kw
        if state.pv_name is not None:
            setpoints[state.pv_name] = None
        net = forecast.base_load_kw[0] - forecast.pv_available_kw[0] + heat_kw + ev_kw + battery_kw
        start = limits[0].start
        intervals = tuple(PlanInterval(start=start + k * INTERVAL, net_import_kw=round(net, 3))
                          for k in range(len(limits)))
        plan = Plan(created_at=now, intervals=intervals)
        return ControlDecision(created_at=now, setpoints=setpoints, plan=plan)
