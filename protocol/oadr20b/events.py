"""Capacity bandwidths and ToU tariffs as OpenADR 2.0b events (oadrEvent dicts as openleadr shapes them)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import ValidationError

from protocol.errors import OADR_INVALID_DATA, OADR_SIGNAL_NOT_SUPPORTED, OADR_TARGET_MISMATCH, ProfileError
from protocol.oadr20b import names
from protocol.signals import (
    BandwidthInterval,
    CapacityBandwidth,
    Firmness,
    TariffInterval,
    TouTariff,
)
from protocol.timebase import INTERVAL
from protocol.version import PROFILE_MAJOR

_IntervalModel = TypeVar("_IntervalModel", BandwidthInterval, TariffInterval)

_PROGRAM_OF_FIRMNESS = {
    Firmness.FIRM: names.PROGRAM_CAPACITY_FIRM,
    Firmness.NON_FIRM: names.PROGRAM_CAPACITY_NON_FIRM,
}
_PROGRAM_NAMES = {names.PROGRAM_NAME_CAPACITY_FIRM: Firmness.FIRM,
                  names.PROGRAM_NAME_CAPACITY_NON_FIRM: Firmness.NON_FIRM, names.PROGRAM_NAME_TOU_TARIFF: None}
"""Program name (without prefix and version) -> the firmness of its bandwidths (None: the tariff)."""


class EventStatus(StrEnum):
    NONE = "none"
    FAR = "far"
    NEAR = "near"
    ACTIVE = "active"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class EventMeta:
    """What the transport adds to a signal: identity, version and state."""

    event_id: str
    modification_number: int
    status: EventStatus
    created_at: datetime
    test_event: bool = False
    modified_at: datetime | None = None
    """modificationDateTime: decides between overlapping tariffs (PROFILE.md §5.3.1)."""


@dataclass(frozen=True)
class DecodedEvent:
    meta: EventMeta
    payload: CapacityBandwidth | TouTariff


@dataclass(frozen=True)
class Cancellation:
    """A cancellation whose eventID and modificationNumber could be read (PROFILE.md §5.5 row 2): valid whatever
    else it holds."""

    event_id: str
    modification_number: int


def event_status_at(start: datetime, end: datetime, now: datetime, *, cancelled: bool = False) -> EventStatus:
    """The 2.0b eventStatus of an event over [start, end) seen at ``now``."""
    if cancelled:
        return EventStatus.CANCELLED
    if now < start:
        return EventStatus.FAR
    if now < end:
        return EventStatus.ACTIVE
    return EventStatus.COMPLETED


def _signal(
    *, name: str, signal_type: str, signal_id: str, item: Mapping[str, Any], start: datetime,
    values: Sequence[float], now: datetime, active: bool,
) -> dict[str, Any]:
    intervals = [
        {"dtstart": start + index * INTERVAL, "duration": INTERVAL, "uid": index, "signal_payload": value}
        for index, value in enumerate(values)
    ]
    # 2.0b conformance rule 14: currentValue is 0 unless the event is active (a cancelled event is not).
    current = 0.0
    if active:
        current = float(values[int((now - start) / INTERVAL)])
    return {
        "signal_name": name,
        "signal_type": signal_type,
        "signal_id": signal_id,
        "measurement": dict(item),
        "current_value": current,
        "intervals": intervals,
    }


def encode_event(
    payload: CapacityBandwidth | TouTariff,
    *,
    event_id: str,
    modification_number: int,
    ven_id: str,
    created_at: datetime,
    modified_at: datetime,
    now: datetime,
    cancelled: bool = False,
) -> dict[str, Any]:
    """The oadrEvent dict openleadr's ``create_message('oadrDistributeEvent', events=[...])`` renders."""
    if modification_number < 0:
        raise ValueError(f"modification_number must be >= 0, not {modification_number}")
    start, end = payload.start, payload.end
    status = event_status_at(start, end, now, cancelled=cancelled)
    active = status is EventStatus.ACTIVE
    if isinstance(payload, CapacityBandwidth):
        program = _PROGRAM_OF_FIRMNESS[payload.firmness]
        signals = [
            _signal(name=names.SIGNAL_IMPORT_LIMIT, signal_type=names.SIGNAL_TYPE_LIMIT,
                    signal_id=names.SIGNAL_ID_IMPORT_LIMIT, item=names.ITEM_POWER_KW, start=start,
                    values=[i.import_limit_kw for i in payload.intervals], now=now, active=active),
            _signal(name=names.SIGNAL_EXPORT_LIMIT, signal_type=names.SIGNAL_TYPE_LIMIT,
                    signal_id=names.SIGNAL_ID_EXPORT_LIMIT, item=names.ITEM_POWER_KW, start=start,
                    values=[i.export_limit_kw for i in payload.intervals], now=now, active=active),
        ]
    else:
        program = names.PROGRAM_TOU_TARIFF
        signals = [
            _signal(name=names.SIGNAL_IMPORT_PRICE, signal_type=names.SIGNAL_TYPE_PRICE,
                    signal_id=names.SIGNAL_ID_IMPORT_PRICE, item=names.ITEM_PRICE_EUR_PER_KWH, start=start,
                    values=[i.import_price_eur_per_kwh for i in payload.intervals], now=now,
                    active=active),
            _signal(name=names.SIGNAL_EXPORT_PRICE, signal_type=names.SIGNAL_TYPE_PRICE,
                    signal_id=names.SIGNAL_ID_EXPORT_PRICE, item=names.ITEM_PRICE_EUR_PER_KWH, start=start,
                    values=[i.export_price_eur_per_kwh for i in payload.intervals], now=now,
                    active=active),
        ]
    return {
        "event_descriptor": {
            "event_id": event_id,
            "modification_number": modification_number,
            "modification_date_time": modified_at,
            "priority": 0,
            "market_context": program,
            "created_date_time": created_at,
            "event_status": status.value,
            "test_event": False,
        },
        "active_period": {"dtstart": start, "duration": end - start},
        "event_signals": signals,
        "targets": [{"ven_id": ven_id}],
        "response_required": "always",
    }


# ---------------------------------------------------------------------------------------------- decoding
#
# PROFILE.md §5.5: the rows are checked in the table's order and the first that matches decides the answer;
# ProfileError.field is the path of §5.5 (2.0b element names, signals by signalName, intervals by position).


def _get(mapping: Any, key: str, path: str, name: str) -> Any:
    if not isinstance(mapping, Mapping) or mapping.get(key) is None:
        raise ProfileError(f"{path}.{name}", "is missing")
    return mapping[key]


def _identity(event: Mapping[str, Any]) -> tuple[Mapping[str, Any], str, int]:
    """Row 1: the descriptor, the eventID and a modificationNumber >= 0."""
    if not isinstance(event, Mapping):
        raise ProfileError("event", "is not an oadrEvent")
    descriptor = _get(event, "event_descriptor", "event", "eventDescriptor")
    event_id = _get(descriptor, "event_id", "event.eventDescriptor", "eventID")
    modification_number = _get(descriptor, "modification_number", "event.eventDescriptor", "modificationNumber")
    if isinstance(modification_number, bool) or not isinstance(modification_number, int) or modification_number < 0:
        raise ProfileError("event.eventDescriptor.modificationNumber",
                           f"is {modification_number!r}; it must be an integer >= 0")
    _get(descriptor, "created_date_time", "event.eventDescriptor", "createdDateTime")
    return descriptor, str(event_id), modification_number


def _program(market_context: Any) -> Firmness | None:
    """Row 5: the firmness of a known program of this major version (None for the tariff), else ProfileError 460."""
    expected = ", ".join(f"{names.PROGRAM_PREFIX}{name}:{PROFILE_MAJOR}.x" for name in _PROGRAM_NAMES)
    text = str(market_context) if market_context is not None else ""
    if text.startswith(names.PROGRAM_PREFIX):
        name, _, version = text[len(names.PROGRAM_PREFIX):].rpartition(":")
        major, _, minor = version.partition(".")
        if name in _PROGRAM_NAMES and major.isdigit() and minor.isdigit():
            if int(major) == PROFILE_MAJOR:
                return _PROGRAM_NAMES[name]
            raise ProfileError("event.eventDescriptor.marketContext",
                               f"{text!r} is version {version} of the profile; this HEMS implements "
                               f"{PROFILE_MAJOR}.x", response_code=OADR_SIGNAL_NOT_SUPPORTED)
    raise ProfileError("event.eventDescriptor.marketContext",
                       f"{market_context!r} is not a program of this profile; expected one of {expected}",
                       response_code=OADR_SIGNAL_NOT_SUPPORTED)


def _targets(event: Mapping[str, Any], ven_id: str | None) -> None:
    """Row 4: an eiTarget naming venIDs must name this VEN's."""
    if ven_id is None:
        return
    targets = event.get("targets") or []
    named = [str(t.get("ven_id")) for t in targets if isinstance(t, Mapping) and t.get("ven_id") is not None]
    if named and ven_id not in named:
        raise ProfileError("event.eiTarget.venID", f"names {named}, not this VEN ({ven_id!r})",
                           response_code=OADR_TARGET_MISMATCH)


def _signals_by_name(event: Mapping[str, Any], wanted: dict[str, str]) -> dict[str, Mapping[str, Any]]:
    """Rows 6 and 7."""
    signals = _get(event, "event_signals", "event", "eventSignals")
    if not isinstance(signals, list) or not all(isinstance(signal, Mapping) for signal in signals):
        raise ProfileError("event.eventSignals", "must be a list of eventSignal objects")
    for index, signal in enumerate(signals):
        name = signal.get("signal_name")
        if name not in wanted:
            raise ProfileError(f"event.eventSignals[{index}].signalName",
                               f"{name!r} is not part of this program; expected {sorted(wanted)}",
                               response_code=OADR_SIGNAL_NOT_SUPPORTED)
    found: dict[str, Mapping[str, Any]] = {}
    for index, signal in enumerate(signals):
        name = signal["signal_name"]
        if name in found:
            raise ProfileError(f"event.eventSignals[{index}].signalName", f"{name!r} appears twice")
        if signal.get("signal_type") != wanted[name]:
            raise ProfileError(f"event.eventSignals[{index}].signalType",
                               f"is {signal.get('signal_type')!r}; {name} requires {wanted[name]!r}")
        found[name] = signal
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise ProfileError("event.eventSignals", f"lacks {missing}")
    return found


def _period(event: Mapping[str, Any]) -> tuple[datetime, timedelta]:
    """Row 8: a UTC dtstart (openleadr reads only timestamps with Z) and a duration."""
    period = _get(event, "active_period", "event", "activePeriod")
    start = _get(period, "dtstart", "event.activePeriod", "dtstart")
    duration = _get(period, "duration", "event.activePeriod", "duration")
    if not isinstance(start, datetime) or start.tzinfo is None or start.utcoffset() != timedelta(0):
        raise ProfileError("event.activePeriod.dtstart", f"is {start!r}; a UTC timestamp ending in Z is required")
    if not isinstance(duration, timedelta):
        raise ProfileError("event.activePeriod.duration", f"is {duration!r}; an ISO 8601 duration is required")
    return start, duration


_ITEM_BASE_FIELDS = (("name", "itemBase"), ("unit", "itemBase.itemUnits"), ("scale", "itemBase.siScaleCode"))


def _check_item_base(signal: Mapping[str, Any], path: str, expected: Mapping[str, Any]) -> None:
    """Row 9."""
    item = signal.get("measurement")
    what = f"{expected['name']} in {'' if expected['scale'] == 'none' else expected['scale']}{expected['unit']}"
    if not isinstance(item, Mapping):
        raise ProfileError(f"{path}.itemBase", f"is missing; the profile requires {what}")
    for key, field in _ITEM_BASE_FIELDS:
        if item.get(key) != expected[key]:
            raise ProfileError(f"{path}.{field}", f"is {item.get(key)!r}; the profile requires {expected[key]!r} "
                                                  f"({what})")


def _signal_values(signal: Mapping[str, Any], path: str, start: datetime, duration: timedelta) -> list[float]:
    """Rows 10 to 14."""
    intervals = signal.get("intervals")
    if not isinstance(intervals, list) or not intervals:
        raise ProfileError(f"{path}.intervals", "holds no interval; at least one is required")
    values: list[float] = []
    moment = start
    for index, interval in enumerate(intervals):
        where = f"{path}.intervals[{index}]"
        if not isinstance(interval, Mapping):
            raise ProfileError(where, "must be an interval object")
        uid = interval.get("uid")
        if uid is None or str(uid) != str(index):
            raise ProfileError(f"{where}.uid", f"is {uid!r}; interval uids must be 0, 1, 2, ... in order")
        if interval.get("duration") != INTERVAL:
            raise ProfileError(f"{where}.duration", f"is {interval.get('duration')}; the profile uses PT15M")
        dtstart = interval.get("dtstart")
        if dtstart is not None and dtstart != moment:
            raise ProfileError(f"{where}.dtstart", f"is {dtstart}; expected {moment.isoformat()} "
                                                   "(contiguous intervals from the active period's start)")
        value = interval.get("signal_payload")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ProfileError(f"{where}.signalPayload", f"is {value!r}; a finite number is required")
        values.append(float(value))
        moment += INTERVAL
    if moment - start != duration:
        raise ProfileError(f"{path}.intervals", f"durations add up to {moment - start}, but the active period "
                                                f"lasts {duration}; they must be equal")
    return values


# (signal name, signal type, itemBase, model field) of the import and the export column of each kind of event.
_LIMIT_SIGNALS = (
    (names.SIGNAL_IMPORT_LIMIT, names.SIGNAL_TYPE_LIMIT, names.ITEM_POWER_KW, "import_limit_kw"),
    (names.SIGNAL_EXPORT_LIMIT, names.SIGNAL_TYPE_LIMIT, names.ITEM_POWER_KW, "export_limit_kw"),
)
_PRICE_SIGNALS = (
    (names.SIGNAL_IMPORT_PRICE, names.SIGNAL_TYPE_PRICE, names.ITEM_PRICE_EUR_PER_KWH, "import_price_eur_per_kwh"),
    (names.SIGNAL_EXPORT_PRICE, names.SIGNAL_TYPE_PRICE, names.ITEM_PRICE_EUR_PER_KWH, "export_price_eur_per_kwh"),
)


def _columns(event: Mapping[str, Any], wanted: tuple[tuple[str, str, Mapping[str, Any], str], ...],
             ) -> tuple[datetime, list[list[float]]]:
    signals = _signals_by_name(event, {name: signal_type for name, signal_type, _, _ in wanted})
    start, duration = _period(event)
    for name, _, item, _ in wanted:
        _check_item_base(signals[name], f"event.eventSignals[{name}]", item)
    return start, [_signal_values(signals[name], f"event.eventSignals[{name}]", start, duration)
                   for name, _, _, _ in wanted]


def _model_path(loc: Sequence[Any], wanted: tuple[tuple[str, str, Mapping[str, Any], str], ...],
                index: int | None = None) -> str:
    """The §5.5 path of a model field: a value is its signal's signalPayload, a start the active period's."""
    field = str(loc[0]) if loc else "intervals"
    for name, _, _, model_field in wanted:
        if field == model_field:
            return f"event.eventSignals[{name}].intervals[{index}].signalPayload"
    if field == "start":
        return "event.activePeriod.dtstart"
    return f"event.eventSignals[{wanted[0][0]}].intervals"


def _intervals(model: type[_IntervalModel], start: datetime, columns: list[list[float]],
               wanted: tuple[tuple[str, str, Mapping[str, Any], str], ...]) -> list[_IntervalModel]:
    """Rows 15 and 16."""
    intervals = []
    for index, values in enumerate(zip(*columns, strict=True)):
        fields = {field: value for (_, _, _, field), value in zip(wanted, values, strict=True)}
        try:
            intervals.append(model(start=start + index * INTERVAL, **fields))
        except ValidationError as error:
            first = error.errors()[0]
            raise ProfileError(_model_path(first["loc"], wanted, index), first["msg"].removeprefix("Value error, "),
                               response_code=OADR_INVALID_DATA) from None
    return intervals


_Series = TypeVar("_Series", CapacityBandwidth, TouTariff)


def _series(model: type[_Series], wanted: tuple[tuple[str, str, Mapping[str, Any], str], ...],
            **fields: Any) -> _Series:
    """Row 17: the whole series (e.g. at most 672 intervals)."""
    try:
        return model(**fields)
    except ValidationError as error:
        first = error.errors()[0]
        raise ProfileError(_model_path(first["loc"][:0], wanted), first["msg"].removeprefix("Value error, "),
                           response_code=OADR_INVALID_DATA) from None


def read_event(event: Mapping[str, Any], *, ven_id: str | None = None) -> DecodedEvent | Cancellation:
    """PROFILE.md §5.5 in its order: a cancellation whose id and version can be read is valid whatever else it
    holds (row 2); anything else is decoded by ``decode_event``. Raises ProfileError naming the path, the reason and
    the responseCode of the first row that matches."""
    descriptor, event_id, modification_number = _identity(event)
    if descriptor.get("event_status") == EventStatus.CANCELLED.value:
        return Cancellation(event_id, modification_number)
    return decode_event(event, ven_id=ven_id)


def decode_event(event: Mapping[str, Any], *, ven_id: str | None = None) -> DecodedEvent:
    """Turn a parsed oadrEvent into a profile model, or raise ProfileError naming the path of the field (PROFILE.md
    §5.5), the reason and the responseCode. ``ven_id``: this VEN's, to check the eiTarget (row 4)."""
    descriptor, event_id, modification_number = _identity(event)
    try:
        status = EventStatus(descriptor.get("event_status"))
    except ValueError:
        raise ProfileError("event.eventDescriptor.eventStatus",
                           f"is {descriptor.get('event_status')!r}; 2.0b defines "
                           f"{', '.join(s.value for s in EventStatus)}") from None
    _targets(event, ven_id)
    firmness = _program(descriptor.get("market_context"))
    if firmness is not None:
        start, columns = _columns(event, _LIMIT_SIGNALS)
        intervals = _intervals(BandwidthInterval, start, columns, _LIMIT_SIGNALS)
        payload: CapacityBandwidth | TouTariff = _series(CapacityBandwidth, _LIMIT_SIGNALS, firmness=firmness,
                                                          intervals=tuple(intervals))
    else:
        start, columns = _columns(event, _PRICE_SIGNALS)
        tariff_intervals = _intervals(TariffInterval, start, columns, _PRICE_SIGNALS)
        payload = _series(TouTariff, _PRICE_SIGNALS, intervals=tuple(tariff_intervals))
    modified_at = descriptor.get("modification_date_time")
    meta = EventMeta(
        event_id=event_id,
        modification_number=modification_number,
        status=status,
        created_at=descriptor["created_date_time"],
        test_event=bool(descriptor.get("test_event", False)),
        modified_at=modified_at if isinstance(modified_at, datetime) else None,
    )
    return DecodedEvent(meta=meta, payload=payload)
