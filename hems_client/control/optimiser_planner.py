"""The convex optimiser behind the :class:`~hems_client.control.planning.Planner` call: the HEMS's default planner.

``OptimiserPlanner.plan`` maps the household's state, the effective limits, the tariff and the contract to
:class:`~hems_client.optimiser.OptimiserInputs`, solves, and turns the result into a :class:`ControlDecision`:
the setpoints for the interval now running, the plan of net import for the horizon, and one note per slack the
optimiser used, with its reason.

Mapping decisions:
- One :class:`HouseholdOptimiser` per household, compiled on the first call from the device parameters the
  state carries (heat pump, EV, battery; a missing device gets zero power bounds) and re-solved ever after.
  A state with other device parameters (a different household behind the same planner) compiles a second
  one; the cache is tiny and keyed by the parameters.
- COP per interval from the outdoor temperature forecast and the heat pump's supply temperature (Staffell).
- Internal gains are folded into the outdoor temperature (T_out + R·Q_gains): the same 1R1C balance.
- Comfort: the contract's band, narrowed by ``comfort_margin_k`` on both sides, so that the guard shedding the
  heat pump for a few minutes or a forecast error does not leave the contracted band at once.
  Without a heat pump the indoor temperature is not planned: the band follows the passive trajectory.
- EV: one charging session until the next departure (``EvState.departure``); the target is the contract's
  ``ev_required_range_km`` times the car's kWh/km plus ``ev_margin_kwh`` (so that a plan met to the solver's
  last digit, or a guard shedding the charger for a minute, still leaves with the contracted range), capped at
  its capacity. A departure beyond the horizon lowers the target by what the charger can still add after the
  horizon ends.
- The optimiser plans interval means from the interval holding ``now``; a re-plan in mid-interval (a new
  signal) treats the rest of that interval as a whole one, and the next plan corrects it.
- Should the solver ever fail (the LP is feasible and bounded by construction, so this would be a numerical
  failure or a bug), the household is not left without setpoints: the ``fallback`` planner (the rule planner)
  plans this interval and the decision's first note says why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np

from hems_client.control.planning import ControlDecision, HouseholdState, Planner
from hems_client.control.rule_planner import RulePlanner
from hems_client.optimiser import (
    HouseholdOptimiser,
    HouseholdParams,
    OptimiserError,
    OptimiserInputs,
    OptimiserResult,
    SlackUse,
    cop_air_source,
)
from protocol.contract import HouseholdContract
from protocol.effective import EffectiveLimit
from protocol.reports import Plan, PlanInterval
from protocol.signals import TouTariff
from protocol.timebase import INTERVAL, INTERVAL_S, INTERVALS_PER_DAY

_DT_H = INTERVAL_S / 3600
_ON_KW = 1e-3
_PASSIVE_BAND_K = 1.0
"""Half-width of the band put around the passive indoor trajectory of a household without a heat pump."""


@dataclass(frozen=True)
class _Devices:
    """The device parameters that shape the compiled problem (the optimiser cache key)."""

    thermal_capacity_kwh_per_k: float
    thermal_resistance_k_per_kw: float
    hp_max_electric_kw: float
    ev_charger_max_kw: float
    ev_battery_kwh: float
    ev_charge_efficiency: float
    ev_kwh_per_km: float
    battery_capacity_kwh: float
    battery_max_kw: float
    battery_efficiency: float
    battery_min_soc_kwh: float


def _devices(state: HouseholdState, defaults: HouseholdParams) -> _Devices:
    hp, ev, battery = state.heat_pump, state.ev, state.battery
    return _Devices(
        thermal_capacity_kwh_per_k=hp.thermal_capacity_kwh_per_k if hp else defaults.thermal_capacity_kwh_per_k,
        thermal_resistance_k_per_kw=hp.thermal_resistance_k_per_kw if hp else defaults.thermal_resistance_k_per_kw,
        hp_max_electric_kw=hp.max_electric_kw if hp else 0.0,
        ev_charger_max_kw=ev.charger_kw if ev else 0.0,
        ev_battery_kwh=ev.capacity_kwh if ev else defaults.ev_battery_kwh,
        ev_charge_efficiency=ev.charge_efficiency if ev else defaults.ev_charge_efficiency,
        ev_kwh_per_km=ev.kwh_per_km if ev else defaults.ev_kwh_per_km,
        battery_capacity_kwh=battery.capacity_kwh if battery else defaults.battery_capacity_kwh,
        battery_max_kw=battery.max_kw if battery else 0.0,
        battery_efficiency=battery.efficiency if battery else defaults.battery_efficiency,
        battery_min_soc_kwh=battery.min_soc_kwh if battery else 0.0,
    )


class OptimiserPlanner:
    """Receding-horizon planner on :class:`HouseholdOptimiser`; implements ``hems_client.control.planning.Planner``."""

    def __init__(
        self,
        *,
        horizon_intervals: int = INTERVALS_PER_DAY,
        params: HouseholdParams | None = None,
        comfort_margin_k: float = 0.2,
        ev_margin_kwh: float = 0.1,
        fallback: Planner | None = None,
    ) -> None:
        """``params`` supplies penalties and costs (device fields are taken from the household's state; the
        grid penalty is raised where the building and horizon need it to keep grid > comfort);
        ``horizon_intervals`` must equal the controller's horizon."""
        if horizon_intervals < 1:
            raise ValueError(f"horizon_intervals must be >= 1, not {horizon_intervals}")
        if not comfort_margin_k >= 0 or not ev_margin_kwh >= 0:
            raise ValueError(f"comfort_margin_k and ev_margin_kwh must be >= 0, not {comfort_margin_k} and "
                             f"{ev_margin_kwh}")
        self.horizon_intervals = horizon_intervals
        self.params = params if params is not None else HouseholdParams()
        self.comfort_margin_k = comfort_margin_k
        self.ev_margin_kwh = ev_margin_kwh
        self.fallback: Planner = fallback if fallback is not None else RulePlanner()
        self.failures = 0
        """Solves that failed and fell back (should stay 0)."""
        self._optimisers: dict[_Devices, HouseholdOptimiser] = {}
        self.builds = 0
        """How many optimisers were compiled (one per household, ever)."""
        self.last_result: OptimiserResult | None = None

    def optimiser_for(self, state: HouseholdState) -> HouseholdOptimiser:
        """The compiled optimiser for this household (compiled on first use)."""
        devices = _devices(state, self.params)
        optimiser = self._optimisers.get(devices)
        if optimiser is None:
            params = replace(self.params, **vars(devices))
            # The grid penalty must outweigh what a kWh of heating can save in comfort penalty over the
            # horizon (HouseholdParams); a light building (small C) needs more than the default 100 EUR/kWh.
            bound = params.max_comfort_value_eur_per_kwh(self.horizon_intervals * _DT_H)
            if params.grid_limit_penalty_eur_per_kwh <= bound:
                params = replace(params, grid_limit_penalty_eur_per_kwh=math.ceil(1.25 * bound))
            optimiser = HouseholdOptimiser(params, n_steps=self.horizon_intervals, dt_h=_DT_H)
            self._optimisers[devices] = optimiser
            self.builds += 1
        return optimiser

    def plan(
        self,
        now: datetime,
        state: HouseholdState,
        limits: Sequence[EffectiveLimit],
        tariff: TouTariff,
        contract: HouseholdContract,
    ) -> ControlDecision:
        count = self.horizon_intervals
        if len(limits) != count or len(tariff.intervals) < count or len(state.forecast) < count:
            raise ValueError(f"OptimiserPlanner was built for {count} intervals; got {len(limits)} limits, "
                             f"{len(tariff.intervals)} tariff and {len(state.forecast)} forecast intervals")
        optimiser = self.optimiser_for(state)
        inputs = self.inputs(state, limits, tariff, contract, optimiser.params)
        try:
            result = optimiser.solve(inputs)
        except OptimiserError as error:
            self.failures += 1
            self.last_result = None
            decision = self.fallback.plan(now, state, limits, tariff, contract)
            return replace(decision, notes=(f"optimiser failed ({error}); planned by "
                                            f"{type(self.fallback).__name__} instead", *decision.notes))
        self.last_result = result
        return self._decision(now, state, limits[0].start, inputs, result)

    # ------------------------------------------------------------------------------------------ inputs

    def inputs(
        self,
        state: HouseholdState,
        limits: Sequence[EffectiveLimit],
        tariff: TouTariff,
        contract: HouseholdContract,
        params: HouseholdParams,
    ) -> OptimiserInputs:
        """The optimiser's inputs for this state (public for inspection and tests)."""
        n = self.horizon_intervals
        start = limits[0].start
        forecast = state.forecast
        outdoor = np.asarray(forecast.outdoor_temp_c[:n], dtype=float)
        hp = state.heat_pump
        if hp is not None:
            cop = cop_air_source(hp.supply_temp_c, outdoor)
            # Internal gains enter the 1R1C balance exactly like a warmer outdoor temperature.
            outdoor_eq = outdoor + hp.thermal_resistance_k_per_kw * hp.internal_gains_kw
            indoor = hp.indoor_temp_c
            comfort = contract.comfort
            margin = min(self.comfort_margin_k, comfort.temperature_band_k / 2)
            comfort_min = np.full(n, comfort.comfort_min_c + margin)
            comfort_max = np.full(n, comfort.comfort_max_c - margin)
        else:
            cop = np.ones(n)  # no heat pump: hp power is bounded to 0, the COP does not matter
            outdoor_eq = outdoor
            indoor = float(contract.comfort.indoor_setpoint_c)
            passive = _passive_trajectory(indoor, outdoor_eq, params)
            comfort_min, comfort_max = passive - _PASSIVE_BAND_K, passive + _PASSIVE_BAND_K
        ev_available = np.zeros(n)
        ev_soc = ev_target = 0.0
        departure_step = 0
        ev = state.ev
        if ev is not None and ev.plugged_in:
            ev_soc = ev.soc_kwh
            needed = contract.comfort.ev_required_range_km * ev.kwh_per_km
            target = min(ev.capacity_kwh, needed + self.ev_margin_kwh if needed > 0 else 0.0)
            if ev.departure is None:
                departure_step = n
            else:
                departure_step = int(max(0, min(n, math.ceil((ev.departure - start) / INTERVAL))))
                after_h = max(0.0, (ev.departure - (start + n * INTERVAL)).total_seconds() / 3600)
                target -= ev.charger_kw * ev.charge_efficiency * after_h  # the rest fits in after the horizon
            ev_target = max(0.0, target)
            ev_available[:departure_step] = 1.0
        battery_soc = state.battery.soc_kwh if state.battery is not None else params.battery_min_soc_kwh
        return OptimiserInputs(
            import_price_eur_per_kwh=[i.import_price_eur_per_kwh for i in tariff.intervals[:n]],
            export_price_eur_per_kwh=[i.export_price_eur_per_kwh for i in tariff.intervals[:n]],
            import_limit_kw=[limit.import_limit_kw for limit in limits],
            export_limit_kw=[limit.export_limit_kw for limit in limits],
            base_load_kw=np.maximum(np.asarray(forecast.base_load_kw[:n], dtype=float), 0.0),
            pv_available_kw=np.maximum(np.asarray(forecast.pv_available_kw[:n], dtype=float), 0.0),
            outdoor_temp_c=outdoor_eq,
            cop=cop,
            comfort_min_c=comfort_min,
            comfort_max_c=comfort_max,
            ev_available=ev_available,
            indoor_temp_c=indoor,
            battery_soc_kwh=battery_soc,
            ev_soc_kwh=ev_soc,
            ev_target_soc_kwh=ev_target,
            ev_departure_step=departure_step,
        )

    # ------------------------------------------------------------------------------------------ decision

    def _decision(self, now: datetime, state: HouseholdState, start: datetime, inputs: OptimiserInputs,
                  result: OptimiserResult) -> ControlDecision:
        battery = result.battery_charge_kw - result.battery_discharge_kw
        setpoints: dict[str, float | None] = {}
        if state.heat_pump is not None:
            setpoints[state.heat_pump.name] = float(result.hp_electric_kw[0])
        if state.ev is not None:
            setpoints[state.ev.name] = float(result.ev_charge_kw[0])
        if state.battery is not None:
            setpoints[state.battery.name] = float(battery[0])
        if state.pv_name is not None:
            # A cap only when the plan curtails; otherwise "no instruction", so PV follows the real sun.
            curtailed = result.pv_used_kw[0] < inputs.pv_available_kw[0] - _ON_KW
            setpoints[state.pv_name] = -float(result.pv_used_kw[0]) if curtailed else None
        plan = Plan(created_at=now, intervals=tuple(
            PlanInterval(start=start + k * INTERVAL, net_import_kw=round(float(result.net_import_kw[k]), 3))
            for k in range(self.horizon_intervals)))
        schedule = {
            "heat_pump": tuple(result.hp_electric_kw.tolist()),
            "ev": tuple(result.ev_charge_kw.tolist()),
            "battery": tuple(battery.tolist()),
            "pv": tuple((-result.pv_used_kw).tolist()),
            "net_import": tuple(result.net_import_kw.tolist()),
            "indoor_temp": tuple(result.indoor_temp_c[1:].tolist()),
        }
        notes = tuple(_slack_note(slack, start) for slack in result.slacks)
        return ControlDecision(created_at=now, setpoints=setpoints, plan=plan, notes=notes, schedule=schedule)


def _passive_trajectory(indoor_c: float, outdoor_c: np.ndarray, params: HouseholdParams) -> np.ndarray:
    """End-of-interval indoor temperatures with no heating, by the optimiser's own (Euler) 1R1C step."""
    keep = 1.0 - _DT_H / (params.thermal_resistance_k_per_kw * params.thermal_capacity_kwh_per_k)
    gain = _DT_H / (params.thermal_resistance_k_per_kw * params.thermal_capacity_kwh_per_k)
    temps = np.empty(len(outdoor_c))
    temp = indoor_c
    for k, outside in enumerate(outdoor_c):
        temp = keep * temp + gain * outside
        temps[k] = temp
    return temps


def _slack_note(slack: SlackUse, start: datetime) -> str:
    """'<kind> <amount> <unit> at <time>: <reason>' with the interval's clock time (comfort and EV slacks
    are states at the end of interval ``step - 1``)."""
    at = start + slack.step * INTERVAL
    return f"{slack.kind} {slack.amount:.2f} {slack.unit} at {at:%Y-%m-%d %H:%M}Z: {slack.reason}"
