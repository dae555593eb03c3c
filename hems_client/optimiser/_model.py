"""The household LP: built once with cvxpy Parameters, re-solved by setting their values.

Theory of operation
-------------------
Intervals k = 0 … N−1 of ``dt_h`` hours; states (indoor temperature, battery energy) are variables for the
ends of the intervals, their start values are Parameters. Everything that changes between solves is a
Parameter entering affinely (DPP); anything non-affine in the inputs (products, masks, clipping) is computed
in numpy (:meth:`HouseholdOptimiser.parameter_values`), so no solve ever recompiles the problem.

Never infeasible: the only hard constraints are device ranges, storage ranges (start values clipped into
them) and the power balance, and "every device off, PV curtailed" satisfies them. Grid limits, the comfort
band and the EV target are soft with penalties ordered grid > comfort > EV energy.

Soft limits without constraint rows (386 instead of 865 rows; HiGHS needs ≈ 35 % less time):
* grid import = ``import_limit·u + import_slack`` with u ∈ [0, 1] (same for export), so the limit is a
  coefficient, not a row; the slack is what exceeds the limit;
* indoor temperature = ``comfort_min + band·τ + too_warm − too_cold`` with τ ∈ [0, 1].
A variable bounded by a Parameter cannot also be multiplied by one under DPP (cvxpy counts the bound's
Parameter as part of the variable), hence the scaled [0, 1] variables rather than parametric bounds.
The EV only charges, so its energy is monotone: only the final (departure) state needs bounds, and the
trajectory is a cumulative sum computed after the solve.

No binaries, so two LP artefacts are removed by the objective instead:
* simultaneous import and export: export is valued at most at the import price of the same interval
  (a convex, non-arbitrage tariff) and both flows carry a tiny tie-break cost, so lowering both always pays;
* simultaneous battery charge and discharge burns energy — valuable when prices are negative, either now or
  later (a fuller battery then refuses paid-for energy; seen in random tests with export limits binding).
  The cycle cost per kWh is raised to the base cost plus more than that burnt energy can be worth at the
  horizon's most negative price, so the burn never pays; ``ch/max + dis/max ≤ 1`` bounds it as well.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields, replace
from typing import Literal

import cvxpy as cp
import numpy as np

from ._data import FloatArray, HouseholdParams, OptimiserError, OptimiserInputs, OptimiserResult
from ._explain import explain_slacks
from ._highs import TESTED_CVXPY, DirectHighs, IncompatibleCvxpy, cvxpy_tested, cvxpy_version

logger = logging.getLogger(__name__)

ParameterValues = dict[str, FloatArray | float]

GRID_TIE_BREAK_EUR_PER_KWH = 1e-4  # makes simultaneous import + export strictly unprofitable
OPTIMAL_STATUSES = (cp.OPTIMAL, cp.OPTIMAL_INACCURATE)
CROSS_CHECK_TOLERANCE = 1e-6
"""Relative objective difference at which the direct path and ``problem.solve`` count as the same answer."""
_WARNED: set[str] = set()
"""Warnings about the installed cvxpy already logged (once per process, not once per household)."""


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        logger.warning("%s", message)

SolvePath = Literal["direct", "cvxpy"]


@dataclass(frozen=True)
class DeviceVariables:
    """The household's devices and building: what every LP over this model shares."""

    hp: cp.Variable  # heat-pump electric kW
    band_position: cp.Variable  # τ: where in the comfort band the indoor temperature sits
    too_cold: cp.Variable  # K below the band
    too_warm: cp.Variable  # K above the band
    ev_charge: cp.Variable
    ev_slack: cp.Variable  # kWh short of the EV target at departure
    charge: cp.Variable
    discharge: cp.Variable
    soc: cp.Variable
    pv: cp.Variable


@dataclass(frozen=True)
class DeviceParameters:
    base_load: cp.Parameter
    pv_available: cp.Parameter
    heat_gain: cp.Parameter  # K per kW of heat-pump electricity over one interval (dt·COP/C)
    outdoor_gain: cp.Parameter  # K per interval driven by the outdoor temperature (dt·T_out/(R·C))
    comfort_min: cp.Parameter
    comfort_band: cp.Parameter  # comfort_max − comfort_min
    ev_charge_max: cp.Parameter
    temp0: cp.Parameter
    soc0: cp.Parameter
    ev_soc0: cp.Parameter
    ev_target: cp.Parameter


SCALAR_PARAMETERS = frozenset({"temp0", "soc0", "ev_soc0", "ev_target"})


@dataclass(frozen=True)
class _Variables(DeviceVariables):
    import_share: cp.Variable  # u: share of the import limit used
    import_slack: cp.Variable  # kW above the import limit
    export_share: cp.Variable
    export_slack: cp.Variable


@dataclass(frozen=True)
class _Parameters(DeviceParameters):
    import_share_cost: cp.Parameter  # EUR for using the whole import limit for one interval
    import_cost: cp.Parameter  # EUR per kW for one interval
    export_share_value: cp.Parameter
    export_value: cp.Parameter
    cycle_cost: cp.Parameter
    import_limit: cp.Parameter
    export_limit: cp.Parameter


def make_parameters(kind: type[DeviceParameters], n: int, scalars: frozenset[str] = SCALAR_PARAMETERS
                    ) -> DeviceParameters:
    """One Parameter per field of ``kind``: scalars for the start states, length-``n`` vectors otherwise.
    Parameters carry no attributes (nonneg=…): cvxpy would swap them for internal copies, and the direct path
    feeds values by Parameter id. Inputs are validated in numpy instead."""
    return kind(**{f.name: cp.Parameter(() if f.name in scalars else n, name=f.name)
                   for f in fields(kind)})


def device_model(
    n: int, dt: float, hh: HouseholdParams, p: DeviceParameters
) -> tuple[dict[str, cp.Variable], list[cp.Constraint], cp.Expression]:
    """The devices and the building as variables and constraints (1R1C building, battery, one EV session, PV),
    and the net load they draw (``base + hp + ev + charge − discharge − pv``), which an LP balances against
    the grid its own way. Ranges are variable bounds: HiGHS takes them as column bounds, not constraint rows."""
    v = {
        "hp": cp.Variable(n, bounds=[0.0, hh.hp_max_electric_kw], name="hp"),
        "band_position": cp.Variable(n, bounds=[0.0, 1.0], name="band_position"),
        "too_cold": cp.Variable(n, nonneg=True, name="too_cold"),
        "too_warm": cp.Variable(n, nonneg=True, name="too_warm"),
        "ev_charge": cp.Variable(n, bounds=[0.0, p.ev_charge_max], name="ev_charge"),
        "ev_slack": cp.Variable(nonneg=True, name="ev_slack"),
        "charge": cp.Variable(n, bounds=[0.0, hh.battery_max_kw], name="charge"),
        "discharge": cp.Variable(n, bounds=[0.0, hh.battery_max_kw], name="discharge"),
        "soc": cp.Variable(n, bounds=[hh.battery_min_soc_kwh, hh.battery_capacity_kwh], name="soc"),
        "pv": cp.Variable(n, bounds=[0.0, p.pv_available], name="pv"),
    }
    eta = hh.battery_efficiency
    temp = p.comfort_min + cp.multiply(p.comfort_band, v["band_position"]) + v["too_warm"] - v["too_cold"]
    keep = 1.0 - dt / (hh.thermal_resistance_k_per_kw * hh.thermal_capacity_kwh_per_k)
    ev_final = p.ev_soc0 + dt * hh.ev_charge_efficiency * cp.sum(v["ev_charge"])
    constraints = [
        temp == keep * cp.hstack([p.temp0, temp[:-1]]) + cp.multiply(p.heat_gain, v["hp"]) + p.outdoor_gain,
        v["soc"] == cp.hstack([p.soc0, v["soc"][:-1]]) + (dt * eta) * v["charge"] - (dt / eta) * v["discharge"],
        ev_final <= hh.ev_battery_kwh,
        ev_final + v["ev_slack"] >= p.ev_target,
    ]
    if hh.battery_max_kw > 0:
        constraints.append((v["charge"] + v["discharge"]) / hh.battery_max_kw <= 1.0)
    load = p.base_load + v["hp"] + v["ev_charge"] + v["charge"] - v["discharge"] - v["pv"]
    return v, constraints, load


def comfort_weights(n: int, dt: float, penalty_per_kh: float, terminal_h: float) -> FloatArray:
    """Penalty per K outside the band at each end state; the last state counts ``terminal_h`` extra hours."""
    weight = np.full(n, penalty_per_kh * dt)
    weight[-1] += penalty_per_kh * terminal_h
    return weight


def device_values(inputs: OptimiserInputs, hh: HouseholdParams, dt: float) -> ParameterValues:
    """The values of the ``DeviceParameters`` for ``inputs`` (validated by the caller), in numpy."""
    c, r = hh.thermal_capacity_kwh_per_k, hh.thermal_resistance_k_per_kw
    session = np.arange(len(inputs.base_load_kw)) < inputs.ev_departure_step
    return {
        "base_load": inputs.base_load_kw,
        "pv_available": inputs.pv_available_kw,
        "heat_gain": dt * inputs.cop / c,
        "outdoor_gain": dt * inputs.outdoor_temp_c / (r * c),
        "comfort_min": inputs.comfort_min_c,
        "comfort_band": inputs.comfort_max_c - inputs.comfort_min_c,
        "ev_charge_max": hh.ev_charger_max_kw * inputs.ev_available * session,
        "temp0": inputs.indoor_temp_c,
        # Clipped, not rejected: a measured state may sit a little outside the configured range.
        "soc0": float(np.clip(inputs.battery_soc_kwh, hh.battery_min_soc_kwh, hh.battery_capacity_kwh)),
        "ev_soc0": float(np.clip(inputs.ev_soc_kwh, 0.0, hh.ev_battery_kwh)),
        # A departure at step 0 means the EV has left: no session, no requirement.
        "ev_target": inputs.ev_target_soc_kwh if inputs.ev_departure_step > 0 else 0.0,
    }


def burn_cycle_cost(hh: HouseholdParams, dt: float, export_price: FloatArray) -> FloatArray:
    """Cycle cost per kW of charge plus discharge for one interval. Simultaneous charge + discharge burns energy,
    worth at most the most negative price in the horizon (now, or later when a fuller battery would have to refuse
    paid-for energy). Per kWh of charge plus discharge the burn is (1 − η²)/(1 + η²) of the energy at constant
    soc, and (1/η − η)/2 of the stored energy (valued up to price/η) at constant grid power; the cycle cost
    exceeds both, with 25 % margin."""
    eta = hh.battery_efficiency
    burn_share = 1.25 * max((1.0 - eta**2) / (1.0 + eta**2), (1.0 - eta**2) / (2.0 * eta**2))
    most_negative = max(0.0, -float(export_price.min()))
    return np.full(len(export_price), dt * (hh.battery_cycle_cost_eur_per_kwh + burn_share * most_negative))




class CompiledLP:
    """Build once, solve many times: an LP of Parameters entering affinely (DPP), re-solved either on the direct
    HiGHS path (``_highs.DirectHighs``) or through ``problem.solve``. Subclasses set ``problem``, ``_v`` and
    ``_p`` (dataclasses of Variables and Parameters) and call ``_prepare_paths`` once."""

    problem: cp.Problem
    _v: DeviceVariables
    _p: DeviceParameters

    def _prepare_paths(self, what: str) -> None:
        if not self.problem.is_dcp(dpp=True):
            raise AssertionError(f"the {what} problem must be DPP so re-solves skip compilation")
        self.solve_path: SolvePath = "direct"
        """The path ``solve`` takes by default: "cvxpy" when the installed cvxpy is not what the direct path
        reads (detected here, at start) or when its first answer disagreed with ``problem.solve``."""
        self._direct: DirectHighs | None = None
        self._cross_check = False
        try:
            self._direct = DirectHighs(self.problem)  # ≈ 20 ms, once per household
        except IncompatibleCvxpy as error:
            self.solve_path = "cvxpy"
            self._incompatible: IncompatibleCvxpy | None = error
            _warn_once(f"{what}: {error}. Falling back to problem.solve (same plans, about 5x slower "
                       "per re-solve); install a tested cvxpy to get the fast path back")
        else:
            self._incompatible = None
            if not cvxpy_tested():
                low, high = TESTED_CVXPY
                self._cross_check = True
                _warn_once(f"{what}: cvxpy {cp.__version__} is outside the range the direct HiGHS "
                           f"path was checked with ({low[0]}.{low[1]} to below {high[0]}.{high[1]}); each "
                           "optimiser's first plan is cross-checked against problem.solve")

    def _solve_values(self, values: ParameterValues, *, path: SolvePath | None, cvxpy_solver: str
                      ) -> tuple[str, float, dict[str, FloatArray], float]:
        """(status, objective, variable values by name, solve time) for these Parameter values; OptimiserError
        when the solver finds no optimum."""
        if path is None:
            path = self.solve_path
            if self._cross_check:
                return self._cross_checked(values, cvxpy_solver)
        names = [f.name for f in fields(self._v)]
        if path == "direct":
            if self._direct is None:
                raise self._incompatible or IncompatibleCvxpy("the direct path is not available")
            by_id = {getattr(self._p, name).id: value for name, value in values.items()}
            solution = self._direct.solve(by_id)
            status, objective, solve_time_s = solution.status, solution.objective, solution.solve_time_s
            x = ({name: solution.value(getattr(self._v, name)) for name in names}
                 if status in OPTIMAL_STATUSES else {})
        elif path == "cvxpy":
            for name, value in values.items():
                getattr(self._p, name).value = value
            # HiGHS by default, not Clarabel: through problem.solve HiGHS re-solves this LP in 7–9 ms and
            # Clarabel's interior point in 17–24 ms (bench/optimiser.py, 2-core machine); simplex also returns
            # vertex solutions, so no device is planned at a tiny fraction of its power.
            try:
                self.problem.solve(solver=cvxpy_solver, enforce_dpp=True, warm_start=True)
            except cp.SolverError as exc:
                raise OptimiserError(f"{cvxpy_solver} failed: {exc}") from exc
            status, objective = self.problem.status, self.problem.value
            solve_time_s = float(self.problem.solver_stats.solve_time or 0.0)
            x = {name: np.asarray(getattr(self._v, name).value, dtype=float) for name in names}
        else:
            raise ValueError(f"path must be 'direct' or 'cvxpy', not {path!r}")
        if status not in OPTIMAL_STATUSES:
            raise OptimiserError(
                f"optimiser status {status!r}: no plan (the LP is feasible and bounded by construction, "
                "so the solver failed or this is a bug)"
            )
        return status, float(objective), x, solve_time_s

    def _cross_checked(self, values: ParameterValues, cvxpy_solver: str
                       ) -> tuple[str, float, dict[str, FloatArray], float]:
        """First solve on an untested cvxpy: both paths; on disagreement keep to ``problem.solve``."""
        self._cross_check = False
        direct = self._solve_values(values, path="direct", cvxpy_solver=cvxpy_solver)
        plain = self._solve_values(values, path="cvxpy", cvxpy_solver=cvxpy_solver)
        scale = max(1.0, abs(plain[1]))
        if abs(direct[1] - plain[1]) > CROSS_CHECK_TOLERANCE * scale:
            self.solve_path = "cvxpy"
            _warn_once(f"optimiser: on cvxpy {cp.__version__} the direct HiGHS path found objective "
                       f"{direct[1]:.6f} where problem.solve found {plain[1]:.6f}; falling back to problem.solve")
            return plain
        return direct


class HouseholdOptimiser(CompiledLP):
    """Receding-horizon plan for one household: heat pump, EV, home battery, PV and base load.

    Build once per household; call :meth:`solve` every interval with fresh inputs. Pure: no I/O, no clock.
    """

    def __init__(
        self, params: HouseholdParams | None = None, *, n_steps: int = 96, dt_h: float = 0.25
    ) -> None:
        if cvxpy_version() < TESTED_CVXPY[0]:
            low = TESTED_CVXPY[0]
            raise IncompatibleCvxpy(
                f"cvxpy {cp.__version__} is too old: the household problem needs Parameter-valued variable bounds "
                f"(cvxpy >= {low[0]}.{low[1]}); pip install 'cvxpy>={low[0]}.{low[1]},<{TESTED_CVXPY[1][0]}."
                f"{TESTED_CVXPY[1][1]}'")
        self.params = params = HouseholdParams() if params is None else params
        if n_steps < 1 or not dt_h > 0:
            raise ValueError(f"need n_steps >= 1 and dt_h > 0, not {n_steps} and {dt_h}")
        self.n_steps = n_steps
        self.dt_h = dt_h
        comfort_bound = params.max_comfort_value_eur_per_kwh(n_steps * dt_h)
        if params.grid_limit_penalty_eur_per_kwh <= comfort_bound:
            raise ValueError(
                f"grid_limit_penalty_eur_per_kwh {params.grid_limit_penalty_eur_per_kwh} must exceed "
                f"{comfort_bound:.1f}, the most a kWh of heat-pump electricity can save in comfort penalty "
                f"over {n_steps * dt_h:g} h; otherwise the plan breaks the grid limit to keep the house warm"
            )
        self._v, self._p, self.problem = self._build()
        self._prepare_paths("household optimiser")

    # ----------------------------------------------------------------------------------------- build
    def _build(self) -> tuple[_Variables, _Parameters, cp.Problem]:
        n, dt, hh = self.n_steps, self.dt_h, self.params
        p = make_parameters(_Parameters, n)
        assert isinstance(p, _Parameters)
        devices, constraints, load = device_model(n, dt, hh, p)
        v = _Variables(
            **devices,
            import_share=cp.Variable(n, bounds=[0.0, 1.0], name="import_share"),
            import_slack=cp.Variable(n, nonneg=True, name="import_slack"),
            export_share=cp.Variable(n, bounds=[0.0, 1.0], name="export_share"),
            export_slack=cp.Variable(n, nonneg=True, name="export_slack"),
        )
        grid_import = cp.multiply(p.import_limit, v.import_share) + v.import_slack
        grid_export = cp.multiply(p.export_limit, v.export_share) + v.export_slack
        constraints.insert(0, grid_import - grid_export == load)
        comfort_weight = comfort_weights(n, dt, hh.comfort_penalty_eur_per_kh, hh.comfort_terminal_h)
        objective = (
            p.import_share_cost @ v.import_share
            + p.import_cost @ v.import_slack
            - p.export_share_value @ v.export_share
            - p.export_value @ v.export_slack
            + p.cycle_cost @ (v.charge + v.discharge)
            + hh.grid_limit_penalty_eur_per_kwh * dt * cp.sum(v.import_slack + v.export_slack)
            + comfort_weight @ (v.too_cold + v.too_warm)
            + hh.ev_energy_penalty_eur_per_kwh * v.ev_slack
        )
        return v, p, cp.Problem(cp.Minimize(objective), constraints)

    # ----------------------------------------------------------------------------------------- solve
    def solve(
        self, inputs: OptimiserInputs, *, path: SolvePath | None = None, cvxpy_solver: str = cp.HIGHS
    ) -> OptimiserResult:
        """Plan the horizon for ``inputs``.

        ``path="direct"`` applies the Parameter values to cvxpy's compiled DPP tensors and re-solves
        a persistent HiGHS instance from its previous basis; ``path="cvxpy"`` sets the Parameters and calls
        ``problem.solve(solver=cvxpy_solver)``. Both solve the same LP; with HiGHS the answers agree to
        solver tolerance (see ``bench/optimiser.py`` for the timings). ``None`` (default): ``solve_path``,
        the direct path unless the installed cvxpy cannot take it.
        Raises ``ValueError`` for invalid inputs, ``IncompatibleCvxpy`` for ``path="direct"`` on a cvxpy the
        direct path cannot read, and ``OptimiserError`` if the solver fails.
        """
        values = self.parameter_values(inputs)
        status, objective, x, solve_time_s = self._solve_values(values, path=path, cvxpy_solver=cvxpy_solver)
        return self._result(inputs, values, x, status, objective, solve_time_s)

    def parameter_values(self, inputs: OptimiserInputs) -> ParameterValues:
        """Validate ``inputs`` and compute every Parameter value in numpy (home of all non-DPP arithmetic)."""
        n, dt, hh = self.n_steps, self.dt_h, self.params
        errors = inputs.validate(n)
        if not errors and inputs.cop.max() > hh.hp_max_cop:
            errors.append(f"cop must be <= hp_max_cop {hh.hp_max_cop}, got {inputs.cop.max():g}")
        if errors:
            raise ValueError("invalid OptimiserInputs: " + "; ".join(errors))
        import_price = inputs.import_price_eur_per_kwh
        export_price = np.minimum(inputs.export_price_eur_per_kwh, import_price)  # no import→export arbitrage
        import_cost = dt * (import_price + GRID_TIE_BREAK_EUR_PER_KWH)
        export_value = dt * (export_price - GRID_TIE_BREAK_EUR_PER_KWH)
        return {
            "import_share_cost": import_cost * inputs.import_limit_kw,
            "import_cost": import_cost,
            "export_share_value": export_value * inputs.export_limit_kw,
            "export_value": export_value,
            "cycle_cost": burn_cycle_cost(hh, dt, export_price),  # export_price <= import_price here
            "import_limit": inputs.import_limit_kw,
            "export_limit": inputs.export_limit_kw,
            **device_values(inputs, hh, dt),
        }

    def _result(
        self,
        inputs: OptimiserInputs,
        values: ParameterValues,
        x: dict[str, FloatArray],
        status: str,
        objective: float,
        solve_time_s: float,
    ) -> OptimiserResult:
        def power(array: FloatArray) -> FloatArray:
            return np.maximum(array, 0.0)  # drop solver noise like -1e-12

        dt, hh = self.dt_h, self.params
        import_slack, export_slack = power(x["import_slack"]), power(x["export_slack"])
        grid_import = power(inputs.import_limit_kw * x["import_share"] + import_slack)
        grid_export = power(inputs.export_limit_kw * x["export_share"] + export_slack)
        too_cold, too_warm = power(x["too_cold"]), power(x["too_warm"])
        temp = inputs.comfort_min_c + (inputs.comfort_max_c - inputs.comfort_min_c) * x["band_position"]
        ev_charge = power(x["ev_charge"])
        ev_soc0 = float(values["ev_soc0"])
        ev_soc = ev_soc0 + np.concatenate([[0.0], np.cumsum(dt * hh.ev_charge_efficiency * ev_charge)])
        cost = dt * float(
            inputs.import_price_eur_per_kwh @ grid_import - inputs.export_price_eur_per_kwh @ grid_export
        )
        result = OptimiserResult(
            grid_import_kw=grid_import,
            grid_export_kw=grid_export,
            net_import_kw=grid_import - grid_export,
            hp_electric_kw=power(x["hp"]),
            indoor_temp_c=np.concatenate([[inputs.indoor_temp_c], temp + too_warm - too_cold]),
            ev_charge_kw=ev_charge,
            ev_soc_kwh=ev_soc,
            battery_charge_kw=power(x["charge"]),
            battery_discharge_kw=power(x["discharge"]),
            battery_soc_kwh=np.concatenate([[float(values["soc0"])], x["soc"]]),
            pv_used_kw=power(x["pv"]),
            cost_eur=cost,
            objective_eur=objective,
            solve_time_s=solve_time_s,
            status=status,
        )
        slacks = explain_slacks(
            inputs,
            result,
            import_slack_kw=import_slack,
            export_slack_kw=export_slack,
            comfort_low_k=too_cold,
            comfort_high_k=too_warm,
            ev_slack_kwh=float(np.asarray(x["ev_slack"]).reshape(-1)[0]),
            params=hh,
            dt_h=dt,
        )
        return replace(result, slacks=slacks)
