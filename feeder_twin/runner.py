"""One simulation run: a feeder's households under one strategy for one period, the grid solved every sub-step.

Per interval (15 minutes) of the period, in this order:
1. the DSO's news (tariffs, firm and non-firm limits, from ``StudyDso.deliveries``) reach the homes' signal books;
2. every shard runs its homes to the end of the interval: the live controller plans (at the interval boundary
   and again whenever its signals changed), its guard corrects the setpoints every ``substep_s`` seconds and the
   plant steps;
3. the power flow (power-grid-model, ``FeederModel.flow``) is solved for every sub-step of the interval with
   each household's mean net power of that sub-step: transformer power and loading, every node voltage, every
   line loading;
4. for the allocating strategies, the DSO stores each household's metered telemetry of the interval (and, under
   performance contracts, the capacity needs and daily verdicts the HEMSs sent) and runs its planner (the firm
   run when one is due, then the non-firm run).

Sub-step: the live controller's guard runs every 10 s; the study's default is 60 s (``--substep-s``), which the
reference document measures against 10 s on the same households. The plant's models are stepped exactly (the
building, batteries and EV are linear over a step; the base-load noise is an exactly discretised AR(1)), so the
sub-step changes only how late the guard sees a change (up to one sub-step) and how finely voltages are sampled.
"""

from __future__ import annotations

import time as wall_time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np
from power_grid_model.errors import PowerGridBatchError, PowerGridError

from dso_server.capacity.grid import Grid
from dso_server.capacity.powerflow import FeederModel
from feeder_twin.backends import Backend, Deliveries, InProcess
from feeder_twin.dso import StudyDso
from feeder_twin.homes import HomeSummary, ShardSetup
from feeder_twin.scenario import GUARANTEED_KW, HouseholdSpec, Period, day_tariff, study_grid
from feeder_twin.strategies import RANDOM_SHIFT_INTERVALS, Strategy
from protocol.contract import PerformanceTerms
from protocol.performance import CapacityNeed, PerformanceReport
from protocol.timebase import INTERVAL, INTERVAL_S

ProgressHook = Callable[[int], None]
"""Called with the number of intervals just done."""


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines a run (the households are given separately: the same ones for every strategy)."""

    grid_name: str
    scenario: str
    period: Period
    strategy: Strategy
    substep_s: float = 60.0
    seed: int = 1
    guaranteed_kw: float = GUARANTEED_KW
    """Import the DSO's allocation guarantees each connection with a heat pump, EV or battery (section 14a)."""

    @property
    def label(self) -> str:
        return f"{self.strategy.name}/{self.period.week.name}/{self.scenario}"


@dataclass
class RunResult:
    spec: RunSpec
    households: list[HouseholdSpec]
    step_start: np.ndarray
    """(sub-steps,) start of each sub-step, seconds since the period's start (warm-up included)."""
    net_kw: np.ndarray
    """(households, sub-steps) mean net import per sub-step."""
    indoor_c: np.ndarray
    """(households, sub-steps) indoor temperature after each sub-step (NaN without a heat pump)."""
    transformer_kw: np.ndarray
    transformer_loading: np.ndarray
    u_min_pu: np.ndarray
    u_max_pu: np.ndarray
    line_loading_max: np.ndarray
    u_min_node: np.ndarray
    """(sub-steps,) index (into the LV nodes) of the lowest voltage."""
    import_price: np.ndarray
    """(households, intervals) EUR/kWh in force."""
    export_price: np.ndarray
    firm_kw: np.ndarray
    """(households, intervals) the firm import limit the DSO published (NaN where none)."""
    limit_kw: np.ndarray
    """(households, intervals) firm + non-firm import limit the DSO published (NaN where none)."""
    departures: list[tuple[int, datetime, float, float]]
    """(household row, departure, range km, battery kWh) of every EV departure."""
    summaries: list[HomeSummary]
    transformer_rating_kva: float
    wall_s: float
    backend: str
    dso_runs: int = 0
    notes: list[str] = field(default_factory=list)
    need_kw: np.ndarray | None = None
    """(households, intervals) performance strategy: the capacity need in force at the end of the run (the
    latest each HEMS made for the interval, as the DSO stored it; NaN where none); None for other strategies."""
    need_shortfalls: int = 0
    """Household-intervals the DSO's firm runs recorded as short of the need (its ``need_shortfalls``)."""
    verdicts: list[tuple[int, PerformanceReport]] = field(default_factory=list)
    """(household row, daily verdict) of every performance report the HEMSs sent."""
    dso_failures: int = 0
    """Planning steps of the DSO that failed (the live loop logs them and goes on; so does the study)."""
    diverged_substeps: int = 0
    """Sub-steps whose power flow has no solution (the load is beyond what the feeder can carry at all)."""

    @property
    def start(self) -> datetime:
        return self.spec.period.start

    @property
    def substep_s(self) -> float:
        return self.spec.substep_s

    def kpi_mask(self) -> np.ndarray:
        """Sub-steps inside the KPI window (the warm-up excluded)."""
        offset = (self.spec.period.kpi_start - self.start).total_seconds()
        return self.step_start >= offset - 1e-6


def with_performance_contracts(households: Sequence[HouseholdSpec]) -> list[HouseholdSpec]:
    """The households of the performance strategy: every one with something to steer gets performance terms
    (the default ones: need deadline 13:00 local) in its contract; the others keep the fair rule."""
    terms = PerformanceTerms()
    return [replace(h, contract=h.contract.model_copy(update={"performance": terms})) if h.flexible else h
            for h in households]


def shard_specs(specs: Sequence[HouseholdSpec], shards: int) -> list[list[HouseholdSpec]]:
    """Split households into ``shards`` groups of similar work: steered homes (which solve an LP every interval)
    dealt round-robin first, then the rest."""
    ordered = sorted(specs, key=lambda s: (not s.flexible, s.index))
    groups: list[list[HouseholdSpec]] = [[] for _ in range(max(1, min(shards, len(specs))))]
    for position, spec in enumerate(ordered):
        groups[position % len(groups)].append(spec)
    return groups


def tariff_shifts(specs: Sequence[HouseholdSpec], *, seed: int) -> dict[str, int]:
    """The fixed per-household offset of the randomised ToU (seeded, so every run of a seed agrees)."""
    rng = np.random.default_rng([seed, 99])
    size = max(spec.index for spec in specs) + 1
    draws = rng.integers(-RANDOM_SHIFT_INTERVALS, RANDOM_SHIFT_INTERVALS + 1, size=size)
    return {spec.ean: int(draws[spec.index]) for spec in specs}


def simulate(spec: RunSpec, grid: Grid, households: Sequence[HouseholdSpec], *, backend: Backend | None = None,
             shards: int | None = None, progress: ProgressHook | None = None,
             intervals: int | None = None) -> RunResult:
    """Run ``spec`` on ``grid`` (one transformer with a grid model) with ``households`` (one per connection point,
    in the grid's order). ``backend`` (default: in this process) is left open for the next run; ``intervals``
    stops after that many quarter-hours from the start, warm-up included (for tests and benchmarks)."""
    began = wall_time.monotonic()
    strategy = spec.strategy
    if len(grid.transformers) != 1 or grid.transformers[0].busbar_node is None:
        raise ValueError("the study needs a grid of one transformer with its LV network (nodes and lines)")
    if [h.ean for h in households] != [cp.ean for cp in grid.connection_points]:
        raise ValueError("households must be given one per connection point, in the grid's order")
    period = spec.period
    start, end = period.start, period.end
    n_int = int((end - start) / INTERVAL)
    if intervals is not None:
        if not 1 <= intervals <= n_int:
            raise ValueError(f"intervals must be between 1 and {n_int}, not {intervals}")
        n_int = intervals
        end = start + n_int * INTERVAL
    n_sub = round(INTERVAL_S / spec.substep_s)
    n_h = len(households)
    performance = strategy.allocation == "performance"
    if performance:
        households = with_performance_contracts(households)
    dso_grid = study_grid(grid, list(households), guaranteed_kw=spec.guaranteed_kw)
    transformer = dso_grid.transformers[0]
    model = FeederModel(dso_grid, transformer.id, power_factor=transformer.power_factor)
    row_of = {h.ean: row for row, h in enumerate(households)}
    flow_rows = np.array([row_of[ean] for ean in model.connection_points])

    owned = backend is None
    backend = backend if backend is not None else InProcess()
    groups = shard_specs(households, shards if shards is not None else backend_parallelism(backend))
    dso = StudyDso(dso_grid, now=start, contracts=[h.contract for h in households if h.contract.performance])
    try:
        shifts = tariff_shifts(households, seed=spec.seed) if strategy.tariff == "tou-random" else {}
        kind = "flat" if strategy.tariff == "flat" else "tou"
        tariffs = {h.ean: [day_tariff(day, kind=kind, shift_intervals=shifts.get(h.ean, 0))
                           for day in period.local_days()] for h in households}
        dso.publish_tariffs(tariffs, now=start)
        if strategy.allocates:
            dso.plan(start)
        backend.start(groups, ShardSetup(week=period.week, start=start, end=end, kpi_start=period.kpi_start,
                                         substep_s=spec.substep_s,
                                         hems=strategy.hems))
        net = np.empty((n_h, n_int * n_sub))
        indoor = np.empty((n_h, n_int * n_sub))
        flows = {key: np.empty(n_int * n_sub) for key in ("p", "loading", "u_min", "u_max", "line", "node")}
        departures: list[tuple[int, datetime, float, float]] = []
        verdicts: list[tuple[int, PerformanceReport]] = []
        diverged = 0
        shard_rows = [np.array([row_of[h.ean] for h in group]) for group in groups]
        for k in range(n_int):
            begin = start + k * INTERVAL
            until = begin + INTERVAL
            news = dso.deliveries(begin)
            per_shard: list[Deliveries] = [{h.ean: news[h.ean] for h in group if h.ean in news} for group in groups]
            outputs = backend.advance(until, per_shard)
            columns = slice(k * n_sub, (k + 1) * n_sub)
            telemetry = np.zeros((n_h, 2))
            reports: list[tuple[int, CapacityNeed | PerformanceReport]] = []
            for rows, output in zip(shard_rows, outputs, strict=True):
                if output.net_kw.shape != (len(rows), n_sub):
                    raise RuntimeError(f"a shard returned {output.net_kw.shape} sub-steps for interval {begin}, "
                                       f"expected {(len(rows), n_sub)}")
                net[rows, columns] = output.net_kw
                indoor[rows, columns] = output.indoor_c
                telemetry[rows] = output.telemetry
                departures.extend((int(rows[r]), at, km, kwh) for r, at, km, kwh in output.departures)
                reports.extend((int(rows[r]), need) for r, need in output.needs)
                reports.extend((int(rows[r]), verdict) for r, verdict in output.verdicts)
                verdicts.extend((int(rows[r]), verdict) for r, verdict in output.verdicts)
            p_kw, loading, u_min, u_max, line, node, failed = solve_flow(model, net[flow_rows, columns],
                                                                        transformer.rating_kva,
                                                                        transformer.power_factor)
            flows["p"][columns] = p_kw
            flows["loading"][columns] = loading
            flows["u_min"][columns] = u_min
            flows["u_max"][columns] = u_max
            flows["line"][columns] = line
            flows["node"][columns] = node
            diverged += failed
            if strategy.allocates:
                dso.record_telemetry(begin, [h.ean for h in households], telemetry, now=until)
                if reports:
                    dso.record_reports([(households[row].ean, report) for row, report in reports], now=until)
                dso.plan(until)
            if progress is not None:
                progress(1)
        summaries = {s.ean: s for s in backend.summaries()}
        prices = _prices(tariffs, [h.ean for h in households], start, n_int)
        firm, limit = _published_limits(dso, households, start, n_int)
        need = _needs(dso, households, start, n_int) if performance else None
        return RunResult(
            spec=spec, households=list(households), step_start=np.arange(n_int * n_sub) * spec.substep_s,
            net_kw=net, indoor_c=indoor, transformer_kw=flows["p"], transformer_loading=flows["loading"],
            u_min_pu=flows["u_min"], u_max_pu=flows["u_max"], line_loading_max=flows["line"],
            u_min_node=flows["node"].astype(np.int64), import_price=prices[0], export_price=prices[1],
            firm_kw=firm, limit_kw=limit, departures=sorted(departures, key=lambda d: (d[1], d[0])),
            summaries=[summaries[h.ean] for h in households], transformer_rating_kva=transformer.rating_kva,
            wall_s=wall_time.monotonic() - began, backend=getattr(backend, "name", type(backend).__name__),
            dso_runs=len(dso.runs), need_kw=need, need_shortfalls=dso.shortfalls() if performance else 0,
            verdicts=sorted(verdicts, key=lambda v: (v[1].start, v[0])), diverged_substeps=diverged,
            dso_failures=len(dso.failures), notes=_notes(diverged, dso.failures))
    finally:
        backend.finish()
        if owned:
            backend.close()
        dso.close()


def solve_flow(model: FeederModel, load_kw: np.ndarray, rating_kva: float, power_factor: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """The power flow of one interval's sub-steps (``load_kw``: (connection points, sub-steps), as for
    ``FeederModel.flow``): per sub-step the transformer kW and loading, the lowest and highest node voltage, the
    highest line loading, the lowest node, and how many sub-steps had no solution. A load far beyond the feeder's
    capacity has none (Newton-Raphson diverges: the voltage collapses); such a sub-step counts as beyond every
    limit -- 0 pu, lines at infinite loading, the transformer at the summed load without losses -- instead of
    ending the study."""
    n = load_kw.shape[1]
    try:
        flows = [model.flow(load_kw)]
        failed: list[int] = []
    except PowerGridBatchError:  # solve one by one to keep the sub-steps that have a solution
        flows, failed = [], []
        for step in range(n):
            try:
                flows.append(model.flow(load_kw[:, step:step + 1]))
            except PowerGridError:
                failed.append(step)
    solved = [step for step in range(n) if step not in failed]
    p_kw, loading, u_min, u_max, line, node = (np.empty(n) for _ in range(6))
    if flows:
        u = np.concatenate([f.u_pu for f in flows])
        p_kw[solved] = np.concatenate([f.transformer_kw for f in flows])
        loading[solved] = np.concatenate([f.transformer_loading for f in flows])
        u_min[solved], u_max[solved], node[solved] = u.min(axis=1), u.max(axis=1), u.argmin(axis=1)
        line[solved] = np.concatenate([f.line_loading for f in flows]).max(axis=1)
    if failed:
        total = load_kw[:, failed].sum(axis=0)
        p_kw[failed], loading[failed] = total, np.abs(total) / power_factor / rating_kva
        u_min[failed], u_max[failed], line[failed], node[failed] = 0.0, 1.0, np.inf, 0
    return p_kw, loading, u_min, u_max, line, node, len(failed)


def _notes(diverged: int, failures: Sequence[tuple[datetime, str]]) -> list[str]:
    notes = []
    if diverged:
        notes.append(f"no power-flow solution at {diverged} sub-step(s) (voltage collapse: counted as 0 pu, the "
                     "transformer at the summed load without losses, lines beyond their ampacity)")
    if failures:
        at, error = failures[0]
        notes.append(f"the DSO's planning failed {len(failures)} time(s), first at {at.isoformat()}: {error[:300]}")
    return notes


def backend_parallelism(backend: Backend) -> int:
    return int(getattr(backend, "parallelism", 1))


def _prices(tariffs: dict, eans: list[str], start: datetime, n_int: int) -> tuple[np.ndarray, np.ndarray]:
    imports = np.full((len(eans), n_int), np.nan)
    exports = np.full((len(eans), n_int), np.nan)
    for row, ean in enumerate(eans):
        for tariff in tariffs[ean]:
            for interval in tariff.intervals:
                k = int((interval.start - start) / INTERVAL)
                if 0 <= k < n_int:
                    imports[row, k] = interval.import_price_eur_per_kwh
                    exports[row, k] = interval.export_price_eur_per_kwh
    return imports, exports


def _published_limits(dso: StudyDso, households: Sequence[HouseholdSpec], start: datetime, n_int: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    firm = np.full((len(households), n_int), np.nan)
    limit = np.full((len(households), n_int), np.nan)
    published = dso.limits(since=start, until=start + n_int * INTERVAL)
    for row, h in enumerate(households):
        for moment, (firm_kw, total_kw) in published.get(h.ean, {}).items():
            k = int((moment - start) / INTERVAL)
            firm[row, k] = min(firm_kw, h.contract.contracted_max_import_kw)
            limit[row, k] = min(total_kw, h.contract.contracted_max_import_kw)
    return firm, limit


def _needs(dso: StudyDso, households: Sequence[HouseholdSpec], start: datetime, n_int: int) -> np.ndarray:
    need = np.full((len(households), n_int), np.nan)
    found = dso.needs_in_force([h.ean for h in households], since=start, until=start + n_int * INTERVAL)
    for row, h in enumerate(households):
        for moment, kw in found.get(h.ean, {}).items():
            need[row, int((moment - start) / INTERVAL)] = kw
    return need
