"""The daily performance verdict (PROFILE §9.6): what the HEMS tells the DSO instead of a comfort sensor feed.

:class:`PerformanceTracker` accumulates, for each 15-minute interval, the degree-hours the indoor temperature spent
outside the contracted band (the same integral the household's KPIs use), the import limit the DSO's signals set
(and whether the failsafe limit applied instead), the need the HEMS had reported, and whether the EV was plugged
in; at each EV departure its range against the contract. When a local day (of the contract's time zone) has
ended, ``close_days`` turns it into a ``protocol.PerformanceReport``: the day's degree-hours, every interval in
which comfort was lost with the limit against the need, and the EV's shortfall at departure with whether a limit
below the need fell in its charging session. The range itself goes in only under the household's consent.
Pure accumulation; the controller feeds it and sends the reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from protocol.contract import HouseholdContract
from protocol.performance import NEED_TOLERANCE_KW, CapacityNeed, ComfortLoss, EvVerdict, PerformanceReport
from protocol.timebase import floor_to_interval

_SESSION_LOOKBACK = timedelta(hours=24)
"""A charging session is the run of plugged-in intervals within this long before a departure."""
_REPORTED_KH = 1e-6
"""Degree-hours below this in an interval are rounding, not a loss."""


@dataclass
class _Interval:
    degree_hours: float = 0.0
    limit_kw: float | None = None
    failsafe: bool = False
    plugged: bool = False


@dataclass
class _Departure:
    at: datetime
    range_km: float


@dataclass
class PerformanceTracker:
    contract: HouseholdContract
    intervals: dict[datetime, _Interval] = field(default_factory=dict)
    needs: dict[datetime, float] = field(default_factory=dict)
    """Per interval, the need last reported to the DSO for it."""
    departures: list[_Departure] = field(default_factory=list)
    reported_days: set[date] = field(default_factory=set)

    def _interval(self, moment: datetime) -> _Interval:
        return self.intervals.setdefault(floor_to_interval(moment), _Interval())

    def record_comfort(self, *, at: datetime, dt_s: float, indoor_temp_c: float) -> None:
        """Indoor temperature held for ``dt_s`` seconds from ``at`` (within one interval)."""
        comfort = self.contract.comfort
        outside = max(comfort.comfort_min_c - indoor_temp_c, indoor_temp_c - comfort.comfort_max_c, 0.0)
        self._interval(at).degree_hours += outside * dt_s / 3600

    def record_interval(self, *, start: datetime, limit_kw: float, failsafe: bool, plugged: bool) -> None:
        """A closed interval: the import limit the DSO's signals set, whether the failsafe limit applied
        instead, and whether the EV was plugged in."""
        interval = self._interval(start)
        interval.limit_kw, interval.failsafe, interval.plugged = limit_kw, failsafe, plugged

    def record_need(self, need: CapacityNeed) -> None:
        """A need the DSO received: it replaces earlier needs for the intervals it covers."""
        self.needs.update(need.by_start())

    def record_departure(self, *, at: datetime, range_km: float) -> None:
        self.departures.append(_Departure(at=at, range_km=range_km))

    def _below_need(self, start: datetime) -> bool:
        interval, need = self.intervals.get(start), self.needs.get(start)
        return (interval is not None and interval.limit_kw is not None and need is not None
                and not interval.failsafe and interval.limit_kw < need - NEED_TOLERANCE_KW)

    def close_days(self, now: datetime) -> list[PerformanceReport]:
        """Reports for every local day that ended by ``now`` and was observed, each once; forgets what they held."""
        zone = ZoneInfo(self.contract.comfort.timezone)
        days = sorted({start.astimezone(zone).date() for start in self.intervals} - self.reported_days)
        reports = []
        for day in days:
            start = datetime.combine(day, datetime.min.time(), tzinfo=zone).astimezone(now.tzinfo)
            end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=zone).astimezone(now.tzinfo)
            if end > now:
                continue
            reports.append(self._report(day, start, end, now))
            self.reported_days.add(day)
        if reports:
            self._forget(before=min(r.end for r in reports) - _SESSION_LOOKBACK)
        return reports

    def _report(self, day: date, start: datetime, end: datetime, now: datetime) -> PerformanceReport:
        losses = []
        for moment in sorted(s for s in self.intervals if start <= s < end):
            interval = self.intervals[moment]
            if interval.degree_hours < _REPORTED_KH or interval.limit_kw is None:
                continue
            losses.append(ComfortLoss(start=moment, degree_hours=round(interval.degree_hours, 6),
                                      limit_kw=round(interval.limit_kw, 3), need_kw=self.needs.get(moment),
                                      failsafe=interval.failsafe))
        ev = None
        leaving = [d for d in self.departures if start <= d.at < end]
        if leaving:
            departure = leaving[-1]
            required = self.contract.comfort.ev_required_range_km
            session = [s for s in self.intervals
                       if departure.at - _SESSION_LOOKBACK <= s < departure.at and self.intervals[s].plugged]
            ev = EvVerdict(shortfall_km=round(max(0.0, required - departure.range_km), 3),
                           limit_below_need=any(self._below_need(s) for s in session),
                           range_km=round(departure.range_km, 3) if self.contract.raw_data_consent else None)
        return PerformanceReport(start=start, end=end, created_at=now,
                                 degree_hours_outside_band=sum(loss.degree_hours for loss in losses),
                                 comfort_losses=tuple(losses), ev=ev)

    def _forget(self, *, before: datetime) -> None:
        for moment in [s for s in self.intervals if s < before]:
            del self.intervals[moment]
        for moment in [s for s in self.needs if s < before]:
            del self.needs[moment]
        self.departures = [d for d in self.departures if d.at >= before]
