"""Telemetry, plan and comfort status as OpenADR 2.0b reports (oadrReport dicts as openleadr shapes them); which
reports a HEMS offers (by its contract) and how a VTN requests them. The capacity need and the performance verdict
have their codecs in ``protocol.oadr20b.performance``."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from protocol.contract import HouseholdContract
from protocol.errors import OADR_SIGNAL_NOT_SUPPORTED, ProfileError
from protocol.oadr20b import names
from protocol.oadr20b.performance import decode_need_report, decode_performance_report
from protocol.performance import CapacityNeed, PerformanceReport
from protocol.reports import ComfortStatus, Plan, PlanInterval, Telemetry, TelemetryInterval
from protocol.timebase import INTERVAL

# openleadr's report templates read every target field; absent ones must be present as None.
_TARGET_FIELDS = ("aggregated_p_node", "end_device_asset", "meter_asset", "p_node", "service_area",
                  "service_delivery_point", "service_location", "transport_interface", "group_id", "group_name",
                  "ven_id", "party_id")


def _resource_target(resource_id: str) -> dict[str, Any]:
    return {**dict.fromkeys(_TARGET_FIELDS), "resource_id": resource_id}


_ITEM_CUSTOM = {"name": "customUnit", "description": "profile quantity", "unit": "", "scale": "none"}

# (report name, specifier id, reading type, rIDs with their itemBase)
_OFFERED: tuple[tuple[str, str, str, tuple[tuple[str, Mapping[str, Any]], ...]], ...] = (
    (names.REPORT_TELEMETRY, names.SPECIFIER_TELEMETRY, names.READING_MEAN,
     ((names.RID_IMPORT_KW, names.ITEM_POWER_KW), (names.RID_EXPORT_KW, names.ITEM_POWER_KW))),
    (names.REPORT_PLAN, names.SPECIFIER_PLAN, names.READING_PROJECTED,
     ((names.RID_NET_IMPORT_KW, names.ITEM_POWER_KW),)),
    (names.REPORT_NEED, names.SPECIFIER_NEED, names.READING_PROJECTED,
     ((names.RID_NEED_IMPORT_KW, names.ITEM_POWER_KW),)),
    (names.REPORT_PERFORMANCE, names.SPECIFIER_PERFORMANCE, names.READING_DIRECT,
     ((names.RID_DEGREE_HOURS, _ITEM_CUSTOM), (names.RID_EV_SHORTFALL_KM, _ITEM_CUSTOM),
      (names.RID_EV_LIMIT_BELOW_NEED, _ITEM_CUSTOM), (names.RID_COMFORT_LOST_KH, _ITEM_CUSTOM),
      (names.RID_LIMIT_KW, names.ITEM_POWER_KW), (names.RID_NEED_KW, names.ITEM_POWER_KW),
      (names.RID_FAILSAFE, _ITEM_CUSTOM))),
    (names.REPORT_COMFORT, names.SPECIFIER_COMFORT, names.READING_DIRECT,
     (*((rid, names.ITEM_TEMPERATURE_C) for rid in (names.RID_INDOOR_TEMPERATURE_C, names.RID_COMFORT_MIN_C,
                                                    names.RID_COMFORT_MAX_C)),
      *((rid, _ITEM_CUSTOM) for rid in (names.RID_EV_RANGE_KM, names.RID_EV_REQUIRED_RANGE_KM)))),
)
"""(report name, specifier, readingType, rIDs with their itemBase): PROFILE.md §9.1. Telemetry values are means
over their interval; temperatures use 2.0b's temperature itemBase, the ranges a customUnit (2.0b has no distance)."""
_CONSENTED_RIDS = {names.SPECIFIER_PERFORMANCE: (names.RID_EV_RANGE_AT_DEPARTURE_KM,)}
"""rIDs offered under a specifier only with the household's consent."""

DEFAULT_OFFER = (names.SPECIFIER_TELEMETRY, names.SPECIFIER_PLAN)
"""What every HEMS offers: measured import and export, and its plan of net import."""


def offered_specifiers(contract: HouseholdContract) -> tuple[str, ...]:
    """The reports a HEMS offers under ``contract`` (PROFILE §9.1): telemetry and plan always; the capacity need
    and the performance verdict under a performance contract; raw comfort readings only with consent."""
    offer = list(DEFAULT_OFFER)
    if contract.performance is not None:
        offer += [names.SPECIFIER_NEED, names.SPECIFIER_PERFORMANCE]
    if contract.raw_data_consent:
        offer.append(names.SPECIFIER_COMFORT)
    return tuple(offer)


def metadata_name(report_name: str) -> str:
    """The name a report is offered under: METADATA_X for standard names, x-METADATA_X for x-X (the
    2.0b schema admits no METADATA_x-... value)."""
    return f"x-METADATA_{report_name[2:]}" if report_name.startswith("x-") else f"METADATA_{report_name}"


def hems_report_metadata(*, resource_id: str, created_at: datetime, specifiers: Iterable[str] = DEFAULT_OFFER,
                         raw_data_consent: bool = False) -> list[dict[str, Any]]:
    """The reports a HEMS offers in oadrRegisterReport (METADATA_ reports): those of ``specifiers`` (see
    ``offered_specifiers``), with the rIDs of raw readings only under ``raw_data_consent``."""
    wanted = set(specifiers)
    unknown = wanted - {specifier for _, specifier, _, _ in _OFFERED}
    if unknown:
        raise ValueError(f"no report of this profile has reportSpecifierID {sorted(unknown)}")
    reports = []
    for report_name, specifier, reading_type, offered_rids in _OFFERED:
        if specifier not in wanted:
            continue
        consented = _CONSENTED_RIDS.get(specifier, ()) if raw_data_consent else ()
        rids = (*offered_rids, *((rid, _ITEM_CUSTOM) for rid in consented))
        descriptions = [
            {
                "r_id": rid,
                "reading_type": reading_type,
                "report_type": "usage" if item is names.ITEM_POWER_KW else "x-notApplicable",
                "report_subject": _resource_target(resource_id),
                "report_data_source": _resource_target(resource_id),
                "sampling_rate": {"min_period": INTERVAL, "max_period": INTERVAL, "on_change": False},
                "measurement": dict(item),
                "market_context": None,
            }
            for rid, item in rids
        ]
        reports.append({
            "report_specifier_id": specifier,
            "report_name": metadata_name(report_name),
            "report_request_id": 0,
            "created_date_time": created_at,
            "duration": INTERVAL,
            "report_descriptions": descriptions,
        })
    return reports


def report_requests_for(offered: Iterable[Mapping[str, Any]], *, request_ids: Iterable[str]) -> list[dict[str, Any]]:
    """The VTN's oadrReportRequests for every profile report a VEN offered: each every 15 minutes."""
    known = {specifier: (*rids, *((rid, _ITEM_CUSTOM) for rid in _CONSENTED_RIDS.get(specifier, ())))
             for _, specifier, _, rids in _OFFERED}
    ids = iter(request_ids)
    requests = []
    for report in offered:
        specifier = report.get("report_specifier_id")
        if specifier not in known:
            continue
        payloads = [
            {"r_id": description["r_id"], "reading_type": description.get("reading_type", names.READING_DIRECT)}
            for description in report.get("report_descriptions") or []
            if description.get("r_id") in dict(known[specifier])
        ]
        if payloads:
            requests.append({
                "report_request_id": next(ids),
                "report_specifier": {
                    "report_specifier_id": specifier,
                    "granularity": INTERVAL,
                    "report_back_duration": INTERVAL,
                    "specifier_payloads": payloads,
                },
            })
    return requests


def _interval(start: datetime, rid: str, value: float) -> dict[str, Any]:
    return {"dtstart": start, "duration": INTERVAL, "report_payload": {"r_id": rid, "value": value}}


def _report(name: str, specifier: str, report_request_id: str, created_at: datetime,
            intervals: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "report_request_id": report_request_id,
        "report_specifier_id": specifier,
        "report_name": name,
        "created_date_time": created_at,
        "dtstart": min(i["dtstart"] for i in intervals),
        "duration": max(i["dtstart"] for i in intervals) + INTERVAL - min(i["dtstart"] for i in intervals),
        "intervals": intervals,
    }


def encode_telemetry_report(telemetry: Telemetry, *, report_request_id: str, created_at: datetime) -> dict[str, Any]:
    intervals = []
    for interval in telemetry.intervals:
        intervals.append(_interval(interval.start, names.RID_IMPORT_KW, interval.import_kw))
        intervals.append(_interval(interval.start, names.RID_EXPORT_KW, interval.export_kw))
    return _report(names.REPORT_TELEMETRY, names.SPECIFIER_TELEMETRY, report_request_id, created_at, intervals)


def encode_plan_report(plan: Plan, *, report_request_id: str) -> dict[str, Any]:
    intervals = [_interval(i.start, names.RID_NET_IMPORT_KW, i.net_import_kw) for i in plan.intervals]
    return _report(names.REPORT_PLAN, names.SPECIFIER_PLAN, report_request_id, plan.created_at, intervals)


def encode_comfort_report(status: ComfortStatus, *, report_request_id: str) -> dict[str, Any]:
    values = {
        names.RID_INDOOR_TEMPERATURE_C: status.indoor_temperature_c,
        names.RID_COMFORT_MIN_C: status.comfort_min_c,
        names.RID_COMFORT_MAX_C: status.comfort_max_c,
        names.RID_EV_RANGE_KM: status.ev_range_km,
        names.RID_EV_REQUIRED_RANGE_KM: status.ev_required_range_km,
    }
    # A comfort status is a point reading: the interval's dtstart is the moment of measurement.
    intervals = [_interval(status.measured_at, rid, value) for rid, value in values.items() if value is not None]
    return _report(names.REPORT_COMFORT, names.SPECIFIER_COMFORT, report_request_id, status.measured_at,
                   intervals)


def _columns(report: Mapping[str, Any]) -> dict[datetime, dict[str, float]]:
    rows: dict[datetime, dict[str, float]] = defaultdict(dict)
    for index, interval in enumerate(report.get("intervals") or []):
        payload = interval.get("report_payload") or {}
        rid, value = payload.get("r_id"), payload.get("value")
        if rid is None or value is None or interval.get("dtstart") is None:
            raise ProfileError(f"report.intervals[{index}]", "needs dtstart, rID and a value")
        if rid in rows[interval["dtstart"]]:
            raise ProfileError(f"report.intervals[{index}]", f"repeats rID {rid!r} at {interval['dtstart']}")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ProfileError(f"report.intervals[{index}].value", f"is {value!r}; a finite number is required")
        rows[interval["dtstart"]][rid] = float(value)
    if not rows:
        raise ProfileError("report.intervals", "must hold at least one interval")
    return dict(sorted(rows.items()))


def _need(row: Mapping[str, float], rid: str, start: datetime) -> float:
    if rid not in row:
        raise ProfileError(f"report.intervals[{start.isoformat()}]", f"lacks rID {rid!r}")
    return row[rid]


def decode_report(report: Mapping[str, Any]) -> Telemetry | Plan | ComfortStatus | CapacityNeed | PerformanceReport:
    """Turn a parsed oadrReport into a profile model, or raise ProfileError naming the field and the rule."""
    name = report.get("report_name")
    if name == names.REPORT_NEED:
        return decode_need_report(report)
    if name == names.REPORT_PERFORMANCE:
        return decode_performance_report(report)
    try:
        if name == names.REPORT_TELEMETRY:
            rows = _columns(report)
            return Telemetry(intervals=tuple(
                TelemetryInterval(start=start, import_kw=_need(row, names.RID_IMPORT_KW, start),
                                  export_kw=_need(row, names.RID_EXPORT_KW, start))
                for start, row in rows.items()))
        if name == names.REPORT_PLAN:
            rows = _columns(report)
            created_at = report.get("created_date_time")
            return Plan(created_at=created_at, intervals=tuple(
                PlanInterval(start=start, net_import_kw=_need(row, names.RID_NET_IMPORT_KW, start))
                for start, row in rows.items()))
        if name == names.REPORT_COMFORT:
            rows = _columns(report)
            if len(rows) != 1:
                raise ProfileError("report.intervals", "a comfort status carries exactly one moment")
            ((moment, row),) = rows.items()
            return ComfortStatus(
                measured_at=moment,
                indoor_temperature_c=_need(row, names.RID_INDOOR_TEMPERATURE_C, moment),
                comfort_min_c=_need(row, names.RID_COMFORT_MIN_C, moment),
                comfort_max_c=_need(row, names.RID_COMFORT_MAX_C, moment),
                ev_range_km=row.get(names.RID_EV_RANGE_KM),
                ev_required_range_km=row.get(names.RID_EV_REQUIRED_RANGE_KM),
            )
    except ValidationError as error:
        first = error.errors()[0]
        location = ".".join(str(part) for part in first["loc"])
        raise ProfileError(f"report.{location}", first["msg"].removeprefix("Value error, ")) from None
    raise ProfileError("report.reportName", f"{name!r} is not a report of this profile",
                       response_code=OADR_SIGNAL_NOT_SUPPORTED)
