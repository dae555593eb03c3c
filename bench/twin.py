"""Feeder twin benchmark: household-steps per second of the feeder study on 1 process, all local cores and a Dask
local cluster, measured in the same run.

A household-step is one home advanced by one sub-step (60 s) under the live controller, with its share of the
plans it makes (an LP re-solve per home and interval), plus the power flow and the bookkeeping of the runner.
The scenario: the Dickert long-feeder grid (90 households), 2040 shares, the ToU strategy, ``--intervals``
quarter-hours of a winter evening. Only steady state is timed: from the end of the first interval (which compiles
every home's optimiser) to the end of the last; starting workers is not timed. Each configuration runs
``--reps`` times; the median counts.

Ends with ``household_steps_per_s=<x> parallel_speedup=<y>``: x on all local cores (local processes), y = x / the
1-process rate of the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from dso_server.capacity.grid import Grid
from dso_server.capacity.lab_grids import lab_grid
from feeder_twin.backends import Backend, DaskCluster, InProcess, ProcessPool
from feeder_twin.runner import RunSpec, simulate
from feeder_twin.scenario import SCENARIOS, WEEKS, HouseholdSpec, Period, household_specs
from feeder_twin.strategies import strategy


def _rate(backend: Backend, spec: RunSpec, grid: Grid, households: list[HouseholdSpec], intervals: int) -> float:
    done: list[float] = []
    simulate(spec, grid, households, backend=backend, intervals=intervals,
             progress=lambda _n: done.append(time.perf_counter()))
    steps_per_interval = len(households) * round(900 / spec.substep_s)
    return steps_per_interval * (len(done) - 1) / (done[-1] - done[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--intervals", type=int, default=12, help="quarter-hours per run (default 12)")
    parser.add_argument("--reps", type=int, default=3, help="runs per configuration (default 3)")
    parser.add_argument("--grid", default="dickert-long-cable", help="lab grid (default dickert-long-cable)")
    args = parser.parse_args()
    if args.intervals < 2 or args.reps < 1:
        parser.error("need --intervals >= 2 and --reps >= 1")
    cores = os.cpu_count() or 1
    grid = lab_grid(args.grid)
    households = household_specs(grid, SCENARIOS["2040"], seed=1)
    # From 16:00 local on the Sunday before the winter week: arrivals, the evening peak, pre-heating.
    spec = RunSpec(args.grid, "2040", Period(WEEKS["winter"], 1, warmup_h=8), strategy("tou"), substep_s=60)
    backends: dict[str, Backend] = {"1 process": InProcess(),
                                    f"{cores} local processes (all cores)": ProcessPool(cores)}
    cluster = DaskCluster("local", local_workers=cores)
    backends[f"Dask local cluster ({cluster.parallelism} workers)"] = cluster
    rates: dict[str, list[float]] = {name: [] for name in backends}
    try:
        for _ in range(args.reps):  # interleaved, so that a change in the machine's load hits every configuration
            for name, backend in backends.items():
                rates[name].append(_rate(backend, spec, grid, households, args.intervals))
    finally:
        for backend in backends.values():
            backend.close()
    medians = {name: statistics.median(values) for name, values in rates.items()}
    for name, value in medians.items():
        spread = f"{min(rates[name]):.0f}-{max(rates[name]):.0f}"
        print(f"{name + ':':38s} {value:8.0f} household-steps/s (median of {args.reps}; {spread})")
    print(f"{len(households)} households, {args.intervals} intervals of 15 min per run, 60 s sub-steps; load average "
          f"at the end {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {cores} cores")
    serial, local = list(medians.values())[:2]
    print(f"household_steps_per_s={local:.0f} parallel_speedup={local / serial:.2f}")


if __name__ == "__main__":
    main()
