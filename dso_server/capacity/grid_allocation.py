"""Allocation for a whole grid: firm and non-firm import and export envelopes per connection point. Pure.

Import and export are allocated the same way with their own forecasts: import against the p90 of the
transformer's net load (the peak the DSO protects), export against the p10 (the lowest net load, i.e. the most
feed-in: with PV it is negative and its magnitude is the export to carry). The transformer limit applies to
either direction (capacity x (1 - margin)). Where a transformer has a grid model, ``powerflow`` then reduces
import limits until no node falls below ``min_voltage_pu`` and no line exceeds its ampacity with every household
at its import limit, and export limits likewise against ``max_voltage_pu`` (the two worst cases; a mix of
importing and exporting neighbours is milder).

Values published are floored to 1 W so rounding never breaks an invariant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from dso_server.capacity.allocation import (
    Allocation,
    AllocationInvariantError,
    FloatArray,
    allocate_envelopes,
    allocate_non_firm_envelopes,
    baselines_kw,
    non_firm_headroom_kw,
)
from dso_server.capacity.errors import CapacityError
from dso_server.capacity.grid import Grid
from dso_server.capacity.need_allocation import NeedAllocation, ScalingRule, allocate_for_needs, shortfall_kw
from dso_server.capacity.powerflow import FeederModel, Limits, check_powerflow, limit_by_powerflow

_TOL_KW = 1e-6
DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class GridAllocation:
    """Per connection point (rows, in ``eans`` order) and interval: import and export limits in kW."""

    eans: tuple[str, ...]
    import_kw: FloatArray
    export_kw: FloatArray
    baseline_import_kw: FloatArray
    baseline_export_kw: FloatArray
    minimums_forced: dict[str, NDArray[np.bool_]] = field(default_factory=dict)
    """Per transformer id and interval: guaranteed minimums could not all be honoured."""
    voltage_limited: dict[str, NDArray[np.bool_]] = field(default_factory=dict)
    """Per transformer id and interval: a power flow reduced some household's limit there."""
    voltage_forced: dict[str, NDArray[np.bool_]] = field(default_factory=dict)
    """Per transformer id and interval: even the part that is never cut violates a voltage or line limit."""
    power_flows: int = 0
    need_kw: FloatArray | None = None
    """Firm runs with needs: the needs allocated for (connection points x intervals, NaN for none)."""
    shortfall_kw: FloatArray | None = None
    """Firm runs with needs: need minus the published firm import limit where positive (beyond 1 W), else 0."""

    def summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "households": len(self.eans),
            "intervals": int(self.import_kw.shape[1]) if self.import_kw.ndim == 2 else 0,
            "minimum_forced_intervals": int(sum(v.sum() for v in self.minimums_forced.values())),
            "voltage_limited_intervals": int(sum(v.sum() for v in self.voltage_limited.values())),
            "voltage_forced_intervals": int(sum(v.sum() for v in self.voltage_forced.values())),
            "power_flows": self.power_flows,
        }
        if self.need_kw is not None and self.shortfall_kw is not None:
            has_need = np.isfinite(self.need_kw)
            short = self.shortfall_kw > 0
            summary.update({
                "need_households": int(has_need.any(axis=1).sum()),
                "need_intervals": int(has_need.sum()),
                "needs_not_honoured": {
                    ean: {"intervals": int(short[h].sum()),
                          "max_shortfall_kw": round(float(self.shortfall_kw[h].max()), 3),
                          "shortfall_kwh": round(float(self.shortfall_kw[h].sum()) * 0.25, 3)}
                    for h, ean in enumerate(self.eans) if short[h].any()},
            })
        return summary


def _floor_w(kw: FloatArray) -> FloatArray:
    return np.floor(np.maximum(kw, 0.0) * 1000.0 + 1e-9) / 1000.0


@dataclass
class _Index:
    grid: Grid

    def __post_init__(self) -> None:
        self.t_ids = [t.id for t in self.grid.transformers]
        row = {tid: i for i, tid in enumerate(self.t_ids)}
        self.cps = list(self.grid.connection_points)
        self.group = np.array([row[self.grid.transformer_of(c)] for c in self.cps], dtype=np.intp)
        self.limit = np.array([t.limit_kw for t in self.grid.transformers])
        self.capacity = np.array([t.capacity_kw for t in self.grid.transformers])
        self.max_import = np.array([c.contracted_max_import_kw for c in self.cps])
        self.max_export = np.array([c.contracted_max_export_kw for c in self.cps])
        self.min_import = np.array([c.guaranteed_min_import_kw for c in self.cps])
        self.rows = {tid: np.flatnonzero(self.group == i) for i, tid in enumerate(self.t_ids)}
        self.ids = {"household_ids": [c.ean for c in self.cps], "group_ids": self.t_ids}
        """What names the rows in the allocation's errors: EANs and transformer ids."""


def _models(grid: Grid, models: dict[str, FeederModel] | None) -> dict[str, FeederModel]:
    models = {} if models is None else models
    for t in grid.transformers:
        if t.busbar_node is not None and t.id not in models:
            models[t.id] = FeederModel(grid, t.id)
    return models


def _check_totals(idx: _Index, kw: FloatArray, available: FloatArray, what: str) -> None:
    total = np.zeros((len(idx.t_ids), kw.shape[1]))
    np.add.at(total, idx.group, kw)
    over = total > available + _TOL_KW * max(1, kw.shape[0])
    if over.any():
        g, t = np.argwhere(over)[0]
        raise AllocationInvariantError(CapacityError(
            "transformer", f"{what.replace(' ', '_').replace('-', '_')}_kw", (idx.t_ids[g],),
            f"{what} {total[g, t]:.3f} kW in sum > {available[g, t]:.3f} kW", int(t)))


def firm_for_grid(
    grid: Grid, *, p90_kw: FloatArray, p10_kw: FloatArray, weights: FloatArray | None = None,
    limits: Limits = DEFAULT_LIMITS, models: dict[str, FeederModel] | None = None,
    need_kw: FloatArray | None = None, rule: ScalingRule = "proportional",
) -> GridAllocation:
    """Firm envelopes for every connection point of ``grid``.

    ``p90_kw`` / ``p10_kw`` (transformers in grid order, intervals) forecast each transformer's net load;
    ``weights`` (connection points) say how the baseline is shared inside a transformer (equal when None).
    ``need_kw`` (connection points in grid order x intervals, NaN for none): the capacity needs of performance
    contracts; import is then allocated by ``need_allocation.allocate_for_needs`` (needs first, scaled by ``rule``
    when a transformer cannot carry them), and a power flow cuts a need no more than a section 14a minimum."""
    idx = _Index(grid)
    p90 = np.asarray(p90_kw, dtype=np.float64)
    p10 = np.asarray(p10_kw, dtype=np.float64)
    n_i = p90.shape[1]
    w = np.ones(len(idx.cps)) if weights is None else np.maximum(np.asarray(weights, dtype=np.float64), 0.0)
    base_imp = baselines_kw(transformer_kw=p90, group=idx.group, weight=w)
    base_exp = baselines_kw(transformer_kw=-p10, group=idx.group, weight=idx.max_export)
    needs = None if need_kw is None else np.asarray(need_kw, dtype=np.float64)
    imp: Allocation | NeedAllocation
    if needs is not None and np.isfinite(needs).any():
        imp = allocate_for_needs(limit_kw=idx.limit, group=idx.group, need_kw=needs, baseline_kw=base_imp,
                                 min_kw=idx.min_import, max_kw=idx.max_import, rule=rule, **idx.ids)
        protected = imp.guarantee_kw
    else:
        imp = allocate_envelopes(limit_kw=idx.limit, group=idx.group, baseline_kw=base_imp, min_kw=idx.min_import,
                                 max_kw=idx.max_import, **idx.ids)
        protected = np.broadcast_to(idx.min_import[:, None], imp.import_kw.shape)
    exp = allocate_envelopes(limit_kw=idx.limit, group=idx.group, baseline_kw=base_exp,
                             min_kw=np.zeros(len(idx.cps)), max_kw=idx.max_export, **idx.ids)
    import_kw, export_kw = imp.import_kw.copy(), exp.import_kw.copy()
    limited: dict[str, NDArray[np.bool_]] = {}
    forced: dict[str, NDArray[np.bool_]] = {}
    runs = 0
    for tid, model in _models(grid, models).items():
        rows = idx.rows[tid]
        base = np.minimum(protected[rows], import_kw[rows])
        res_i = limit_by_powerflow(model, base_kw=base, flex_kw=import_kw[rows] - base, limits=limits)
        check_powerflow(model, res_i, limits=limits)
        res_e = limit_by_powerflow(model, base_kw=np.zeros_like(export_kw[rows]), flex_kw=export_kw[rows],
                                   export=True, limits=limits)
        check_powerflow(model, res_e, export=True, limits=limits)
        import_kw[rows], export_kw[rows] = res_i.kw, res_e.kw
        limited[tid] = ((res_i.scale < 1).any(axis=0)) | ((res_e.scale < 1).any(axis=0))
        forced[tid] = res_i.forced.any(axis=0) | res_e.forced.any(axis=0)
        runs += res_i.power_flows + res_e.power_flows
    import_kw, export_kw = _floor_w(import_kw), _floor_w(export_kw)
    limit = np.broadcast_to(idx.limit[:, None], (len(idx.t_ids), n_i))
    _check_totals(idx, import_kw, limit, "firm import")
    _check_totals(idx, export_kw, limit, "firm export")
    return GridAllocation(
        eans=tuple(c.ean for c in idx.cps), import_kw=import_kw, export_kw=export_kw, baseline_import_kw=base_imp,
        baseline_export_kw=base_exp,
        minimums_forced={tid: imp.minimums_forced[i] for i, tid in enumerate(idx.t_ids)},
        voltage_limited=limited, voltage_forced=forced, power_flows=runs,
        need_kw=needs, shortfall_kw=None if needs is None else shortfall_kw(needs, import_kw),
    )


def non_firm_for_grid(
    grid: Grid, *, firm: GridAllocation, expected_import_kw: FloatArray, expected_export_kw: FloatArray,
    limits: Limits = DEFAULT_LIMITS, models: dict[str, FeederModel] | None = None,
) -> GridAllocation:
    """Non-firm envelopes on top of ``firm`` (same intervals) from what is expected to flow (transformers x
    intervals, import and feed-in magnitudes). Invariants (checked): per transformer and interval
    expected + promised flexible firm + non-firm <= limit and firm + non-firm <= capacity (the rating), for
    import and export; firm + non-firm <= contract max; with a grid model, firm + non-firm within voltage and
    line limits (where firm alone is)."""
    idx = _Index(grid)
    out = []
    headrooms = []
    for firm_kw, base_kw, expected, max_kw in (
        (firm.import_kw, firm.baseline_import_kw, expected_import_kw, idx.max_import),
        (firm.export_kw, firm.baseline_export_kw, expected_export_kw, idx.max_export),
    ):
        alloc = allocate_non_firm_envelopes(limit_kw=idx.limit, capacity_kw=idx.capacity, expected_kw=expected,
                                            firm_kw=firm_kw, baseline_kw=base_kw, group=idx.group, max_kw=max_kw,
                                            **idx.ids)
        headrooms.append(non_firm_headroom_kw(limit_kw=idx.limit, capacity_kw=idx.capacity, expected_kw=expected,
                                              firm_kw=firm_kw, baseline_kw=base_kw, group=idx.group))
        out.append(alloc.import_kw.copy())
    nf_imp, nf_exp = out
    limited: dict[str, NDArray[np.bool_]] = {}
    forced: dict[str, NDArray[np.bool_]] = {}
    runs = 0
    for tid, model in _models(grid, models).items():
        rows = idx.rows[tid]
        if not (nf_imp[rows].any() or nf_exp[rows].any()):
            continue
        res_i = limit_by_powerflow(model, base_kw=firm.import_kw[rows], flex_kw=nf_imp[rows], limits=limits)
        check_powerflow(model, res_i, limits=limits)
        res_e = limit_by_powerflow(model, base_kw=firm.export_kw[rows], flex_kw=nf_exp[rows], export=True,
                                   limits=limits)
        check_powerflow(model, res_e, export=True, limits=limits)
        nf_imp[rows] = res_i.kw - firm.import_kw[rows]
        nf_exp[rows] = res_e.kw - firm.export_kw[rows]
        limited[tid] = ((res_i.scale < 1).any(axis=0)) | ((res_e.scale < 1).any(axis=0))
        forced[tid] = res_i.forced.any(axis=0) | res_e.forced.any(axis=0)
        runs += res_i.power_flows + res_e.power_flows
    nf_imp, nf_exp = _floor_w(nf_imp), _floor_w(nf_exp)
    _check_totals(idx, nf_imp, headrooms[0], "non-firm import")
    _check_totals(idx, nf_exp, headrooms[1], "non-firm export")
    for name, total, cap in (("import", firm.import_kw + nf_imp, idx.max_import),
                             ("export", firm.export_kw + nf_exp, idx.max_export)):
        if np.any(total > cap[:, None] + _TOL_KW):
            h, t = np.argwhere(total > cap[:, None] + _TOL_KW)[0]
            raise AllocationInvariantError(CapacityError(
                "connection_point", f"{name}_kw", (idx.cps[h].ean,),
                f"firm + non-firm {name} {total[h, t]:.3f} kW above the contract max {cap[h]:.3f} kW", int(t)))
    return GridAllocation(eans=firm.eans, import_kw=nf_imp, export_kw=nf_exp,
                          baseline_import_kw=firm.baseline_import_kw, baseline_export_kw=firm.baseline_export_kw,
                          voltage_limited=limited, voltage_forced=forced, power_flows=runs)

