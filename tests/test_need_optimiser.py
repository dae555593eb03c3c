"""The capacity-need LP (hems_client.optimiser.CapacityNeedOptimiser): the least import per interval with which the
household keeps its comfort band and EV range, checked against the household optimiser over the same model."""

from __future__ import annotations

import numpy as np
import pytest

from hems_client.optimiser import (
    CapacityNeedOptimiser,
    HouseholdOptimiser,
    HouseholdParams,
    NeedInputs,
    OptimiserInputs,
    cop_air_source,
)

N = 192
DT_H = 0.25
PARAMS = HouseholdParams()
PLANNER_PARAMS = HouseholdParams(grid_limit_penalty_eur_per_kwh=250.0)
"""Over 48 h the household optimiser needs a grid penalty above 175 (grid > comfort)."""
CONTRACT_KW = 17.0
ON_KW = 1e-3


def hours(start_h: float, n: int = N) -> np.ndarray:
    return (start_h + DT_H * np.arange(n)) % 24


def base_load_kw(h: np.ndarray) -> np.ndarray:
    return 0.3 + 0.3 * np.exp(-(((h - 7.5) / 1.0) ** 2)) + 1.2 * np.exp(-(((h - 19.0) / 1.5) ** 2))


def day_ahead(*, known_kw: float = 4.0, window: tuple[int, int] = (46, 142), outdoor_c: float = -5.0,
              ev: bool = True, n: int = N, **overrides: object) -> NeedInputs:
    """From 12:30: known limits until the window (tomorrow 00:00, step 46), contract maximum from it on; a cold
    day, tariff dear 17:00-21:00; the EV home from 18:00 (step 22) and leaving 06:00 (step 70) for +27 kWh."""
    steps = np.arange(n)
    h = hours(12.5, n)
    caps = np.where(steps < window[0], known_kw, CONTRACT_KW)
    values: dict[str, object] = {
        "import_price_eur_per_kwh": np.where((h >= 17) & (h < 21), 0.42, np.where(h < 7, 0.16, 0.28)),
        "export_price_eur_per_kwh": np.full(n, 0.05),
        "import_limit_kw": caps,
        "export_limit_kw": np.full(n, 10.0),
        "base_load_kw": base_load_kw(h),
        "pv_available_kw": np.zeros(n),
        "outdoor_temp_c": np.full(n, outdoor_c),
        "cop": np.full(n, float(cop_air_source(35.0, outdoor_c))),
        "comfort_min_c": np.full(n, 19.2),
        "comfort_max_c": np.full(n, 20.8),
        "ev_available": ((steps >= 22) & (steps < 70)).astype(float) if ev else np.zeros(n),
        "indoor_temp_c": 20.0,
        "battery_soc_kwh": 5.0,
        "ev_soc_kwh": 20.0,
        "ev_target_soc_kwh": 20.0 + 150 * PARAMS.ev_kwh_per_km if ev else 0.0,
        "ev_departure_step": 70 if ev else 0,
    }
    values.update(overrides)
    return NeedInputs(inputs=OptimiserInputs(**values), window_start=window[0], window_end=window[1])  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def need_optimiser() -> CapacityNeedOptimiser:
    return CapacityNeedOptimiser(PARAMS, n_steps=N)


def test_the_need_keeps_comfort_and_ev_and_a_lower_flat_limit_cannot(need_optimiser: CapacityNeedOptimiser) -> None:
    """Limits equal to the need leave a plan that keeps comfort and the EV target (the household optimiser finds
    it); a limit below the need's peak everywhere in the window costs comfort or EV energy."""
    need = day_ahead()
    result = need_optimiser.solve(need)
    assert result.comfort_shortfall_kh == 0.0 and result.ev_shortfall_kwh < 1e-6
    assert result.known_limit_excess_kwh < 1e-6
    assert np.all(result.need_kw >= 0) and result.need_kw.max() == pytest.approx(result.peak_kw)
    # The inflexible load alone sets a floor, and the need is far below the contract.
    floor = need.inputs.base_load_kw[need.window].max()
    assert floor - ON_KW <= result.peak_kw < 0.5 * CONTRACT_KW

    planner = HouseholdOptimiser(PLANNER_PARAMS, n_steps=N)
    granted = need.inputs.import_limit_kw.copy()
    granted[need.window] = result.need_kw + 1e-3
    plan = planner.solve(OptimiserInputs(**{**vars(need.inputs), "import_limit_kw": granted}))
    assert [s for s in plan.slacks if s.kind in ("comfort_low", "comfort_high", "ev_energy", "grid_import_limit")] == []

    squeezed = granted.copy()
    squeezed[need.window] = np.minimum(granted[need.window], result.peak_kw - 0.3)
    short = planner.solve(OptimiserInputs(**{**vars(need.inputs), "import_limit_kw": squeezed}))
    assert {s.kind for s in short.slacks} & {"comfort_low", "ev_energy", "grid_import_limit"}


def test_the_peak_is_the_least_and_the_need_leans_to_cheap_intervals(need_optimiser: CapacityNeedOptimiser) -> None:
    need = day_ahead()
    result = need_optimiser.solve(need)
    h = hours(12.5)[need.window]
    evening = (h >= 17) & (h < 21)
    # Charging the EV waits for the cheap night within the peak; the dear evening carries only what it must.
    assert result.need_kw[evening].mean() < result.need_kw[h < 6].mean()
    # Any lower uniform cap on the window makes stage 1 pay in comfort or EV energy: the peak is least.
    lower = result.peak_kw - 0.2
    caps = need.inputs.import_limit_kw.copy()
    caps[need.window] = lower
    capped = need_optimiser.solve(NeedInputs(inputs=OptimiserInputs(**{**vars(need.inputs), "import_limit_kw": caps}),
                                             window_start=need.window_start, window_end=need.window_end))
    assert capped.comfort_shortfall_kh > 0 or capped.ev_shortfall_kwh > 1e-3 or capped.peak_kw > lower + ON_KW


def test_known_limits_before_the_window_shape_the_need(need_optimiser: CapacityNeedOptimiser) -> None:
    """Generous limits this evening let the EV charge before midnight; tight ones push it into the window."""
    generous = need_optimiser.solve(day_ahead(known_kw=11.0))
    tight = need_optimiser.solve(day_ahead(known_kw=2.2))
    assert tight.need_kw.sum() > generous.need_kw.sum() + 5.0
    no_ev = need_optimiser.solve(day_ahead(ev=False))
    assert no_ev.need_kw.sum() < generous.need_kw.sum() + ON_KW


def test_a_colder_day_needs_more(need_optimiser: CapacityNeedOptimiser) -> None:
    mild = need_optimiser.solve(day_ahead(outdoor_c=8.0, ev=False))
    cold = need_optimiser.solve(day_ahead(outdoor_c=-10.0, ev=False))
    assert cold.need_kw.sum() * DT_H > mild.need_kw.sum() * DT_H + 10.0
    assert cold.peak_kw > mild.peak_kw


def test_comfort_the_contract_cannot_carry_is_reported_not_hidden(need_optimiser: CapacityNeedOptimiser) -> None:
    """A heat pump too small for the frost: the need asks for what helps (the heat pump flat out) and says that
    comfort is lost anyway."""
    small = CapacityNeedOptimiser(HouseholdParams(hp_max_electric_kw=1.0), n_steps=N)
    result = small.solve(day_ahead(outdoor_c=-20.0, ev=False))
    assert result.comfort_shortfall_kh > 1.0
    assert result.peak_kw < CONTRACT_KW


def test_both_solve_paths_agree(need_optimiser: CapacityNeedOptimiser) -> None:
    need = day_ahead()
    direct = need_optimiser.solve(need, path="direct")
    plain = CapacityNeedOptimiser(PARAMS, n_steps=N).solve(need, path="cvxpy")
    assert direct.peak_kw == pytest.approx(plain.peak_kw, abs=1e-4)
    assert direct.need_kw.sum() == pytest.approx(plain.need_kw.sum(), rel=1e-4, abs=1e-3)


def test_bad_windows_and_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="need window"):
        day_ahead(window=(100, 100))
    with pytest.raises(ValueError, match="must lie within"):
        day_ahead(window=(10, N + 1))
    short = CapacityNeedOptimiser(PARAMS, n_steps=96)
    with pytest.raises(ValueError, match=r"shape \(96,\)"):
        short.solve(day_ahead())
