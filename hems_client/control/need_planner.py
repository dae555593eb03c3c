"""The capacity need a HEMS under a performance contract reports to the DSO (PROFILE §9.5): when, and how much.

When (``needs_due``): the rest of the current local day once (at start-up: the DSO may still have to allocate it,
e.g. after its own restart), and the next local day from one hour before the contract's ``need_deadline_local``
on (the DSO allocates after the deadline; the hour leaves room to retry a failed delivery).

How much (:class:`NeedPlanner`): the :class:`~hems_client.optimiser.CapacityNeedOptimiser` over a two-day
horizon from the interval now running, with the inputs the household optimiser would get (``OptimiserPlanner.
inputs``: the same comfort band with its margin, COP, EV target), except that

* the import cap is the effective limit in force before the window (what the DSO has already allocated) and the
  contract maximum from the window on, so today's limits shape tomorrow's need;
* an EV that is away now is expected home at its usual time with a usual day's drive taken off, and to leave at
  the contracted departure after that: the need includes charging it;
* the need is rounded up to whole watts plus ``need_margin_kw`` (forecast errors of the inflexible load), and
  capped at the contract maximum (the DSO never allocates more).

The result is a ``protocol.CapacityNeed``; nothing else about the home is in it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from hems_client.control.optimiser_planner import OptimiserPlanner, _devices
from hems_client.control.planning import HouseholdState
from hems_client.optimiser import CapacityNeedOptimiser, HouseholdParams, NeedInputs, NeedResult
from protocol.contract import HouseholdContract
from protocol.effective import EffectiveLimit
from protocol.performance import CapacityNeed, NeedInterval
from protocol.signals import TouTariff
from protocol.timebase import INTERVAL, INTERVALS_PER_DAY, floor_to_interval, local_day_bounds

logger = logging.getLogger(__name__)

NEED_HORIZON_INTERVALS = 2 * INTERVALS_PER_DAY
"""From any moment of today to the end of tomorrow, with room after it (at most 47 h 45 min + 25 h are needed
only before 00:15; the window is then cut at the horizon's end)."""
NEED_LEAD = timedelta(hours=1)
"""The next day's need is made this long before the contract's deadline."""


@dataclass(frozen=True)
class NeedWindow:
    """The intervals one need report covers: [start, end) of the local ``day`` (UTC, on the grid)."""

    day: date
    start: datetime
    end: datetime


def needs_due(now: datetime, contract: HouseholdContract, sent: Collection[date]) -> list[NeedWindow]:
    """The needs to send at ``now`` that have not been sent (``sent``: the local days already reported)."""
    terms = contract.performance
    if terms is None:
        return []
    zone = ZoneInfo(contract.comfort.timezone)
    local = now.astimezone(zone)
    today = local.date()
    due = []
    if today not in sent:
        start, end = local_day_bounds(today, contract.comfort.timezone)
        first = floor_to_interval(now) + INTERVAL
        if first < end:
            due.append(NeedWindow(today, max(start, first), end))
    deadline = datetime.combine(today, terms.need_deadline_local, tzinfo=zone)
    tomorrow = today + timedelta(days=1)
    if local >= deadline - NEED_LEAD and tomorrow not in sent:
        start, end = local_day_bounds(tomorrow, contract.comfort.timezone)
        due.append(NeedWindow(tomorrow, start, end))
    return due


class NeedPlanner:
    """Computes capacity needs for one household (the LP compiled on first use, re-solved ever after)."""

    def __init__(self, *, horizon_intervals: int = NEED_HORIZON_INTERVALS, params: HouseholdParams | None = None,
                 comfort_margin_k: float = 0.2, ev_margin_kwh: float = 0.1, need_margin_kw: float = 0.25) -> None:
        if not need_margin_kw >= 0:
            raise ValueError(f"need_margin_kw must be >= 0, not {need_margin_kw}")
        self.horizon_intervals = horizon_intervals
        self.need_margin_kw = need_margin_kw
        # The household optimiser's input mapping, for the need's horizon (nothing of it is solved).
        self._inputs = OptimiserPlanner(horizon_intervals=horizon_intervals, params=params,
                                        comfort_margin_k=comfort_margin_k, ev_margin_kwh=ev_margin_kwh)
        self._optimisers: dict[object, CapacityNeedOptimiser] = {}
        self.last_result: NeedResult | None = None

    def optimiser_for(self, state: HouseholdState) -> CapacityNeedOptimiser:
        devices = _devices(state, self._inputs.params)
        optimiser = self._optimisers.get(devices)
        if optimiser is None:
            params = replace(self._inputs.params, **vars(devices))
            optimiser = self._optimisers[devices] = CapacityNeedOptimiser(params, n_steps=self.horizon_intervals)
        return optimiser

    def need(self, now: datetime, state: HouseholdState, known: Sequence[EffectiveLimit], tariff: TouTariff,
             contract: HouseholdContract, window: NeedWindow) -> CapacityNeed | None:
        """The need for ``window`` (None when it lies beyond the horizon). ``known``: the limits in force for
        the horizon's intervals (from the interval holding ``now``); ``tariff`` and ``state.forecast`` cover the
        horizon. Pure apart from the compiled LP it keeps."""
        n = self.horizon_intervals
        start = floor_to_interval(now)
        first = max(0, int((window.start - start) / INTERVAL))
        last = min(n, int((window.end - start) / INTERVAL))
        if first >= last:
            return None
        if len(known) < n or len(tariff.intervals) < n or len(state.forecast) < n:
            raise ValueError(f"NeedPlanner needs {n} intervals of limits, tariff and forecast; got {len(known)}, "
                             f"{len(tariff.intervals)} and {len(state.forecast)}")
        caps = [limit if k < first else EffectiveLimit(limit.start, contract.contracted_max_import_kw,
                                                       contract.contracted_max_export_kw, False)
                for k, limit in enumerate(known[:n])]
        optimiser = self.optimiser_for(state)
        expected, arrival_step = self._expected_state(state, start)
        inputs = self._inputs.inputs(expected, caps, tariff, contract, optimiser.params)
        if arrival_step:
            available = inputs.ev_available.copy()
            available[:arrival_step] = 0.0
            inputs = replace(inputs, ev_available=available)
        result = optimiser.solve(NeedInputs(inputs=inputs, window_start=first, window_end=last))
        self.last_result = result
        if result.comfort_shortfall_kh > 0.01 or result.ev_shortfall_kwh > 0.01:
            logger.warning("%s: even the contract maximum cannot keep comfort on %s (%.2f K·h, EV %.2f kWh short); "
                           "the need asks for what helps", contract.connection_point_id, window.day,
                           result.comfort_shortfall_kh, result.ev_shortfall_kwh)
        ceiling = contract.contracted_max_import_kw
        kw = [min(ceiling, math.ceil(max(float(value), 0.0) * 1000 - 1e-6) / 1000 + self.need_margin_kw)
              for value in np.asarray(result.need_kw)]
        return CapacityNeed(created_at=now, intervals=tuple(
            NeedInterval(start=start + (first + k) * INTERVAL, import_kw=round(value, 3))
            for k, value in enumerate(kw)))

    def _expected_state(self, state: HouseholdState, start: datetime) -> tuple[HouseholdState, int]:
        """The state with an away EV as the household expects it to come home (and the step it arrives in)."""
        ev = state.ev
        if ev is None or ev.plugged_in or ev.expected_arrival is None or ev.departure_after_arrival is None:
            return state, 0
        arrival_step = max(0, math.ceil((ev.expected_arrival - start) / INTERVAL))
        home = replace(ev, plugged_in=True, soc_kwh=ev.expected_arrival_soc_kwh or 0.0,
                       departure=ev.departure_after_arrival)
        return replace(state, ev=home), arrival_step
