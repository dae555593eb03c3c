"""What a study leaves behind besides the series: the KPI table (text, CSV, JSON) and the plots of the
transformer load per strategy."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from types import ModuleType

from feeder_twin.kpi import Kpis
from feeder_twin.runner import RunResult
from feeder_twin.scenario import ZONE
from protocol.timebase import INTERVAL, INTERVAL_S

_COLOURS = {"uncontrolled": "tab:grey", "tou": "tab:red", "tou-random": "tab:orange", "bandwidth": "tab:blue",
            "performance": "tab:green"}


def write_tables(kpis: Sequence[Kpis], directory: Path) -> tuple[Path, Path]:
    rows = [k.row() for k in kpis]
    csv_path = directory / "kpis.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    json_path = directory / "kpis.json"
    json_path.write_text(json.dumps([asdict(k) for k in kpis], indent=2), encoding="utf-8")
    return csv_path, json_path


def _pyplot() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_transformer(results: Sequence[RunResult], path: Path) -> Path:
    """Per week: the transformer's 15-minute mean load for every strategy against its rating, and the lowest
    node voltage of each quarter-hour."""
    plt = _pyplot()
    weeks = list(dict.fromkeys(r.spec.period.week.name for r in results))
    figure, axes = plt.subplots(2 * len(weeks), 1, figsize=(12, 7 * len(weeks)), squeeze=False,
                                gridspec_kw={"height_ratios": [3, 1.3] * len(weeks)})
    for w, week in enumerate(weeks):
        load_axis, voltage_axis = axes[2 * w, 0], axes[2 * w + 1, 0]
        mine = [r for r in results if r.spec.period.week.name == week]
        first = mine[0]
        rating_kw = first.transformer_rating_kva * 0.95
        for result in mine:
            mask = result.kpi_mask()
            per = round(INTERVAL_S / result.substep_s)
            load = result.transformer_kw[mask].reshape(-1, per).mean(axis=1)
            u_min = result.u_min_pu[mask].reshape(-1, per).min(axis=1)
            start = result.spec.period.kpi_start
            times = [(start + k * INTERVAL).astimezone(ZONE) for k in range(len(load))]
            colour = _COLOURS.get(result.spec.strategy.name)
            load_axis.plot(times, load, color=colour, linewidth=1.1,
                           label=f"{result.spec.strategy.name} (peak {load.max():.0f} kW)")
            voltage_axis.plot(times, u_min, color=colour, linewidth=0.9)
        load_axis.axhline(rating_kw, color="black", linestyle="--", linewidth=1,
                          label=f"rating {first.transformer_rating_kva:.0f} kVA ({rating_kw:.0f} kW at pf 0.95)")
        load_axis.axhline(rating_kw * 0.9, color="black", linestyle=":", linewidth=1,
                          label="DSO's allocation limit (rating less 10 % margin)")
        load_axis.set_ylabel("transformer load, kW (15-min mean)")
        load_axis.set_title(f"{first.spec.grid_name}, {len(first.households)} households, scenario "
                            f"{first.spec.scenario}: {week} week")
        load_axis.legend(loc="upper left", fontsize="small", ncol=2)
        load_axis.grid(alpha=0.3)
        voltage_axis.axhline(0.9, color="black", linestyle="--", linewidth=1)
        voltage_axis.set_ylabel("lowest voltage, pu")
        voltage_axis.set_xlabel("local time (Europe/Amsterdam)")
        voltage_axis.grid(alpha=0.3)
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
