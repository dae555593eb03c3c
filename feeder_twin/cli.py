"""feeder-study: how many electrified homes a real LV feeder hosts under each control strategy.

A real LV benchmark grid (pandapower's Kerber and Dickert grids), one household per connection point with
diverse devices and habits, an electrification scenario, a winter and a summer week of weather. Each strategy
runs on the same households and weather; the households are driven by the live HEMS code (controller, guard,
optimiser, signal book) and the DSO by its live planner and store, in process on simulated clocks; the grid is
solved by power-grid-model at every household sub-step.

  feeder-study run        the strategies side by side: KPI table, kpis.csv/.json, series.sqlite (every
                          sub-step of every run, for recomputation), transformer.png
  feeder-study hosting    the hosting capacity per strategy: the largest share of households with a heat pump
                          and an EV that the feeder carries within its limits, by bisection
  feeder-study list       strategies, grids, scenarios and weeks

Examples:

  feeder-study run --days 1 --strategies uncontrolled tou           # a day, two strategies (minutes)
  feeder-study run --weeks winter summer --workers 2                # the reference study (see
                                                                    #   examples/feeder_study_results.md)
  feeder-study run --dask tcp://10.0.0.5:8786                       # on a Dask cluster of other machines
  feeder-study hosting --days 1 --strategies uncontrolled bandwidth

Strategies: uncontrolled (owners' settings, flat tariff), tou (HEMS optimiser, time-of-use tariff), tou-random
(the tariff shifted per household by up to ±2 h), bandwidth (ToU plus firm and non-firm limits from the DSO's
planner), performance (performance contracts: each HEMS reports its capacity need day-ahead and the DSO's firm
allocation meets it first, plus non-firm limits).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time as wall_time
from collections.abc import Callable
from pathlib import Path

from feeder_twin.hosting import Criteria, HostingResult, search
from feeder_twin.kpi import format_table
from feeder_twin.report import plot_transformer, write_tables
from feeder_twin.scenario import GUARANTEED_KW, SCENARIOS, WEEKS, Period, with_shares
from feeder_twin.strategies import DEFAULT_STRATEGIES, STRATEGIES, strategy
from feeder_twin.study import Execution, StudyConfig, intervals_of, load_grid, run_study

DEFAULT_GRID = "dickert-long-cable"


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a share must be a number between 0 and 1, not {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a share must be between 0 and 1, not {value}")
    return value


def _common(parser: argparse.ArgumentParser, *, strategies_default: tuple[str, ...], days_default: int) -> None:
    from dso_server.capacity.lab_grids import LAB_GRIDS

    parser.add_argument("--grid", default=DEFAULT_GRID, choices=sorted(LAB_GRIDS),
                        help=f"LV benchmark grid (default {DEFAULT_GRID}: 90 households, 400 kVA)")
    parser.add_argument("--scenario", default="2040", choices=sorted(SCENARIOS),
                        help="electrification shares of heat pumps, EVs, PV and batteries (default 2040)")
    for device in ("hp", "ev", "pv", "battery"):
        parser.add_argument(f"--{device}-share", type=_share, default=None, metavar="SHARE",
                            help=f"override the scenario's {device} share (0..1)")
    parser.add_argument("--strategies", nargs="+", default=list(strategies_default), metavar="NAME",
                        help=f"strategies to compare (default {' '.join(strategies_default)}; "
                             f"known: {', '.join(STRATEGIES)})")
    parser.add_argument("--weeks", nargs="+", default=["winter"], choices=sorted(WEEKS),
                        help="weather weeks (default winter)")
    parser.add_argument("--days", type=int, default=days_default,
                        help=f"days of each week simulated, from its Monday (1-7, default {days_default})")
    parser.add_argument("--warmup-h", type=float, default=12.0,
                        help="hours simulated before the first day and left out of the KPIs (default 12)")
    parser.add_argument("--substep-s", type=float, default=60.0,
                        help="household sub-step and power-flow step in seconds, a divisor of 900 (default 60; the "
                             "live guard's is 10)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the households' draws (default 1)")
    parser.add_argument("--guaranteed-kw", type=float, default=GUARANTEED_KW,
                        help="import the DSO's allocation guarantees every connection with a heat pump, EV or battery "
                             f"(section 14a; default {GUARANTEED_KW:g}, 0: none; bandwidth and performance strategies)")
    parser.add_argument("--workers", type=int, default=1,
                        help="local worker processes the households are spread over (default 1: in this process)")
    parser.add_argument("--dask", metavar="ADDRESS", default=None,
                        help="run the households on a Dask cluster: 'local' starts a LocalCluster of --workers "
                             "processes, otherwise the scheduler's address (tcp://host:8786)")
    parser.add_argument("--output-dir", type=Path, default=Path("feeder-output"),
                        help="where tables, series and plots go (default feeder-output)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="feeder-study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{run,hosting,list}")
    run = commands.add_parser("run", help="the strategies side by side", description="Run the strategies side by "
                              "side on the same households and weather; print the KPI table and write kpis.csv, "
                              "kpis.json, series.sqlite (replaced) and transformer.png into --output-dir.")
    _common(run, strategies_default=DEFAULT_STRATEGIES, days_default=7)
    hosting = commands.add_parser(
        "hosting", help="hosting capacity per strategy",
        description="The largest share of households with a heat pump and an EV the feeder carries within its "
                    "limits (transformer rating, 0.9 pu, line ampacity) and the comfort criteria, per strategy, "
                    "by bisection over the share. Writes hosting.csv into --output-dir.")
    _common(hosting, strategies_default=DEFAULT_STRATEGIES, days_default=1)
    hosting.add_argument("--step", type=float, default=0.05, help="resolution of the share (default 0.05)")
    hosting.add_argument("--devices", nargs="+", default=["heat_pump", "ev"], choices=["heat_pump", "ev"],
                         help="whose share is searched (default heat_pump ev: electrified households; ev alone: "
                              "the hosting capacity for chargers, heat pumps at the scenario's share)")
    hosting.add_argument("--min-ev-ok", type=_share, default=0.95,
                         help="least share of EV sessions reaching their range (default 0.95)")
    hosting.add_argument("--max-degree-hours-per-day", type=float, default=0.1,
                         help="most K·h outside the comfort band per heat-pump household and day (default 0.1)")
    commands.add_parser("list", help="strategies, grids, scenarios and weeks")
    args = parser.parse_args(argv)
    if args.command == "list":
        return args
    sub = run if args.command == "run" else hosting
    if not 1 <= args.days <= 7:
        sub.error(f"--days must be between 1 and 7, not {args.days}")
    if not 0 <= args.warmup_h <= 48 or (args.warmup_h * 4) % 1:
        sub.error(f"--warmup-h must be between 0 and 48 in quarter-hours, not {args.warmup_h}")
    if not (1 <= args.substep_s <= 900 and (900 / args.substep_s).is_integer()):
        sub.error(f"--substep-s must divide 900 s (e.g. 10, 30, 60, 300), not {args.substep_s:g}")
    if not 0 <= args.guaranteed_kw <= 17:
        sub.error(f"--guaranteed-kw must be between 0 and 17, not {args.guaranteed_kw:g}")
    if not 1 <= args.workers <= 256:
        sub.error(f"--workers must be between 1 and 256, not {args.workers}")
    try:
        args.strategy_list = [strategy(name) for name in dict.fromkeys(args.strategies)]
    except ValueError as error:
        sub.error(f"--strategies: {error}")
    if args.command == "hosting" and not 0 < args.step <= 0.5:
        sub.error(f"--step must be in (0, 0.5], not {args.step}")
    args.shares = with_shares(SCENARIOS[args.scenario], heat_pump=args.hp_share, ev=args.ev_share,
                              pv=args.pv_share, battery=args.battery_share)
    args.periods = tuple(Period(WEEKS[week], args.days, warmup_h=args.warmup_h) for week in dict.fromkeys(args.weeks))
    args.execution = Execution(workers=args.workers, dask=args.dask)
    return args


def _progress_bar(total: int, disabled: bool) -> tuple[Callable[[int], None] | None, Callable[[], None]]:
    if disabled:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="interval", mininterval=2.0, dynamic_ncols=True, file=sys.stderr)
    return bar.update, bar.close


def _list() -> int:
    from dso_server.capacity.lab_grids import LAB_GRIDS

    print("strategies:")
    for s in STRATEGIES.values():
        print(f"  {s.name:13s} {s.description}")
    print("grids:")
    for g in LAB_GRIDS.values():
        print(f"  {g.name:28s} {g.description}")
    print("scenarios (shares of heat pump, EV, PV, battery):")
    for name, shares in SCENARIOS.items():
        print(f"  {name:6s} {shares.heat_pump:.0%} {shares.ev:.0%} {shares.pv:.0%} {shares.battery:.0%}")
    print("weeks:")
    for week in WEEKS.values():
        print(f"  {week.name:6s} from {week.monday}: {week.description}")
    return 0


def _describe(args: argparse.Namespace) -> str:
    shares = args.shares
    return (f"grid {args.grid}, scenario {args.scenario} (heat pump {shares.heat_pump:.0%}, EV {shares.ev:.0%}, "
            f"PV {shares.pv:.0%}, battery {shares.battery:.0%}), {args.days} day(s) of {' and '.join(args.weeks)}, "
            f"warm-up {args.warmup_h:g} h, sub-step {args.substep_s:g} s, seed {args.seed}, guaranteed "
            f"{args.guaranteed_kw:g} kW per steered connection, "
            f"{args.execution.describe()}")


def _run(args: argparse.Namespace) -> int:
    output: Path = args.output_dir
    output.mkdir(parents=True, exist_ok=True)
    series = output / "series.sqlite"
    series.unlink(missing_ok=True)
    config = StudyConfig(grid_name=args.grid, scenario=args.scenario, shares=args.shares, periods=args.periods,
                         strategies=tuple(args.strategy_list), substep_s=args.substep_s, seed=args.seed,
                         guaranteed_kw=args.guaranteed_kw, execution=args.execution)
    print(f"feeder study: {_describe(args)}", flush=True)
    began = wall_time.monotonic()
    update, close = _progress_bar(intervals_of(config), args.no_progress)
    try:
        study = run_study(config, series_path=series, progress=update, log=None if update else print)
    finally:
        close()
    wall = wall_time.monotonic() - began
    steered = sum(h.flexible for h in study.households)
    print(f"{len(study.households)} households ({steered} with a heat pump, EV or battery); {wall:.0f} s wall time")
    print(format_table(study.kpis))
    write_tables(study.kpis, output)
    plot = plot_transformer(study.results, output / "transformer.png")
    print(f"\ntables: {output / 'kpis.csv'}, {output / 'kpis.json'}\nseries: {series}\nplot: {plot}")
    return 0


def _hosting(args: argparse.Namespace) -> int:
    output: Path = args.output_dir
    output.mkdir(parents=True, exist_ok=True)
    grid = load_grid(args.grid)
    criteria = Criteria(min_ev_ok_share=args.min_ev_ok, max_degree_hours_per_day=args.max_degree_hours_per_day)
    table = output / "hosting.csv"
    table.unlink(missing_ok=True)
    print(f"hosting capacity of the share of {' and '.join(args.devices)}, step {args.step:g}: {_describe(args)}",
          flush=True)
    began = wall_time.monotonic()
    backend = args.execution.backend()
    lines = []
    try:
        for period in args.periods:
            results = search(grid, args.shares, period, args.strategy_list, grid_name=args.grid,
                             scenario=args.scenario, seed=args.seed, substep_s=args.substep_s, step=args.step,
                             criteria=criteria, guaranteed_kw=args.guaranteed_kw, backend=backend,
                             devices=tuple(args.devices), log=print)
            for result in results:
                line = f"{period.week.name}: {result.describe()}"
                lines.append(line)
                for trial in result.trials:
                    lines.append(f"    {trial.share:4.0%}: peak {trial.kpis.peak_kw:.0f} kW "
                                 f"({trial.kpis.peak_loading:.0%}), U min {trial.kpis.lowest_voltage_pu:.3f} pu, "
                                 f"EV ok {trial.kpis.ev_sessions_ok_share:.0%}, "
                                 f"{trial.kpis.degree_hours_per_hp_household:.2f} K·h/HP household"
                                 + (f" -- {', '.join(trial.violations)}" if trial.violations else ""))
                _append_csv(table, period.week.name, result)
    finally:
        backend.close()
    print(f"\nhosting capacity ({wall_time.monotonic() - began:.0f} s wall time; {table}):")
    print("\n".join(lines))
    return 0


def _append_csv(path: Path, week: str, result: HostingResult) -> None:
    new = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(["week", "strategy", "hosting_share", "share_tried", "within", "violations", "peak_kw",
                             "peak_loading", "lowest_voltage_pu", "ev_ok_share", "degree_hours_per_hp_household"])
        for trial in result.trials:
            k = trial.kpis
            writer.writerow([week, result.strategy, result.share, trial.share, trial.within,
                             "; ".join(trial.violations), round(k.peak_kw, 2), round(k.peak_loading, 4),
                             round(k.lowest_voltage_pu, 4), round(k.ev_sessions_ok_share, 4),
                             round(k.degree_hours_per_hp_household, 3)])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "list":
        return _list()
    try:
        return _run(args) if args.command == "run" else _hosting(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

if __name__ == "__main__":
    sys.exit(main())
