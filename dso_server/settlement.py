"""Monthly settlement of a performance contract, per household. Pure: the caller reads the store.

From what the DSO holds - the needs the HEMS reported, the firm and effective import limits the DSO published,
and the HEMS's daily performance reports - one :class:`Settlement` per household and calendar month (in the
contract's time zone):

* **the guarantee**: intervals with a reported need, and how many of them had a firm limit at least that need
  (honoured) - in hours, with the energy by which the firm limits fell short;
* **comfort delivered**: degree-hours outside the band and EV departures short of the contracted range, as the
  performance reports say;
* **what the DSO caused**: degree-hours in intervals where the DSO's *effective* limit (firm + non-firm, what the
  household was allowed) was below the need, by the DSO's own records; a short EV departure counts when the HEMS
  says a limit below the need fell in the charging session *and* the DSO's records show such an interval in the
  24 h before the contracted departure (the DSO never learns when the car was home). Intervals where the HEMS's
  verdict and the DSO's records disagree are counted as ``disputed_intervals``;
* **the discount due**: the contract's monthly discount plus compensation per DSO-caused degree-hour and
  DSO-caused short departure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from protocol.contract import HouseholdContract
from protocol.performance import NEED_TOLERANCE_KW, PerformanceReport
from protocol.timebase import INTERVAL, INTERVAL_S

_DT_H = INTERVAL_S / 3600


@dataclass(frozen=True)
class Settlement:
    connection_point_id: str
    month: str
    """YYYY-MM, a calendar month of the contract's time zone."""
    need_hours: float
    honoured_hours: float
    not_honoured_hours: float
    shortfall_kwh: float
    """Sum over the not honoured intervals of (need - firm limit) x 15 min."""
    days_reported: int
    degree_hours_outside_band: float
    degree_hours_dso_caused: float
    ev_departures: int
    ev_departures_short: int
    ev_departures_short_dso_caused: int
    disputed_intervals: int
    discount_eur: float
    compensation_eur: float

    @property
    def total_eur(self) -> float:
        return round(self.discount_eur + self.compensation_eur, 2)

    def as_row(self) -> dict[str, object]:
        return {**asdict(self), "total_eur": self.total_eur}


COLUMNS = (*Settlement.__dataclass_fields__, "total_eur")
"""The CSV columns, in order."""


def month_bounds(month: date, timezone: str) -> tuple[datetime, datetime]:
    """[start, end) in UTC of the calendar month holding ``month`` in ``timezone``."""
    zone = ZoneInfo(timezone)
    first = date(month.year, month.month, 1)
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return (datetime.combine(first, datetime.min.time(), tzinfo=zone).astimezone(UTC),
            datetime.combine(following, datetime.min.time(), tzinfo=zone).astimezone(UTC))


def settle_month(
    *,
    contract: HouseholdContract,
    month: date,
    need_kw: Mapping[datetime, float],
    firm_kw: Mapping[datetime, float],
    effective_kw: Mapping[datetime, float],
    reports: Sequence[PerformanceReport],
) -> Settlement:
    """The settlement of ``contract`` for the month holding ``month``. ``need_kw``: the need in force per interval
    start (the latest reported before the day's firm allocation); ``firm_kw`` / ``effective_kw``: the DSO's lowest
    firm limit and its effective limit per interval (the contract maximum where it published none). Intervals
    and reports outside the month are ignored."""
    terms = contract.performance
    if terms is None:
        raise ValueError(f"{contract.connection_point_id} has no performance contract to settle")
    zone = contract.comfort.timezone
    start, end = month_bounds(month, zone)
    maximum = contract.contracted_max_import_kw

    def below(limits: Mapping[datetime, float], moment: datetime) -> bool:
        need = need_kw.get(moment)
        return need is not None and limits.get(moment, maximum) < need - NEED_TOLERANCE_KW

    needed = [s for s in need_kw if start <= s < end]
    short = [s for s in needed if below(firm_kw, s)]
    shortfall = sum(need_kw[s] - firm_kw.get(s, maximum) for s in short) * _DT_H

    in_month = [r for r in reports if start <= r.start < end]
    degree_hours = dso_degree_hours = 0.0
    disputed = departures = short_departures = dso_departures = 0
    for report in in_month:
        degree_hours += report.degree_hours_outside_band
        for loss in report.comfort_losses:
            dso = below(effective_kw, loss.start)
            dso_degree_hours += loss.degree_hours if dso else 0.0
            disputed += dso != (loss.limit_below_need and not loss.failsafe)
        if report.ev is not None:
            departures += 1
            if not report.ev.ready:
                short_departures += 1
                session = _session(report, contract)
                moment, found = session[0], False
                while moment < session[1] and not found:
                    found = below(effective_kw, moment)
                    moment += INTERVAL
                dso_departures += report.ev.limit_below_need and found
    compensation = (terms.compensation_eur_per_degree_hour * dso_degree_hours
                    + terms.compensation_eur_per_missed_departure * dso_departures)
    return Settlement(
        connection_point_id=contract.connection_point_id, month=f"{month.year:04d}-{month.month:02d}",
        need_hours=round(len(needed) * _DT_H, 2), honoured_hours=round((len(needed) - len(short)) * _DT_H, 2),
        not_honoured_hours=round(len(short) * _DT_H, 2), shortfall_kwh=round(shortfall, 3),
        days_reported=len(in_month), degree_hours_outside_band=round(degree_hours, 3),
        degree_hours_dso_caused=round(dso_degree_hours, 3), ev_departures=departures,
        ev_departures_short=short_departures, ev_departures_short_dso_caused=dso_departures,
        disputed_intervals=disputed, discount_eur=round(terms.monthly_discount_eur, 2),
        compensation_eur=round(compensation, 2),
    )


def _session(report: PerformanceReport, contract: HouseholdContract) -> tuple[datetime, datetime]:
    """The 24 h before the contracted departure on the report's day: where the charging session lies."""
    zone = ZoneInfo(contract.comfort.timezone)
    day = report.start.astimezone(zone).date()
    departure = datetime.combine(day, contract.comfort.ev_departure_local, tzinfo=zone).astimezone(UTC)
    departure -= timedelta(minutes=departure.minute % 15, seconds=departure.second)
    return departure - timedelta(hours=24), departure
