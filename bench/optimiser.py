"""Benchmark the household optimiser: compile once, then re-solve a receding horizon.

Run ``python bench/optimiser.py [--repeats 50]``. A closed-loop day is generated first (each solve starts
from the state the previous plan reached one interval later, prices and forecasts shifted by one interval
and perturbed); every method then solves that same input sequence, so the timings compare like with like:

* direct re-solve: ``HouseholdOptimiser.solve`` (DPP tensors applied in numpy, persistent HiGHS, warm basis);
* ``problem.solve``: the same compiled cvxpy problem re-solved through cvxpy with HiGHS and with Clarabel;
* rebuild: a new optimiser (variables, Parameters, problem) built and solved for every input.

The last line is machine-readable: ``median_resolve_ms=<x> rebuild_ratio=<y>``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import cvxpy as cp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from hems_client.optimiser import HouseholdOptimiser, OptimiserInputs, cop_air_source

N = 96
DT_H = 0.25
R = TypeVar("R")


def day_profiles(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Two days of 15-minute profiles from 00:00: a cold, sunny February day with a dynamic tariff."""
    hours = DT_H * np.arange(2 * N) % 24
    day_ahead = 0.12 + 0.10 * np.exp(-(((hours - 8) / 1.5) ** 2)) + 0.16 * np.exp(-(((hours - 19) / 2) ** 2))
    day_ahead -= 0.18 * np.exp(-(((hours - 13) / 1.5) ** 2))  # sunny midday dip, negative at its bottom
    outdoor = -3.0 + 5.0 * np.sin(np.pi * (hours - 9) / 12) + rng.normal(0, 0.3, 2 * N)
    return {
        "import_price": day_ahead + 0.10,  # energy + grid fee + tax
        "export_price": day_ahead - 0.02,
        "import_limit": np.where((hours >= 16) & (hours < 21), 3.5, 17.0),
        "base_load": 0.3
        + 0.3 * np.exp(-(((hours - 7.5) / 1.0) ** 2))
        + 1.2 * np.exp(-(((hours - 19) / 1.5) ** 2)),
        "pv": np.clip(6.0 * np.sin(np.pi * (hours - 8) / 9), 0.0, None),
        "outdoor": outdoor,
        "ev_home": ((hours >= 18) | (hours < 7)).astype(float),
    }


def inputs_at(
    start: int, profiles: dict[str, np.ndarray], rng: np.random.Generator, state: dict[str, float]
) -> OptimiserInputs:
    """Forecast for the horizon starting at interval ``start``, perturbed like a fresh forecast would be."""
    window = slice(start, start + N)
    outdoor = profiles["outdoor"][window] + rng.normal(0, 0.5, N)
    price_noise = rng.normal(0, 0.02, N)
    steps = start + np.arange(N)
    departure = int(np.flatnonzero((steps % N) == 28)[0]) if np.any((steps % N) == 28) else N  # 07:00
    return OptimiserInputs(
        import_price_eur_per_kwh=profiles["import_price"][window] + price_noise,
        export_price_eur_per_kwh=profiles["export_price"][window] + price_noise,
        import_limit_kw=profiles["import_limit"][window],
        export_limit_kw=np.full(N, 10.0),
        base_load_kw=profiles["base_load"][window] * rng.uniform(0.85, 1.15, N),
        pv_available_kw=profiles["pv"][window] * rng.uniform(0.7, 1.0),
        outdoor_temp_c=outdoor,
        cop=cop_air_source(35.0, outdoor),
        comfort_min_c=np.full(N, 19.0),
        comfort_max_c=np.full(N, 21.0),
        ev_available=profiles["ev_home"][window],
        indoor_temp_c=state["indoor_temp_c"],
        battery_soc_kwh=state["battery_soc_kwh"],
        ev_soc_kwh=state["ev_soc_kwh"],
        ev_target_soc_kwh=47.0,
        ev_departure_step=departure,
    )


def closed_loop(repeats: int, seed: int) -> list[OptimiserInputs]:
    """Inputs of ``repeats`` consecutive receding-horizon solves starting at 16:00."""
    rng = np.random.default_rng(seed)
    profiles = day_profiles(rng)
    state = {"indoor_temp_c": 20.0, "battery_soc_kwh": 5.0, "ev_soc_kwh": 20.0}
    optimiser = HouseholdOptimiser()
    sequence: list[OptimiserInputs] = []
    for i in range(repeats):
        start = (64 + i) % N
        inputs = inputs_at(start, profiles, rng, state)
        plan = optimiser.solve(inputs)
        sequence.append(inputs)
        state = {
            "indoor_temp_c": float(plan.indoor_temp_c[1] + rng.normal(0, 0.05)),
            "battery_soc_kwh": float(plan.battery_soc_kwh[1]),
            "ev_soc_kwh": float(plan.ev_soc_kwh[1]) if inputs.ev_available[0] else 20.0,
        }
    return sequence


def timed(
    solve: Callable[[OptimiserInputs], R], sequence: list[OptimiserInputs]
) -> tuple[np.ndarray, list[R]]:
    """Wall-clock milliseconds of each call, and what each call returned."""
    times, results = [], []
    for inputs in sequence:
        started = time.perf_counter()
        results.append(solve(inputs))
        times.append(time.perf_counter() - started)
    return np.array(times) * 1e3, results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--repeats", type=int, default=50, help="receding-horizon solves per method (default 50)"
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    sequence = closed_loop(args.repeats + 1, args.seed)

    started = time.perf_counter()
    optimiser = HouseholdOptimiser()
    build_ms = (time.perf_counter() - started) * 1e3
    started = time.perf_counter()
    optimiser.solve(sequence[0])
    first_ms = (time.perf_counter() - started) * 1e3
    resolve, direct = timed(optimiser.solve, sequence[1:])

    # The other methods each get their own optimiser; the first (compiling) solve is not counted.
    plain = HouseholdOptimiser()
    plain_highs, plain_plans = timed(lambda inputs: plain.solve(inputs, path="cvxpy"), sequence)
    clarabel = HouseholdOptimiser()
    plain_clarabel, _ = timed(
        lambda inputs: clarabel.solve(inputs, path="cvxpy", cvxpy_solver=cp.CLARABEL), sequence
    )
    rebuild, _ = timed(lambda inputs: HouseholdOptimiser().solve(inputs, path="cvxpy"), sequence[1:])

    mismatch = max(
        abs(a.objective_eur - b.objective_eur) / max(1.0, abs(b.objective_eur))
        for a, b in zip(direct, plain_plans[1:], strict=True)
    )
    size = optimiser.problem.size_metrics
    print(
        f"household LP: {N} steps of {DT_H} h, {size.num_scalar_variables} variables, "
        f"{size.num_scalar_eq_constr} equality + {size.num_scalar_leq_constr} inequality rows; "
        f"{args.repeats} receding-horizon solves per method"
    )
    print(f"{'build (variables, Parameters, problem, DPP check)':<52} {build_ms:7.1f} ms")
    print(f"{'first solve (cvxpy compile + cold HiGHS)':<52} {first_ms:7.1f} ms")
    highs_ms = np.array([plan.solve_time_s for plan in direct]) * 1e3
    for label, times in (
        ("direct re-solve (HiGHS run only)", highs_ms),
        ("direct re-solve", resolve),
        ("problem.solve, HiGHS", plain_highs[1:]),
        ("problem.solve, Clarabel", plain_clarabel[1:]),
        ("rebuild + problem.solve every time, HiGHS", rebuild),
    ):
        print(f"{label:<52} median {np.median(times):6.2f} ms   p95 {np.percentile(times, 95):6.2f} ms")
    print(f"direct vs problem.solve objective: max relative difference {mismatch:.1e}")
    resolve_median = float(np.median(resolve))
    ratio = float(np.median(rebuild)) / resolve_median
    print(f"median_resolve_ms={resolve_median:.2f} rebuild_ratio={ratio:.1f}")


if __name__ == "__main__":
    main()
