"""The capacity-need LP: the least import per interval with which the household keeps its comfort and EV range.

Theory of operation
-------------------
The same devices and building as the household optimiser (``_model.device_model``), another objective. The
horizon has three parts: the steps before the *need window* run under the limits already known (the day the DSO
has allocated); the window is what the need is for (the day it has yet to allocate); the steps after it close the
horizon so the window does not end by running the house cold. Each need takes two solves of one compiled LP:

1. minimise the peak import over the window. The comfort band, the EV target and the known limits before the
   window are soft, with penalties ordered known limit > comfort > EV energy > peak, so comfort gives way only
   where no import profile within the contract could keep it (which the result says);
2. cap the peak at what step 1 found (plus a hair) and minimise the energy cost under the tariff: within the
   peak, the need leans to the cheap intervals, where the DSO's tariff says the grid has room.

The need is the second solution's import in each window interval: limits at least that high in every interval
leave the household a plan that keeps its comfort (up to forecast errors). The weights are abstract (not EUR):
one kW of peak costs 1; the penalties exceed what a kW of peak can buy in comfort or EV energy, see the
constants. As in the household optimiser, everything that changes is a Parameter entering affinely (DPP).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cvxpy as cp
import numpy as np

from ._data import FloatArray, HouseholdParams, OptimiserInputs
from ._model import (
    GRID_TIE_BREAK_EUR_PER_KWH,
    SCALAR_PARAMETERS,
    CompiledLP,
    DeviceParameters,
    DeviceVariables,
    ParameterValues,
    SolvePath,
    burn_cycle_cost,
    comfort_weights,
    device_model,
    device_values,
    make_parameters,
)

PEAK_WEIGHT = 1.0
"""Stage 1: weight of one kW of peak import in the window."""
COMFORT_WEIGHT_PER_KH = 1000.0
"""Per K·h outside the band. Avoiding δ K at one state by heating in the step before takes δ·C/(COP·dt) kW,
13 δ kW at C = 10 kWh/K, COP 3 (26 δ kW at COP 1.5), while the shortfall costs 250 δ: comfort always wins."""
EV_WEIGHT_PER_KWH = 100.0
"""Per kWh short of the EV target: one kWh more in one step takes at most 1/(η·dt) = 4.3 kW of peak."""
PEAK_TOLERANCE_KW = 1e-4
"""Stage 2 may exceed stage 1's peak by this much (solver tolerance), never more."""
_NO_CAP_KW = 1e6


@dataclass(frozen=True)
class _NeedVariables(DeviceVariables):
    import_share: cp.Variable  # share of the step's import cap used
    import_slack: cp.Variable  # kW above the cap (a known limit, or the contract maximum)
    export_share: cp.Variable
    export_slack: cp.Variable
    peak: cp.Variable  # kW: the largest import in the window


@dataclass(frozen=True)
class _NeedParameters(DeviceParameters):
    import_cap: cp.Parameter  # known limit before the window, contract maximum in and after it
    export_cap: cp.Parameter
    window_cap: cp.Parameter  # import_cap inside the window, 0 outside: the peak covers the window only
    import_share_cost: cp.Parameter  # energy weight x price, per share of the cap, for one step
    import_cost: cp.Parameter  # the same per kW of slack
    export_share_value: cp.Parameter
    export_value: cp.Parameter
    cycle_cost: cp.Parameter
    peak_weight: cp.Parameter
    peak_cap: cp.Parameter


@dataclass(frozen=True, eq=False)
class NeedInputs:
    """The household optimiser's inputs, read for a need: ``import_limit_kw`` / ``export_limit_kw`` are the caps
    per step (the known limits before the window, the contract maxima from its start on), prices the tariff;
    the need is for steps ``window_start`` .. ``window_end - 1``."""

    inputs: OptimiserInputs
    window_start: int
    window_end: int

    def __post_init__(self) -> None:
        n = self.inputs.n_steps
        if not 0 <= self.window_start < self.window_end <= n:
            raise ValueError(f"need window {self.window_start}..{self.window_end} must lie within the {n} steps "
                             "and hold at least one")

    @property
    def window(self) -> slice:
        return slice(self.window_start, self.window_end)


@dataclass(frozen=True, eq=False)
class NeedResult:
    import_kw: FloatArray
    """Grid import of the final solution, every step of the horizon."""
    window: slice
    peak_kw: float
    comfort_shortfall_kh: float
    """K·h outside the band the LP could not avoid with any import profile within the contract (0 normally)."""
    ev_shortfall_kwh: float
    known_limit_excess_kwh: float
    """Import above the known limits before the window the LP could not avoid (the household's inflexible load
    alone exceeds them)."""
    solve_time_s: float

    @property
    def need_kw(self) -> FloatArray:
        return self.import_kw[self.window]


class CapacityNeedOptimiser(CompiledLP):
    """The capacity-need LP for one household, built once (``n_steps`` long), solved twice per need."""

    def __init__(self, params: HouseholdParams | None = None, *, n_steps: int = 2 * 96, dt_h: float = 0.25) -> None:
        self.params = params = HouseholdParams() if params is None else params
        if n_steps < 1 or not dt_h > 0:
            raise ValueError(f"need n_steps >= 1 and dt_h > 0, not {n_steps} and {dt_h}")
        self.n_steps, self.dt_h = n_steps, dt_h
        # Known limits rank above comfort: a kWh over one must cost more than its heat can save in comfort.
        comfort_value = (COMFORT_WEIGHT_PER_KH * params.hp_max_cop * (n_steps * dt_h + params.comfort_terminal_h)
                         / params.thermal_capacity_kwh_per_k)
        self.limit_weight_per_kwh = math.ceil(1.25 * comfort_value)
        self._v, self._p, self.problem = self._build()
        self._prepare_paths("capacity-need optimiser")

    def _build(self) -> tuple[_NeedVariables, _NeedParameters, cp.Problem]:
        n, dt, hh = self.n_steps, self.dt_h, self.params
        p = make_parameters(_NeedParameters, n, SCALAR_PARAMETERS | {"peak_weight", "peak_cap"})
        assert isinstance(p, _NeedParameters)
        devices, constraints, load = device_model(n, dt, hh, p)
        v = _NeedVariables(
            **devices,
            import_share=cp.Variable(n, bounds=[0.0, 1.0], name="import_share"),
            import_slack=cp.Variable(n, nonneg=True, name="import_slack"),
            export_share=cp.Variable(n, bounds=[0.0, 1.0], name="export_share"),
            export_slack=cp.Variable(n, nonneg=True, name="export_slack"),
            peak=cp.Variable(nonneg=True, name="peak"),
        )
        grid_import = cp.multiply(p.import_cap, v.import_share) + v.import_slack
        grid_export = cp.multiply(p.export_cap, v.export_share) + v.export_slack
        constraints += [
            grid_import - grid_export == load,
            cp.multiply(p.window_cap, v.import_share) <= v.peak,
            v.peak <= p.peak_cap,
        ]
        objective = (
            p.peak_weight * v.peak
            + p.import_share_cost @ v.import_share
            + p.import_cost @ v.import_slack
            - p.export_share_value @ v.export_share
            - p.export_value @ v.export_slack
            + p.cycle_cost @ (v.charge + v.discharge)
            + self.limit_weight_per_kwh * dt * cp.sum(v.import_slack + v.export_slack)
            + comfort_weights(n, dt, COMFORT_WEIGHT_PER_KH, hh.comfort_terminal_h) @ (v.too_cold + v.too_warm)
            + EV_WEIGHT_PER_KWH * v.ev_slack
        )
        return v, p, cp.Problem(cp.Minimize(objective), constraints)

    def parameter_values(self, need: NeedInputs, *, stage: int, peak_cap_kw: float = _NO_CAP_KW
                         ) -> ParameterValues:
        """Validate and compute every Parameter value for stage 1 (peak) or stage 2 (energy under the peak)."""
        inputs, n, dt, hh = need.inputs, self.n_steps, self.dt_h, self.params
        errors = inputs.validate(n)
        if not errors and inputs.cop.max() > hh.hp_max_cop:
            errors.append(f"cop must be <= hp_max_cop {hh.hp_max_cop}, got {inputs.cop.max():g}")
        if errors:
            raise ValueError("invalid OptimiserInputs: " + "; ".join(errors))
        in_window = np.zeros(n)
        in_window[need.window] = 1.0
        energy = 1.0 if stage == 2 else 0.0
        import_price = inputs.import_price_eur_per_kwh
        export_price = np.minimum(inputs.export_price_eur_per_kwh, import_price)
        import_cost = dt * (energy * import_price + GRID_TIE_BREAK_EUR_PER_KWH)
        export_value = dt * (energy * export_price - GRID_TIE_BREAK_EUR_PER_KWH)
        return {
            "import_cap": inputs.import_limit_kw,
            "export_cap": inputs.export_limit_kw,
            "window_cap": inputs.import_limit_kw * in_window,
            "import_share_cost": import_cost * inputs.import_limit_kw,
            "import_cost": import_cost,
            "export_share_value": export_value * inputs.export_limit_kw,
            "export_value": export_value,
            "cycle_cost": burn_cycle_cost(hh, dt, energy * export_price),
            "peak_weight": PEAK_WEIGHT if stage == 1 else 0.0,
            "peak_cap": peak_cap_kw,
            **device_values(inputs, hh, dt),
        }

    def solve(self, need: NeedInputs, *, path: SolvePath | None = None, cvxpy_solver: str = cp.HIGHS) -> NeedResult:
        """The capacity need for ``need``; ``ValueError`` for invalid inputs, ``OptimiserError`` if the solver
        fails (by construction the LP is feasible and bounded)."""
        first = self.parameter_values(need, stage=1)
        _, _, x1, time1 = self._solve_values(first, path=path, cvxpy_solver=cvxpy_solver)
        peak = float(np.asarray(x1["peak"]).reshape(-1)[0])
        second = self.parameter_values(need, stage=2, peak_cap_kw=max(peak, 0.0) + PEAK_TOLERANCE_KW)
        _, _, x, time2 = self._solve_values(second, path=path, cvxpy_solver=cvxpy_solver)
        dt = self.dt_h
        caps = need.inputs.import_limit_kw
        slack = np.maximum(x["import_slack"], 0.0)
        grid_import = np.maximum(caps * x["import_share"] + slack, 0.0)
        before = slice(0, need.window_start)
        return NeedResult(
            import_kw=grid_import, window=need.window,
            peak_kw=float(grid_import[need.window].max()),
            comfort_shortfall_kh=float(dt * np.maximum(x["too_cold"] + x["too_warm"], 0.0).sum()),
            ev_shortfall_kwh=max(float(np.asarray(x["ev_slack"]).reshape(-1)[0]), 0.0),
            known_limit_excess_kwh=float(dt * slack[before].sum()),
            solve_time_s=time1 + time2,
        )
