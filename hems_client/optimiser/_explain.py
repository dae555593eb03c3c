"""Turn the slack values of a plan into ``SlackUse`` records a person can act on."""

from __future__ import annotations

import numpy as np

from ._data import FloatArray, HouseholdParams, OptimiserInputs, OptimiserResult, SlackUse

REPORT_THRESHOLD = 1e-4  # slacks below this are solver noise, not decisions
_ON_KW = 1e-3  # a device counts as running above this power
COMFORT_OR_EV_FORCED = "ran because comfort/EV needs could not be met otherwise"
"""The phrase of an import-limit reason where the plan broke the limit to keep a comfort or EV term."""


def explain_slacks(
    inputs: OptimiserInputs,
    result: OptimiserResult,
    *,
    import_slack_kw: FloatArray,
    export_slack_kw: FloatArray,
    comfort_low_k: FloatArray,
    comfort_high_k: FloatArray,
    ev_slack_kwh: float,
    params: HouseholdParams,
    dt_h: float,
) -> list[SlackUse]:
    """Every slack above the threshold, in time order per kind, with the reason derived from the plan."""
    slacks: list[SlackUse] = []
    for k in np.flatnonzero(import_slack_kw > REPORT_THRESHOLD):
        slacks.append(
            SlackUse(
                "grid_import_limit",
                int(k),
                float(import_slack_kw[k]),
                _import_reason(int(k), inputs, result, params),
            )
        )
    for k in np.flatnonzero(export_slack_kw > REPORT_THRESHOLD):
        amount = float(export_slack_kw[k])
        reason = (
            f"export limit {inputs.export_limit_kw[k]:.2f} kW exceeded by {amount:.2f} kW at step {k}: "
            f"PV {result.pv_used_kw[k]:.2f} kW and battery discharge {result.battery_discharge_kw[k]:.2f} kW "
            "could not be used or curtailed otherwise"
        )
        slacks.append(SlackUse("grid_export_limit", int(k), amount, reason))
    for k in np.flatnonzero(comfort_low_k > REPORT_THRESHOLD):
        slacks.append(
            SlackUse(
                "comfort_low",
                int(k) + 1,
                float(comfort_low_k[k]),
                _cold_reason(int(k), inputs, result, params, comfort_low_k),
            )
        )
    for k in np.flatnonzero(comfort_high_k > REPORT_THRESHOLD):
        slacks.append(
            SlackUse(
                "comfort_high", int(k) + 1, float(comfort_high_k[k]), _warm_reason(int(k), inputs, result, params)
            )
        )
    if ev_slack_kwh > REPORT_THRESHOLD:
        step = inputs.ev_departure_step
        slacks.append(
            SlackUse(
                "ev_energy", step, float(ev_slack_kwh), _ev_reason(ev_slack_kwh, inputs, result, params, dt_h)
            )
        )
    return slacks


def _binding_import_steps(inputs: OptimiserInputs, result: OptimiserResult, steps: np.ndarray) -> np.ndarray:
    return steps[result.grid_import_kw[steps] >= inputs.import_limit_kw[steps] - _ON_KW]


def _span(steps: np.ndarray) -> str:
    return f"step {steps[0]}" if len(steps) == 1 else f"{len(steps)} steps between {steps[0]} and {steps[-1]}"


def _import_reason(k: int, inputs: OptimiserInputs, result: OptimiserResult, params: HouseholdParams) -> str:
    limit = inputs.import_limit_kw[k]
    amount = result.grid_import_kw[k] - limit
    head = f"import limit {limit:.2f} kW exceeded by {amount:.2f} kW at step {k}: "
    parts: list[str] = []
    base, pv = inputs.base_load_kw[k], inputs.pv_available_kw[k]
    if base - pv > limit:
        battery = result.battery_discharge_kw[k]
        if params.battery_max_kw <= _ON_KW or params.battery_capacity_kwh <= params.battery_min_soc_kwh + _ON_KW:
            cover = "there is no home battery to cover it"
        elif battery >= params.battery_max_kw - _ON_KW:
            cover = f"the battery already gave its maximum {params.battery_max_kw:.2f} kW"
        elif result.battery_soc_kwh[k] <= params.battery_min_soc_kwh + _ON_KW:
            cover = f"the battery was empty ({result.battery_soc_kwh[k]:.2f} kWh)"
        else:
            cover = (
                f"the battery's {result.battery_soc_kwh[k]:.2f} kWh was spread over other over-limit steps"
            )
        parts.append(f"the base load {base:.2f} kW (less {pv:.2f} kW PV) alone exceeds it and {cover}")
    running = [
        f"{label} {power:.2f} kW"
        for label, power in (
            ("heat pump", result.hp_electric_kw[k]),
            ("EV charging", result.ev_charge_kw[k]),
            ("battery charging", result.battery_charge_kw[k]),
        )
        if power > _ON_KW
    ]
    if running:
        parts.append(", ".join(running) + " " + COMFORT_OR_EV_FORCED)
    if not parts:
        parts.append("no flexible load could be reduced further")
    return head + "; ".join(parts)


def _cold_reason(
    k: int, inputs: OptimiserInputs, result: OptimiserResult, params: HouseholdParams, too_cold: FloatArray
) -> str:
    temp, band = result.indoor_temp_c[k + 1], inputs.comfort_min_c[k]
    head = (
        f"indoor temperature {temp:.2f} °C at the end of step {k} is {band - temp:.2f} K below the minimum "
        f"{band:.2f} °C: "
    )
    # The cold spell: the intervals since the house was last inside the band.
    inside = np.flatnonzero(too_cold[:k] <= REPORT_THRESHOLD)
    spell = np.arange(inside[-1] + 1 if len(inside) else 0, k + 1)
    limited = result.grid_import_kw[spell] >= inputs.import_limit_kw[spell] - _ON_KW
    at_max = result.hp_electric_kw[spell] >= params.hp_max_electric_kw - _ON_KW
    if spell[0] == 0 and inputs.indoor_temp_c < inputs.comfort_min_c[0] and np.all(at_max | limited):
        return head + f"the house started at {inputs.indoor_temp_c:.2f} °C and cannot warm up faster"
    if np.all(limited | at_max) and np.any(limited):
        return head + (
            f"heating was held back by the import limit at {_span(spell[limited])} "
            "(the grid limit ranks above comfort)"
        )
    if np.all(at_max):
        return head + f"the heat pump ran at its maximum {params.hp_max_electric_kw:.2f} kW throughout"
    return head + "heating would have cost more than the comfort penalty for this shortfall"


def _warm_reason(k: int, inputs: OptimiserInputs, result: OptimiserResult, params: HouseholdParams) -> str:
    temp, band = result.indoor_temp_c[k + 1], inputs.comfort_max_c[k]
    head = (
        f"indoor temperature {temp:.2f} °C at the end of step {k} is {temp - band:.2f} K above the maximum "
        f"{band:.2f} °C: "
    )
    if inputs.indoor_temp_c > inputs.comfort_max_c[0]:
        return head + f"the house started at {inputs.indoor_temp_c:.2f} °C and there is no cooling"
    if inputs.outdoor_temp_c[k] > band:
        return head + f"it is {inputs.outdoor_temp_c[k]:.2f} °C outdoors and there is no cooling"
    heating = np.flatnonzero(result.hp_electric_kw[: k + 1] > _ON_KW)
    if len(heating) == 0:
        return head + "the band narrowed faster than the house cools"
    # Pre-heating: heat stored in the building for later steps where heating is held back or dearer.
    later = np.arange(k + 1, len(inputs.import_limit_kw))
    held_back = later[
        (result.grid_import_kw[later] >= inputs.import_limit_kw[later] - _ON_KW)
        & (result.hp_electric_kw[later] < params.hp_max_electric_kw - _ON_KW)
    ]
    if len(held_back):
        window = held_back[: np.argmax(np.diff(held_back, append=held_back[-1] + 2) > 1) + 1]
        limit = inputs.import_limit_kw[window].min()
        return head + (
            f"pre-heating ahead of the import limit ({limit:.2f} kW at {_span(window)}): heat stored now keeps "
            "the house warm while the limit leaves too little room to heat, and a little too warm now costs "
            "less than too cold then"
        )
    paid = inputs.import_price_eur_per_kwh[heating].min()
    dearest = int(later[np.argmax(inputs.import_price_eur_per_kwh[later])]) if len(later) else None
    if dearest is not None and inputs.import_price_eur_per_kwh[dearest] > paid + 1e-9:
        return head + (
            f"pre-heating at {paid:.2f} EUR/kWh ahead of dearer hours (up to "
            f"{inputs.import_price_eur_per_kwh[dearest]:.2f} EUR/kWh at step {dearest})"
        )
    return head + "the heat pump absorbed energy that was cheaper to use than to leave (PV or a negative price)"


def _ev_reason(
    shortfall: float, inputs: OptimiserInputs, result: OptimiserResult, params: HouseholdParams, dt_h: float
) -> str:
    step, target = inputs.ev_departure_step, inputs.ev_target_soc_kwh
    head = (
        f"EV reaches {result.ev_soc_kwh[step]:.2f} kWh at departure (step {step}), "
        f"{shortfall:.2f} kWh short of the target {target:.2f} kWh: "
    )
    if target > params.ev_battery_kwh:
        return head + f"the target exceeds the battery capacity {params.ev_battery_kwh:.2f} kWh"
    plugged = np.flatnonzero(inputs.ev_available[:step] > 0)
    reachable = result.ev_soc_kwh[0] + params.ev_charge_efficiency * params.ev_charger_max_kw * dt_h * len(
        plugged
    )
    if reachable < target - REPORT_THRESHOLD:
        return head + (
            f"plugged in for {len(plugged) * dt_h:.2f} h at up to {params.ev_charger_max_kw:.2f} kW before "
            f"departure, so at most {reachable:.2f} kWh was reachable"
        )
    binding = _binding_import_steps(inputs, result, plugged)
    if len(binding):
        return head + f"the import limit left too little room while plugged in, at {_span(binding)}"
    return (
        head
        + f"charging was dearer than the shortfall penalty {params.ev_energy_penalty_eur_per_kwh:.2f} EUR/kWh"
    )
