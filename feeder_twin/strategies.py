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

``performance`` is the performance contract (PROFILE §11, issue 13), run by the same code as the live system:
every household with something to steer has performance terms in its contract (the HEMS and the DSO's store hold
the same contract); its controller's ``PerformanceReporting`` makes the capacity needs with the ``NeedPlanner``
(the rest of today at start, the next day an hour before the contract's 13:00 deadline) and the daily verdicts;
an in-process reporter hands them to the DSO's store (``store_reports``, as the VTN does), and the DSO's day-ahead
run allocates for the needs in force (``allocate_for_needs`` through ``run_day_ahead``), waiting up to
``need_grace_s`` for the first ones as the live planning loop does. Non-firm limits as under ``bandwidth``.
"""

from __future__ import annotations

from dataclasses import dataclass

TARIFFS = ("flat", "tou", "tou-random")
ALLOCATIONS = ("none", "planner", "performance")
RANDOM_SHIFT_INTERVALS = 8
"""tou-random: each household's tariff is shifted by a fixed offset drawn uniformly from ±8 quarter-hours."""


@dataclass(frozen=True)
class Strategy:
    name: str
    description: str
    hems: str
    tariff: str
    allocation: str
    hems_reports: tuple[str, ...] = ()
    """What the HEMSs report besides telemetry (performance: capacity needs and daily verdicts)."""

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
             hems_reports=("capacity_need", "performance")),
)}
DEFAULT_STRATEGIES = ("uncontrolled", "tou", "tou-random", "bandwidth", "performance")


def strategy(name: str) -> Strategy:
    """The strategy ``name``; ValueError naming the known ones."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    return STRATEGIES[name]
