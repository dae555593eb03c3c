"""Voltage and line limits by power flow: power-grid-model agrees with pandapower on a benchmark grid, and the
reduction keeps every node within EN 50160 and every line within its ampacity (hypothesis over random grids)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dso_server.capacity.grid import ConnectionPoint, Feeder, Grid, Line, Node, Transformer
from dso_server.capacity.grid_allocation import firm_for_grid, non_firm_for_grid
from dso_server.capacity.lab_grids import grid_from_pandapower, lab_grid
from dso_server.capacity.powerflow import FeederModel, Limits, check_powerflow, limit_by_powerflow
from protocol.contract import make_ean18


def test_power_grid_model_matches_pandapower_on_kerber_dorfnetz() -> None:
    pp = pytest.importorskip("pandapower")
    import pandapower.networks as pn

    net = pn.create_kerber_dorfnetz()
    grid = grid_from_pandapower(net, number=13)
    model = FeederModel(grid, "T1", power_factor=0.95)
    p_kw = np.full((len(grid.connection_points), 1), 6.0)
    net.load["p_mw"] = 0.006
    net.load["q_mvar"] = 0.006 * np.tan(np.arccos(0.95))
    pp.runpp(net)
    ours = model.run(p_kw)
    lv = net.res_bus.vm_pu[net.bus.vn_kv < 1]
    assert ours.u_min_pu.min() == pytest.approx(lv.min(), abs=2e-3)
    assert ours.loading_max.max() == pytest.approx(net.res_line.loading_percent.max() / 100, rel=0.02)


def test_detailed_flow_matches_pandapower_and_the_summary_run() -> None:
    pp = pytest.importorskip("pandapower")
    import pandapower.networks as pn

    net = pn.create_kerber_landnetz_kabel_2()
    grid = grid_from_pandapower(net, number=12)
    model = FeederModel(grid, "T1", power_factor=0.95)
    n = len(grid.connection_points)
    p_kw = np.stack([np.full(n, 9.0), np.linspace(-6.0, 4.0, n)], axis=1)  # a heavy import, a mixed export case
    flow = model.flow(p_kw)
    summary = model.run(p_kw)
    assert flow.u_pu.min(axis=1) == pytest.approx(summary.u_min_pu.min(axis=1))
    assert flow.line_loading.max(axis=1) == pytest.approx(summary.loading_max.max(axis=1))
    assert flow.transformer_kw[0] > 9.0 * n  # the load plus the losses in the lines
    net.load["p_mw"] = p_kw[:, 0] / 1000
    net.load["q_mvar"] = p_kw[:, 0] / 1000 * np.tan(np.arccos(0.95))
    pp.runpp(net)
    lv = net.res_bus.vm_pu[net.bus.vn_kv < 1]
    assert flow.u_pu[0].min() == pytest.approx(lv.min(), abs=2e-3)
    assert flow.transformer_kw[0] == pytest.approx(-net.res_trafo.p_lv_mw.iloc[0] * 1000, rel=0.01)
    assert flow.transformer_loading[0] == pytest.approx(net.res_trafo.loading_percent.iloc[0] / 100, rel=0.02)


def test_firm_reduced_where_a_long_feeder_would_fall_below_0_9_pu() -> None:
    grid = lab_grid("kerber-vorstadtnetz-kabel-1")
    # Every household at 10 kW would break lines and voltages; the reduction must bring them back.
    model = FeederModel(grid, "T1")
    n = len(grid.connection_points)
    before = model.run(np.full((n, 4), 10.0))
    assert before.u_min_pu.min() < 0.9 or before.loading_max.max() > 1
    base = np.array([[c.guaranteed_min_import_kw] for c in grid.connection_points]).repeat(4, axis=1)
    result = limit_by_powerflow(model, base_kw=base, flex_kw=np.full((n, 4), 10.0) - base)
    after = model.run(result.kw)
    assert after.u_min_pu.min() >= 0.9 - 1e-4 and after.loading_max.max() <= 1 + 1e-4
    assert np.all(result.kw >= base - 1e-9)  # the section 14a guarantee is never cut
    assert (result.scale < 1).any() and (result.scale == 1).any()  # only the weak branches are reduced


def test_grid_allocation_respects_rating_voltage_and_export_limits() -> None:
    grid = lab_grid("kerber-dorfnetz")
    fc = np.full((1, 8), 80.0)
    firm = firm_for_grid(grid, p90_kw=fc, p10_kw=-fc)
    limit = grid.transformers[0].limit_kw
    assert firm.import_kw.sum(axis=0).max() <= limit + 1e-6 and firm.export_kw.sum(axis=0).max() <= limit + 1e-6
    model = FeederModel(grid, "T1")
    assert model.run(firm.import_kw).u_min_pu.min() >= 0.9 - 1e-4
    assert model.run(-firm.export_kw).u_max_pu.max() <= 1.1 + 1e-4
    nf = non_firm_for_grid(grid, firm=firm, expected_import_kw=np.full((1, 8), 40.0),
                           expected_export_kw=np.zeros((1, 8)))
    assert model.run(firm.import_kw + nf.import_kw).u_min_pu.min() >= 0.9 - 1e-4
    promised = (firm.import_kw - np.minimum(firm.baseline_import_kw, firm.import_kw)).sum(axis=0)
    assert np.all(nf.import_kw.sum(axis=0) + promised + 40.0 <= limit + 1e-3)


@st.composite
def _feeders(draw: st.DrawFn) -> tuple[Grid, np.ndarray, np.ndarray]:
    """A random radial LV grid (1-3 feeders of 2-12 nodes), one household per node, random allocations."""
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    n_feeders = int(rng.integers(1, 4))
    nodes = [Node(id="bb", transformer_id="T")]
    lines, cps, feeders = [], [], []
    for f in range(n_feeders):
        feeders.append(Feeder(id=f"F{f}", transformer_id="T"))
        previous = "bb"
        for k in range(int(rng.integers(2, 13))):
            here = f"f{f}n{k}"
            nodes.append(Node(id=here, transformer_id="T"))
            length_km = float(rng.uniform(0.01, 0.08))
            lines.append(Line(id=f"l{f}-{k}", from_node=previous, to_node=here, r_ohm=0.206 * length_km,
                              x_ohm=0.08 * length_km, i_max_a=float(rng.choice([142.0, 270.0]))))
            cps.append(ConnectionPoint(ean=make_ean18(f"87169099{len(cps):09d}"), feeder_id=f"F{f}",
                                       contracted_max_import_kw=25, contracted_max_export_kw=15,
                                       controllable_devices=int(rng.integers(0, 2)), node_id=here))
            # Branch off now and then instead of always extending the chain.
            previous = here if rng.random() < 0.8 else previous
    grid = Grid(transformers=(Transformer(id="T", rating_kva=float(rng.choice([250.0, 400.0, 630.0])),
                                          busbar_node="bb", pk_kw=4.0),),
                feeders=tuple(feeders), connection_points=tuple(cps), nodes=tuple(nodes), lines=tuple(lines))
    n_i = int(rng.integers(1, 5))
    base = np.minimum(np.array([[c.guaranteed_min_import_kw] for c in cps]), 4.2).repeat(n_i, axis=1) * rng.uniform(
        0, 1, (len(cps), n_i))
    flex = rng.uniform(0, 20, (len(cps), n_i))
    return grid, base, flex


@settings(max_examples=25, deadline=None)
@given(_feeders(), st.booleans())
def test_reduction_always_ends_within_limits_or_flags(case: tuple[Grid, np.ndarray, np.ndarray], export: bool) -> None:
    grid, base, flex = case
    assert grid.validate_grid() == []
    model = FeederModel(grid, "T")
    limits = Limits()
    result = limit_by_powerflow(model, base_kw=base, flex_kw=flex, export=export, limits=limits)
    check_powerflow(model, result, export=export, limits=limits)  # raises when a limit is broken unflagged
    assert np.all(result.kw >= base - 1e-9) and np.all(result.kw <= base + flex + 1e-9)
    flow = model.run(-result.kw if export else result.kw)
    ok = ~result.forced.T
    if export:
        assert np.all((flow.u_max_pu <= limits.max_voltage_pu + 1e-4) | ~ok)
    else:
        assert np.all((flow.u_min_pu >= limits.min_voltage_pu - 1e-4) | ~ok)
    assert np.all((flow.loading_max <= 1 + 1e-4) | ~ok)
