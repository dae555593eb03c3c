"""Data types of the household optimiser: static parameters, per-solve inputs, the result and its slacks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal, get_args

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]

SlackKind = Literal["grid_import_limit", "grid_export_limit", "comfort_low", "comfort_high", "ev_energy"]
SLACK_UNITS: dict[str, str] = {
    "grid_import_limit": "kW",
    "grid_export_limit": "kW",
    "comfort_low": "K",
    "comfort_high": "K",
    "ev_energy": "kWh",
}


class OptimiserError(RuntimeError):
    """The solver did not return an optimal plan (by design this should never happen)."""


@dataclass(frozen=True)
class HouseholdParams:
    """Static description of one household; the optimiser compiles its problem from it once.

    The penalties set the priority when not everything fits: grid limit > comfort > EV energy. Heat stored in
    the building lasts for hours, so one kWh of heat-pump electricity can avoid up to
    ``comfort_penalty × COP × (horizon_h + comfort_terminal_h) / C`` of comfort penalty (5 × 7 × 26 / 10 =
    91 EUR for a 24 h horizon). The grid penalty must exceed that, or the plan breaks the DSO limit to keep
    the house warm; hence a default of 100 EUR/kWh rather than the ≈ 10 EUR/kWh of REFERENCES.md.
    ``HouseholdOptimiser`` refuses parameters that break this ordering for its horizon.
    """

    # Heat pump and building (1R1C).
    thermal_capacity_kwh_per_k: float = 10.0
    thermal_resistance_k_per_kw: float = 5.0
    hp_max_electric_kw: float = 8.0
    hp_max_cop: float = 7.0  # highest COP a caller may pass; bounds the comfort value of a kWh (see above)
    # EV.
    ev_charger_max_kw: float = 11.0
    ev_battery_kwh: float = 60.0
    ev_charge_efficiency: float = 0.92
    ev_kwh_per_km: float = 0.18  # for callers turning a range (150 km) into an energy target
    # Home battery.
    battery_capacity_kwh: float = 10.0
    battery_max_kw: float = 5.0
    battery_efficiency: float = 0.95  # one way
    battery_min_soc_kwh: float = 0.5
    # Penalties and costs.
    grid_limit_penalty_eur_per_kwh: float = 100.0
    comfort_penalty_eur_per_kh: float = 5.0
    # The last state's comfort shortfall counts this many extra hours: without it, heating in the final
    # intervals looks wasted (the cold falls beyond the horizon) and plans end in a small violation.
    comfort_terminal_h: float = 2.0
    ev_energy_penalty_eur_per_kwh: float = 2.0
    battery_cycle_cost_eur_per_kwh: float = 0.01

    def __post_init__(self) -> None:
        errors = self.validate()
        if errors:
            raise ValueError("invalid HouseholdParams: " + "; ".join(errors))

    def validate(self) -> list[str]:
        """Return every rule this parameter set breaks (empty when valid)."""
        errors: list[str] = []
        positive = (
            "thermal_capacity_kwh_per_k",
            "thermal_resistance_k_per_kw",
            "hp_max_cop",
            "ev_battery_kwh",
            "ev_charge_efficiency",
            "ev_kwh_per_km",
            "battery_capacity_kwh",
            "battery_efficiency",
            "grid_limit_penalty_eur_per_kwh",
            "comfort_penalty_eur_per_kh",
            "ev_energy_penalty_eur_per_kwh",
            "battery_cycle_cost_eur_per_kwh",
        )
        for name in positive:
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                errors.append(f"{name} must be finite and > 0, not {value!r}")
        for name in (
            "hp_max_electric_kw",
            "ev_charger_max_kw",
            "battery_max_kw",
            "battery_min_soc_kwh",
            "comfort_terminal_h",
        ):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                errors.append(f"{name} must be finite and >= 0, not {value!r}")
        for name in ("ev_charge_efficiency", "battery_efficiency"):
            if getattr(self, name) > 1:
                errors.append(f"{name} must be <= 1, not {getattr(self, name)!r}")
        if self.battery_min_soc_kwh > self.battery_capacity_kwh:
            errors.append(
                f"battery_min_soc_kwh {self.battery_min_soc_kwh} must not exceed "
                f"battery_capacity_kwh {self.battery_capacity_kwh}"
            )
        if not (
            self.grid_limit_penalty_eur_per_kwh
            > self.comfort_penalty_eur_per_kh
            > self.ev_energy_penalty_eur_per_kwh
        ):
            errors.append(
                "penalties must be ordered grid_limit > comfort > ev_energy, not "
                f"{self.grid_limit_penalty_eur_per_kwh} / {self.comfort_penalty_eur_per_kh} / "
                f"{self.ev_energy_penalty_eur_per_kwh}"
            )
        return errors

    def max_comfort_value_eur_per_kwh(self, horizon_h: float) -> float:
        """Upper bound of the comfort penalty one kWh of heat-pump electricity can avoid over the horizon."""
        weighted_h = horizon_h + self.comfort_terminal_h
        return (
            self.comfort_penalty_eur_per_kh * self.hp_max_cop * weighted_h / self.thermal_capacity_kwh_per_k
        )


def _as_array(value: ArrayLike) -> FloatArray:
    array = np.array(value, dtype=float)  # a copy: the caller's buffer may change later
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class OptimiserInputs:
    """Everything that changes between solves. Arrays have one value per interval (length N).

    ``comfort_min_c[k]`` / ``comfort_max_c[k]`` bound the indoor temperature at the *end* of interval k.
    ``ev_departure_step`` is the first interval the EV is gone (N: no departure within the horizon); the
    plan treats it as one charging session, so the EV is not charged from that step on and
    ``ev_target_soc_kwh`` is required (softly) at departure. A departure at step 0 means no session.
    Storage states outside their physical range are clipped by the optimiser, never rejected.
    """

    import_price_eur_per_kwh: FloatArray
    export_price_eur_per_kwh: FloatArray
    import_limit_kw: FloatArray
    export_limit_kw: FloatArray
    base_load_kw: FloatArray
    pv_available_kw: FloatArray
    outdoor_temp_c: FloatArray
    cop: FloatArray
    comfort_min_c: FloatArray
    comfort_max_c: FloatArray
    ev_available: FloatArray
    indoor_temp_c: float
    battery_soc_kwh: float
    ev_soc_kwh: float
    ev_target_soc_kwh: float
    ev_departure_step: int

    ARRAY_FIELDS: ClassVar[tuple[str, ...]] = (
        "import_price_eur_per_kwh",
        "export_price_eur_per_kwh",
        "import_limit_kw",
        "export_limit_kw",
        "base_load_kw",
        "pv_available_kw",
        "outdoor_temp_c",
        "cop",
        "comfort_min_c",
        "comfort_max_c",
        "ev_available",
    )

    def __post_init__(self) -> None:
        for name in self.ARRAY_FIELDS:
            object.__setattr__(self, name, _as_array(getattr(self, name)))
        for name in ("indoor_temp_c", "battery_soc_kwh", "ev_soc_kwh", "ev_target_soc_kwh"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "ev_departure_step", int(self.ev_departure_step))
        errors = self.validate()
        if errors:
            raise ValueError("invalid OptimiserInputs: " + "; ".join(errors))

    @property
    def n_steps(self) -> int:
        return int(self.import_price_eur_per_kwh.shape[0]) if self.import_price_eur_per_kwh.ndim == 1 else -1

    def validate(self, n_steps: int | None = None) -> list[str]:
        """Return every rule these inputs break (empty when valid); ``n_steps`` also checks the length."""
        errors: list[str] = []
        expected = self.n_steps if n_steps is None else n_steps
        for name in self.ARRAY_FIELDS:
            array: FloatArray = getattr(self, name)
            if array.shape != (expected,):
                errors.append(f"{name} must have shape ({expected},), not {array.shape}")
            elif not np.all(np.isfinite(array)):
                errors.append(f"{name} must be finite everywhere")
        if errors:
            return errors
        for name in ("import_limit_kw", "export_limit_kw", "base_load_kw", "pv_available_kw"):
            array = getattr(self, name)
            if np.any(array < 0):
                errors.append(f"{name} must be >= 0, got {array.min():g} at step {int(array.argmin())}")
        if np.any(self.cop <= 0):
            errors.append(f"cop must be > 0, got {self.cop.min():g} at step {int(self.cop.argmin())}")
        if np.any(self.comfort_min_c > self.comfort_max_c):
            step = int(np.argmax(self.comfort_min_c > self.comfort_max_c))
            errors.append(f"comfort_min_c must be <= comfort_max_c, not at step {step}")
        if not np.all((self.ev_available == 0) | (self.ev_available == 1)):
            errors.append("ev_available must hold only 0 and 1")
        for name in ("indoor_temp_c", "battery_soc_kwh", "ev_soc_kwh", "ev_target_soc_kwh"):
            if not np.isfinite(getattr(self, name)):
                errors.append(f"{name} must be finite, not {getattr(self, name)!r}")
        if not 0 <= self.ev_departure_step <= expected:
            errors.append(f"ev_departure_step must be in [0, {expected}], not {self.ev_departure_step}")
        if self.ev_target_soc_kwh < 0:
            errors.append(f"ev_target_soc_kwh must be >= 0, not {self.ev_target_soc_kwh}")
        return errors


@dataclass(frozen=True)
class SlackUse:
    """One soft constraint the plan had to break.

    ``amount`` is in kW for the grid limits, in K for comfort and in kWh for EV energy (see ``unit``).
    ``step`` is the interval index for the grid limits, and the state index (into ``indoor_temp_c`` or
    ``ev_soc_kwh``, i.e. the end of interval ``step − 1``) for comfort and EV energy.
    """

    kind: SlackKind
    step: int
    amount: float
    reason: str

    def __post_init__(self) -> None:
        if self.kind not in get_args(SlackKind):
            raise ValueError(f"kind must be one of {get_args(SlackKind)}, not {self.kind!r}")

    @property
    def unit(self) -> str:
        return SLACK_UNITS[self.kind]


@dataclass(frozen=True, eq=False)
class OptimiserResult:
    """A plan for the horizon. Powers are interval means in kW; states have N + 1 values (start, each end)."""

    grid_import_kw: FloatArray
    grid_export_kw: FloatArray
    net_import_kw: FloatArray
    hp_electric_kw: FloatArray
    indoor_temp_c: FloatArray
    ev_charge_kw: FloatArray
    ev_soc_kwh: FloatArray
    battery_charge_kw: FloatArray
    battery_discharge_kw: FloatArray
    battery_soc_kwh: FloatArray
    pv_used_kw: FloatArray
    cost_eur: float  # energy cost at the real tariff (import − export), penalties excluded
    objective_eur: float  # what the optimiser minimised: cost + penalties + cycle and tie-break costs
    solve_time_s: float  # as reported by the solver
    status: str
    slacks: list[SlackUse] = field(default_factory=list)
