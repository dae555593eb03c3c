"""Allocation benchmark: 10,000 households under 100 transformers, day-ahead (96 intervals) and near real time.

Baseline measured in the same run: the same fair rule as a plain per-household Python loop over a 10 % subset,
scaled up x10. Prints one final line ``nrt_median_ms=<x> dayahead_median_ms=<y>``.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from dso_server.allocation import allocate_firm, allocate_non_firm

N_T, N_H, N_I, NRT_I, REPS = 100, 10_000, 96, 4, 7


def _region(rng: np.random.Generator) -> dict[str, np.ndarray]:
    group = np.sort(rng.integers(0, N_T, N_H)).astype(np.intp)
    lo = rng.choice([0.0, 4.2, 8.4], N_H)
    return {
        "group": group,
        "min": lo,
        "max": lo + rng.uniform(5, 15, N_H),
        "cap": np.full(N_T, 630 * 0.95),
        "margin": np.full(N_T, 0.1),
        "p90": rng.uniform(100, 450, (N_T, N_I)),
        "measured": rng.uniform(100, 450, (N_T, NRT_I)),
    }


def _loop_firm(r: dict[str, np.ndarray], households: range) -> None:
    # Naive reference: per interval and transformer, sums then per-household shares in Python.
    for t in range(N_I):
        for g in range(N_T // 10):
            members = [h for h in households if r["group"][h] == g]
            avail = max(r["cap"][g] * 0.9 - r["p90"][g, t], 0.0)
            smin = sum(r["min"][h] for h in members)
            room = sum(r["max"][h] - r["min"][h] for h in members)
            for h in members:
                scale = min(1.0, avail / smin) if smin else 1.0
                _ = r["min"][h] * scale + (r["max"][h] - r["min"][h]) * min(
                    1.0, max(avail - smin, 0) / room if room else 0.0
                )


def _median_ms(fn) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(REPS):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    r = _region(np.random.default_rng(0))
    firm = allocate_firm(
        capacity_kw=r["cap"],
        safety_margin=r["margin"],
        p90_inflexible_kw=r["p90"],
        group=r["group"],
        min_kw=r["min"],
        max_kw=r["max"],
    ).import_kw
    dayahead = _median_ms(
        lambda: allocate_firm(
            capacity_kw=r["cap"],
            safety_margin=r["margin"],
            p90_inflexible_kw=r["p90"],
            group=r["group"],
            min_kw=r["min"],
            max_kw=r["max"],
        )
    )
    nrt = _median_ms(
        lambda: allocate_non_firm(
            capacity_kw=r["cap"],
            safety_margin=r["margin"],
            measured_load_kw=r["measured"],
            firm_kw=firm[:, :NRT_I],
            group=r["group"],
            max_kw=r["max"],
        )
    )
    subset = range(int(np.searchsorted(r["group"], N_T // 10)))
    t0 = time.perf_counter()
    _loop_firm(r, subset)
    loop_ms = (time.perf_counter() - t0) * 1000 * 10
    print(f"households={N_H} transformers={N_T} dayahead_intervals={N_I} nrt_intervals={NRT_I} reps={REPS}")
    print(f"baseline python loop day-ahead (10% subset x10): {loop_ms:.0f} ms")
    print(f"vectorised day-ahead median: {dayahead:.1f} ms ({loop_ms / dayahead:.0f}x faster)")
    print(f"nrt_median_ms={nrt:.1f} dayahead_median_ms={dayahead:.1f}")


if __name__ == "__main__":
    main()
