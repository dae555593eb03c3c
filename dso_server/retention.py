"""How long the DSO keeps what households send: a pure rule, applied by ``DsoStore.delete_household_data_before``.

Telemetry, plans, capacity needs, performance reports and (consented) comfort readings are personal data: a
15-minute load profile shows when people are home. The DSO keeps them ``retention_months`` calendar months
(settings, default 13: a year for the forecast's seasons and the yearly settlement, plus a month to settle the
last one) and deletes what is older. Signals, answers to events and allocation runs stay: they record what the
DSO itself decided.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

DEFAULT_RETENTION_MONTHS = 13
RETENTION_CHECK_S = 6 * 3600.0
"""How often (server clock) the server deletes what is past its retention."""


def months_before(day: date, months: int) -> date:
    """The same day ``months`` calendar months earlier, clipped to the end of a shorter month."""
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    following = date(year + month // 12, month % 12 + 1, 1)
    last = (following - date(year, month, 1)).days
    return date(year, month, min(day.day, last))


def retention_cutoff(now: datetime, *, months: int, timezone: str) -> datetime:
    """Data about moments before this instant (UTC) is past its retention: local midnight ``months`` calendar
    months before today (in ``timezone``)."""
    if months < 1:
        raise ValueError(f"retention must be at least one month, not {months}")
    zone = ZoneInfo(timezone)
    day = months_before(now.astimezone(zone).date(), months)
    return datetime.combine(day, datetime.min.time(), tzinfo=zone).astimezone(UTC)
