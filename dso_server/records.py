"""What the store holds, as typed, frozen records (the store's rows decoded into profile models)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from protocol import CapacityBandwidth, ComfortStatus, HouseholdContract, Plan, TouTariff
from protocol.oadr20b import EventStatus, event_status_at


class SignalKind(StrEnum):
    BANDWIDTH = "bandwidth"
    TARIFF = "tariff"


SignalPayload = CapacityBandwidth | TouTariff


def kind_of(payload: SignalPayload) -> SignalKind:
    return SignalKind.BANDWIDTH if isinstance(payload, CapacityBandwidth) else SignalKind.TARIFF


@dataclass(frozen=True)
class Household:
    contract: HouseholdContract
    group: str | None

    @property
    def connection_point_id(self) -> str:
        return self.contract.connection_point_id


@dataclass(frozen=True)
class Ven:
    ven_id: str
    ven_name: str
    registration_id: str | None
    """None after the VEN cancelled its registration: the VTN then asks it to re-register."""
    connection_point_id: str
    registered_at: datetime
    last_seen_at: datetime | None
    fingerprint: str | None = None


@dataclass(frozen=True)
class Signal:
    """One published event: a bandwidth or a tariff for one connection point, with its 2.0b version."""

    event_id: str
    connection_point_id: str
    payload: SignalPayload
    modification_number: int
    created_at: datetime
    modified_at: datetime
    cancelled: bool
    publication_id: str

    @property
    def kind(self) -> SignalKind:
        return kind_of(self.payload)

    @property
    def start(self) -> datetime:
        return self.payload.start

    @property
    def end(self) -> datetime:
        return self.payload.end

    def status_at(self, now: datetime) -> EventStatus:
        return event_status_at(self.start, self.end, now, cancelled=self.cancelled)

    def ended_at(self, now: datetime) -> bool:
        return now >= self.end


@dataclass(frozen=True)
class SignalHead:
    """An event without what it says: all the VTN needs to decide what a VEN is owed (``dso_server.lifecycle``).
    The VTN keeps these for every VEN in memory; a 96-interval payload decoded would take some 55 KB each."""

    event_id: str
    connection_point_id: str
    modification_number: int
    cancelled: bool
    start: datetime
    end: datetime

    def status_at(self, now: datetime) -> EventStatus:
        return event_status_at(self.start, self.end, now, cancelled=self.cancelled)

    def ended_at(self, now: datetime) -> bool:
        return now >= self.end


@dataclass(frozen=True)
class Publication:
    """The events one publish created (one per connection point), found again by ``publication_id``."""

    publication_id: str
    signals: tuple[Signal, ...]


@dataclass(frozen=True)
class EventResponse:
    """One eventResponse of an oadrCreatedEvent, as the VEN sent it."""

    event_id: str
    modification_number: int | None
    opt_type: str
    response_code: int | None
    response_description: str | None


@dataclass(frozen=True)
class StoredResponse:
    ven_id: str
    connection_point_id: str
    response: EventResponse
    received_at: datetime


@dataclass(frozen=True)
class TelemetryRow:
    connection_point_id: str
    interval_start: datetime
    import_kw: float
    export_kw: float
    received_at: datetime


@dataclass(frozen=True)
class StoredPlan:
    connection_point_id: str
    plan: Plan
    received_at: datetime


@dataclass(frozen=True)
class StoredComfort:
    connection_point_id: str
    status: ComfortStatus
    received_at: datetime


@dataclass(frozen=True)
class VenView:
    """What the VTN needs of one VEN to answer it: its registration, its household's events that have not ended
    (in the store's order), the (event id, modification number) pairs it acknowledged of those, and what was last
    delivered to it (None: nothing since it registered)."""

    ven: Ven
    signals: tuple[SignalHead, ...]
    acknowledged: frozenset[tuple[str, int]]
    delivered: frozenset[tuple[str, int, str]] | None


@dataclass(frozen=True)
class ReportRequest:
    ven_id: str
    report_request_id: str
    report_specifier_id: str
