"""A rule-based planner: thermostat with pre-heating, cheapest-hours EV charging, a simple battery policy, and
curtailment in a fixed order whenever the plan would exceed the effective limit.

Per interval of the horizon, from the first:
1. Heat pump: aim at the setpoint; pre-heat to setpoint + ``preheat_k`` when the price is cheap or a tight
   import limit lies ahead (one that cannot hold the setpoint); coast to setpoint - ``coast_k`` when expensive.
2. EV (planned once for the horizon): the energy still needed for the contract's range by departure is placed in
   the cheapest intervals before departure (earliest first among equal prices), each filled only up to the
   import headroom left by the base load and the heat pump; what does not fit is reported.
3. Battery: discharge to shave import above the limit, store PV surplus, discharge in expensive intervals (unless
   a tight limit lies ahead), charge in cheap ones when a tight limit or a price spread worth the losses lies ahead.
4. Import still above the limit: curtail, in this order, battery charging (then discharge), EV charging down to
   0, the heat pump down to what keeps the comfort minimum, then the heat pump down to 0 (grid limit ranks
   above comfort, ARCHITECTURE.md). Export above the limit: the battery charges, then PV is curtailed.
Everything left over the limit is load the household cannot shed; the decision's notes say so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from hems_client.control.planning import ControlDecision, HeatPumpState, HouseholdState
from hems_client.devices.heat_pump import cop_air_source, heat_to_reach, indoor_after
from protocol.contract import HouseholdContract
from protocol.effective import EffectiveLimit
from protocol.reports import Plan, PlanInterval
from protocol.signals import TouTariff
from protocol.timebase import INTERVAL, INTERVAL_S

_DT_H = INTERVAL_S / 3600
_EPS = 1e-6


@dataclass
class _Notes:
    over_limit: list[float] = field(default_factory=list)
    comfort_given_up: int = 0
    export_over_limit: list[float] = field(default_factory=list)
    ev_short_kwh: float = 0.0

    def render(self) -> tuple[str, ...]:
        notes = []
        if self.over_limit:
            notes.append(f"import limit unreachable in {len(self.over_limit)} interval(s), up to "
                         f"{max(self.over_limit):.2f} kW over: the load left cannot be shed")
        if self.comfort_given_up:
            notes.append(f"heat pump held below the comfort minimum in {self.comfort_given_up} interval(s) to keep "
                         "the import limit (grid limit ranks above comfort)")
        if self.export_over_limit:
            notes.append(f"export limit unreachable in {len(self.export_over_limit)} interval(s), up to "
                         f"{max(self.export_over_limit):.2f} kW over")
        if self.ev_short_kwh > 0.05:
            notes.append(f"EV {self.ev_short_kwh:.1f} kWh short of the contracted range at departure: not enough "
                         "import headroom before departure")
        return tuple(notes)


@dataclass(frozen=True)
class RulePlanner:
    preheat_k: float = 0.5
    """Pre-heating target above the setpoint (kept inside the band)."""
    coast_k: float = 0.5
    """Coasting target below the setpoint in expensive intervals (kept inside the band)."""
    comfort_margin_k: float = 0.1
    max_rise_k_per_interval: float = 0.15
    """Pre-heating raises the indoor temperature at most this much per interval, so that it does not start
    every cheap window with the heat pump at full power (a shadow peak)."""
    lookahead_intervals: int = 12
    """How far ahead a tight import limit triggers pre-heating and holds the battery's charge (3 h)."""
    min_price_spread_eur_per_kwh: float = 0.02
    """Below this spread over the horizon the tariff is taken as flat."""

    def plan(
        self,
        now: datetime,
        state: HouseholdState,
        limits: Sequence[EffectiveLimit],
        tariff: TouTariff,
        contract: HouseholdContract,
    ) -> ControlDecision:
        count = len(limits)
        forecast = state.forecast
        if count == 0 or len(forecast) < count or len(tariff.intervals) < count:
            raise ValueError(f"need as many forecast ({len(forecast)}) and tariff ({len(tariff.intervals)}) "
                             f"intervals as limits ({count}), and at least one")
        start = limits[0].start
        base = list(forecast.base_load_kw[:count])
        pv = list(forecast.pv_available_kw[:count])
        outdoor = list(forecast.outdoor_temp_c[:count])
        import_limit = [limit.import_limit_kw for limit in limits]
        export_limit = [limit.export_limit_kw for limit in limits]
        price = [interval.import_price_eur_per_kwh for interval in tariff.intervals[:count]]
        cheap, expensive = _price_classes(price, self.min_price_spread_eur_per_kwh)
        inflexible = [b - p for b, p in zip(base, pv, strict=True)]
        comfort = contract.comfort
        hp = state.heat_pump

        # Intervals whose headroom cannot hold the setpoint: pre-heat before them, keep the battery for them.
        hold = [self._hold_kw(hp, comfort.indoor_setpoint_c, outdoor[k]) for k in range(count)]
        tight = [import_limit[k] - inflexible[k] < hold[k] for k in range(count)]
        tight_ahead = [any(tight[k + 1:k + 1 + self.lookahead_intervals]) for k in range(count)]

        def heat_pump_kw(indoor: float, k: int) -> tuple[float, float]:
            """(wanted, comfort-keeping) electric power for interval k."""
            if hp is None:
                return 0.0, 0.0
            low, high = comfort.comfort_min_c, comfort.comfort_max_c
            target = comfort.indoor_setpoint_c
            if cheap[k] or tight_ahead[k]:
                target = min(target + self.preheat_k, high - self.comfort_margin_k)
            elif expensive[k]:
                target = max(target - self.coast_k, low + self.comfort_margin_k)
            target = min(target, max(indoor, low + self.comfort_margin_k) + self.max_rise_k_per_interval)
            return (self._electric_to_reach(hp, indoor, target, outdoor[k]),
                    self._electric_to_reach(hp, indoor, low + self.comfort_margin_k, outdoor[k]))

        # Pass A: heat pump alone, to know the headroom the EV can use.
        heat_a = [0.0] * count
        if hp is not None:
            indoor = hp.indoor_temp_c
            for k in range(count):
                heat_a[k] = heat_pump_kw(indoor, k)[0]
                indoor = self._indoor_after(hp, indoor, heat_a[k], outdoor[k])
        notes = _Notes()
        ev_kw = self._ev_schedule(state, contract, start, price,
                                  [import_limit[k] - inflexible[k] - heat_a[k] for k in range(count)], notes)

        # Pass B: everything together, with curtailment.
        battery = state.battery
        indoor = hp.indoor_temp_c if hp is not None else math.nan
        battery_soc = battery.soc_kwh if battery is not None else 0.0
        ev_soc = state.ev.soc_kwh if state.ev is not None else 0.0
        max_price = [max(price[k + 1:], default=price[k]) for k in range(count)]
        schedule: dict[str, list[float]] = {"heat_pump": [], "ev": [], "battery": [], "pv": [], "net_import": []}
        for k in range(count):
            heat, heat_comfort = heat_pump_kw(indoor, k) if hp is not None else (0.0, 0.0)
            ev = ev_kw[k]
            if state.ev is not None:
                ev = min(ev, max(0.0, (state.ev.capacity_kwh - ev_soc) / (state.ev.charge_efficiency * _DT_H)))
            charge_max = discharge_max = 0.0
            bat = 0.0
            if battery is not None:
                charge_max = min(battery.max_kw, (battery.capacity_kwh - battery_soc) / (battery.efficiency * _DT_H))
                discharge_max = min(battery.max_kw, (battery_soc - battery.min_soc_kwh) * battery.efficiency / _DT_H)
                charge_max, discharge_max = max(charge_max, 0.0), max(discharge_max, 0.0)
                net0 = inflexible[k] + heat + ev
                worth_storing = max_price[k] * battery.efficiency**2 > price[k] + self.min_price_spread_eur_per_kwh
                if net0 > import_limit[k]:
                    bat = -min(discharge_max, net0 - import_limit[k])
                elif net0 < 0:
                    bat = min(charge_max, -net0)
                elif expensive[k] and not tight_ahead[k]:
                    bat = -min(discharge_max, net0)
                elif (cheap[k] and worth_storing) or (tight_ahead[k] and not tight[k]):
                    bat = min(charge_max, max(import_limit[k] - net0 - 0.1, 0.0))
            pv_used = pv[k]
            net = base[k] - pv_used + heat + ev + bat
            excess = net - import_limit[k]
            if excess > _EPS:
                cut = max(min(excess, bat + discharge_max), 0.0)  # 1. battery: stop charging, then discharge
                bat, excess = bat - cut, excess - cut
                cut = max(min(excess, ev), 0.0)  # 2. EV down to 0
                ev, excess = ev - cut, excess - cut
                cut = max(min(excess, heat - heat_comfort), 0.0)  # 3. heat pump down to the comfort minimum
                heat, excess = heat - cut, excess - cut
                if excess > _EPS and heat > _EPS:  # 4. heat pump below it: the grid limit ranks above comfort
                    cut = min(excess, heat)
                    heat, excess = heat - cut, excess - cut
                    notes.comfort_given_up += 1
                if excess > _EPS:
                    notes.over_limit.append(excess)
            net = base[k] - pv_used + heat + ev + bat
            deficit = -export_limit[k] - net
            if deficit > _EPS:
                rise = min(deficit, max(charge_max - bat, 0.0))
                bat += rise
                deficit -= rise
                curtail = min(deficit, pv_used)
                pv_used -= curtail
                deficit -= curtail
                if deficit > _EPS:
                    notes.export_over_limit.append(deficit)
            net = base[k] - pv_used + heat + ev + bat
            if hp is not None:
                indoor = self._indoor_after(hp, indoor, heat, outdoor[k])
            if battery is not None:
                battery_soc += (bat * battery.efficiency if bat > 0 else bat / battery.efficiency) * _DT_H
            if state.ev is not None:
                ev_soc += ev * state.ev.charge_efficiency * _DT_H
            for key, value in (("heat_pump", heat), ("ev", ev), ("battery", bat), ("pv", -pv_used),
                               ("net_import", net)):
                schedule[key].append(value)

        setpoints: dict[str, float | None] = {}
        if hp is not None:
            setpoints[hp.name] = schedule["heat_pump"][0]
        if state.ev is not None:
            setpoints[state.ev.name] = schedule["ev"][0]
        if battery is not None:
            setpoints[battery.name] = schedule["battery"][0]
        if state.pv_name is not None:
            curtailed = -schedule["pv"][0] < pv[0] - _EPS
            setpoints[state.pv_name] = schedule["pv"][0] if curtailed else None
        plan = Plan(created_at=now, intervals=tuple(
            PlanInterval(start=start + k * INTERVAL, net_import_kw=round(schedule["net_import"][k], 3))
            for k in range(count)))
        return ControlDecision(created_at=now, setpoints=setpoints, plan=plan, notes=notes.render(),
                               schedule={key: tuple(values) for key, values in schedule.items()})

    # ------------------------------------------------------------------------------------------- helpers

    @staticmethod
    def _hold_kw(hp: HeatPumpState | None, setpoint_c: float, outdoor_c: float) -> float:
        if hp is None:
            return 0.0
        heat = (setpoint_c - outdoor_c) / hp.thermal_resistance_k_per_kw - hp.internal_gains_kw
        return max(heat, 0.0) / cop_air_source(hp.supply_temp_c, outdoor_c)

    @staticmethod
    def _electric_to_reach(hp: HeatPumpState, indoor: float, target: float, outdoor_c: float) -> float:
        heat = heat_to_reach(indoor, target, outdoor_c=outdoor_c, dt_s=INTERVAL_S,
                             capacity_kwh_per_k=hp.thermal_capacity_kwh_per_k,
                             resistance_k_per_kw=hp.thermal_resistance_k_per_kw) - hp.internal_gains_kw
        return min(max(heat / cop_air_source(hp.supply_temp_c, outdoor_c), 0.0), hp.max_electric_kw)

    @staticmethod
    def _indoor_after(hp: HeatPumpState, indoor: float, electric_kw: float, outdoor_c: float) -> float:
        heat = electric_kw * cop_air_source(hp.supply_temp_c, outdoor_c) + hp.internal_gains_kw
        return indoor_after(indoor, outdoor_c=outdoor_c, heat_kw=heat, dt_s=INTERVAL_S,
                            capacity_kwh_per_k=hp.thermal_capacity_kwh_per_k,
                            resistance_k_per_kw=hp.thermal_resistance_k_per_kw)

    @staticmethod
    def _ev_schedule(state: HouseholdState, contract: HouseholdContract, start: datetime, price: Sequence[float],
                     headroom: Sequence[float], notes: _Notes) -> list[float]:
        count = len(price)
        plan = [0.0] * count
        ev = state.ev
        if ev is None or not ev.plugged_in:
            return plan
        steps = count if ev.departure is None else max(0, min(count, math.ceil((ev.departure - start) / INTERVAL)))
        target_kwh = min(ev.capacity_kwh, contract.comfort.ev_required_range_km * ev.kwh_per_km)
        remaining = max(0.0, target_kwh - ev.soc_kwh) / ev.charge_efficiency
        for k in sorted(range(steps), key=lambda k: (price[k], k)):
            if remaining <= _EPS:
                break
            take = min(max(min(ev.charger_kw, headroom[k]), 0.0) * _DT_H, remaining)
            plan[k] = take / _DT_H
            remaining -= take
        if ev.departure is not None and steps < count:
            notes.ev_short_kwh = remaining * ev.charge_efficiency
        return plan


def _price_classes(price: Sequence[float], min_spread: float) -> tuple[list[bool], list[bool]]:
    """Cheap: in the lowest quarter of the horizon's price range; expensive: in the highest quarter."""
    low, high = min(price), max(price)
    spread = high - low
    if spread < min_spread:
        return [False] * len(price), [False] * len(price)
    return [p <= low + spread / 4 for p in price], [p >= high - spread / 4 for p in price]
