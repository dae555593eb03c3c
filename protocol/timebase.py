"""Time conventions of the profile: UTC-aware timestamps and the 15-minute interval grid."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from pydantic import AfterValidator

INTERVAL_S = 900
INTERVAL = timedelta(seconds=INTERVAL_S)
INTERVALS_PER_DAY = 96
EARLIEST_YEAR = 1970
LATEST_YEAR = 2200
"""Timestamps outside these years are typos or attacks: near the calendar's ends (year 1, year 9999) converting to
UTC or adding an interval overflows Python's datetime, and pandas (the DSO's load profiles) stops at 2262; the
bound keeps all arithmetic on a timestamp the profile accepted safe."""


def check_year(value: datetime) -> datetime:
    """Refuse a timestamp outside EARLIEST_YEAR..LATEST_YEAR (before any arithmetic on it)."""
    if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise ValueError(f"{value.isoformat()} is outside the years {EARLIEST_YEAR}-{LATEST_YEAR} the profile accepts")
    return value


def _require_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("naive datetime; the profile requires timezone-aware UTC timestamps")
    return check_year(value).astimezone(UTC)


def _require_interval_aligned(value: datetime) -> datetime:
    if value.second or value.microsecond or value.minute % 15:
        raise ValueError(f"{value.isoformat()} is not on the 15-minute grid (minute 0, 15, 30 or 45, second 0)")
    return value


UtcDatetime = Annotated[datetime, AfterValidator(_require_utc)]
"""A timezone-aware timestamp, normalised to UTC; naive datetimes are rejected."""

IntervalStart = Annotated[datetime, AfterValidator(_require_utc), AfterValidator(_require_interval_aligned)]
"""A UTC timestamp on the 15-minute grid."""


def floor_to_interval(moment: datetime) -> datetime:
    """The start of the 15-minute interval that holds ``moment``."""
    moment = _require_utc(moment)
    return moment.replace(minute=moment.minute - moment.minute % 15, second=0, microsecond=0)


def local_day_bounds(day: date, timezone: str) -> tuple[datetime, datetime]:
    """[start, end) in UTC of the local ``day`` in the IANA ``timezone`` (23, 24 or 25 hours long)."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(timezone)
    return (datetime.combine(day, datetime.min.time(), tzinfo=zone).astimezone(UTC),
            datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=zone).astimezone(UTC))
