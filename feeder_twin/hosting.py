"""Hosting capacity: the largest share of electrified households the feeder carries within its limits, per
strategy, found by bisection.

"Electrified" is a heat pump and an EV: at share f, a fraction f of the households owns a heat pump and
(drawn independently) a fraction f an EV; PV and home batteries keep the scenario's shares. With
``devices=("ev",)`` only the EV share is searched (the heat pumps keep the scenario's share): the hosting capacity
for chargers. The draws nest
(``feeder_twin.scenario``), so a larger f only adds devices to the same households, and the search can bisect
over f on a grid of ``step`` (default 5 %). At each f tried, the uncontrolled run of the same households is
simulated too (it is the EV reference and cheap).

Within limits (:class:`Criteria`, all on the KPIs of ``feeder_twin.kpi``): no quarter-hour above the
transformer's rating, no node below 0.9 pu and no line above its ampacity at any sub-step, and the households keep
their comfort: at least 95 % of EV sessions reach their range (HEDERA's charging-comfort figure) and the heat-pump
households spend on average at most ``max_degree_hours_per_day`` K·h per day outside their band. The search
assumes feasibility falls monotonically with f (more devices never relieve the feeder); every f tried is
reported with the limit that bound it, so a non-monotone case shows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from dso_server.capacity.grid import Grid
from feeder_twin.backends import Backend
from feeder_twin.kpi import Kpis, compute
from feeder_twin.runner import ProgressHook, RunResult, RunSpec, simulate
from feeder_twin.scenario import GUARANTEED_KW, Period, Shares, household_specs
from feeder_twin.strategies import STRATEGIES, Strategy

SEARCHED = ("heat_pump", "ev")
"""The devices whose share the search varies by default: an electrified household has both."""


@dataclass(frozen=True)
class Criteria:
    max_loading: float = 1.0
    min_voltage_pu: float = 0.9
    max_line_loading: float = 1.0
    min_ev_ok_share: float = 0.95
    max_degree_hours_per_day: float = 0.1

    def violations(self, kpis: Kpis) -> list[str]:
        """The limits ``kpis`` break, as short phrases (empty: within limits)."""
        out = []
        if kpis.peak_loading > self.max_loading:
            out.append(f"transformer {kpis.peak_loading:.0%}")
        if kpis.no_flow_substeps:
            out.append(f"no power-flow solution at {kpis.no_flow_substeps} sub-steps")
        elif kpis.lowest_voltage_pu < self.min_voltage_pu:
            out.append(f"voltage {kpis.lowest_voltage_pu:.3f} pu")
        if kpis.max_line_loading > self.max_line_loading:
            out.append(f"line {kpis.max_line_loading:.0%}")
        if kpis.ev_sessions_ok_share < self.min_ev_ok_share:
            out.append(f"EV comfort {kpis.ev_sessions_ok_share:.0%}")
        if kpis.degree_hours_per_hp_household / max(kpis.days, 1e-9) > self.max_degree_hours_per_day:
            out.append(f"heat comfort {kpis.degree_hours_per_hp_household / kpis.days:.2f} K·h/day")
        return out


@dataclass(frozen=True)
class Trial:
    share: float
    kpis: Kpis
    violations: tuple[str, ...]

    @property
    def within(self) -> bool:
        return not self.violations


@dataclass
class HostingResult:
    strategy: str
    share: float | None
    """The largest share tried that was within limits (None: not even the smallest)."""
    trials: list[Trial] = field(default_factory=list)

    def describe(self) -> str:
        if self.share is None:
            return f"{self.strategy}: below {min(t.share for t in self.trials):.0%}"
        tried = {t.share: t for t in self.trials}
        above = [t for s, t in sorted(tried.items()) if s > self.share]
        limit = f"; at {above[0].share:.0%}: {', '.join(above[0].violations)}" if above else " (all households)"
        return f"{self.strategy}: {self.share:.0%}{limit}"


def search(grid: Grid, base: Shares, period: Period, strategies: list[Strategy], *, grid_name: str,
           scenario: str, seed: int, substep_s: float, step: float = 0.05, criteria: Criteria = Criteria(),
           guaranteed_kw: float = GUARANTEED_KW,
           backend: Backend, devices: tuple[str, ...] = SEARCHED, progress: ProgressHook | None = None,
           log: Callable[[str], None] | None = None) -> list[HostingResult]:
    """Bisect the share of ``devices`` (heat_pump, ev) for every strategy (see the module docstring)."""
    if not 0 < step <= 0.5:
        raise ValueError(f"step must be in (0, 0.5], not {step}")
    if not devices or set(devices) - set(SEARCHED):
        raise ValueError(f"devices must be some of {SEARCHED}, not {devices}")
    levels = [round(i * step, 6) for i in range(round(1 / step) + 1)]
    if levels[-1] < 1.0:
        levels.append(1.0)
    references: dict[float, RunResult] = {}

    def run(share: float, strategy: Strategy) -> Kpis:
        households = household_specs(grid, replace(base, **dict.fromkeys(devices, share)), seed=seed)

        def one(chosen: Strategy) -> RunResult:
            spec = RunSpec(grid_name=grid_name, scenario=f"{scenario}, {'+'.join(devices)} {share:.0%}", period=period,
                           strategy=chosen, substep_s=substep_s, seed=seed, guaranteed_kw=guaranteed_kw)
            result = simulate(spec, grid, households, backend=backend, progress=progress)
            if log is not None:
                for note in result.notes:
                    log(f"hosting {chosen.name} at {share:.0%}: {note}")
            return result

        if share not in references:
            references[share] = one(STRATEGIES["uncontrolled"])
        result = references[share] if strategy.name == "uncontrolled" else one(strategy)
        return compute(result, references[share])

    out = []
    for strategy in strategies:
        trials: dict[float, Trial] = {}

        def judge(index: int, strategy: Strategy = strategy, trials: dict[float, Trial] = trials) -> bool:
            share = levels[index]
            if share not in trials:
                kpis = run(share, strategy)
                trials[share] = Trial(share, kpis, tuple(criteria.violations(kpis)))
                if log is not None:
                    verdict = "within limits" if trials[share].within else ", ".join(trials[share].violations)
                    log(f"hosting {strategy.name} at {share:.0%}: {verdict}")
            return trials[share].within

        low, high = 0, len(levels) - 1  # invariant: levels[low] within (checked), levels[high] beyond unless last
        if judge(high):
            best: int | None = high
        elif not judge(low):
            best = None
        else:
            while high - low > 1:
                middle = (low + high) // 2
                if judge(middle):
                    low = middle
                else:
                    high = middle
            best = low
        out.append(HostingResult(strategy=strategy.name, share=None if best is None else levels[best],
                                 trials=sorted(trials.values(), key=lambda t: t.share)))
    return out
