"""The operator API's wire format: request bodies and queries in, JSON out. Pure: no I/O, no clock.

Bodies use the protocol models' field names; timestamps are ISO 8601 with a UTC offset. Every problem is an
``ApiError`` carrying the HTTP status, one sentence a person can act on, the field at fault and, for model
validation, every problem found (``detail``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from dso_server.api.models import HouseholdFlat, HouseholdNested
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
from dso_server.security.audit import AuditEntry
from dso_server.store.grid_store import AllocationRun
from protocol import CapacityBandwidth, HouseholdContract, TouTariff

MAX_DEPTH = 32
"""The deepest nesting of arrays and objects a request body may have (the deepest valid body has 4)."""
NUL = "\x00"
_NUL_REASON = "which no identifier or text of this API may hold"
"""U+0000 is refused at the door, in bodies, paths and queries alike: PostgreSQL's text cannot store it (SQLite's
can), so letting it through made the same request a 500 on one backend and stored text on the other."""
_LEADING_FIELD = re.compile(r"^(intervals\[\d+\])")
_NAMED_FIELD = re.compile(r"^(?P<field>[a-z_]+(\[\d+\])?): (?P<message>.+)$", re.DOTALL)
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
        # A model-level rule names its field first: "intervals[1] starts ..." or "until: until must be ...".
        named = _NAMED_FIELD.match(message)
        leading = _LEADING_FIELD.match(message)
        if named:
            field, message = named.group("field"), named.group("message")
        else:
            field = leading.group(1) if leading else "body"
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


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest (iteratively: a hostile document cannot exhaust the stack here)."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        node, level = pending.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, level)
            if level <= MAX_DEPTH:
                pending.extend((child, level + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def _shown(name: str) -> str:
    """A key or parameter name as an error may print it: its NULs written ``\\u0000``."""
    return name.replace(NUL, "\\u0000")


def _nul_at(document: Any) -> str | None:
    """Where the first string holding U+0000 sits (a key or a value), or None. Iterative, after the depth check."""
    pending: list[tuple[Any, str]] = [(document, "")]
    while pending:
        node, path = pending.pop()
        if isinstance(node, str):
            if NUL in node:
                return path or "body"
        elif isinstance(node, dict):
            for key, child in node.items():
                named = f"{path}.{_shown(key)}" if path else _shown(key)
                pending.extend([(key, named), (child, named)])
        elif isinstance(node, list):
            pending.extend((child, f"{path}[{index}]") for index, child in enumerate(node))
    return None


def check_no_nul(path: str, query: Mapping[str, str]) -> None:
    """Refuse U+0000 in the path or a query parameter (name or value) with a 400 naming it."""
    if NUL in path:
        raise ApiError(400, f"The path holds the character U+0000 (NUL), {_NUL_REASON}.", field="path")
    for key, value in query.items():
        if NUL in key or NUL in value:
            raise ApiError(400, f"The query parameter {_shown(key)} holds the character U+0000 (NUL), "
                                f"{_NUL_REASON}.", field=_shown(key))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def decode_body(raw: bytes, content_type: str, charset: str | None) -> str:
    """The body as JSON text, after the checks no model can make: media type, encoding, syntax, nesting, an
    object at the top. Raises ApiError (415 for another media type, 400 otherwise)."""
    if content_type != "application/json":
        shown = content_type or "none"
        raise ApiError(415, f"The request body must be JSON sent with Content-Type: application/json, not {shown}.",
                       field="Content-Type")
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise ApiError(415, f"The request body must be UTF-8, not charset={charset}.", field="Content-Type")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ApiError(400, f"The request body is not UTF-8 (byte {error.start}).", field="body") from None
    try:
        document = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as error:
        raise ApiError(400, f"The request body is not valid JSON: {error.msg} at line {error.lineno} column "
                            f"{error.colno}.", field="body") from None
    except RecursionError:
        raise ApiError(400, f"The request body nests arrays or objects deeper than {MAX_DEPTH} levels.",
                       field="body") from None
    except ValueError as error:  # NaN/Infinity, or an integer longer than Python converts
        raise ApiError(400, f"The request body is not valid JSON: {error}.", field="body") from None
    if _depth(document) > MAX_DEPTH:
        raise ApiError(400, f"The request body nests arrays or objects deeper than {MAX_DEPTH} levels.",
                       field="body")
    if not isinstance(document, dict):
        raise ApiError(400, f"The request body must be a JSON object, not {_json_type(document)}.", field="body")
    nul_at = _nul_at(document)
    if nul_at is not None:
        raise ApiError(400, f"The request body holds the character U+0000 (NUL) at {nul_at}, {_NUL_REASON}.",
                       field=nul_at)
    return text


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), "null")


def validate(model: type[_Model], text: str, *, what: str) -> _Model:
    """Validate JSON text strictly: numbers must be numbers, timestamps ISO 8601 strings, no unknown fields."""
    try:
        return model.model_validate_json(text, strict=True)
    except ValidationError as error:
        raise invalid(error, what=what) from None


def validate_query(model: type[_Model], query: Mapping[str, str], keys: Sequence[str]) -> _Model:
    """A route's query parameters; a repeated or unknown one is refused like a bad value."""
    repeated = sorted({key for key in keys if list(keys).count(key) > 1})
    if repeated:
        raise ApiError(400, f"The query parameter {repeated[0]} is given more than once.", field=repeated[0])
    try:
        return model.model_validate(dict(query))
    except ValidationError as error:
        problem = _problem(error.errors()[0])
        if problem["type"] == "extra_forbidden":
            allowed = ", ".join(model.model_fields) or "none"
            message = f"{problem['field']} is not a query parameter of this endpoint (it takes: {allowed})."
        elif problem["type"] == "missing":
            message = f"The query parameter {problem['field']} is required."
        else:
            message = f"{problem['field']}={query.get(problem['field'], '')!r}: {problem['message']}."
        raise ApiError(400, message, field=problem["field"]) from None


def household_of(text: str) -> Household:
    """``{<HouseholdContract fields>, "group": "..."}`` as in the contracts file, or
    ``{"contract": {<HouseholdContract fields>}, "group": "..."}``; the group is optional."""
    if "contract" in json.loads(text):
        nested = validate(HouseholdNested, text, what="household contract")
        return Household(contract=nested.contract, group=nested.group)
    flat = validate(HouseholdFlat, text, what="household contract")
    contract = HouseholdContract.model_validate(flat.model_dump(exclude={"group"}))
    return Household(contract=contract, group=flat.group)


def change_of(kind: SignalKind, text: str) -> SignalPayload:
    """The body of a modification: a CapacityBandwidth or a TouTariff, as the event's kind says."""
    if kind is SignalKind.BANDWIDTH:
        return validate(CapacityBandwidth, text, what="bandwidth")
    return validate(TouTariff, text, what="tariff")


def check_not_over(payload: SignalPayload, now: datetime) -> None:
    if payload.end <= now:
        raise ApiError(400, f"The signal ends at {payload.end.isoformat()}, which is already past (now "
                            f"{now.isoformat()}); publish intervals that are still to come.", field="intervals")


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


def run_json(run: AllocationRun) -> dict[str, Any]:
    return {"run_id": run.run_id, "kind": run.kind, "day": run.day, "window_start": instant(run.window_start),
            "window_end": instant(run.window_end), "publication_id": run.publication_id, "run_at": instant(run.run_at),
            "status": run.status, "error": run.error, "worker": run.worker, "summary": dict(run.summary)}


def audit_json(entry: AuditEntry) -> dict[str, Any]:
    return {"id": entry.entry_id, "at": instant(entry.at), "actor": entry.actor, "action": entry.action,
            "target": entry.target, "outcome": entry.outcome, "detail": dict(entry.detail)}
