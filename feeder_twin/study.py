"""A study: several strategies (and weeks) on the same households, KPIs against the uncontrolled reference, the
time series stored, plots drawn. What ``feeder-study run`` does; the hosting-capacity search reuses it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dso_server.capacity.grid import Grid
from dso_server.capacity.lab_grids import lab_grid
from feeder_twin.backends import Backend, DaskCluster, InProcess, ProcessPool
from feeder_twin.kpi import Kpis, compute
from feeder_twin.runner import ProgressHook, RunResult, RunSpec, simulate
from feeder_twin.scenario import GUARANTEED_KW, HouseholdSpec, Period, Shares, household_specs
from feeder_twin.series import SeriesStore
from feeder_twin.strategies import Strategy
from protocol.timebase import INTERVAL


@dataclass(frozen=True)
class Execution:
    """Where the homes run: ``workers`` local processes (1: in this process), or a Dask cluster (``dask``:
    'local' for a LocalCluster of ``workers`` processes, or a scheduler address)."""

    workers: int = 1
    dask: str | None = None

    def backend(self) -> Backend:
        if self.dask is not None:
            return DaskCluster(self.dask, local_workers=self.workers)
        return InProcess() if self.workers == 1 else ProcessPool(self.workers)

    def describe(self) -> str:
        if self.dask == "local":
            return f"Dask local cluster of {self.workers} processes"
        if self.dask is not None:
            return f"Dask cluster at {self.dask}"
        return "1 process" if self.workers == 1 else f"{self.workers} local processes"


@dataclass(frozen=True)
class StudyConfig:
    grid_name: str
    scenario: str
    shares: Shares
    periods: tuple[Period, ...]
    strategies: tuple[Strategy, ...]
    substep_s: float = 60.0
    seed: int = 1
    guaranteed_kw: float = GUARANTEED_KW
    execution: Execution = field(default_factory=Execution)


@dataclass
class StudyResult:
    config: StudyConfig
    grid: Grid
    households: list[HouseholdSpec]
    results: list[RunResult]
    kpis: list[Kpis]


def intervals_of(config: StudyConfig) -> int:
    """How many intervals the study simulates (for a progress bar)."""
    return sum(int((p.end - p.start) / INTERVAL) for p in config.periods) * len(config.strategies)


def load_grid(name: str) -> Grid:
    return lab_grid(name)


def run_study(config: StudyConfig, *, grid: Grid | None = None, series_path: Path | None = None,
              progress: ProgressHook | None = None, log: Callable[[str], None] | None = None) -> StudyResult:
    """Every strategy on every period, the uncontrolled one first in each period (the EV reference)."""
    grid = grid if grid is not None else load_grid(config.grid_name)
    households = household_specs(grid, config.shares, seed=config.seed)
    ordered = sorted(config.strategies, key=lambda s: s.name != "uncontrolled")
    results: list[RunResult] = []
    kpis: list[Kpis] = []
    store = SeriesStore(series_path) if series_path is not None else None
    backend = config.execution.backend()
    try:
        for period in config.periods:
            reference: RunResult | None = None
            for strategy in ordered:
                spec = RunSpec(grid_name=config.grid_name, scenario=config.scenario, period=period,
                               strategy=strategy, substep_s=config.substep_s, seed=config.seed,
                               guaranteed_kw=config.guaranteed_kw)
                result = simulate(spec, grid, households, backend=backend, progress=progress)
                if strategy.name == "uncontrolled":
                    reference = result
                row = compute(result, reference)
                if store is not None:
                    store.write(result, row)
                results.append(result)
                kpis.append(row)
                if log is not None:
                    log(f"{spec.label}: {result.wall_s:.0f} s wall ({result.backend}), peak {row.peak_kw:.0f} kW")
                    for note in result.notes:
                        log(f"{spec.label}: {note}")
    finally:
        backend.close()
        if store is not None:
            store.close()
    return StudyResult(config=config, grid=grid, households=households, results=results, kpis=kpis)
