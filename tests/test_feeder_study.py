"""The feeder study: a short run's KPIs recomputed independently from its stored series (plain SQL, numpy and
pandapower's own power flow), the result independent of where the homes run (processes, a Dask local cluster),
the households' diversity and nesting, the owner baseline, the strategies' contract and the CLI's refusals."""

from __future__ import annotations

import math
import sqlite3
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from dso_server.capacity.lab_grids import lab_grid
from feeder_twin.backends import DaskCluster, ProcessPool
from feeder_twin.cli import main, parse_args
from feeder_twin.homes import build_household
from feeder_twin.hosting import Criteria, search
from feeder_twin.owner import OwnerPlanner
from feeder_twin.runner import RunSpec, simulate, tariff_shifts
from feeder_twin.scenario import (
    SCENARIOS,
    WEEKS,
    ZONE,
    Period,
    Shares,
    day_tariff,
    household_specs,
    study_grid,
)
from feeder_twin.strategies import STRATEGIES, strategy
from hems_client.devices.household import Household
from protocol.effective import EffectiveLimit

GRID = "kerber-landnetz-kabel-1"


# ---------------------------------------------------------------------------------- the short run, recomputed


def _column(db: sqlite3.Connection, sql: str, *params: object) -> np.ndarray:
    return np.array([row[0] for row in db.execute(sql, params)], dtype=float)


def _matrix(db: sqlite3.Connection, run: int, column: str) -> np.ndarray:
    rows = db.execute(f"SELECT row, {column} FROM household_step WHERE run_id = ? ORDER BY row, step", [run]).fetchall()
    values = np.array([np.nan if value is None else value for _, value in rows], dtype=float)
    return values.reshape(max(r for r, _ in rows) + 1, -1)


@pytest.mark.slow
def test_short_run_kpis_match_an_independent_recomputation_from_the_stored_series(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pp = pytest.importorskip("pandapower")
    import pandapower.networks as pn

    assert main(["run", "--grid", GRID, "--days", "1", "--warmup-h", "4", "--strategies", "uncontrolled",
                 "bandwidth", "performance", "--output-dir", str(tmp_path), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "uncontrolled" in printed and "bandwidth" in printed and "performance" in printed and "peak kW" in printed
    assert (tmp_path / "transformer.png").stat().st_size > 10_000 and (tmp_path / "kpis.csv").exists()

    db = sqlite3.connect(tmp_path / "series.sqlite")
    runs = {strategy: (run_id, start, kpi_start, substep, rating) for run_id, strategy, start, kpi_start, substep,
            rating in db.execute("SELECT run_id, strategy, start, kpi_start, substep_s, rating_kva FROM runs")}
    assert set(runs) == {"uncontrolled", "bandwidth", "performance"}
    departures = {name: {(row, at): km for row, at, km in db.execute(
        "SELECT row, at, range_km FROM ev_departures WHERE run_id = ?", [run_id])}
        for name, (run_id, *_) in runs.items()}
    for name, (run, start, kpi_start, substep_s, rating_kva) in runs.items():
        stored = dict(db.execute("SELECT name, value FROM kpis WHERE run_id = ?", [run]).fetchall())
        offset_s = (datetime.fromisoformat(kpi_start) - datetime.fromisoformat(start)).total_seconds()
        t_s = _column(db, "SELECT t_s FROM grid_step WHERE run_id = ? ORDER BY step", run)
        window = t_s >= offset_s
        per = round(900 / substep_s)
        dt_h = substep_s / 3600

        # Transformer, voltages, lines from the grid series.
        p_kw = _column(db, "SELECT transformer_kw FROM grid_step WHERE run_id = ? ORDER BY step", run)
        loading = _column(db, "SELECT transformer_loading FROM grid_step WHERE run_id = ? ORDER BY step", run)
        u_min = _column(db, "SELECT u_min_pu FROM grid_step WHERE run_id = ? ORDER BY step", run)[window]
        u_max = _column(db, "SELECT u_max_pu FROM grid_step WHERE run_id = ? ORDER BY step", run)[window]
        lines = _column(db, "SELECT line_loading_max FROM grid_step WHERE run_id = ? ORDER BY step", run)[window]
        quarter_kw = p_kw[window].reshape(-1, per).mean(axis=1)
        quarter_loading = loading[window].reshape(-1, per).mean(axis=1)
        assert stored["peak_kw"] == pytest.approx(quarter_kw.max(), rel=1e-9)
        assert stored["peak_kw_per_household"] == pytest.approx(quarter_kw.max() / 8, rel=1e-9)
        assert stored["peak_loading"] == pytest.approx(quarter_loading.max(), rel=1e-9)
        assert stored["hours_above_rating"] == pytest.approx((quarter_loading > 1).sum() * 0.25)
        assert stored["lowest_voltage_pu"] == pytest.approx(u_min.min(), rel=1e-12)
        assert stored["hours_below_0_9_pu"] == pytest.approx((u_min < 0.9).sum() * dt_h)
        assert stored["highest_voltage_pu"] == pytest.approx(u_max.max(), rel=1e-12)
        assert stored["hours_above_1_1_pu"] == pytest.approx((u_max > 1.1).sum() * dt_h)
        assert stored["feed_in_peak_kw"] == pytest.approx(max(0.0, -quarter_kw.min()), abs=1e-9)
        assert stored["line_overload_hours"] == pytest.approx((lines > 1).sum() * dt_h)
        assert stored["days"] == pytest.approx(1.0)

        # The transformer carries the households' net load plus the line losses.
        net = _matrix(db, run, "net_kw")
        households_kw = net.sum(axis=0)
        losses = p_kw - households_kw
        assert np.all(losses > -1e-6) and np.all(losses <= 0.05 * np.abs(households_kw) + 0.5)

        # Comfort and cost from the household series, with the bands and prices stored beside them.
        bands = np.array(db.execute("SELECT comfort_min_c, comfort_max_c, heat_pump_kw IS NOT NULL FROM households "
                                    "WHERE run_id = ? ORDER BY row", [run]).fetchall(), dtype=float)
        indoor = _matrix(db, run, "indoor_c")[:, window]
        heated = bands[:, 2] == 1
        outside = np.maximum(np.maximum(bands[:, :1] - indoor, indoor - bands[:, 1:2]), 0.0)
        degree_hours = outside[heated].sum(axis=1) * dt_h
        assert stored["degree_hours_per_hp_household"] == pytest.approx(degree_hours.mean(), abs=1e-9)
        prices = np.array(db.execute("SELECT import_eur_per_kwh, export_eur_per_kwh FROM prices WHERE run_id = ? "
                                     "ORDER BY row, interval", [run]).fetchall()).reshape(8, -1, 2)
        step_prices = np.repeat(prices, per, axis=1)[:, window]
        in_window = net[:, window]
        cost = ((np.maximum(in_window, 0) * step_prices[..., 0] - np.maximum(-in_window, 0) * step_prices[..., 1])
                .sum(axis=1) * dt_h)
        assert stored["cost_eur_per_household"] == pytest.approx(cost.mean(), rel=1e-9)
        # ... and each HEMS's own KPI tracker counted the same for the KPI day.
        day = datetime.fromisoformat(kpi_start).astimezone(ZONE).date().isoformat()
        hems = np.array(db.execute("SELECT cost_eur, degree_hours FROM hems_days WHERE run_id = ? AND day = ? "
                                   "ORDER BY row", [run, day]).fetchall())
        assert hems[:, 0] == pytest.approx(cost, abs=1e-6)
        assert hems[heated, 1] == pytest.approx(degree_hours, abs=1e-6)

        # EV sessions against the range the same car had uncontrolled, capped at the contract's range.
        required = dict(db.execute("SELECT row, required_km FROM households WHERE run_id = ?", [run]).fetchall())
        per_km = dict(db.execute("SELECT row, ev_kwh_per_km FROM households WHERE run_id = ?", [run]).fetchall())
        sessions = [(row, km, min(required[row], departures["uncontrolled"][(row, at)]))
                    for (row, at), km in departures[name].items() if at >= kpi_start]
        assert sessions and stored["ev_sessions"] == len(sessions)
        assert stored["ev_sessions_ok_share"] == pytest.approx(np.mean([km >= need - 0.5 for _, km, need in sessions]))
        assert stored["energy_not_served_kwh"] == pytest.approx(
            sum(max(0.0, need - km) * per_km[row] for row, km, need in sessions), abs=1e-9)

        # pandapower's own power flow on the original benchmark network agrees at the peak sub-step.
        peak = int(np.argmax(p_kw))
        net_pp = pn.create_kerber_landnetz_kabel_1()
        net_pp.load["p_mw"] = net[:, peak] / 1000  # loads in the order of the connection points
        net_pp.load["q_mvar"] = net[:, peak] / 1000 * math.tan(math.acos(0.95))
        pp.runpp(net_pp)
        lv = net_pp.res_bus.vm_pu[net_pp.bus.vn_kv < 1]
        stored_u = _column(db, "SELECT u_min_pu FROM grid_step WHERE run_id = ? AND step = ?", run, peak)[0]
        assert stored_u == pytest.approx(lv.min(), abs=2e-3)
        assert p_kw[peak] == pytest.approx(-net_pp.res_trafo.p_lv_mw.iloc[0] * 1000, rel=0.01)
        assert rating_kva == pytest.approx(net_pp.trafo.sn_mva.iloc[0] * 1000)

    # Under the allocating strategies every household kept the limits the DSO published, as interval means.
    kpi_intervals = slice(4 * 4, None)  # the 4 h warm-up left out
    for name in ("bandwidth", "performance"):
        run = runs[name][0]
        net = _matrix(db, run, "net_kw")
        limits = np.array([np.nan if v is None else v for (v,) in db.execute(
            "SELECT limit_kw FROM limits WHERE run_id = ? ORDER BY row, interval", [run])], dtype=float).reshape(8, -1)
        mean_import = np.maximum(net, 0).reshape(8, -1, round(900 / runs[name][3])).mean(axis=2)
        published = ~np.isnan(limits)
        assert published.mean() > 0.95
        assert np.all(mean_import[published] <= limits[published] + 0.05)
        firm = np.array([np.nan if v is None else v for (v,) in db.execute(
            "SELECT firm_kw FROM limits WHERE run_id = ? ORDER BY row, interval", [run])], dtype=float).reshape(8, -1)
        firm, mean_import = firm[:, kpi_intervals], mean_import[:, kpi_intervals]
        stored = dict(db.execute("SELECT name, value FROM kpis WHERE run_id = ?", [run]).fetchall())
        assert stored["firm_covered_share"] == pytest.approx(
            (mean_import[~np.isnan(firm)] <= firm[~np.isnan(firm)] + 1e-6).mean())
    assert dict(db.execute("SELECT name, value FROM kpis WHERE run_id = ?",
                           [runs["uncontrolled"][0]]).fetchall())["firm_covered_share"] is None

    # Performance contracts: every steered household's HEMS reported a need for every interval after its start,
    # the DSO's firm limits met them (recomputed from the needs and limits stored), and each HEMS sent its daily
    # verdicts, whose degree-hours agree with its own KPI tracker.
    run = runs["performance"][0]
    flexible = np.array([row for (row,) in db.execute(
        "SELECT row FROM households WHERE run_id = ? AND (heat_pump_kw IS NOT NULL OR ev_kwh IS NOT NULL OR "
        "battery_kwh IS NOT NULL) ORDER BY row", [run])])
    (n_intervals,) = db.execute("SELECT max(interval) + 1 FROM prices WHERE run_id = ?", [run]).fetchone()
    need = np.full((8, n_intervals), np.nan)
    for row, interval, kw in db.execute("SELECT row, interval, need_kw FROM needs WHERE run_id = ?", [run]):
        need[row, interval] = kw
    assert len(flexible) and np.isnan(need[np.setdiff1d(np.arange(8), flexible)]).all()
    assert not np.isnan(need[flexible, 1:]).any()  # from the first interval after the start on
    firm = np.array([np.nan if v is None else v for (v,) in db.execute(
        "SELECT firm_kw FROM limits WHERE run_id = ? ORDER BY row, interval", [run])], dtype=float).reshape(8, -1)
    need, firm = need[:, kpi_intervals], firm[:, kpi_intervals]
    stated = ~np.isnan(need)
    stored = dict(db.execute("SELECT name, value FROM kpis WHERE run_id = ?", [run]).fetchall())
    assert stored["need_met_share"] == pytest.approx((firm[stated] >= need[stated] - 0.001).mean())
    assert stored["need_met_share"] == 1.0  # this feeder carries every need
    assert stored["need_peak_kw"] == pytest.approx(np.nansum(need, axis=0).max())
    assert 0 < stored["need_peak_kw"] < 5 * 8
    verdicts = db.execute("SELECT row, day_start, degree_hours FROM verdicts WHERE run_id = ?", [run]).fetchall()
    assert {row for row, _, _ in verdicts} == set(flexible.tolist())
    hems_days = {(row, day): dh for row, day, dh in db.execute(
        "SELECT row, day, degree_hours FROM hems_days WHERE run_id = ?", [run])}
    for row, day_start, degree_hours in verdicts:
        day = datetime.fromisoformat(day_start).astimezone(ZONE).date().isoformat()
        assert degree_hours == pytest.approx(hems_days[(row, day)], abs=1e-6)


# ---------------------------------------------------------------------------------- where the homes run


@pytest.mark.slow
def test_results_do_not_depend_on_where_the_homes_run() -> None:
    full = lab_grid(GRID)
    grid = full.model_copy(update={"connection_points": full.connection_points[:4]})
    households = household_specs(grid, SCENARIOS["2040"], seed=3)
    # 17:00-21:00 local: EVs arrive, the evening peak, firm and non-firm limits published and modified.
    spec = RunSpec(GRID, "2040", Period(WEEKS["winter"], 1, warmup_h=7), strategy("bandwidth"))
    serial = simulate(spec, grid, households, intervals=16)
    assert serial.net_kw.shape == (4, 16 * 15)
    for backend in (ProcessPool(2), DaskCluster("local", local_workers=2)):
        try:
            assert backend.parallelism == 2
            other = simulate(spec, grid, households, backend=backend, intervals=16)
        finally:
            backend.close()
        assert other.backend == backend.name
        assert np.array_equal(other.net_kw, serial.net_kw)
        assert np.array_equal(other.indoor_c, serial.indoor_c, equal_nan=True)
        assert np.array_equal(other.u_min_pu, serial.u_min_pu)
        assert np.array_equal(other.limit_kw, serial.limit_kw, equal_nan=True)
        assert other.departures == serial.departures


# ---------------------------------------------------------------------------------- households


def test_households_are_diverse_deterministic_and_nested_across_scenarios() -> None:
    grid = lab_grid("kerber-dorfnetz")
    low = household_specs(grid, SCENARIOS["2030"], seed=5)
    high = household_specs(grid, SCENARIOS["2040"], seed=5)
    assert household_specs(grid, SCENARIOS["2030"], seed=5) == low
    assert household_specs(grid, SCENARIOS["2030"], seed=6) != low
    for a, b in zip(low, high, strict=True):
        assert (a.ean, a.persons, a.annual_kwh, a.contract) == (b.ean, b.persons, b.annual_kwh, b.contract)
        for device in ("heat_pump", "ev", "battery"):
            if getattr(a, device) is not None:
                assert getattr(b, device) == getattr(a, device)  # a larger share only adds devices
        assert a.pv_kwp == 0 or b.pv_kwp == a.pv_kwp
    assert sum(h.heat_pump is not None for h in high) > sum(h.heat_pump is not None for h in low)
    comfort = {h.contract.comfort.indoor_setpoint_c for h in high}
    departures = {h.contract.comfort.ev_departure_local for h in high}
    cars = {(h.ev.charger_kw, h.ev.capacity_kwh, h.ev.arrival_local) for h in high if h.ev}
    assert len(comfort) >= 4 and len(departures) >= 5 and len(cars) >= 10
    assert len({h.persons for h in high}) == 5 and len({round(h.annual_kwh) for h in high}) == len(high)
    heat_pumps = [h.heat_pump for h in high if h.heat_pump]
    assert len({hp.max_electric_kw for hp in heat_pumps}) >= 3
    assert all(2.0 <= hp.max_electric_kw <= 8.0 for hp in heat_pumps)
    everyone = household_specs(grid, Shares(heat_pump=1, ev=1, pv=1, battery=1), seed=5)
    assert all(h.heat_pump and h.ev and h.battery and h.pv_kwp > 0 for h in everyone)
    # The DSO's view: section 14a guarantees on the steered connections only, or none at all.
    minimums = {cp.ean: cp.guaranteed_min_import_kw for cp in study_grid(grid, high).connection_points}
    assert all(minimums[h.ean] == (4.2 if h.flexible else 0.0) for h in high)
    assert {cp.guaranteed_min_import_kw for cp in study_grid(grid, high, guaranteed_kw=0).connection_points} == {0}


def test_recording_household_forecasts_exactly_as_the_live_household() -> None:
    grid = lab_grid(GRID)
    spec = household_specs(grid, Shares(heat_pump=1, ev=1, pv=1, battery=1), seed=2)[0]
    start = datetime(2027, 1, 11, 11, 0, tzinfo=UTC)
    home = build_household(spec, WEEKS["winter"].weather(start, start + timedelta(days=1)))
    for minutes in (0, 7, 15, 60, 61, 600):
        moment = start + timedelta(minutes=minutes)
        assert home.forecast(moment) == Household.forecast(home, moment)
        assert home.forecast(moment, 5) == Household.forecast(home, moment, 5)


def test_owner_baseline_charges_at_full_power_and_holds_the_thermostat() -> None:
    grid = lab_grid(GRID)
    spec = household_specs(grid, Shares(heat_pump=1, ev=1, pv=1, battery=1), seed=2)[0]
    evening = datetime(2027, 1, 11, 19, 0, tzinfo=UTC)  # 20:00 local: the car is home
    home = build_household(spec, WEEKS["winter"].weather(evening, evening + timedelta(days=1)))
    home.heat_pump.indoor_temp_c = spec.contract.comfort.indoor_setpoint_c - 0.5  # type: ignore[union-attr]
    limits = [EffectiveLimit(start=evening, import_limit_kw=17, export_limit_kw=10, constrained_by_dso=False)]
    tariff = day_tariff(date(2027, 1, 11), kind="flat")
    decision = OwnerPlanner().plan(evening, home.state(evening, 1), limits, tariff, spec.contract)
    assert decision.setpoints["ev"] == spec.ev.charger_kw  # type: ignore[union-attr]
    hp_kw = decision.setpoints["heat_pump"]
    assert hp_kw is not None and 0 < hp_kw <= spec.heat_pump.max_electric_kw  # type: ignore[union-attr]
    home.heat_pump.step(hp_kw, 900, home.weather.conditions(evening))  # type: ignore[union-attr]
    assert home.heat_pump.indoor_temp_c == pytest.approx(  # type: ignore[union-attr]
        spec.contract.comfort.indoor_setpoint_c, abs=1e-6) or hp_kw == spec.heat_pump.max_electric_kw  # type: ignore[union-attr]
    assert decision.setpoints["battery"] is not None and decision.setpoints["battery"] < 0  # covers the evening load


# ---------------------------------------------------------------------------------- tariffs and strategies


def test_randomised_tou_shifts_each_households_cheap_window_within_two_hours() -> None:
    grid = lab_grid("kerber-dorfnetz")
    households = household_specs(grid, SCENARIOS["2040"], seed=1)
    shifts = tariff_shifts(households, seed=1)
    assert tariff_shifts(households, seed=1) == shifts
    assert set(shifts.values()) <= set(range(-8, 9)) and len(set(shifts.values())) >= 8
    day = date(2027, 1, 12)
    for shift in (-8, 0, 5):
        tariff = day_tariff(day, kind="tou", shift_intervals=shift)
        cheap = [i.start for i in tariff.intervals if i.import_price_eur_per_kwh == 0.16]
        opens = [moment for moment in cheap if moment - timedelta(minutes=15) not in cheap]
        assert [m.astimezone(ZONE).time() for m in opens][-1] == (datetime(2027, 1, 12, 23, tzinfo=ZONE)
                                                                  + timedelta(minutes=15 * shift)).time()
    assert {i.import_price_eur_per_kwh for i in day_tariff(day, kind="flat").intervals} == {0.26}


@pytest.mark.parametrize(("argv", "message"), [
    (["run", "--days", "9"], "--days must be between 1 and 7"),
    (["run", "--substep-s", "7"], "--substep-s must divide 900"),
    (["run", "--warmup-h", "0.1"], "--warmup-h must be between 0 and 48"),
    (["run", "--strategies", "cheapest"], "unknown strategy 'cheapest'"),
    (["run", "--hp-share", "1.5"], "a share must be between 0 and 1"),
    (["run", "--workers", "0"], "--workers must be between 1 and 256"),
    (["run", "--guaranteed-kw", "-1"], "--guaranteed-kw must be between 0 and 17"),
    (["hosting", "--step", "0.7"], "--step must be in (0, 0.5]"),
    (["run", "--grid", "simbench"], "invalid choice: 'simbench'"),
])
def test_cli_refuses_bad_arguments_with_the_option_named(argv: list[str], message: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_help_and_list_document_the_study(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = capsys.readouterr().out
    for word in ("run", "hosting", "uncontrolled", "tou-random", "bandwidth", "performance", "--dask"):
        assert word in text
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    assert "dickert-long-cable" in listed and "2040" in listed and "reports its capacity need" in listed


# ---------------------------------------------------------------------------------- hosting capacity


def test_hosting_search_reports_the_largest_share_within_limits_and_what_bound_the_next() -> None:
    full = lab_grid(GRID)
    grid = full.model_copy(update={"connection_points": full.connection_points[:4]})
    period = Period(WEEKS["winter"], 1, warmup_h=0)
    # A transformer limit so tight that only a few electrified homes fit: the bisection must find the edge.
    criteria = Criteria(max_loading=0.12)
    from feeder_twin.backends import InProcess

    backend = InProcess()
    [result] = search(grid, SCENARIOS["2040"], period, [STRATEGIES["uncontrolled"]], grid_name=GRID,
                      scenario="2040", seed=1, substep_s=300, step=0.25, criteria=criteria, backend=backend)
    shares = [t.share for t in result.trials]
    assert shares == sorted(shares) and 1.0 in shares
    within = [t.share for t in result.trials if t.within]
    beyond = [t.share for t in result.trials if not t.within]
    assert within and beyond and max(within) < min(beyond)
    assert result.share == max(within)
    assert all("transformer" in " ".join(t.violations) for t in result.trials if not t.within)
    assert f"{result.share:.0%}" in result.describe() and "transformer" in result.describe()
    assert replace(criteria).violations(result.trials[0].kpis) == []
    with pytest.raises(ValueError, match="devices must be some of"):
        search(grid, SCENARIOS["2040"], period, [STRATEGIES["uncontrolled"]], grid_name=GRID, scenario="2040", seed=1,
               substep_s=300, backend=backend, devices=("pv",))


def test_a_load_without_power_flow_solution_counts_as_beyond_every_limit_and_the_rest_is_kept() -> None:
    from dso_server.capacity.powerflow import FeederModel
    from feeder_twin.runner import solve_flow

    grid = lab_grid("dickert-long-cable")
    transformer = grid.transformers[0]
    model = FeederModel(grid, transformer.id, power_factor=transformer.power_factor)
    n = len(model.connection_points)
    loads = np.full((n, 3), 1.0)
    loads[:, 1] = 30.0  # 2.7 MW on a 400 kVA feeder of long cables: Newton-Raphson diverges (voltage collapse)
    p_kw, loading, u_min, u_max, line, _, failed = solve_flow(model, loads, transformer.rating_kva,
                                                               transformer.power_factor)
    assert failed == 1
    alone = model.flow(loads[:, [0, 2]])
    assert p_kw[[0, 2]] == pytest.approx(alone.transformer_kw) and u_min[[0, 2]] == pytest.approx(
        alone.u_pu.min(axis=1))
    assert u_min[1] == 0.0 and line[1] == np.inf and p_kw[1] == pytest.approx(30.0 * n)
    assert loading[1] > 1 and 0.9 < u_min[0] < u_max[0] <= 1.0 and u_max[1] == 1.0


def test_a_failed_planning_step_is_recorded_and_the_run_goes_on_like_the_live_loop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import feeder_twin.dso
    from feeder_twin.kpi import compute

    real = feeder_twin.dso.run_near_real_time
    calls = []

    def failing_first(*args: object, **kwargs: object) -> object:
        calls.append(kwargs["now"])
        if len(calls) == 1:
            raise RuntimeError("allocation invariant broken")
        return real(*args, **kwargs)

    monkeypatch.setattr(feeder_twin.dso, "run_near_real_time", failing_first)
    full = lab_grid(GRID)
    grid = full.model_copy(update={"connection_points": full.connection_points[:2]})
    spec = RunSpec(GRID, "2040", Period(WEEKS["winter"], 1, warmup_h=0.25), strategy("bandwidth"), substep_s=300)
    result = simulate(spec, grid, household_specs(grid, SCENARIOS["2040"], seed=1), intervals=3)
    assert len(calls) == 4 and result.dso_failures == 1 and result.dso_runs >= 3
    assert "planning failed 1 time(s)" in " ".join(result.notes) and "allocation invariant broken" in result.notes[0]
    assert compute(result).dso_failures == 1
