"""What a HEMS under a performance contract reports beyond telemetry: its capacity needs and its daily verdicts.

The controller owns one :class:`PerformanceReporting` when the contract has performance terms. It feeds it every
sub-step's indoor temperature, every EV departure and every closed interval (the DSO's limit, the failsafe,
whether the EV was plugged in); asks it, at start and at every closed interval, which needs are due
(``need_planner.needs_due``) and which daily reports are ready (``verdict.PerformanceTracker.close_days``); and
tells it what the DSO received. A need or report that could not be delivered is offered again at the next
interval; a need counts as sent, for the day it covers, once the DSO accepted it (and is kept in the HEMS's store,
so a restarted HEMS neither sends it twice nor forgets what it asked for).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import date, datetime

from hems_client.control.need_planner import NeedPlanner, NeedWindow, needs_due
from hems_client.control.planning import HouseholdState
from hems_client.control.verdict import PerformanceTracker
from hems_client.store import HemsStore
from protocol.contract import HouseholdContract
from protocol.effective import EffectiveLimit
from protocol.performance import CapacityNeed, PerformanceReport
from protocol.signals import TouTariff
from protocol.timebase import floor_to_interval

logger = logging.getLogger(__name__)


class PerformanceReporting:
    def __init__(self, contract: HouseholdContract, *, need_planner: NeedPlanner | None = None,
                 store: HemsStore | None = None) -> None:
        if contract.performance is None:
            raise ValueError(f"{contract.connection_point_id} has no performance contract")
        self.contract = contract
        self.planner = need_planner if need_planner is not None else NeedPlanner()
        self.store = store
        self.tracker = PerformanceTracker(contract)
        self.needs_sent: dict[date, CapacityNeed] = store.load_needs() if store is not None else {}
        for need in self.needs_sent.values():
            self.tracker.record_need(need)
        self._in_flight: set[date] = set()
        self.pending_reports: list[PerformanceReport] = []
        self._reports_in_flight: set[datetime] = set()
        self.reports_sent: list[PerformanceReport] = []
        self.need_failures = 0

    @property
    def horizon_intervals(self) -> int:
        return self.planner.horizon_intervals

    # ----------------------------------------------------------------------------------------- recording

    def record_step(self, *, at: datetime, dt_s: float, indoor_temp_c: float | None) -> None:
        if indoor_temp_c is not None:
            self.tracker.record_comfort(at=at, dt_s=dt_s, indoor_temp_c=indoor_temp_c)

    def record_departure(self, *, at: datetime, range_km: float) -> None:
        self.tracker.record_departure(at=at, range_km=range_km)

    def interval_closed(self, *, start: datetime, dso_limit_kw: float, failsafe: bool, plugged: bool) -> None:
        self.tracker.record_interval(start=start, limit_kw=dso_limit_kw, failsafe=failsafe, plugged=plugged)

    # ----------------------------------------------------------------------------------------- needs

    def due(self, now: datetime) -> list[NeedWindow]:
        """The need windows to compute now: due, not sent, not on their way."""
        return [w for w in needs_due(now, self.contract, set(self.needs_sent)) if w.day not in self._in_flight]

    def make_needs(self, now: datetime, state: Callable[[], HouseholdState],
                   limits: Callable[[datetime, int], Sequence[EffectiveLimit]],
                   tariff: Callable[[datetime, int], TouTariff]) -> list[tuple[NeedWindow, CapacityNeed]]:
        """Compute the needs due at ``now`` (``state``, ``limits`` and ``tariff`` are asked for only when one is
        due) and mark them on their way."""
        windows = self.due(now)
        if not windows:
            return []
        start, n = floor_to_interval(now), self.horizon_intervals
        household, known, prices = state(), limits(start, n), tariff(start, n)
        made = []
        for window in windows:
            try:
                need = self.planner.need(now, household, known, prices, self.contract, window)
            except Exception:  # a failed need must not stop the control loop; it is tried again next interval
                self.need_failures += 1
                logger.exception("%s: the capacity need for %s could not be computed",
                                 self.contract.connection_point_id, window.day)
                continue
            if need is not None:
                self._in_flight.add(window.day)
                made.append((window, need))
        return made

    def need_delivered(self, window: NeedWindow, need: CapacityNeed, delivered: bool) -> None:
        self._in_flight.discard(window.day)
        if not delivered:
            return
        self.needs_sent[window.day] = need
        self.tracker.record_need(need)
        if self.store is not None:
            self.store.save_need(window.day, need)

    # ----------------------------------------------------------------------------------------- verdicts

    def reports_due(self, now: datetime) -> list[PerformanceReport]:
        """The daily reports ready or undelivered and not on their way; marked on their way."""
        self.pending_reports.extend(self.tracker.close_days(now))
        due = [r for r in self.pending_reports if r.start not in self._reports_in_flight]
        self._reports_in_flight.update(r.start for r in due)
        return due

    def report_delivered(self, report: PerformanceReport, delivered: bool) -> None:
        self._reports_in_flight.discard(report.start)
        if delivered and report in self.pending_reports:
            self.pending_reports.remove(report)
            self.reports_sent.append(report)
