"""Codecs between the profile's models and openleadr's OpenADR 2.0b message dicts.

openleadr's ``create_message`` accepts, and ``parse_message`` returns, plain dicts; working on those keeps
this package free of openleadr's (aiohttp-importing) package and of any I/O.
"""

from protocol.oadr20b.events import (
    Cancellation,
    DecodedEvent,
    EventMeta,
    EventStatus,
    decode_event,
    encode_event,
    event_status_at,
    read_event,
)
from protocol.oadr20b.names import (
    PROGRAM_CAPACITY_FIRM,
    PROGRAM_CAPACITY_NON_FIRM,
    PROGRAM_TOU_TARIFF,
)
from protocol.oadr20b.performance import (
    decode_need_report,
    decode_performance_report,
    encode_need_report,
    encode_performance_report,
)
from protocol.oadr20b.reports import (
    DEFAULT_OFFER,
    decode_report,
    encode_comfort_report,
    encode_plan_report,
    encode_telemetry_report,
    hems_report_metadata,
    offered_specifiers,
    report_requests_for,
)

__all__ = [
    "DEFAULT_OFFER",
    "PROGRAM_CAPACITY_FIRM",
    "PROGRAM_CAPACITY_NON_FIRM",
    "PROGRAM_TOU_TARIFF",
    "Cancellation",
    "DecodedEvent",
    "EventMeta",
    "EventStatus",
    "decode_event",
    "decode_need_report",
    "decode_performance_report",
    "decode_report",
    "encode_comfort_report",
    "encode_event",
    "encode_need_report",
    "encode_performance_report",
    "encode_plan_report",
    "encode_telemetry_report",
    "event_status_at",
    "hems_report_metadata",
    "offered_specifiers",
    "read_event",
    "report_requests_for",
]
