"""The operator API's wire format: request bodies and queries in, JSON out. Pure: no I/O, no clock.

Bodies use the protocol models' field names; timestamps are ISO 8601 with a UTC offset. Every problem is an
``ApiError`` carrying the HTTP status, one sentence a person can act on, the field at fault and, for model
validation, every problem found (``detail``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from dso_server.errors import DsoError, IllegalSignalChange
from dso_server.records import (
    Household,
    Publication,
    Signal,
    SignalKind,
    SignalPayload,
    StoredComfort,
    StoredPlan,
    StoredResponse,
    TelemetryRow,
    Ven,
)
from protocol import CapacityBandwidth, HouseholdContract, TouTariff

TARGET_KEYS = ("connection_point_ids", "group")
_LEADING_FIELD = re.compile(r"^(intervals\[\d+\])")
_Model = TypeVar("_Model", bound=BaseModel)


class ApiError(DsoError):
    def __init__(self, status: int, message: str, *, field: str | None = None,
                 detail: Sequence[Mapping[str, Any]] = ()) -> None:
        super().__init__(message, field=field)
        self.http_status = status
        self.detail = list(detail)


def error_body(error: DsoError) -> dict[str, Any]:
    return {"error": error.message, "field": error.field, "detail": getattr(error, "detail", [])}


# ------------------------------------------------------------------------------------------------- parsing


def _path(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _problem(item: Mapping[str, Any]) -> dict[str, str]:
    field = _path(item["loc"])
    message = str(item["msg"]).removeprefix("Value error, ")
    if not field:
        match = _LEADING_FIELD.match(message)
        field = match.group(1) if match else "body"
    if item["type"] == "missing":
        message = "is required"
    elif item["type"] == "extra_forbidden":
        message = "is not a field of this message"
    return {"field": field, "message": message, "type": str(item["type"])}


def invalid(error: ValidationError, *, what: str) -> ApiError:
    problems = [_problem(item) for item in error.errors()]
    first = problems[0]
    others = len(problems) - 1
    more = f" ({others} more problem{'s' if others > 1 else ''} in detail)" if others else ""
    return ApiError(400, f"Invalid {what} at {first['field']}: {first['message']}{more}.", field=first["field"],
                    detail=problems)


def _validate(model: type[_Model], body: Mapping[str, Any], *, what: str) -> _Model:
    try:
        return model.model_validate(dict(body))
    except ValidationError as error:
        raise invalid(error, what=what) from None


def require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, f"The request body must be a JSON object, not {type(body).__name__}.", field="body")
    return body


def parse_household(body: Mapping[str, Any]) -> Household:
    """``{<HouseholdContract fields>, "group": "..."}`` as in the contracts file, or
    ``{"contract": {<HouseholdContract fields>}, "group": "..."}``; the group is optional."""
    fields = dict(body)
    group = fields.pop("group", None)
    if "contract" in fields:
        contract = fields.pop("contract")
        if fields:
            raise ApiError(400, f"Give the contract either inside 'contract' or at the top level, not both (also "
                                f"got {sorted(fields)[0]!r}).", field=sorted(fields)[0])
        if not isinstance(contract, dict):
            raise ApiError(400, "contract must be a JSON object with the HouseholdContract fields.", field="contract")
        fields = contract
    if group is not None and (not isinstance(group, str) or not group.strip()):
        raise ApiError(400, f"group must be a non-empty string, not {group!r}.", field="group")
    return Household(contract=_validate(HouseholdContract, fields, what="household contract"), group=group)


def split_targets(body: Mapping[str, Any]) -> tuple[list[str] | None, str | None, dict[str, Any]]:
    """(connection point ids, group, the rest of the body); exactly one of the first two is given."""
    rest = {key: value for key, value in body.items() if key not in TARGET_KEYS}
    ids, group = body.get("connection_point_ids"), body.get("group")
    if (ids is None) == (group is None):
        raise ApiError(400, "Name the households: give either connection_point_ids (a list of 18-digit EANs) or "
                            "group, " + ("not both." if ids is not None else "neither was given."),
                       field="connection_point_ids")
    if group is not None:
        if not isinstance(group, str) or not group.strip():
            raise ApiError(400, f"group must be a non-empty string, not {group!r}.", field="group")
        return None, group, rest
    if not isinstance(ids, list) or not ids:
        raise ApiError(400, "connection_point_ids must be a non-empty list of connection point ids.",
                       field="connection_point_ids")
    seen: set[str] = set()
    for index, value in enumerate(ids):
        if not isinstance(value, str):
            raise ApiError(400, f"connection_point_ids[{index}] must be a string, not {value!r}.",
                           field=f"connection_point_ids[{index}]")
        if value in seen:
            raise ApiError(400, f"connection_point_ids[{index}] repeats {value}.",
                           field=f"connection_point_ids[{index}]")
        seen.add(value)
    return list(ids), None, rest


def parse_payload(kind: SignalKind, body: Mapping[str, Any]) -> SignalPayload:
    """A CapacityBandwidth (``firmness``, ``intervals``) or a TouTariff (``intervals``)."""
    if kind is SignalKind.BANDWIDTH:
        return _validate(CapacityBandwidth, body, what="bandwidth")
    return _validate(TouTariff, body, what="tariff")


def check_not_over(payload: SignalPayload, now: datetime) -> None:
    if payload.end <= now:
        raise ApiError(400, f"The signal ends at {payload.end.isoformat()}, which is already past (now "
                            f"{now.isoformat()}); publish intervals that are still to come.", field="intervals")


def _fix_plus(value: str) -> str:
    # An unencoded '+' in a query string arrives as a space: '2030-01-01T00:00:00 01:00'.
    return re.sub(r" (\d{2}:?\d{2})$", r"+\1", value) if "T" in value else value


def parse_instant(query: Mapping[str, str], name: str) -> datetime | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    try:
        moment = datetime.fromisoformat(_fix_plus(value))
    except ValueError:
        raise ApiError(400, f"{name}={value!r} is not an ISO 8601 timestamp such as 2030-01-01T00:00:00+00:00.",
                       field=name) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ApiError(400, f"{name}={value!r} has no UTC offset; add one, e.g. {value}+00:00 or {value}Z.",
                       field=name)
    return moment.astimezone(UTC)


def require_query(query: Mapping[str, str], name: str) -> str:
    value = query.get(name)
    if not value:
        raise ApiError(400, f"The query parameter {name} is required.", field=name)
    return value


def parse_flag(query: Mapping[str, str], name: str) -> bool:
    value = query.get(name, "false").lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no", ""):
        return False
    raise ApiError(400, f"{name}={value!r} must be true or false.", field=name)


# ----------------------------------------------------------------------------------------------- rendering


def instant(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def signal_json(signal: Signal, now: datetime) -> dict[str, Any]:
    return {
        "event_id": signal.event_id,
        "connection_point_id": signal.connection_point_id,
        "publication_id": signal.publication_id,
        "kind": signal.kind.value,
        "modification_number": signal.modification_number,
        "status": signal.status_at(now).value,
        "cancelled": signal.cancelled,
        "created_at": instant(signal.created_at),
        "modified_at": instant(signal.modified_at),
        "start": instant(signal.start),
        "end": instant(signal.end),
        "payload": signal.payload.model_dump(mode="json"),
    }


def event_summary(signal: Signal, now: datetime) -> dict[str, Any]:
    return {"event_id": signal.event_id, "connection_point_id": signal.connection_point_id,
            "modification_number": signal.modification_number, "status": signal.status_at(now).value}


def publication_json(publication: Publication, now: datetime,
                     skipped: Sequence[IllegalSignalChange] = ()) -> dict[str, Any]:
    return {
        "publication_id": publication.publication_id,
        "events": [event_summary(signal, now) for signal in publication.signals],
        "skipped": [{"event_id": error.event_id, "reason": error.message} for error in skipped],
    }


def household_json(household: Household, ven: Ven | None, last_telemetry: datetime | None) -> dict[str, Any]:
    contract = household.contract.model_dump(mode="json")
    return {
        "connection_point_id": household.connection_point_id,
        "group": household.group,
        "contract": contract,
        "registered": ven is not None and ven.registration_id is not None,
        "ven_id": ven.ven_id if ven else None,
        "registered_at": instant(ven.registered_at) if ven else None,
        "last_seen_at": instant(ven.last_seen_at) if ven else None,
        "last_telemetry_interval_start": instant(last_telemetry),
    }


def response_json(stored: StoredResponse) -> dict[str, Any]:
    response = stored.response
    return {
        "ven_id": stored.ven_id,
        "connection_point_id": stored.connection_point_id,
        "event_id": response.event_id,
        "modification_number": response.modification_number,
        "opt_type": response.opt_type,
        "response_code": response.response_code,
        "response_description": response.response_description,
        "received_at": instant(stored.received_at),
    }


def telemetry_json(row: TelemetryRow) -> dict[str, Any]:
    return {"start": instant(row.interval_start), "import_kw": row.import_kw, "export_kw": row.export_kw,
            "net_import_kw": row.import_kw - row.export_kw, "received_at": instant(row.received_at)}


def plan_json(connection_point_id: str, stored: StoredPlan | None) -> dict[str, Any]:
    return {"connection_point_id": connection_point_id,
            "plan": stored.plan.model_dump(mode="json") if stored else None,
            "received_at": instant(stored.received_at) if stored else None}


def comfort_json(connection_point_id: str, stored: StoredComfort | None) -> dict[str, Any]:
    return {"connection_point_id": connection_point_id,
            "status": stored.status.model_dump(mode="json") if stored else None,
            "received_at": instant(stored.received_at) if stored else None}
