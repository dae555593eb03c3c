"""Behaviour of the household optimiser as a HEMS (and the DSO looking at its plan) would see it."""

from __future__ import annotations

from dataclasses import replace
from unittest import mock

import cvxpy as cp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hems_client.optimiser import (
    TESTED_CVXPY,
    HouseholdOptimiser,
    HouseholdParams,
    IncompatibleCvxpy,
    OptimiserError,
    OptimiserInputs,
    OptimiserResult,
    SlackUse,
    _model,
    cop_air_source,
    cvxpy_tested,
)

N = 96
DT_H = 0.25
PARAMS = HouseholdParams()
ON_KW = 1e-3


def clock_hours(start_h: float) -> np.ndarray:
    """Hour of day at the start of each interval."""
    return (start_h + DT_H * np.arange(N)) % 24


def evening_base_load_kw(hours: np.ndarray) -> np.ndarray:
    """0.3 kW at night, a small breakfast bump and a 1.5 kW evening peak."""
    return 0.3 + 0.3 * np.exp(-(((hours - 7.5) / 1.0) ** 2)) + 1.2 * np.exp(-(((hours - 19.0) / 1.5) ** 2))


def winter_evening(**overrides: object) -> OptimiserInputs:
    """Horizon from 16:00: −5 °C, 3 kW limit 16:00–21:00, EV home 18:00–06:00 needing +27 kWh (150 km)."""
    steps = np.arange(N)
    cop = float(cop_air_source(35.0, -5.0))
    values: dict[str, object] = {
        "import_price_eur_per_kwh": np.full(N, 0.25),
        "export_price_eur_per_kwh": np.full(N, 0.05),
        "import_limit_kw": np.where(steps < 20, 3.0, 17.0),
        "export_limit_kw": np.full(N, 17.0),
        "base_load_kw": evening_base_load_kw(clock_hours(16.0)),
        "pv_available_kw": np.zeros(N),
        "outdoor_temp_c": np.full(N, -5.0),
        "cop": np.full(N, cop),
        "comfort_min_c": np.full(N, 19.0),
        "comfort_max_c": np.full(N, 21.0),
        "ev_available": ((steps >= 8) & (steps < 56)).astype(float),
        "indoor_temp_c": 20.0,
        "battery_soc_kwh": 5.0,
        "ev_soc_kwh": 20.0,
        "ev_target_soc_kwh": 20.0 + 150 * PARAMS.ev_kwh_per_km,
        "ev_departure_step": 56,
    }
    values.update(overrides)
    return OptimiserInputs(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def optimiser() -> HouseholdOptimiser:
    return HouseholdOptimiser(PARAMS)


def simultaneous_steps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.flatnonzero((a > ON_KW) & (b > ON_KW))


def reported(result: OptimiserResult, kind: str) -> list[SlackUse]:
    return [slack for slack in result.slacks if slack.kind == kind]


# --------------------------------------------------------------------------------------- scenarios
def test_cold_evening_keeps_limit_comfort_and_ev_target(optimiser: HouseholdOptimiser) -> None:
    inputs = winter_evening()
    plan = optimiser.solve(inputs)

    assert plan.status == "optimal"
    assert plan.slacks == []
    assert np.all(plan.net_import_kw <= inputs.import_limit_kw + ON_KW)
    assert np.all(plan.indoor_temp_c >= 19.0 - ON_KW) and np.all(plan.indoor_temp_c <= 21.0 + ON_KW)
    assert plan.ev_soc_kwh[inputs.ev_departure_step] >= inputs.ev_target_soc_kwh - ON_KW
    assert np.isfinite(plan.cost_eur) and plan.cost_eur > 0
    # The peak window really constrains the plan: the battery helps to hold 3 kW with the heat pump running.
    assert plan.battery_discharge_kw[:20].sum() > 0
    assert plan.hp_electric_kw[:20].sum() > 0


def test_time_of_use_moves_ev_charging_and_preheating_into_cheap_hours(optimiser: HouseholdOptimiser) -> None:
    hours = clock_hours(16.0)
    tou = np.where((hours >= 7) & (hours < 23), 0.40, 0.10)
    cheap = tou < 0.2
    loose = np.full(N, 17.0)
    plan = optimiser.solve(winter_evening(import_price_eur_per_kwh=tou, import_limit_kw=loose))
    flat = optimiser.solve(winter_evening(import_price_eur_per_kwh=np.full(N, 0.25), import_limit_kw=loose))

    assert plan.slacks == [] and flat.slacks == []
    ev_energy = plan.ev_charge_kw.sum()
    assert ev_energy > 0 and plan.ev_charge_kw[cheap].sum() >= 0.9 * ev_energy
    # Preheating: the heat pump does more of its work in cheap hours than with a flat price, and the house
    # is warmed above the minimum before the expensive morning.
    assert plan.hp_electric_kw[cheap].sum() > 1.2 * flat.hp_electric_kw[cheap].sum()
    morning = int(np.flatnonzero(hours == 7.0)[0])
    assert plan.indoor_temp_c[morning] > flat.indoor_temp_c[morning] + 0.5
    assert plan.cost_eur < flat.cost_eur  # 0.10/0.40 against a flat 0.25: shifting pays


def test_impossible_limit_is_broken_as_little_as_possible_and_comfort_gives_way(
    optimiser: HouseholdOptimiser,
) -> None:
    limit, base = 0.2, 0.5
    inputs = winter_evening(import_limit_kw=np.full(N, limit), base_load_kw=np.full(N, base))
    plan = optimiser.solve(inputs)  # no exception: the LP is never infeasible

    assert plan.status == "optimal"
    grid = reported(plan, "grid_import_limit")
    assert grid and all("import limit" in slack.reason and "base load" in slack.reason for slack in grid)
    # Each report is exactly the exceedance, and no exceedance goes unreported.
    exceedance = np.maximum(plan.net_import_kw - inputs.import_limit_kw, 0.0)
    by_step = {slack.step: slack.amount for slack in grid}
    for step in range(N):
        assert by_step.get(step, 0.0) == pytest.approx(exceedance[step], abs=1e-4)
    # The smallest violation possible: only the base load the battery cannot cover goes over the limit.
    usable_battery_kwh = (inputs.battery_soc_kwh - PARAMS.battery_min_soc_kwh) * PARAMS.battery_efficiency
    least_kwh = (base - limit) * N * DT_H - usable_battery_kwh
    assert DT_H * sum(by_step.values()) == pytest.approx(least_kwh, abs=1e-5)
    # Penalty order grid > comfort > EV: no heat pump or EV energy over the limit; the house gets cold.
    assert plan.hp_electric_kw.max() < ON_KW and plan.ev_charge_kw.max() < ON_KW
    cold = reported(plan, "comfort_low")
    assert cold and plan.indoor_temp_c.min() < 15.0
    assert all("import limit" in slack.reason for slack in cold)
    (ev,) = reported(plan, "ev_energy")
    assert (
        ev.step == inputs.ev_departure_step
        and ev.amount == pytest.approx(27.0, abs=1e-4)
        and ev.unit == "kWh"
    )
    assert "import limit" in ev.reason


@pytest.mark.parametrize(
    ("import_price", "export_price"),
    [(-0.2, -0.3), (-2.0, -2.5), (-0.5, -0.1)],  # the last one pays more for export than import costs
    ids=["negative", "strongly-negative", "export-above-import"],
)
def test_negative_prices_never_cycle_battery_or_grid(
    optimiser: HouseholdOptimiser, import_price: float, export_price: float
) -> None:
    hours = clock_hours(0.0)
    midday = (hours >= 10) & (hours < 14)
    pv = np.where(midday, 6.0, np.clip(6.0 * np.sin(np.pi * (hours - 6) / 12), 0, None))
    inputs = winter_evening(
        import_price_eur_per_kwh=np.where(midday, import_price, 0.30),
        export_price_eur_per_kwh=np.where(midday, export_price, 0.05),
        pv_available_kw=pv,
        import_limit_kw=np.full(N, 17.0),
        outdoor_temp_c=np.full(N, 5.0),
        cop=np.full(N, float(cop_air_source(35.0, 5.0))),
        battery_soc_kwh=9.0,
    )
    plan = optimiser.solve(inputs)

    assert simultaneous_steps(plan.battery_charge_kw, plan.battery_discharge_kw).size == 0
    assert simultaneous_steps(plan.grid_import_kw, plan.grid_export_kw).size == 0
    # Negative prices are used: PV is curtailed and the house imports while it is paid to.
    assert plan.pv_used_kw[midday].max() < ON_KW
    assert plan.grid_import_kw[midday].min() > 1.0


# --------------------------------------------------------------------------------------- re-solve
def test_resolve_reuses_the_compiled_problem_and_follows_new_inputs() -> None:
    optimiser = HouseholdOptimiser(PARAMS)
    problem = optimiser.problem
    first = optimiser.solve(winter_evening())
    tighter = np.where(np.arange(N) < 40, 2.0, 17.0)  # the 3 kW window lasts until 02:00 and tightens
    with (
        mock.patch.object(HouseholdOptimiser, "_build", side_effect=AssertionError("problem rebuilt")),
        mock.patch.object(cp.Problem, "get_problem_data", side_effect=AssertionError("problem recompiled")),
    ):
        second = optimiser.solve(winter_evening(import_limit_kw=tighter))
    assert optimiser.problem is problem
    assert second.slacks == []
    assert np.all(second.net_import_kw <= tighter + ON_KW)
    assert second.ev_soc_kwh[56] >= second.ev_soc_kwh[0] + 27.0 - ON_KW
    assert not np.allclose(first.net_import_kw, second.net_import_kw)
    assert second.objective_eur >= first.objective_eur - 1e-9  # a tighter limit never makes the plan cheaper


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"import_limit_kw": np.full(N, 0.2), "base_load_kw": np.full(N, 0.5)},
        {
            "import_price_eur_per_kwh": np.where(clock_hours(16.0) < 7, -0.3, 0.35),
            "pv_available_kw": np.ones(N),
        },
    ],
    ids=["winter", "impossible-limit", "negative-night"],
)
def test_direct_path_matches_problem_solve(overrides: dict[str, object]) -> None:
    optimiser = HouseholdOptimiser(PARAMS)
    inputs = winter_evening(**overrides)
    direct = optimiser.solve(inputs, path="direct")
    plain = optimiser.solve(inputs, path="cvxpy")
    assert direct.objective_eur == pytest.approx(plain.objective_eur, rel=1e-6, abs=1e-9)
    assert direct.cost_eur == pytest.approx(plain.cost_eur, rel=1e-4, abs=1e-6)
    assert optimiser.solve(inputs).objective_eur == pytest.approx(direct.objective_eur, rel=1e-9)


# --------------------------------------------------------------------------------------- property
@st.composite
def household_inputs(draw: st.DrawFn) -> OptimiserInputs:
    """Random but valid inputs: prices may be negative, limits tight, states outside their ranges."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    price = draw(st.floats(-1.0, 1.0)) + rng.normal(0.0, 0.2, N)
    outdoor = draw(st.floats(-15.0, 25.0)) + rng.normal(0.0, 2.0, N)
    comfort_min = draw(st.floats(15.0, 22.0)) + np.repeat(rng.uniform(-1.0, 1.0, 4), N // 4)
    plugged = rng.uniform(size=N) < draw(st.floats(0.0, 1.0))
    return OptimiserInputs(
        import_price_eur_per_kwh=price,
        export_price_eur_per_kwh=price - rng.uniform(-0.2, 0.3, N),  # sometimes above the import price
        import_limit_kw=rng.uniform(0.0, draw(st.floats(0.0, 20.0)), N),
        export_limit_kw=rng.uniform(0.0, 10.0, N),
        base_load_kw=rng.uniform(0.0, draw(st.floats(0.0, 3.0)), N),
        pv_available_kw=rng.uniform(0.0, draw(st.floats(0.0, 8.0)), N),
        outdoor_temp_c=outdoor,
        cop=cop_air_source(rng.uniform(30.0, 55.0), outdoor),
        comfort_min_c=comfort_min,
        comfort_max_c=comfort_min + rng.uniform(0.0, 3.0, N),
        ev_available=plugged.astype(float),
        indoor_temp_c=draw(st.floats(5.0, 30.0)),
        battery_soc_kwh=draw(st.floats(-2.0, 12.0)),
        ev_soc_kwh=draw(st.floats(0.0, 70.0)),
        ev_target_soc_kwh=draw(st.floats(0.0, 80.0)),
        ev_departure_step=draw(st.integers(0, N)),
    )


@settings(max_examples=50, deadline=None)
@given(inputs=household_inputs())
def test_any_valid_input_gets_a_physical_plan_within_reported_slack(
    optimiser: HouseholdOptimiser, inputs: OptimiserInputs
) -> None:
    plan = optimiser.solve(inputs)
    assert plan.status in ("optimal", "optimal_inaccurate")
    assert np.isfinite(plan.objective_eur) and np.isfinite(plan.cost_eur)

    import_slack = np.zeros(N)
    for slack in reported(plan, "grid_import_limit"):
        import_slack[slack.step] = slack.amount
        assert slack.reason
    assert np.all(plan.net_import_kw <= inputs.import_limit_kw + import_slack + 1e-4)
    assert np.all(plan.grid_export_kw <= inputs.export_limit_kw + 1e-4)  # curtailing PV always suffices
    # Never more over the limit than "everything off" would be: flexible loads never cause a violation.
    unavoidable_kw = np.maximum(inputs.base_load_kw - inputs.pv_available_kw - inputs.import_limit_kw, 0.0)
    assert import_slack.sum() <= unavoidable_kw.sum() + 1e-4
    assert all(slack.amount > 1e-4 and slack.reason for slack in plan.slacks)

    # The plan obeys the physics it was given.
    assert simultaneous_steps(plan.battery_charge_kw, plan.battery_discharge_kw).size == 0
    assert simultaneous_steps(plan.grid_import_kw, plan.grid_export_kw).size == 0
    balance = (
        inputs.base_load_kw
        + plan.hp_electric_kw
        + plan.ev_charge_kw
        + plan.battery_charge_kw
        - plan.battery_discharge_kw
        - plan.pv_used_kw
    )
    np.testing.assert_allclose(plan.net_import_kw, balance, atol=1e-6)
    temp = plan.indoor_temp_c
    c, r = PARAMS.thermal_capacity_kwh_per_k, PARAMS.thermal_resistance_k_per_kw
    expected = temp[:-1] + DT_H / c * (
        inputs.cop * plan.hp_electric_kw - (temp[:-1] - inputs.outdoor_temp_c) / r
    )
    np.testing.assert_allclose(temp[1:], expected, atol=1e-6)
    soc = plan.battery_soc_kwh
    assert np.all(soc >= PARAMS.battery_min_soc_kwh - 1e-6) and np.all(
        soc <= PARAMS.battery_capacity_kwh + 1e-6
    )
    assert np.all(plan.pv_used_kw <= inputs.pv_available_kw + 1e-6)
    assert np.all(plan.ev_charge_kw[inputs.ev_available == 0] < 1e-6)
    assert np.all(plan.ev_charge_kw[inputs.ev_departure_step :] < 1e-6)


# --------------------------------------------------------------------------------------- small pieces
def test_cop_air_source_follows_staffell_and_clips_small_lifts() -> None:
    assert float(cop_air_source(35.0, -5.0)) == pytest.approx(6.81 - 0.121 * 40 + 0.00063 * 1600)
    assert float(cop_air_source(20.0, 25.0)) == pytest.approx(6.81 - 0.121 + 0.00063)  # ΔT clipped to 1 K
    assert cop_air_source(35.0, np.array([-5.0, 5.0])).shape == (2,)


def test_invalid_inputs_name_the_field() -> None:
    with pytest.raises(ValueError, match="base_load_kw must be >= 0"):
        winter_evening(base_load_kw=np.full(N, -1.0))
    day = winter_evening()
    half_day = replace(
        day, **{name: getattr(day, name)[:48] for name in OptimiserInputs.ARRAY_FIELDS}, ev_departure_step=4
    )
    with pytest.raises(ValueError, match=r"cop must have shape \(96,\), not \(48,\)"):
        HouseholdOptimiser(PARAMS).solve(half_day)
    with pytest.raises(ValueError, match="ev_departure_step must be in"):
        winter_evening(ev_departure_step=N + 1)


def test_penalties_too_weak_for_the_horizon_are_refused() -> None:
    with pytest.raises(ValueError, match=r"grid_limit_penalty_eur_per_kwh 10\.0 must exceed"):
        HouseholdOptimiser(HouseholdParams(grid_limit_penalty_eur_per_kwh=10.0))
    with pytest.raises(ValueError, match="ordered grid_limit > comfort > ev_energy"):
        HouseholdParams(comfort_penalty_eur_per_kh=1.0)


def test_states_outside_their_range_are_clipped_and_a_gone_ev_needs_nothing(
    optimiser: HouseholdOptimiser,
) -> None:
    plan = optimiser.solve(winter_evening(battery_soc_kwh=12.5, ev_soc_kwh=-1.0, ev_departure_step=0))
    assert plan.battery_soc_kwh[0] == PARAMS.battery_capacity_kwh
    assert plan.ev_soc_kwh[0] == 0.0
    assert plan.ev_charge_kw.max() < ON_KW and reported(plan, "ev_energy") == []


def test_a_solver_failure_raises_and_names_the_status() -> None:
    optimiser = HouseholdOptimiser(PARAMS)
    optimiser.solve(winter_evening())
    optimiser._direct._highs.setOptionValue("simplex_iteration_limit", 0)  # type: ignore[union-attr]
    with pytest.raises(OptimiserError, match="Iteration limit reached"):
        optimiser.solve(winter_evening(import_price_eur_per_kwh=np.linspace(-0.2, 0.6, N)))


# --------------------------------------------------------------------------------------- cvxpy internals
class _WithoutParamIdToCol:
    """A compiled problem as a cvxpy that renamed ``param_id_to_col`` would hand it over."""

    def __init__(self, prog: object) -> None:
        self._prog = prog

    def __getattr__(self, name: str) -> object:
        if name == "param_id_to_col":
            raise AttributeError(f"'ParamConeProg' object has no attribute {name!r}")
        return getattr(self._prog, name)


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_model, "_WARNED", set())


def test_the_installed_cvxpy_is_the_tested_one_and_takes_the_direct_path() -> None:
    """pyproject.toml pins cvxpy to TESTED_CVXPY; this is the check a newcomer runs after an upgrade."""
    assert cvxpy_tested(), f"cvxpy {cp.__version__} is outside {TESTED_CVXPY}: update pyproject.toml and _highs.py"
    assert HouseholdOptimiser(PARAMS).solve_path == "direct"


def test_an_incompatible_cvxpy_is_detected_at_start_and_plans_come_from_problem_solve(
        caplog: pytest.LogCaptureFixture, fresh_warnings: None) -> None:
    real = cp.Problem.get_problem_data

    def renamed(self: cp.Problem, *args: object, **kwargs: object) -> object:
        data, chain, inverse = real(self, *args, **kwargs)
        data[cp.settings.PARAM_PROB] = _WithoutParamIdToCol(data[cp.settings.PARAM_PROB])
        return data, chain, inverse

    with mock.patch.object(cp.Problem, "get_problem_data", renamed):
        optimiser = HouseholdOptimiser(PARAMS)
    assert optimiser.solve_path == "cvxpy"
    (warning,) = [r for r in caplog.records if r.name == "hems_client.optimiser._model"]
    assert warning.levelname == "WARNING"
    message = warning.getMessage()
    assert f"cvxpy {cp.__version__}" in message and "param_id_to_col" in message
    assert "Falling back to problem.solve" in message
    plan = optimiser.solve(winter_evening())
    reference = HouseholdOptimiser(PARAMS).solve(winter_evening(), path="cvxpy")
    assert plan.objective_eur == pytest.approx(reference.objective_eur, rel=1e-6)
    with pytest.raises(IncompatibleCvxpy, match="param_id_to_col"):
        optimiser.solve(winter_evening(), path="direct")
    HouseholdOptimiser(PARAMS)  # warned once per process, not once per household
    with mock.patch.object(cp.Problem, "get_problem_data", renamed):
        HouseholdOptimiser(PARAMS)
    assert len([r for r in caplog.records if r.name == "hems_client.optimiser._model"]) == 1


def test_an_untested_cvxpy_is_cross_checked_once_and_a_wrong_direct_answer_falls_back(
        caplog: pytest.LogCaptureFixture, fresh_warnings: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_model, "cvxpy_tested", lambda: False)
    agreeing = HouseholdOptimiser(PARAMS)
    assert agreeing.solve(winter_evening()).objective_eur > 0 and agreeing.solve_path == "direct"
    assert "outside the range the direct HiGHS path was checked with" in caplog.text
    wrong = HouseholdOptimiser(PARAMS)
    solve = wrong._direct.solve  # type: ignore[union-attr]

    def off_by_one_euro(values: object) -> object:
        solution = solve(values)  # type: ignore[arg-type]
        return replace(solution, objective=solution.objective + 1.0)

    monkeypatch.setattr(wrong._direct, "solve", off_by_one_euro)
    plan = wrong.solve(winter_evening())
    assert wrong.solve_path == "cvxpy"
    assert plan.objective_eur == pytest.approx(agreeing.solve(winter_evening(), path="cvxpy").objective_eur)
    assert "falling back to problem.solve" in caplog.text


def test_a_cvxpy_too_old_for_the_model_is_refused_with_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_model, "cvxpy_version", lambda: (1, 8))
    with pytest.raises(IncompatibleCvxpy, match=r"too old: .*pip install 'cvxpy>=1.9,<1.10'"):
        HouseholdOptimiser(PARAMS)


# --------------------------------------------------------------------------------------- honest reasons
def test_a_household_without_a_battery_is_not_told_its_battery_gave_its_maximum() -> None:
    no_battery = HouseholdOptimiser(replace(PARAMS, battery_max_kw=0.0))
    steps = np.arange(N)
    plan = no_battery.solve(winter_evening(import_limit_kw=np.where(steps < 20, 0.2, 17.0), battery_soc_kwh=0.5))
    reasons = [slack.reason for slack in reported(plan, "grid_import_limit")]
    assert reasons and all("there is no home battery to cover it" in reason for reason in reasons)
    assert not any("battery already gave" in reason for reason in reasons)


def test_pre_heating_above_the_band_ahead_of_a_limit_is_explained_as_such() -> None:
    """-8 °C, no battery, a 0 kW limit for six hours from step 16: the plan stores heat in the building first."""
    steps = np.arange(N)
    optimiser = HouseholdOptimiser(replace(PARAMS, battery_max_kw=0.0))
    plan = optimiser.solve(winter_evening(
        import_limit_kw=np.where((steps >= 16) & (steps < 40), 0.0, 17.0), outdoor_temp_c=np.full(N, -8.0),
        base_load_kw=np.zeros(N), ev_available=np.zeros(N), ev_target_soc_kwh=0.0, ev_soc_kwh=0.0,
        ev_departure_step=0, battery_soc_kwh=0.5))
    warm = reported(plan, "comfort_high")
    assert warm and all(slack.step <= 20 for slack in warm)
    assert all("pre-heating ahead of the import limit (0.00 kW at " in slack.reason for slack in warm)
    assert not any("cheaper to use than to leave" in slack.reason for slack in warm)
