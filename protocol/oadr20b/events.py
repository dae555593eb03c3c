"""Capacity bandwidths and ToU tariffs as OpenADR 2.0b events (oadrEvent dicts as openleadr shapes them)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import ValidationError

from protocol.errors import OADR_INVALID_DATA, OADR_SIGNAL_NOT_SUPPORTED, ProfileError
from protocol.oadr20b import names
from protocol.signals import (
    BandwidthInterval,
    CapacityBandwidth,
    Firmness,
    TariffInterval,
    TouTariff,
)
from protocol.timebase import INTERVAL

_IntervalModel = TypeVar("_IntervalModel", BandwidthInterval, TariffInterval)

_PROGRAM_OF_FIRMNESS = {
    Firmness.FIRM: names.PROGRAM_CAPACITY_FIRM,
    Firmness.NON_FIRM: names.PROGRAM_CAPACITY_NON_FIRM,
}
_FIRMNESS_OF_PROGRAM = {program: firmness for firmness, program in _PROGRAM_OF_FIRMNESS.items()}


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


@dataclass(frozen=True)
class DecodedEvent:
    meta: EventMeta
    payload: CapacityBandwidth | TouTariff


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


def _get(mapping: Any, key: str, path: str) -> Any:
    if not isinstance(mapping, Mapping) or mapping.get(key) is None:
        raise ProfileError(f"{path}.{key}", "is missing")
    return mapping[key]


def _check_item_base(signal: Mapping[str, Any], path: str, expected: Mapping[str, Any]) -> None:
    item = signal.get("measurement")
    if not isinstance(item, Mapping):
        raise ProfileError(f"{path}.itemBase", f"is missing; the profile requires {expected['name']} "
                                               f"in {expected['scale']}{expected['unit']}")
    for key in ("name", "unit", "scale"):
        if item.get(key) != expected[key]:
            raise ProfileError(
                f"{path}.itemBase.{key}",
                f"is {item.get(key)!r}; the profile requires {expected[key]!r} "
                f"({expected['name']} in {'' if expected['scale'] == 'none' else expected['scale']}"
                f"{expected['unit']})",
            )


def _signal_values(signal: Mapping[str, Any], path: str, start: datetime, duration: timedelta) -> list[float]:
    intervals = _get(signal, "intervals", path)
    if not isinstance(intervals, list) or not intervals:
        raise ProfileError(f"{path}.intervals", "must hold at least one interval")
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


def _signals_by_name(event: Mapping[str, Any], wanted: dict[str, str]) -> dict[str, Mapping[str, Any]]:
    signals = _get(event, "event_signals", "event")
    if not isinstance(signals, list) or not all(isinstance(signal, Mapping) for signal in signals):
        raise ProfileError("event.eventSignals", "must be a list of eventSignal objects")
    found: dict[str, Mapping[str, Any]] = {}
    for index, signal in enumerate(signals):
        name = signal.get("signal_name")
        if name not in wanted:
            raise ProfileError(f"event.eventSignals[{index}].signalName",
                               f"{name!r} is not part of this program; expected {sorted(wanted)}",
                               response_code=OADR_SIGNAL_NOT_SUPPORTED)
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


# (signal name, signal type, itemBase) of the import and the export column of each kind of event.
_LIMIT_SIGNALS = (
    (names.SIGNAL_IMPORT_LIMIT, names.SIGNAL_TYPE_LIMIT, names.ITEM_POWER_KW),
    (names.SIGNAL_EXPORT_LIMIT, names.SIGNAL_TYPE_LIMIT, names.ITEM_POWER_KW),
)
_PRICE_SIGNALS = (
    (names.SIGNAL_IMPORT_PRICE, names.SIGNAL_TYPE_PRICE, names.ITEM_PRICE_EUR_PER_KWH),
    (names.SIGNAL_EXPORT_PRICE, names.SIGNAL_TYPE_PRICE, names.ITEM_PRICE_EUR_PER_KWH),
)


def _columns(
    event: Mapping[str, Any], wanted: tuple[tuple[str, str, Mapping[str, Any]], ...], start: datetime,
    duration: timedelta,
) -> list[list[float]]:
    signals = _signals_by_name(event, {name: signal_type for name, signal_type, _ in wanted})
    columns = []
    for name, _, item in wanted:
        path = f"event.eventSignals[{name}]"
        _check_item_base(signals[name], path, item)
        columns.append(_signal_values(signals[name], path, start, duration))
    return columns


def _intervals(model: type[_IntervalModel], start: datetime, import_field: str, imports: list[float],
               export_field: str, exports: list[float]) -> list[_IntervalModel]:
    intervals = []
    for index, (imported, exported) in enumerate(zip(imports, exports, strict=True)):
        try:
            intervals.append(model(**{"start": start + index * INTERVAL, import_field: imported,
                                      export_field: exported}))
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            raise ProfileError(f"event.intervals[{index}].{field}", first["msg"].removeprefix("Value error, "),
                               response_code=OADR_INVALID_DATA) from None
    return intervals


_Series = TypeVar("_Series", CapacityBandwidth, TouTariff)


def _series(model: type[_Series], **fields: Any) -> _Series:
    """Build the whole series; a rule of the series (e.g. at most 672 intervals) becomes a ProfileError."""
    try:
        return model(**fields)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "intervals"
        raise ProfileError(f"event.{field}", first["msg"].removeprefix("Value error, "),
                           response_code=OADR_INVALID_DATA) from None


def decode_event(event: Mapping[str, Any]) -> DecodedEvent:
    """Turn a parsed oadrEvent into a profile model, or raise ProfileError naming the field and the rule."""
    descriptor = _get(event, "event_descriptor", "event")
    event_id = _get(descriptor, "event_id", "event.eventDescriptor")
    modification_number = _get(descriptor, "modification_number", "event.eventDescriptor")
    if isinstance(modification_number, bool) or not isinstance(modification_number, int) or modification_number < 0:
        raise ProfileError("event.eventDescriptor.modificationNumber",
                           f"is {modification_number!r}; it must be an integer >= 0")
    try:
        status = EventStatus(_get(descriptor, "event_status", "event.eventDescriptor"))
    except ValueError as error:
        raise ProfileError("event.eventDescriptor.eventStatus", str(error)) from None
    created_at = _get(descriptor, "created_date_time", "event.eventDescriptor")
    program = descriptor.get("market_context")
    period = _get(event, "active_period", "event")
    start = _get(period, "dtstart", "event.activePeriod")
    duration = _get(period, "duration", "event.activePeriod")
    if not isinstance(start, datetime) or start.tzinfo is None:
        raise ProfileError("event.activePeriod.dtstart", f"is {start!r}; a UTC timestamp is required")

    if program in _FIRMNESS_OF_PROGRAM:
        imports, exports = _columns(event, _LIMIT_SIGNALS, start, duration)
        intervals = _intervals(BandwidthInterval, start, "import_limit_kw", imports, "export_limit_kw", exports)
        payload: CapacityBandwidth | TouTariff = _series(
            CapacityBandwidth, firmness=_FIRMNESS_OF_PROGRAM[program], intervals=tuple(intervals))
    elif program == names.PROGRAM_TOU_TARIFF:
        imports, exports = _columns(event, _PRICE_SIGNALS, start, duration)
        intervals = _intervals(TariffInterval, start, "import_price_eur_per_kwh", imports,
                               "export_price_eur_per_kwh", exports)
        payload = _series(TouTariff, intervals=tuple(intervals))
    else:
        raise ProfileError(
            "event.eventDescriptor.marketContext",
            f"{program!r} is not a program of this profile; expected one of "
            f"{sorted([*_FIRMNESS_OF_PROGRAM, names.PROGRAM_TOU_TARIFF])}",
            response_code=OADR_SIGNAL_NOT_SUPPORTED,
        )
    meta = EventMeta(
        event_id=str(event_id),
        modification_number=modification_number,
        status=status,
        created_at=created_at,
        test_event=bool(descriptor.get("test_event", False)),
    )
    return DecodedEvent(meta=meta, payload=payload)
