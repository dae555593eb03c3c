"""Allocation benchmark: a DSO region of 10,000 households under 100 transformers.

Runs, each timed as the median of ``--reps`` repetitions:
* day-ahead firm envelopes (96 intervals, import and export, ``grid_allocation.firm_for_grid``);
* near-real-time non-firm envelopes (8 intervals ahead, ``grid_allocation.non_firm_for_grid``);
* the same two with voltage and line limits, where every transformer carries a grid model: 100 copies of the
  Kerber suburban cable grid (pandapower) with 100 households each, power flows by power-grid-model;
* baseline, measured in the same run: the fair rule as a plain per-household Python loop over a 10 % subset of
  the day-ahead run, scaled x10.

The last line is ``nrt_median_ms=<x> dayahead_median_ms=<y> nrt_voltage_median_ms=<z>
dayahead_voltage_median_ms=<w> baseline_ratio=<r>`` (r = baseline loop time / vectorised day-ahead time).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from dso_server.capacity.grid import ConnectionPoint, Feeder, Grid, Node, Transformer
from dso_server.capacity.grid_allocation import GridAllocation, firm_for_grid, non_firm_for_grid
from dso_server.capacity.powerflow import FeederModel
from protocol.contract import make_ean18

N_T, H_PER_T, N_I, NRT_I = 100, 100, 96, 8


def _region(*, with_model: bool) -> Grid:
    """100 transformers x 100 households; with a grid model: copies of the Kerber suburban cable grid."""
    template: Grid | None = None
    if with_model:
        from dso_server.capacity.lab_grids import lab_grid

        template = lab_grid("kerber-vorstadtnetz-kabel-1")
    rng = np.random.default_rng(0)
    transformers, feeders, cps, nodes, lines = [], [], [], [], []
    for t in range(N_T):
        tid = f"T{t:03d}"
        if template is None:
            transformers.append(Transformer(id=tid, rating_kva=630))
            feeders += [Feeder(id=f"{tid}-F{f}", transformer_id=tid) for f in range(4)]
            node_of = [None] * H_PER_T
            feeder_of = [f"{tid}-F{h % 4}" for h in range(H_PER_T)]
        else:
            src = template.transformers[0]
            transformers.append(src.model_copy(update={"id": tid, "busbar_node": f"{tid}:{src.busbar_node}"}))
            feeders += [Feeder(id=f"{tid}:{f.id}", transformer_id=tid) for f in template.feeders]
            nodes += [Node(id=f"{tid}:{n.id}", transformer_id=tid) for n in template.nodes]
            lines += [li.model_copy(update={"id": f"{tid}:{li.id}", "from_node": f"{tid}:{li.from_node}",
                                            "to_node": f"{tid}:{li.to_node}"}) for li in template.lines]
            node_of = [f"{tid}:{c.node_id}" for c in template.connection_points[:H_PER_T]]
            feeder_of = [f"{tid}:{c.feeder_id}" for c in template.connection_points[:H_PER_T]]
        for h in range(H_PER_T):
            cps.append(ConnectionPoint(ean=make_ean18(f"8716{t:03d}{h:010d}"), feeder_id=feeder_of[h],
                                       contracted_max_import_kw=float(rng.choice([11.0, 17.0, 25.0])),
                                       contracted_max_export_kw=10.0, controllable_devices=int(rng.integers(0, 3)),
                                       node_id=node_of[h]))
    return Grid(transformers=tuple(transformers), feeders=tuple(feeders), connection_points=tuple(cps),
                nodes=tuple(nodes), lines=tuple(lines))


def _median_ms(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _loop_firm(grid: Grid, p90: np.ndarray, subset: int) -> None:
    """Naive reference: per interval and transformer, sums then per-household shares in Python."""
    cps = grid.connection_points
    for t in range(N_I):
        for g in range(subset):
            members = cps[g * H_PER_T:(g + 1) * H_PER_T]
            avail = grid.transformers[g].limit_kw
            base = [min(max(c.guaranteed_min_import_kw, p90[g, t] / H_PER_T), c.contracted_max_import_kw)
                    for c in members]
            smin = sum(base)
            left = max(avail - smin, 0.0)
            room = sum(c.contracted_max_import_kw - b for c, b in zip(members, base, strict=True))
            for c, b in zip(members, base, strict=True):
                scale = min(1.0, avail / smin) if smin else 1.0
                _ = b * scale + (c.contracted_max_import_kw - b) * min(1.0, left / room if room else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7, help="repetitions of the fast runs (median reported)")
    parser.add_argument("--voltage-reps", type=int, default=1, help="repetitions of the voltage-aware runs")
    parser.add_argument("--no-voltage", action="store_true", help="skip the voltage-aware variant")
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    p90 = rng.uniform(100, 450, (N_T, N_I))
    p10 = p90 * 0.4 - 150.0  # afternoons with PV: net export
    expected_imp = rng.uniform(80, 400, (N_T, NRT_I))
    expected_exp = np.zeros((N_T, NRT_I))

    plain = _region(with_model=False)
    firm = firm_for_grid(plain, p90_kw=p90, p10_kw=p10)
    dayahead = _median_ms(lambda: firm_for_grid(plain, p90_kw=p90, p10_kw=p10), args.reps)
    firm8 = GridAllocation(eans=firm.eans, import_kw=firm.import_kw[:, :NRT_I], export_kw=firm.export_kw[:, :NRT_I],
                           baseline_import_kw=firm.baseline_import_kw[:, :NRT_I],
                           baseline_export_kw=firm.baseline_export_kw[:, :NRT_I])
    nrt = _median_ms(lambda: non_firm_for_grid(plain, firm=firm8, expected_import_kw=expected_imp,
                                               expected_export_kw=expected_exp), args.reps)
    t0 = time.perf_counter()
    _loop_firm(plain, p90, N_T // 10)
    loop_ms = (time.perf_counter() - t0) * 1000 * 10
    print(f"households={len(plain.connection_points)} transformers={N_T} dayahead_intervals={N_I} "
          f"nrt_intervals={NRT_I} reps={args.reps}")
    print(f"baseline python loop day-ahead import (10% subset x10): {loop_ms:.0f} ms")
    print(f"vectorised day-ahead import+export median: {dayahead:.1f} ms ({loop_ms / dayahead:.0f}x the baseline)")
    print(f"vectorised near-real-time import+export median: {nrt:.1f} ms")

    nrt_v = dayahead_v = float("nan")
    if not args.no_voltage:
        modelled = _region(with_model=True)
        models = {t.id: FeederModel(modelled, t.id) for t in modelled.transformers}
        result: list[GridAllocation] = []
        dayahead_v = _median_ms(lambda: result.append(firm_for_grid(modelled, p90_kw=p90, p10_kw=p10,
                                                                      models=models)), args.voltage_reps)
        vf = result[-1]
        vf8 = GridAllocation(eans=vf.eans, import_kw=vf.import_kw[:, :NRT_I], export_kw=vf.export_kw[:, :NRT_I],
                             baseline_import_kw=vf.baseline_import_kw[:, :NRT_I],
                             baseline_export_kw=vf.baseline_export_kw[:, :NRT_I])
        nf: list[GridAllocation] = []
        nrt_v = _median_ms(lambda: nf.append(non_firm_for_grid(modelled, firm=vf8, expected_import_kw=expected_imp,
                                                               expected_export_kw=expected_exp, models=models)),
                           args.voltage_reps)
        print(f"voltage-aware day-ahead ({vf.summary()['power_flows']} batch power flows, "
              f"{vf.summary()['voltage_limited_intervals']} transformer-intervals reduced): {dayahead_v:.0f} ms")
        print(f"voltage-aware near-real-time ({nf[-1].summary()['power_flows']} batch power flows): {nrt_v:.0f} ms")
    print(f"nrt_median_ms={nrt:.1f} dayahead_median_ms={dayahead:.1f} nrt_voltage_median_ms={nrt_v:.0f} "
          f"dayahead_voltage_median_ms={dayahead_v:.0f} baseline_ratio={loop_ms / dayahead:.0f}")


if __name__ == "__main__":
    main()
