"""The operator API's request and response models: what the API validates and what ``/api/openapi.json`` shows.

Request bodies are validated in pydantic's *strict* JSON mode (a number must be a JSON number, not ``"5"`` or
``true``; a timestamp an ISO 8601 string with a UTC offset) and refuse unknown fields; they build on the profile's
models (``protocol``), so the API accepts exactly what the profile allows. Queries are validated by a model per
route (unknown parameters are refused too). The response models describe what the codec writes; the schemathesis
run in the tests checks every answer against them.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from functools import partial
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from dso_server.records import SignalKind
from protocol import CapacityBandwidth, ComfortStatus, HouseholdContract, PerformanceReport, Plan, TouTariff
from protocol.limits import check_name
from protocol.oadr20b import EventStatus
from protocol.timebase import EARLIEST_YEAR, LATEST_YEAR

MAX_TARGETS = 100_000
"""The most connection points one publication may name (a DSO region's pilot, with room)."""

GroupName = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"\S"),
                     AfterValidator(partial(check_name, what="the group"))]
"""As the contracts file's ``group``: printable text."""
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128)]
"""An EAN, event id, publication id or transformer id as typed: the store says whether it exists (404)."""


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ------------------------------------------------------------------------------------------- request bodies


class Targets(_Body):
    """Who receives a signal: ``connection_point_ids`` or ``group``, exactly one of them."""

    connection_point_ids: list[Identifier] | None = Field(default=None, min_length=1, max_length=MAX_TARGETS)
    """18-digit EANs of the households; each must be known to the DSO."""
    group: GroupName | None = None
    """Every household of this group (as in the contracts file or ``POST /api/households``)."""

    @model_validator(mode="after")
    def _one_target(self) -> Targets:
        if (self.connection_point_ids is None) == (self.group is None):
            both = self.connection_point_ids is not None
            raise ValueError("connection_point_ids: Name the households: give either connection_point_ids (a list of "
                             "18-digit EANs) or group, " + ("not both" if both else "neither was given"))
        seen: set[str] = set()
        for index, value in enumerate(self.connection_point_ids or ()):
            if value in seen:
                raise ValueError(f"connection_point_ids[{index}]: repeats {value}")
            seen.add(value)
        return self


class BandwidthPublication(CapacityBandwidth, Targets):
    """``POST /api/bandwidths``: a capacity bandwidth (the profile's ``CapacityBandwidth``) and its households."""

    def payload(self) -> CapacityBandwidth:
        return CapacityBandwidth(firmness=self.firmness, intervals=self.intervals)


class TariffPublication(TouTariff, Targets):
    """``POST /api/tariffs``: a time-of-use tariff (the profile's ``TouTariff``) and its households."""

    def payload(self) -> TouTariff:
        return TouTariff(intervals=self.intervals)


class HouseholdFlat(HouseholdContract):
    """``POST /api/households``: the contract's fields at the top level, as in the contracts file."""

    group: GroupName | None = None


class HouseholdNested(_Body):
    """``POST /api/households``: the contract inside ``contract``."""

    contract: HouseholdContract
    group: GroupName | None = None


HouseholdRequest = HouseholdFlat | HouseholdNested
SignalChange = CapacityBandwidth | TouTariff
"""``PUT /api/signals/{id}`` and ``/api/publications/{id}``: a body of the same kind as the event's."""


class LoginRequest(_Body):
    token: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    """A bearer token from ``dso-server token create``; any role may read the pages."""


# ---------------------------------------------------------------------------------------------------- queries


def _query_instant(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    # An unencoded '+' in a query string arrives as a space: '2030-01-01T00:00:00 01:00'.
    text = re.sub(r" (\d{2}:?\d{2})$", r"+\1", value) if "T" in value else value
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 timestamp such as 2030-01-01T00:00:00+00:00") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{value!r} has no UTC offset; add one, e.g. {value}+00:00 or {value}Z")
    if not EARLIEST_YEAR <= moment.year <= LATEST_YEAR:
        raise ValueError(f"{value!r} is outside the years {EARLIEST_YEAR}-{LATEST_YEAR}")
    return moment.astimezone(UTC)


def _query_day(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a date such as 2030-01-31") from None
    if not EARLIEST_YEAR <= day.year <= LATEST_YEAR:
        raise ValueError(f"{value!r} is outside the years {EARLIEST_YEAR}-{LATEST_YEAR}")
    return day


def _query_flag(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    lowered = value.lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no", ""):
        return False
    raise ValueError(f"{value!r} must be true or false")


QueryInstant = Annotated[datetime, BeforeValidator(_query_instant),
                         Field(json_schema_extra={"format": "date-time"})]
QueryDay = Annotated[date, BeforeValidator(_query_day)]
QueryFlag = Annotated[bool, BeforeValidator(_query_flag)]
QueryId = Annotated[str, StringConstraints(min_length=1, max_length=128)]


def _query_limit(value: Any) -> Any:
    if isinstance(value, str):
        if not value.isdigit() or len(value) > 6:
            raise ValueError(f"{value!r} is not a whole number from 1 to 10000")
        return int(value)
    return value


QueryLimit = Annotated[int, BeforeValidator(_query_limit), Field(ge=1, le=10_000)]


class _Query(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Window(_Query):
    @model_validator(mode="after")
    def _ordered(self) -> _Window:
        since, until = getattr(self, "since", None), getattr(self, "until", None)
        if since is not None and until is not None and until <= since:
            raise ValueError("until: until must be later than since")
        return self


class NoQuery(_Query):
    pass


class HouseholdsQuery(_Query):
    limit: QueryLimit = 1000
    """At most this many households, in connection point id order."""
    after: QueryId | None = None
    """Those after this connection point id: the previous page's ``next_after``."""


class SignalsQuery(_Query):
    connection_point_id: QueryId | None = None
    publication_id: QueryId | None = None
    include_ended: QueryFlag = False


class ResponsesQuery(_Query):
    event_id: QueryId | None = None
    connection_point_id: QueryId | None = None


class HouseholdQuery(_Query):
    connection_point_id: QueryId


class TelemetryQuery(_Window):
    connection_point_id: QueryId
    since: QueryInstant | None = None
    until: QueryInstant | None = None


class WindowQuery(_Window):
    since: QueryInstant | None = None
    until: QueryInstant | None = None


class DayQuery(_Query):
    day: QueryDay | None = None
    """A local day of the DSO's time zone; today by the server's clock when left out."""


def _query_month(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if not re.fullmatch(r"\d{4}-\d{2}", value):
        raise ValueError(f"{value!r} is not a month such as 2030-01")
    return _query_day(value + "-01")


QueryMonth = Annotated[date, BeforeValidator(_query_month), Field(json_schema_extra={"pattern": r"^\d{4}-\d{2}$"})]


class SettlementQuery(_Query):
    month: QueryMonth | None = None
    """A calendar month (YYYY-MM) of each contract's time zone; the current month by the server's clock when left
    out."""
    connection_point_id: QueryId | None = None
    """One household; every household with a performance contract when left out."""


class AuditQuery(_Window):
    since: QueryInstant | None = None
    until: QueryInstant | None = None
    actor: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    action: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    outcome: Literal["ok", "refused"] | None = None
    limit: QueryLimit = 1000


class AllocationRunsQuery(_Query):
    kind: Literal["firm", "non_firm"] | None = None
    day: QueryDay | None = None
    """The local day the run allocated for."""
    status: Literal["ok", "failed"] | None = None
    limit: QueryLimit = 100


# -------------------------------------------------------------------------------------------------- answers


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(_Out):
    field: str
    message: str
    type: str


class ErrorAnswer(_Out):
    """Every 4xx (and the rare 5xx): one sentence, the field at fault, every problem found for a body."""

    error: str
    field: str | None
    detail: list[Problem]


class HealthAnswer(_Out):
    status: Literal["ok"]
    now: datetime


class HouseholdAnswer(_Out):
    connection_point_id: str
    group: str | None
    contract: HouseholdContract
    registered: bool
    ven_id: str | None
    registered_at: datetime | None
    last_seen_at: datetime | None
    last_telemetry_interval_start: datetime | None


class HouseholdsAnswer(_Out):
    households: list[HouseholdAnswer]
    next_after: str | None = None
    """When more households follow: pass it as ``after`` for the next page; null on the last page."""


class EventSummary(_Out):
    event_id: str
    connection_point_id: str
    modification_number: int
    status: EventStatus


class Skipped(_Out):
    event_id: str
    reason: str


class PublicationAnswer(_Out):
    publication_id: str
    events: list[EventSummary]
    skipped: list[Skipped]


class SignalAnswer(_Out):
    event_id: str
    connection_point_id: str
    publication_id: str
    kind: SignalKind
    modification_number: int
    status: EventStatus
    cancelled: bool
    created_at: datetime
    modified_at: datetime
    start: datetime
    end: datetime
    payload: CapacityBandwidth | TouTariff


class SignalsAnswer(_Out):
    signals: list[SignalAnswer]


class ResponseAnswer(_Out):
    ven_id: str
    connection_point_id: str
    event_id: str
    modification_number: int | None
    opt_type: str
    response_code: int | None
    response_description: str | None
    received_at: datetime


class ResponsesAnswer(_Out):
    responses: list[ResponseAnswer]


class TelemetryRowAnswer(_Out):
    start: datetime
    import_kw: float
    export_kw: float
    net_import_kw: float
    received_at: datetime


class TelemetryAnswer(_Out):
    connection_point_id: str
    intervals: list[TelemetryRowAnswer]


class PlanAnswer(_Out):
    connection_point_id: str
    plan: Plan | None
    received_at: datetime | None


class ComfortAnswer(_Out):
    connection_point_id: str
    status: ComfortStatus | None
    received_at: datetime | None


class NeedIntervalAnswer(_Out):
    start: datetime
    need_kw: float
    """The need in force: the latest the HEMS reported (made and received) for the interval."""
    firm_kw: float
    """The lowest firm import limit the DSO published for the interval (the contract maximum where none)."""
    effective_kw: float
    """Firm plus non-firm, capped by the contract (PROFILE §6): what the household was allowed."""
    honoured: bool
    """The firm limit was at least the need (within 1 W)."""
    shortfall_kw: float


class NeedsAnswer(_Out):
    connection_point_id: str
    since: datetime
    until: datetime
    intervals: list[NeedIntervalAnswer]


class PerformanceAnswer(_Out):
    connection_point_id: str
    since: datetime
    until: datetime
    reports: list[PerformanceReport]


class SettlementRowAnswer(_Out):
    connection_point_id: str
    month: str
    need_hours: float
    honoured_hours: float
    not_honoured_hours: float
    shortfall_kwh: float
    days_reported: int
    degree_hours_outside_band: float
    degree_hours_dso_caused: float
    ev_departures: int
    ev_departures_short: int
    ev_departures_short_dso_caused: int
    disputed_intervals: int
    discount_eur: float
    compensation_eur: float
    total_eur: float


class SettlementAnswer(_Out):
    month: str
    rows: list[SettlementRowAnswer]


class TransformerAnswer(_Out):
    id: str
    rating_kva: float
    capacity_kw: float
    limit_kw: float
    households: int


class TransformersAnswer(_Out):
    transformers: list[TransformerAnswer]


class DayInterval(_Out):
    start: datetime
    load_kw: float | None
    forecast_p10_kw: float | None
    forecast_p50_kw: float | None
    forecast_p90_kw: float | None
    firm_kw: float | None
    non_firm_kw: float | None
    need_kw: float | None
    """Sum of the needs in force of the transformer's performance households (None: none reported)."""
    needs_not_honoured: int
    """Households whose firm limit fell short of their need in this interval."""


class DayHousehold(_Out):
    connection_point_id: str
    feeder_id: str
    online: bool
    last_report_at: datetime | None
    violations: int
    violation_kwh: float
    performance: bool
    """Under a performance contract."""
    need_intervals: int
    """Intervals of the day with a need in force."""
    needs_not_honoured: int
    """Of those, the intervals whose firm limit fell short of the need."""
    need_shortfall_kwh: float


class TransformerDayAnswer(_Out):
    id: str
    rating_kva: float
    capacity_kw: float
    limit_kw: float
    day: date
    timezone: str
    intervals: list[DayInterval]
    households: list[DayHousehold]


class ViolationAnswer(_Out):
    start: datetime
    end: datetime
    duration_s: int
    intervals: int
    max_excess_kw: float
    energy_kwh: float


class ViolationsAnswer(_Out):
    connection_point_id: str
    since: datetime
    until: datetime
    violations: list[ViolationAnswer]


class AuditEntryAnswer(_Out):
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    outcome: Literal["ok", "refused"]
    detail: dict[str, Any]


class AuditAnswer(_Out):
    entries: list[AuditEntryAnswer]


class AllocationRunAnswer(_Out):
    run_id: str
    kind: Literal["firm", "non_firm"]
    day: str | None
    window_start: datetime
    window_end: datetime
    publication_id: str | None
    run_at: datetime
    status: Literal["ok", "failed"]
    error: str | None
    """Why a failed run failed (it published nothing)."""
    worker: str | None
    """The server process that ran it."""
    summary: dict[str, Any]


class AllocationRunsAnswer(_Out):
    runs: list[AllocationRunAnswer]


class SessionAnswer(_Out):
    actor: str
    role: Literal["read", "operate"]
    token_id: str
    via: Literal["bearer", "certificate", "session"]
    expires_at: datetime | None
