"""The capacity need (x-CAPACITY_NEED) and the daily performance verdict (x-PERFORMANCE) as 2.0b reports.

x-CAPACITY_NEED is a series like the plan: one interval per quarter-hour, rID ``need_import_kw`` (powerReal kW,
readingType Projected); createdDateTime is the moment the need was made.

x-PERFORMANCE covers one local day: the report's dtstart is the day's start (UTC) and its duration the day's
length (PT23H, PT24H or PT25H). Entries that describe the whole day carry that dtstart and duration:
``degree_hours_outside_band`` always; ``ev_shortfall_km`` and ``ev_limit_below_need`` (0 or 1) when an EV left
at the contracted departure time; ``ev_range_at_departure_km`` only under the household's consent. Each interval
in which comfort was lost carries, with its own dtstart and duration PT15M, ``comfort_lost_kh``, ``limit_kw``,
``failsafe`` (0 or 1) and, when a need had been reported for it, ``need_kw``.

A receiver drops rIDs it does not know (what it did not ask for is not kept) and rejects, naming the field, a
report whose known entries break the profile.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from protocol.errors import ProfileError
from protocol.oadr20b import names
from protocol.performance import LOCAL_DAY_HOURS, CapacityNeed, ComfortLoss, EvVerdict, NeedInterval, PerformanceReport
from protocol.timebase import INTERVAL

DAY_RIDS = (names.RID_DEGREE_HOURS, names.RID_EV_SHORTFALL_KM, names.RID_EV_LIMIT_BELOW_NEED,
            names.RID_EV_RANGE_AT_DEPARTURE_KM)
INTERVAL_RIDS = (names.RID_COMFORT_LOST_KH, names.RID_LIMIT_KW, names.RID_NEED_KW, names.RID_FAILSAFE)


def _entry(start: datetime, duration: timedelta, rid: str, value: float) -> dict[str, Any]:
    return {"dtstart": start, "duration": duration, "report_payload": {"r_id": rid, "value": value}}


def encode_need_report(need: CapacityNeed, *, report_request_id: str) -> dict[str, Any]:
    intervals = [_entry(i.start, INTERVAL, names.RID_NEED_IMPORT_KW, i.import_kw) for i in need.intervals]
    return {
        "report_request_id": report_request_id,
        "report_specifier_id": names.SPECIFIER_NEED,
        "report_name": names.REPORT_NEED,
        "created_date_time": need.created_at,
        "dtstart": need.start,
        "duration": need.end - need.start,
        "intervals": intervals,
    }


def encode_performance_report(report: PerformanceReport, *, report_request_id: str) -> dict[str, Any]:
    day = report.end - report.start
    entries = [_entry(report.start, day, names.RID_DEGREE_HOURS, report.degree_hours_outside_band)]
    if report.ev is not None:
        entries.append(_entry(report.start, day, names.RID_EV_SHORTFALL_KM, report.ev.shortfall_km))
        entries.append(_entry(report.start, day, names.RID_EV_LIMIT_BELOW_NEED, float(report.ev.limit_below_need)))
        if report.ev.range_km is not None:
            entries.append(_entry(report.start, day, names.RID_EV_RANGE_AT_DEPARTURE_KM, report.ev.range_km))
    for loss in report.comfort_losses:
        entries.append(_entry(loss.start, INTERVAL, names.RID_COMFORT_LOST_KH, loss.degree_hours))
        entries.append(_entry(loss.start, INTERVAL, names.RID_LIMIT_KW, loss.limit_kw))
        entries.append(_entry(loss.start, INTERVAL, names.RID_FAILSAFE, float(loss.failsafe)))
        if loss.need_kw is not None:
            entries.append(_entry(loss.start, INTERVAL, names.RID_NEED_KW, loss.need_kw))
    return {
        "report_request_id": report_request_id,
        "report_specifier_id": names.SPECIFIER_PERFORMANCE,
        "report_name": names.REPORT_PERFORMANCE,
        "created_date_time": report.created_at,
        "dtstart": report.start,
        "duration": day,
        "intervals": entries,
    }


# ------------------------------------------------------------------------------------------------- decoding


def _value(index: int, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProfileError(f"report.intervals[{index}].value", f"is {value!r}; a finite number is required")
    return float(value)


def _flag(index: int, value: float) -> bool:
    if value not in (0.0, 1.0):
        raise ProfileError(f"report.intervals[{index}].value", f"is {value:g}; a flag is 0 or 1")
    return value == 1.0


def _pydantic(error: ValidationError) -> ProfileError:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    return ProfileError(f"report.{location}" if location else "report", first["msg"].removeprefix("Value error, "))


def decode_need_report(report: Mapping[str, Any]) -> CapacityNeed:
    """An x-CAPACITY_NEED oadrReport as a CapacityNeed, or ProfileError naming the field and the rule."""
    rows: dict[datetime, tuple[int, float]] = {}
    for index, interval in enumerate(report.get("intervals") or []):
        payload = interval.get("report_payload") or {}
        if payload.get("r_id") != names.RID_NEED_IMPORT_KW:
            continue
        start = interval.get("dtstart")
        if not isinstance(start, datetime):
            raise ProfileError(f"report.intervals[{index}].dtstart", "is required")
        if interval.get("duration") not in (None, INTERVAL):
            raise ProfileError(f"report.intervals[{index}].duration", f"is {interval.get('duration')}; PT15M is "
                               "required")
        if start in rows:
            raise ProfileError(f"report.intervals[{index}]", f"repeats rID {names.RID_NEED_IMPORT_KW!r} at "
                               f"{start.isoformat()}")
        rows[start] = (index, _value(index, payload.get("value")))
    if not rows:
        raise ProfileError("report.intervals", f"holds no {names.RID_NEED_IMPORT_KW!r} interval")
    intervals = []
    for start, (index, kw) in sorted(rows.items()):
        try:
            intervals.append(NeedInterval(start=start, import_kw=kw))
        except ValidationError as error:
            raise ProfileError(f"report.intervals[{index}]" + _pydantic(error).field.removeprefix("report"),
                               _pydantic(error).reason) from None
    try:
        return CapacityNeed(created_at=report.get("created_date_time"), intervals=tuple(intervals))
    except ValidationError as error:
        raise _pydantic(error) from None


def decode_performance_report(report: Mapping[str, Any]) -> PerformanceReport:
    """An x-PERFORMANCE oadrReport as a PerformanceReport, or ProfileError naming the field and the rule."""
    start = report.get("dtstart")
    if not isinstance(start, datetime):
        raise ProfileError("report.dtstart", "is required: the start of the local day reported on")
    # The day's length: the duration of its day entries (openleadr renders no report-level duration).
    total = [i for i in report.get("intervals") or []
             if (i.get("report_payload") or {}).get("r_id") == names.RID_DEGREE_HOURS]
    if not total:
        raise ProfileError("report.intervals", f"lacks the day's {names.RID_DEGREE_HOURS!r}")
    length = total[0].get("duration")
    if not isinstance(length, timedelta):
        raise ProfileError(f"report.intervals[{names.RID_DEGREE_HOURS}].duration", "is required: the length of the "
                           "local day reported on")
    if length not in {timedelta(hours=hours) for hours in LOCAL_DAY_HOURS}:
        raise ProfileError(f"report.intervals[{names.RID_DEGREE_HOURS}].duration", f"is {length}; the day entries "
                           "last one local day (PT23H, PT24H or PT25H)")
    if report.get("duration") not in (None, length):
        raise ProfileError("report.duration", f"is {report.get('duration')}; the day entries say {length}")
    day: dict[str, float] = {}
    losses: dict[datetime, dict[str, float]] = {}
    for index, interval in enumerate(report.get("intervals") or []):
        payload = interval.get("report_payload") or {}
        rid = payload.get("r_id")
        if rid not in DAY_RIDS and rid not in INTERVAL_RIDS:
            continue  # not asked for, not kept
        moment, duration = interval.get("dtstart"), interval.get("duration")
        value = _value(index, payload.get("value"))
        if rid in DAY_RIDS:
            if moment != start or duration != length:
                raise ProfileError(f"report.intervals[{index}]", f"{rid!r} describes the day: its dtstart and "
                                   "duration must be the report's")
            if rid in day:
                raise ProfileError(f"report.intervals[{index}]", f"repeats rID {rid!r}")
            day[rid] = value
            continue
        if not isinstance(moment, datetime):
            raise ProfileError(f"report.intervals[{index}].dtstart", "is required")
        if duration != INTERVAL:
            raise ProfileError(f"report.intervals[{index}].duration", f"is {duration}; {rid!r} describes one "
                               "interval (PT15M)")
        row = losses.setdefault(moment, {})
        if rid in row:
            raise ProfileError(f"report.intervals[{index}]", f"repeats rID {rid!r} at {moment.isoformat()}")
        row[rid] = _flag(index, value) if rid == names.RID_FAILSAFE else value
    if names.RID_DEGREE_HOURS not in day:
        raise ProfileError("report.intervals", f"lacks the day's {names.RID_DEGREE_HOURS!r}")
    try:
        return PerformanceReport(
            start=start, end=start + length, created_at=report.get("created_date_time"),
            degree_hours_outside_band=day[names.RID_DEGREE_HOURS],
            comfort_losses=tuple(_loss(moment, row) for moment, row in sorted(losses.items())),
            ev=_ev(day),
        )
    except ValidationError as error:
        raise _pydantic(error) from None


def _loss(moment: datetime, row: Mapping[str, float]) -> ComfortLoss:
    for rid in (names.RID_COMFORT_LOST_KH, names.RID_LIMIT_KW):
        if rid not in row:
            raise ProfileError(f"report.intervals[{moment.isoformat()}]", f"lacks rID {rid!r}")
    return ComfortLoss(start=moment, degree_hours=row[names.RID_COMFORT_LOST_KH], limit_kw=row[names.RID_LIMIT_KW],
                       need_kw=row.get(names.RID_NEED_KW), failsafe=bool(row.get(names.RID_FAILSAFE, False)))


def _ev(day: Mapping[str, float]) -> EvVerdict | None:
    present = [rid for rid in (names.RID_EV_SHORTFALL_KM, names.RID_EV_LIMIT_BELOW_NEED) if rid in day]
    if not present:
        if names.RID_EV_RANGE_AT_DEPARTURE_KM in day:
            raise ProfileError("report.intervals", f"{names.RID_EV_RANGE_AT_DEPARTURE_KM!r} needs "
                               f"{names.RID_EV_SHORTFALL_KM!r} beside it")
        return None
    if len(present) == 1:
        missing = ({names.RID_EV_SHORTFALL_KM, names.RID_EV_LIMIT_BELOW_NEED} - set(present)).pop()
        raise ProfileError("report.intervals", f"has {present[0]!r} but lacks {missing!r}")
    flag = day[names.RID_EV_LIMIT_BELOW_NEED]
    if flag not in (0.0, 1.0):
        raise ProfileError(f"report.intervals[{names.RID_EV_LIMIT_BELOW_NEED}]", f"is {flag:g}; a flag is 0 or 1")
    return EvVerdict(shortfall_km=day[names.RID_EV_SHORTFALL_KM], limit_below_need=flag == 1.0,
                     range_km=day.get(names.RID_EV_RANGE_AT_DEPARTURE_KM))
