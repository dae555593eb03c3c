"""The strategies compared, side by side on the same households and weather.

A strategy says three things, each carried out by the live code:

* ``hems``: what runs in the home -- the owner's own device settings (``owner``: the uncontrolled baseline,
  ``feeder_twin.owner``) or the HEMS's convex optimiser under its guard (``optimiser``);
* ``tariff``: what the households pay -- ``flat``, ``tou`` (one four-level time-of-use tariff for all), or
  ``tou-random`` (the same tariff shifted per household by a fixed random offset of up to ±2 h in quarter-hours,
  so that the cheap window opens between 21:00 and 01:00: the randomised tariff or "slotted start" that spreads
  the herd);
* ``allocation``: what the DSO publishes besides the tariff -- ``none``, or ``planner``: the live planner's firm
  limits (day-ahead) and non-firm limits (near real time) per household.

Where the performance contract (issue 13) plugs in: its strategy names the day-ahead reports it asks of the
homes (``hems_reports = ("capacity_need",)``) and its allocation (``performance``). Running it takes three
additions, each small because the rest is in place: a ``Shard.reports(kind, day)`` that asks each home's
optimiser for its capacity need (the LP issue 13 adds to ``hems_client.optimiser``) and returns it per
connection point, like ``Shard.advance`` returns telemetry; the runner calling it before ``StudyDso.plan`` when
a day-ahead run is due; and ``StudyDso.plan`` handing the needs to the need-aware firm allocation issue 13 adds
to ``dso_server.capacity`` (the same store, wire and KPIs as ``bandwidth``). Until then ``performance`` is listed
but refuses to run, saying why.
"""

from __future__ import annotations

from dataclasses import dataclass

TARIFFS = ("flat", "tou", "tou-random")
ALLOCATIONS = ("none", "planner", "performance")
RANDOM_SHIFT_INTERVALS = 8
"""tou-random: each household's tariff is shifted by a fixed offset drawn uniformly from ±8 quarter-hours."""


class StrategyUnavailable(RuntimeError):
    """A strategy that is defined but cannot run yet; the message says what it waits for."""


@dataclass(frozen=True)
class Strategy:
    name: str
    description: str
    hems: str
    tariff: str
    allocation: str
    hems_reports: tuple[str, ...] = ()
    unavailable: str | None = None
    """Why the strategy cannot run yet (None when it can)."""

    @property
    def allocates(self) -> bool:
        return self.allocation != "none"


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("uncontrolled", "no HEMS: EV at full power on arrival, heat pump on its thermostat, battery for "
             "self-consumption; flat tariff", hems="owner", tariff="flat", allocation="none"),
    Strategy("tou", "HEMS optimiser against a time-of-use tariff only (the herding peak)", hems="optimiser",
             tariff="tou", allocation="none"),
    Strategy("tou-random", "HEMS optimiser against the time-of-use tariff shifted per household by up to ±2 h",
             hems="optimiser", tariff="tou-random", allocation="none"),
    Strategy("bandwidth", "HEMS optimiser, time-of-use tariff, firm (day-ahead) and non-firm (near real time) "
             "capacity bandwidths from the DSO's planner", hems="optimiser", tariff="tou", allocation="planner"),
    Strategy("performance", "performance contracts: each HEMS reports its capacity need day-ahead, the DSO "
             "allocates firm capacity for it", hems="optimiser", tariff="tou", allocation="performance",
             hems_reports=("capacity_need",),
             unavailable="needs issue 13 (the capacity-need report in the HEMS optimiser and the need-aware firm "
                         "allocation in dso_server.capacity), which is not built yet"),
)}
DEFAULT_STRATEGIES = ("uncontrolled", "tou", "tou-random", "bandwidth")


def strategy(name: str) -> Strategy:
    """The strategy ``name``; ValueError naming the known ones, StrategyUnavailable for one that cannot run yet."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    chosen = STRATEGIES[name]
    if chosen.unavailable is not None:
        raise StrategyUnavailable(f"strategy {name!r} cannot run yet: it {chosen.unavailable}")
    return chosen
