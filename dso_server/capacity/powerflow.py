"""Voltage and line limits of an allocation, by power flow (power-grid-model, C++ core). Pure over data.

``FeederModel`` builds a transformer's LV network once (MV source, transformer, LV nodes, lines, one load per
connection point) and runs batch power flows: one scenario per 15-minute interval, each connection point drawing
its allocated limit at ``power_factor`` (inductive). It reports per scenario the lowest and highest node voltage
(p.u.) and the highest line loading (current / ampacity) per *branch*: the part of the network behind one line
leaving the busbar.

``limit_by_powerflow`` reduces an allocation until the power flow is within limits (EN 50160 +/-10 % by
default, lines at most 100 %). Method (documented and simple, iterative): an allocation is ``base + flex``, where
``base`` is never cut (the section 14a guarantee, or the firm part under a non-firm release). Per branch and
interval a factor ``s`` in [0, 1] scales the ``flex`` of every connection point of that branch -- the same
factor for all, so the fair rule's proportions are kept inside a branch. Voltage drop and line current are
close to linear in the branch's load, so from a power flow at ``s = 0`` (base only) and one at the current
``s`` the largest factor that keeps the worst node and line within limits is interpolated (x 0.99), applied, and
checked again by power flow, up to ``max_iterations`` times; what is still violated then gets ``s = 0``. Where
even ``base`` alone violates a limit, nothing more can be taken away: that branch and interval are flagged
(``forced``), like the fair rule flags minimums it could not honour. Capacity taken from a branch is not given
to another (conservative). ``check_powerflow`` is the enforced invariant: it raises when a scenario that is
not flagged is outside the limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from power_grid_model import (
    CalculationMethod,
    ComponentType,
    DatasetType,
    LoadGenType,
    PowerGridModel,
    WindingType,
    initialize_array,
)

from dso_server.capacity.errors import CapacityError, CapacityInvariantError
from dso_server.capacity.grid import Grid

FloatArray = NDArray[np.float64]
_SOURCE_SK_VA = 1e9
"""Short-circuit power of the MV grid behind the transformer: stiff, as in the Kerber benchmark."""


class PowerFlowLimitError(CapacityInvariantError):
    """An allocation a power flow finds outside voltage or line limits and that was not flagged as forced; the
    error names the transformer and the branch by the id of its first line from the busbar."""


@dataclass(frozen=True)
class FeederFlow:
    """Per scenario: the transformer's active power delivered to the LV side (kW, losses in the lines included)
    and its loading (apparent power / rating), every LV node's voltage (p.u.) and every line's loading."""

    transformer_kw: FloatArray
    transformer_loading: FloatArray
    u_pu: FloatArray
    """(scenarios, LV nodes)"""
    line_loading: FloatArray
    """(scenarios, lines)"""


@dataclass(frozen=True)
class FlowResult:
    """Per scenario (interval) and branch: lowest and highest node voltage (p.u.), highest line loading."""

    u_min_pu: FloatArray
    u_max_pu: FloatArray
    loading_max: FloatArray


class FeederModel:
    """One transformer's LV network in power-grid-model, built once; ``run`` takes loads per connection point."""

    def __init__(self, grid: Grid, transformer_id: str, *, power_factor: float = 0.95) -> None:
        transformer = grid.transformer(transformer_id)
        if transformer.busbar_node is None:
            raise ValueError(f"transformer {transformer_id!r} has no grid model (no busbar_node)")
        nodes = [n for n in grid.nodes if n.transformer_id == transformer_id]
        node_index = {n.id: i + 1 for i, n in enumerate(nodes)}  # 0 = the MV source node
        node_ids = set(node_index)
        lines = [li for li in grid.lines if li.from_node in node_ids]
        self.transformer_id = transformer_id
        self.connection_points = [cp.ean for cp in grid.connection_points_of(transformer_id)]
        cps = grid.connection_points_of(transformer_id)
        n_nodes, n_lines, n_loads = len(nodes) + 1, len(lines), len(cps)
        self._tan_phi = math.tan(math.acos(power_factor))

        node = initialize_array(DatasetType.input, ComponentType.node, n_nodes)
        node["id"] = np.arange(n_nodes)
        node["u_rated"] = [transformer.u1_kv * 1e3] + [n.u_rated_kv * 1e3 for n in nodes]
        first_line = n_nodes
        line = initialize_array(DatasetType.input, ComponentType.line, n_lines)
        line["id"] = np.arange(first_line, first_line + n_lines)
        line["from_node"] = [node_index[li.from_node] for li in lines]
        line["to_node"] = [node_index[li.to_node] for li in lines]
        line["from_status"] = 1
        line["to_status"] = 1
        line["r1"] = [li.r_ohm for li in lines]
        line["x1"] = [li.x_ohm for li in lines]
        line["c1"] = [li.c_nf * 1e-9 for li in lines]
        line["tan1"] = 0.0
        line["i_n"] = [li.i_max_a for li in lines]
        t_id = first_line + n_lines
        trafo = initialize_array(DatasetType.input, ComponentType.transformer, 1)
        trafo["id"] = t_id
        trafo["from_node"] = 0
        trafo["to_node"] = node_index[transformer.busbar_node]
        trafo["from_status"] = 1
        trafo["to_status"] = 1
        trafo["u1"] = transformer.u1_kv * 1e3
        trafo["u2"] = transformer.u2_kv * 1e3
        trafo["sn"] = transformer.rating_kva * 1e3
        trafo["uk"] = transformer.uk_percent / 100
        trafo["pk"] = transformer.pk_kw * 1e3
        trafo["i0"] = 0.0
        trafo["p0"] = 0.0
        trafo["winding_from"] = WindingType.delta
        trafo["winding_to"] = WindingType.wye_n
        trafo["clock"] = 5
        trafo["tap_side"] = 0
        trafo["tap_pos"] = 0
        trafo["tap_min"] = 0
        trafo["tap_max"] = 0
        trafo["tap_nom"] = 0
        trafo["tap_size"] = 0.0
        source = initialize_array(DatasetType.input, ComponentType.source, 1)
        source["id"] = t_id + 1
        source["node"] = 0
        source["status"] = 1
        source["u_ref"] = 1.0
        source["sk"] = _SOURCE_SK_VA
        first_load = t_id + 2
        load = initialize_array(DatasetType.input, ComponentType.sym_load, n_loads)
        load["id"] = np.arange(first_load, first_load + n_loads)
        load["node"] = [node_index[cp.node_id] for cp in cps]  # type: ignore[index]
        load["status"] = 1
        load["type"] = LoadGenType.const_power
        load["p_specified"] = 0.0
        load["q_specified"] = 0.0
        self._load_ids = load["id"].copy()
        self._model = PowerGridModel({ComponentType.node: node, ComponentType.line: line,
                                      ComponentType.transformer: trafo, ComponentType.source: source,
                                      ComponentType.sym_load: load})

        # Branches: the part of the network behind each line leaving the busbar (BFS without crossing the busbar).
        busbar = node_index[transformer.busbar_node]
        adjacency: dict[int, list[int]] = {i: [] for i in range(n_nodes)}
        for li in lines:
            a, b = node_index[li.from_node], node_index[li.to_node]
            adjacency[a].append(b)
            adjacency[b].append(a)
        branch_of_node = np.full(n_nodes, -1, dtype=np.intp)
        n_branches = 0
        line_from_busbar = {(node_index[li.from_node], node_index[li.to_node]): li.id for li in lines}
        self.branch_ids: list[str] = []
        """Per branch, the id of the line that leaves the busbar into it (what errors name it by)."""
        for start in adjacency[busbar]:
            if branch_of_node[start] >= 0:
                continue
            self.branch_ids.append(line_from_busbar.get((busbar, start)) or line_from_busbar.get((start, busbar), ""))
            todo = [start]
            branch_of_node[start] = n_branches
            while todo:
                here = todo.pop()
                for other in adjacency[here]:
                    if other != busbar and branch_of_node[other] < 0:
                        branch_of_node[other] = n_branches
                        todo.append(other)
            n_branches += 1
        self.n_branches = max(n_branches, 1)
        if not self.branch_ids:
            self.branch_ids = [f"busbar {transformer.busbar_node}"]
        branch_of_node[branch_of_node < 0] = 0  # the busbar (and the MV node) count to branch 0
        self._branch_of_node = branch_of_node
        self._lv_nodes = np.arange(1, n_nodes)
        line_branch = np.array([max(branch_of_node[node_index[li.from_node]], branch_of_node[node_index[li.to_node]])
                                for li in lines], dtype=np.intp)
        self._line_branch = line_branch
        self.branch_of_point = np.array([branch_of_node[node_index[cp.node_id]] for cp in cps],  # type: ignore[index]
                                        dtype=np.intp)
        # Connection points on the busbar itself belong to no branch; give them branch 0 but never scale them.
        self.on_busbar = np.array([node_index[cp.node_id] == busbar for cp in cps], dtype=bool)  # type: ignore[index]

    def _calculate(self, load_kw: FloatArray, components: list[ComponentType]) -> dict[ComponentType, Any]:
        p_w = np.asarray(load_kw, dtype=np.float64).T * 1e3  # (scenarios, loads)
        update = initialize_array(DatasetType.update, ComponentType.sym_load, p_w.shape)
        update["id"] = self._load_ids[None, :]
        update["p_specified"] = p_w
        update["q_specified"] = p_w * self._tan_phi
        return self._model.calculate_power_flow(
            update_data={ComponentType.sym_load: update}, calculation_method=CalculationMethod.newton_raphson,
            output_component_types=components, threading=-1)

    def run(self, load_kw: FloatArray) -> FlowResult:
        """Batch power flow; ``load_kw`` (connection points, scenarios), positive = import, negative = export."""
        n_scenarios = np.asarray(load_kw).shape[1]
        output = self._calculate(load_kw, [ComponentType.node, ComponentType.line])
        u_pu = output[ComponentType.node]["u_pu"][:, self._lv_nodes]  # (scenarios, lv nodes)
        loading = output[ComponentType.line]["loading"]  # (scenarios, lines)
        u_min = np.full((n_scenarios, self.n_branches), np.inf)
        u_max = np.full((n_scenarios, self.n_branches), -np.inf)
        l_max = np.zeros((n_scenarios, self.n_branches))
        node_branch = self._branch_of_node[self._lv_nodes]
        for b in range(self.n_branches):
            in_b = node_branch == b
            if in_b.any():
                u_min[:, b] = u_pu[:, in_b].min(axis=1)
                u_max[:, b] = u_pu[:, in_b].max(axis=1)
            lines_b = self._line_branch == b
            if lines_b.any():
                l_max[:, b] = loading[:, lines_b].max(axis=1)
        return FlowResult(u_min_pu=u_min, u_max_pu=u_max, loading_max=l_max)

    def flow(self, load_kw: FloatArray) -> FeederFlow:
        """Batch power flow with every result a study needs (``load_kw`` as for ``run``): the transformer's
        active power on its LV side and its loading, every LV node's voltage and every line's loading."""
        output = self._calculate(load_kw, [ComponentType.node, ComponentType.line, ComponentType.transformer])
        trafo = output[ComponentType.transformer]
        return FeederFlow(transformer_kw=-trafo["p_to"][:, 0] / 1e3, transformer_loading=trafo["loading"][:, 0],
                          u_pu=output[ComponentType.node]["u_pu"][:, self._lv_nodes],
                          line_loading=output[ComponentType.line]["loading"])


@dataclass(frozen=True)
class Limits:
    min_voltage_pu: float = 0.9
    max_voltage_pu: float = 1.1
    max_loading: float = 1.0


@dataclass(frozen=True)
class LimitedAllocation:
    kw: FloatArray
    """(connection points, intervals): the allocation after the power-flow reduction (magnitudes)."""
    scale: FloatArray
    """(branches, intervals): the factor applied to the flexible part."""
    forced: NDArray[np.bool_]
    """(branches, intervals): even the base alone violates a limit there."""
    power_flows: int
    flow: FlowResult | None = None
    """The power flow of exactly ``kw`` (the last one run)."""


_TOL = 1e-6
DEFAULT_LIMITS = Limits()


def _violation_room(result: FlowResult, limits: Limits, export: bool) -> tuple[FloatArray, FloatArray]:
    """(worst voltage-side quantity, worst loading) per scenario and branch, in 'distance to the limit' form."""
    if export:
        return limits.max_voltage_pu - result.u_max_pu, limits.max_loading - result.loading_max
    return result.u_min_pu - limits.min_voltage_pu, limits.max_loading - result.loading_max


def limit_by_powerflow(model: FeederModel, *, base_kw: FloatArray, flex_kw: FloatArray, export: bool = False,
                       limits: Limits = DEFAULT_LIMITS, max_iterations: int = 8) -> LimitedAllocation:
    """Scale ``flex_kw`` per branch and interval until the power flow is within ``limits``.

    ``base_kw`` and ``flex_kw`` are (connection points, intervals) magnitudes; ``export`` flips the sign (feed-in
    raises voltage) and checks the upper voltage limit instead of the lower."""
    base = np.asarray(base_kw, dtype=np.float64)
    flex = np.asarray(flex_kw, dtype=np.float64)
    sign = -1.0 if export else 1.0
    branch = model.branch_of_point
    scalable = ~model.on_busbar

    def load(scale: FloatArray) -> FloatArray:
        factor = np.where(scalable[:, None], scale[branch], 1.0)
        return base + flex * factor

    def bad_of(flow: FlowResult, forced: NDArray[np.bool_]) -> tuple[tuple[FloatArray, FloatArray], NDArray[np.bool_]]:
        room = _violation_room(flow, limits, export)
        return room, ((room[0] < -_TOL) | (room[1] < -_TOL)).T & ~forced

    n_b, n_i = model.n_branches, base.shape[1]
    scale = np.ones((n_b, n_i))
    forced = np.zeros((n_b, n_i), dtype=bool)
    flow = model.run(sign * load(scale))
    runs = 1
    room, bad = bad_of(flow, forced)
    if not bad.any():  # the common case: one power flow says the allocation is fine as it is
        return LimitedAllocation(load(scale), scale, forced, runs, flow)
    zero = _violation_room(model.run(sign * base), limits, export)
    runs += 1
    forced = ((zero[0] < -_TOL) | (zero[1] < -_TOL)).T  # (branches, intervals)
    scale = np.where(forced, 0.0, scale)
    for _ in range(max_iterations):
        room, bad = bad_of(flow, forced)
        if not bad.any():
            return LimitedAllocation(load(scale), scale, forced, runs, flow)
        new = scale.copy()
        for k in range(2):  # voltage, loading: distance to the limit falls linearly from s = 0 to s = scale
            at_zero, at_s = zero[k].T, room[k].T
            drop = at_zero - at_s
            with np.errstate(divide="ignore", invalid="ignore"):
                allowed = np.where((drop > 0) & (at_s < -_TOL), scale * at_zero / drop * 0.99, np.inf)
            new = np.minimum(new, np.clip(allowed, 0.0, 1.0))
        scale = np.where(bad, np.minimum(new, scale * 0.99), scale)
        flow = model.run(sign * load(scale))
        runs += 1
    room, bad = bad_of(flow, forced)
    if bad.any():
        scale = np.where(bad, 0.0, scale)
        flow = model.run(sign * load(scale))
        runs += 1
    return LimitedAllocation(load(scale), scale, forced, runs, flow)


def check_powerflow(model: FeederModel, allocation: LimitedAllocation, *, export: bool = False,
                    limits: Limits = DEFAULT_LIMITS) -> None:
    """The enforced invariant: every branch and interval not flagged ``forced`` is within the limits (judged by
    the power flow of exactly the allocation, run here unless the allocation carries it)."""
    flow = allocation.flow if allocation.flow is not None else model.run((-1.0 if export else 1.0) * allocation.kw)
    room = _violation_room(flow, limits, export)
    bad = ((room[0] < -1e-4) | (room[1] < -1e-4)).T & ~allocation.forced
    if bad.any():
        b, t = np.argwhere(bad)[0]
        kind = "voltage" if room[0][t, b] < -1e-4 else "line"
        raise PowerFlowLimitError(CapacityError(
            "branch", "voltage_pu" if kind == "voltage" else "loading", (model.transformer_id, model.branch_ids[b]),
            f"{kind} limit broken by {-min(room[0][t, b], room[1][t, b]):.4f} after the reduction (branch behind "
            f"line {model.branch_ids[b]!r} of transformer {model.transformer_id!r})", int(t)))
