"""The DSO store and the pure signal lifecycle: OpenADR 2.0b modification rules, atomic writes, persistence,
schema migrations.

One suite for both backends: every test that takes ``db_location`` runs against a SQLite file and against a
real PostgreSQL database (``tests/conftest.py``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dso_server.errors import (
    Conflict,
    IllegalSignalChange,
    SchemaError,
    StoreError,
    StoreIntegrityError,
    UnknownEvent,
    UnknownGroup,
    UnknownHousehold,
    UnknownVen,
    WrongSignalKind,
)
from dso_server.lifecycle import (
    SIGNAL_MOVES,
    SignalAction,
    SignalState,
    delivery_due,
    delivery_keys,
    relevant_signals,
)
from dso_server.records import EventResponse, Household
from dso_server.store.changes import ChangeBatch, ChangeFeed, prune
from dso_server.store.engine import open_database
from dso_server.store.grid_store import GridStore
from dso_server.store.schema import MIGRATIONS, SCHEMA_VERSION, AddColumn, Migration, migrate
from dso_server.store.sqlite import DsoStore
from protocol import (
    BandwidthInterval,
    CapacityBandwidth,
    ComfortStatus,
    Firmness,
    HouseholdContract,
    Plan,
    PlanInterval,
    TariffInterval,
    Telemetry,
    TelemetryInterval,
    TouTariff,
    make_ean18,
)

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
Q = timedelta(minutes=15)
EAN_A = make_ean18("87168712000000001")
EAN_B = make_ean18("87168712000000002")
EAN_UNKNOWN = make_ean18("87168712000000099")


def contract(ean: str) -> HouseholdContract:
    return HouseholdContract(connection_point_id=ean, contracted_max_import_kw=17.0, contracted_max_export_kw=10.0,
                             failsafe_import_kw=4.2, failsafe_export_kw=4.2, failsafe_duration_s=7200)


def bandwidth(*imports: float, start: datetime = NOW + timedelta(hours=1),
              firmness: Firmness = Firmness.FIRM) -> CapacityBandwidth:
    return CapacityBandwidth(firmness=firmness, intervals=tuple(
        BandwidthInterval(start=start + index * Q, import_limit_kw=value, export_limit_kw=5.0)
        for index, value in enumerate(imports)))


def tariff(*prices: float, start: datetime = NOW + timedelta(hours=1)) -> TouTariff:
    return TouTariff(intervals=tuple(
        TariffInterval(start=start + index * Q, import_price_eur_per_kwh=value, export_price_eur_per_kwh=0.05)
        for index, value in enumerate(prices)))


@pytest.fixture
def store(db_location: str) -> Iterator[DsoStore]:
    with DsoStore(db_location) as store:
        store.put_households([Household(contract(EAN_A), "feeder-1"), Household(contract(EAN_B), "feeder-1")],
                             now=NOW)
        yield store


def count(store: DsoStore, table: str) -> int:
    return store.db.count(table)


# ---------------------------------------------------------------------------------------------- lifecycle


def test_every_state_and_action_has_a_rule() -> None:
    assert set(SIGNAL_MOVES) == {(state, action) for state in SignalState for action in SignalAction}


def test_relevant_signals_drop_ended_and_acknowledged_cancellations(store: DsoStore) -> None:
    ended = store.publish({EAN_A: bandwidth(5, start=NOW - 4 * Q)}, now=NOW - 5 * Q).signals[0]
    active = store.publish({EAN_A: bandwidth(5, 5, start=NOW - Q)}, now=NOW - Q).signals[0]
    cancelled = store.cancel_signal(store.publish({EAN_A: bandwidth(4)}, now=NOW).signals[0].event_id, now=NOW)
    signals = store.signals(connection_point_id=EAN_A)
    assert [s.event_id for s in relevant_signals(signals, acknowledged=set(), now=NOW)] == [
        active.event_id, cancelled.event_id]
    # Acknowledging an older modification number does not retire the cancellation; the cancellation's does.
    assert cancelled.event_id in [s.event_id for s in relevant_signals(
        signals, acknowledged={(cancelled.event_id, 0)}, now=NOW)]
    assert [s.event_id for s in relevant_signals(signals, acknowledged={(cancelled.event_id, 1)}, now=NOW)] == [
        active.event_id]
    assert ended.event_id not in {key[0] for key in delivery_keys(relevant_signals(signals, acknowledged=(),
                                                                                    now=NOW), NOW)}


def test_delivery_is_due_for_news_and_until_the_ven_answered() -> None:
    a0, a1, b0 = ("a", 0, "far"), ("a", 1, "far"), ("b", 0, "active")
    answered = {("a", 0), ("a", 1), ("b", 0)}
    assert not delivery_due(None, frozenset(), answered)
    assert delivery_due(None, frozenset({a0}), answered)
    assert not delivery_due(frozenset({a0}), frozenset({a0}), answered)
    assert delivery_due(frozenset({a0}), frozenset({a1}), answered)
    assert delivery_due(frozenset({a0}), frozenset({a0, b0}), answered)
    assert not delivery_due(frozenset({a0, b0}), frozenset({b0}), answered)  # only shrank: the VEN knows already
    # PROFILE §7.4.3: sent but not answered (the distribution or the answer was lost) -> sent again.
    assert delivery_due(frozenset({a0, b0}), frozenset({a0, b0}), {("a", 0)})
    assert not delivery_due(frozenset({a0}), frozenset({a0, b0}) - {b0}, {("a", 0)})


# ------------------------------------------------------------------------------------------------ signals


def test_new_event_starts_at_modification_zero_with_stable_unique_ids(store: DsoStore) -> None:
    publication = store.publish({EAN_A: bandwidth(5, 4), EAN_B: bandwidth(5, 4)}, now=NOW)
    assert [s.modification_number for s in publication.signals] == [0, 0]
    assert len({s.event_id for s in publication.signals}) == 2
    assert {s.publication_id for s in publication.signals} == {publication.publication_id}
    again = store.publication(publication.publication_id)
    assert {s.event_id for s in again.signals} == {s.event_id for s in publication.signals}
    assert store.signal(publication.signals[0].event_id).payload == bandwidth(5, 4)


def test_modification_increments_and_keeps_the_event_id(store: DsoStore) -> None:
    event_id = store.publish({EAN_A: bandwidth(5, 4)}, now=NOW).signals[0].event_id
    first = store.modify_signal(event_id, bandwidth(3, 3), now=NOW + Q)
    second = store.modify_signal(event_id, bandwidth(3, 3, 3, firmness=Firmness.NON_FIRM), now=NOW + 2 * Q)
    assert (first.event_id, first.modification_number, first.payload) == (event_id, 1, bandwidth(3, 3))
    assert second.modification_number == 2
    assert second.modified_at == NOW + 2 * Q and second.created_at == NOW


def test_the_same_payload_again_is_no_change(store: DsoStore) -> None:
    event_id = store.publish({EAN_A: bandwidth(5, 4)}, now=NOW).signals[0].event_id
    assert store.modify_signal(event_id, bandwidth(5, 4), now=NOW).modification_number == 0


def test_cancellation_increments_and_freezes_the_event(store: DsoStore) -> None:
    event_id = store.publish({EAN_A: tariff(0.3, 0.2)}, now=NOW).signals[0].event_id
    store.modify_signal(event_id, tariff(0.3, 0.1), now=NOW)
    cancelled = store.cancel_signal(event_id, now=NOW)
    assert (cancelled.cancelled, cancelled.modification_number) == (True, 2)
    with pytest.raises(IllegalSignalChange, match="cancelled"):
        store.modify_signal(event_id, tariff(0.1), now=NOW)
    with pytest.raises(IllegalSignalChange, match="cancelled before"):
        store.cancel_signal(event_id, now=NOW)
    assert store.signal(event_id) == cancelled


def test_an_ended_event_cannot_change(store: DsoStore) -> None:
    event_id = store.publish({EAN_A: bandwidth(5)}, now=NOW).signals[0].event_id
    later = NOW + timedelta(hours=2)
    with pytest.raises(IllegalSignalChange, match="ended"):
        store.modify_signal(event_id, bandwidth(1, start=later + Q), now=later)
    with pytest.raises(IllegalSignalChange, match="ended"):
        store.cancel_signal(event_id, now=later)


def test_a_tariff_cannot_replace_a_bandwidth(store: DsoStore) -> None:
    event_id = store.publish({EAN_A: bandwidth(5)}, now=NOW).signals[0].event_id
    with pytest.raises(WrongSignalKind):
        store.modify_signal(event_id, tariff(0.2), now=NOW)


def test_unknown_ids_raise(store: DsoStore) -> None:
    with pytest.raises(UnknownEvent):
        store.signal("ev-nope")
    with pytest.raises(UnknownEvent):
        store.cancel_signal("ev-nope", now=NOW)
    with pytest.raises(UnknownGroup):
        store.group_members("feeder-9")
    with pytest.raises(UnknownVen):
        store.cancel_registration("ven-nope")


def test_publishing_to_an_unknown_household_stores_nothing(store: DsoStore) -> None:
    with pytest.raises(UnknownHousehold) as caught:
        store.publish({EAN_A: bandwidth(5), EAN_UNKNOWN: bandwidth(5)}, now=NOW)
    assert caught.value.field == "connection_point_ids[1]"
    assert count(store, "signals") == 0


def test_a_household_holds_at_most_32_open_signals(store: DsoStore) -> None:
    """PROFILE §1.5: the 33rd open signal is refused (409) and nothing is stored; a cancelled or ended one makes
    room again."""
    first = store.publish({EAN_A: bandwidth(5)}, now=NOW).signals[0]
    for _ in range(31):
        store.publish({EAN_A: tariff(0.3)}, now=NOW)
    with pytest.raises(Conflict) as caught:
        store.publish({EAN_B: bandwidth(5), EAN_A: bandwidth(4)}, now=NOW)
    assert caught.value.http_status == 409 and EAN_A in str(caught.value) and "§1.5" in str(caught.value)
    assert count(store, "signals") == 32
    store.cancel_signal(first.event_id, now=NOW)
    store.publish({EAN_A: bandwidth(4)}, now=NOW)
    store.publish({EAN_A: bandwidth(4)}, now=NOW + timedelta(hours=2))  # the first 32 have ended by then


def test_a_failure_half_way_rolls_the_whole_publication_back(db_location: str) -> None:
    ids = iter(["pub-1", "ev-same", "ev-same"])  # the second event id collides with the first
    with DsoStore(db_location, id_factory=lambda prefix: next(ids)) as store:
        store.put_households([Household(contract(EAN_A), None), Household(contract(EAN_B), None)], now=NOW)
        with pytest.raises(StoreIntegrityError, match="event_id"):
            store.publish({EAN_A: bandwidth(5), EAN_B: bandwidth(5)}, now=NOW)
        assert count(store, "signals") == 0


def test_publication_changes_skip_cancelled_events(store: DsoStore) -> None:
    publication = store.publish({EAN_A: bandwidth(5), EAN_B: bandwidth(5)}, now=NOW)
    first, second = publication.signals
    store.cancel_signal(first.event_id, now=NOW)
    changed, skipped = store.modify_publication(publication.publication_id, bandwidth(2), now=NOW)
    assert [e.event_id for e in skipped] == [first.event_id]
    assert [s.modification_number for s in changed.signals] == [1, 1]
    assert store.signal(second.event_id).modification_number == 1
    assert store.signal(first.event_id).modification_number == 1  # only the cancellation
    _, skipped = store.cancel_publication(publication.publication_id, now=NOW)
    assert store.signal(second.event_id).cancelled
    with pytest.raises(IllegalSignalChange):
        store.cancel_publication(publication.publication_id, now=NOW)


def test_a_publication_change_is_all_or_nothing(store: DsoStore) -> None:
    publication = store.publish({EAN_A: bandwidth(5), EAN_B: bandwidth(5)}, now=NOW)
    with pytest.raises(WrongSignalKind):
        store.modify_publication(publication.publication_id, tariff(0.1), now=NOW)
    assert [s.modification_number for s in store.publication(publication.publication_id).signals] == [0, 0]


# ---------------------------------------------------------------------------------------------- VENs etc.


def test_a_ven_keeps_its_ids_when_it_registers_again(store: DsoStore) -> None:
    first = store.register_ven(EAN_A, now=NOW)
    store.record_delivery(first.ven_id, frozenset({("ev", 0, "far")}), now=NOW)
    again = store.register_ven(EAN_A, now=NOW + Q)
    assert (again.ven_id, again.registration_id) == (first.ven_id, first.registration_id)
    assert again.registered_at == NOW and again.last_seen_at == NOW + Q
    assert store.delivered(first.ven_id) is None  # a new session gets everything again
    with pytest.raises(UnknownHousehold):
        store.register_ven(EAN_UNKNOWN, now=NOW)
    cancelled = store.cancel_registration(first.ven_id)
    assert cancelled.registration_id is None
    renewed = store.register_ven(EAN_A, now=NOW)
    assert renewed.ven_id == first.ven_id and renewed.registration_id not in (None, first.registration_id)


def test_responses_are_stored_as_received(store: DsoStore) -> None:
    ven = store.register_ven(EAN_A, now=NOW)
    event_id = store.publish({EAN_A: bandwidth(5)}, now=NOW).signals[0].event_id
    other = store.publish({EAN_B: bandwidth(5)}, now=NOW).signals[0].event_id
    ignored = store.record_responses(ven.ven_id, [
        EventResponse(event_id, 0, "optIn", 460, "ERROR"),
        EventResponse(other, 0, "optIn", 200, "OK"),  # not this VEN's event
    ], now=NOW)
    assert ignored == [other]
    [stored] = store.responses(event_id=event_id)
    assert stored.response == EventResponse(event_id, 0, "optIn", 460, "ERROR")
    assert stored.connection_point_id == EAN_A
    assert store.acknowledged(ven.ven_id) == {(event_id, 0)}


def test_reports_are_stored_and_telemetry_upserted(store: DsoStore) -> None:
    start = NOW - 2 * Q
    store.store_reports(EAN_A, [
        Telemetry(intervals=(TelemetryInterval(start=start, import_kw=1.0, export_kw=0.0),
                             TelemetryInterval(start=start + Q, import_kw=2.0, export_kw=0.5))),
        Plan(created_at=NOW, intervals=(PlanInterval(start=NOW, net_import_kw=-1.5),)),
        ComfortStatus(measured_at=NOW, indoor_temperature_c=20.1, comfort_min_c=19, comfort_max_c=21),
    ], now=NOW)
    store.store_reports(EAN_A, [Telemetry(intervals=(TelemetryInterval(start=start + Q, import_kw=3.0,
                                                                       export_kw=0.0),))], now=NOW + Q)
    rows = store.telemetry(EAN_A)
    assert [(r.interval_start, r.import_kw) for r in rows] == [(start, 1.0), (start + Q, 3.0)]
    assert [r.interval_start for r in store.telemetry(EAN_A, since=start + Q)] == [start + Q]
    assert [r.interval_start for r in store.telemetry(EAN_A, until=start + Q)] == [start]
    assert store.last_telemetry_start(EAN_A) == start + Q
    assert store.last_telemetry_starts() == {EAN_A: start + Q}  # EAN_B sent nothing
    plan = store.latest_plan(EAN_A)
    comfort = store.latest_comfort(EAN_A)
    assert plan is not None and plan.plan.intervals[0].net_import_kw == -1.5
    assert comfort is not None and comfort.status.indoor_temperature_c == 20.1
    assert store.latest_plan(EAN_B) is None
    with pytest.raises(UnknownHousehold):
        store.telemetry(EAN_UNKNOWN)


def test_everything_survives_reopening_the_store(db_location: str) -> None:
    path = db_location
    with DsoStore(path) as store:
        store.put_household(contract(EAN_A), group="feeder-1", now=NOW)
        ven = store.register_ven(EAN_A, now=NOW)
        event_id = store.publish({EAN_A: bandwidth(5, 4)}, now=NOW).signals[0].event_id
        store.modify_signal(event_id, bandwidth(3), now=NOW)
        store.record_responses(ven.ven_id, [EventResponse(event_id, 1, "optOut", 454, "bad")], now=NOW)
        store.record_delivery(ven.ven_id, frozenset({(event_id, 1, "far")}), now=NOW)
        store.record_report_registration(ven.ven_id, offered=[("HEMS_TELEMETRY", "METADATA_TELEMETRY_USAGE",
                                                               ["import_kw"])],
                                         requests=[("rr-1", "HEMS_TELEMETRY")], now=NOW)
        store.store_reports(EAN_A, [Telemetry(intervals=(TelemetryInterval(start=NOW, import_kw=1, export_kw=0),))],
                            now=NOW)
    with DsoStore(path) as store:
        assert store.household(EAN_A).group == "feeder-1"
        assert store.ven(ven.ven_id) == ven
        signal = store.signal(event_id)
        assert (signal.modification_number, signal.payload) == (1, bandwidth(3))
        assert store.responses(event_id=event_id)[0].response.opt_type == "optOut"
        assert store.delivered(ven.ven_id) == frozenset({(event_id, 1, "far")})
        assert [r.report_request_id for r in store.report_requests(ven.ven_id)] == ["rr-1"]
        assert len(store.telemetry(EAN_A)) == 1


def test_a_newer_schema_is_refused(db_location: str) -> None:
    with DsoStore(db_location) as store, store.transaction():
        store.db.set_schema_version(99)
    with pytest.raises(SchemaError, match=f"schema version 99; this server knows only up to {SCHEMA_VERSION}"):
        DsoStore(db_location)


# ----------------------------------------------------------------------------------------------- migrations


def test_a_store_of_schema_2_is_migrated_and_keeps_its_rows(db_location: str) -> None:
    """A store made by the migrations up to 2 and filled with rows of that shape gains the columns of 3 (added
    to a table that has rows, which get the default) and the change log; what it held reads back unchanged."""
    db = open_database(db_location)
    assert migrate(db, target=2) == 0 and db.schema_version() == 2
    db.insert("households", {"connection_point_id": EAN_A, "group_name": "feeder-1",
                             "contract": contract(EAN_A).model_dump_json(), "updated_at": NOW.isoformat()})
    db.insert("allocation_runs", {"run_id": "run-1", "kind": "firm", "day": "2030-01-01",
                                  "window_start": NOW.isoformat(), "window_end": (NOW + Q).isoformat(),
                                  "publication_id": None, "run_at": NOW.isoformat(), "summary": "{}"})
    assert "status" not in db.table_columns("allocation_runs") and db.table_columns("changes") == []
    db.close()
    with DsoStore(db_location) as store:
        assert store.db.schema_version() == SCHEMA_VERSION
        assert {"status", "error"} <= set(store.db.table_columns("allocation_runs"))
        assert store.household(EAN_A).contract == contract(EAN_A)
        [run] = GridStore(store).runs()
        assert (run.run_id, run.status, run.error) == ("run-1", "ok", None)
    with DsoStore(db_location) as again:  # opening a current store changes nothing
        assert again.db.schema_version() == SCHEMA_VERSION and len(GridStore(again).runs()) == 1


def test_a_failing_migration_leaves_the_store_as_it_was(db_location: str) -> None:
    db = open_database(db_location)
    before = SCHEMA_VERSION - 1
    migrate(db, target=before)
    broken = (*MIGRATIONS[:-1], Migration(SCHEMA_VERSION, "broken", (
        AddColumn("allocation_runs", "probe", str, default="ok", not_null=True),
        AddColumn("no_such_table", "x", int),
    )))
    with pytest.raises(StoreError):
        migrate(db, migrations=broken)
    assert db.schema_version() == before and "probe" not in db.table_columns("allocation_runs")
    db.close()


def test_an_old_sqlite_file_written_by_sqlite_utils_is_migrated(tmp_path: Path) -> None:
    """tests/data/dso-store-v2.sql: a version-2 store exactly as the server of commit db36134 wrote it."""
    path = tmp_path / "old.sqlite"
    connection = sqlite3.connect(path)
    connection.executescript((Path(__file__).parent / "data" / "dso-store-v2.sql").read_text())
    connection.close()
    with DsoStore(path) as store:
        assert store.db.schema_version() == SCHEMA_VERSION
        [household] = store.households()
        [ven] = store.vens()
        assert ven.connection_point_id == household.connection_point_id == EAN_A
        [signal] = store.signals(connection_point_id=EAN_A)
        assert signal.payload.intervals[0].import_limit_kw == 5  # type: ignore[union-attr]
        assert [r.response.response_code for r in store.responses(event_id=signal.event_id)] == [200]
        [run] = GridStore(store).runs()
        assert (run.kind, run.summary, run.status, run.error) == ("firm", {"households": 1}, "ok", None)
        later = store.publish({EAN_A: bandwidth(3)}, now=NOW + Q)  # and it works as a store of today
        assert store.signals(connection_point_id=EAN_A)[-1].event_id == later.signals[0].event_id


# ----------------------------------------------------------------------------------------------- change log


def test_the_change_log_names_each_household_whose_events_changed_and_who_wrote(db_location: str) -> None:
    with DsoStore(db_location, origin="worker-a") as writer, DsoStore(db_location, origin="worker-b") as other:
        writer.put_households([Household(contract(EAN_A), "feeder-1"), Household(contract(EAN_B), "feeder-1")],
                              now=NOW)
        feed = ChangeFeed(other.db)
        feed.start()
        assert feed.read() == ChangeBatch((), True)
        ven = writer.register_ven(EAN_A, now=NOW)
        event_id = writer.publish({EAN_A: bandwidth(5), EAN_B: bandwidth(5)}, now=NOW).signals[0].event_id
        writer.modify_signal(event_id, bandwidth(4), now=NOW)
        other.record_delivery(ven.ven_id, frozenset({(event_id, 1, "far")}), now=NOW)
        writer.record_responses(ven.ven_id, [EventResponse(event_id, 1, "optIn", 200, "OK")], now=NOW)
        writer.record_responses(ven.ven_id, [EventResponse("ev-unknown", 1, "optIn", 200, "OK")], now=NOW)
        writer.cancel_registration(ven.ven_id)
        batch = feed.read()
        assert batch.complete
        assert [(c.connection_point_id, c.kind, c.origin) for c in batch.changes] == [
            (EAN_A, "ven", "worker-a"), (EAN_A, "signals", "worker-a"), (EAN_B, "signals", "worker-a"),
            (EAN_A, "signals", "worker-a"), (EAN_A, "delivery", "worker-b"), (EAN_A, "ack", "worker-a"),
            (EAN_A, "ven", "worker-a")]
        assert feed.read().changes == ()  # each change once
        with pytest.raises(UnknownHousehold):
            writer.publish({EAN_UNKNOWN: bandwidth(5)}, now=NOW)
        assert feed.read().changes == ()  # nothing logged for what was not stored


def test_a_reader_that_fell_behind_the_pruned_log_is_told_to_drop_everything(db_location: str) -> None:
    with DsoStore(db_location) as store:
        store.put_households([Household(contract(EAN_A), None)], now=NOW)
        feed = ChangeFeed(store.db)
        feed.start()
        for _ in range(5):
            store.publish({EAN_A: bandwidth(5)}, now=NOW)
        assert prune(store.db, keep_rows=2) == 3
        batch = feed.read()
        assert not batch.complete and len(batch.changes) == 2
        assert feed.read() == ChangeBatch((), True)  # caught up again


def test_a_change_committed_after_a_later_one_is_not_missed(postgres_url: str) -> None:
    """PostgreSQL: transaction 1 takes the smaller id but commits after transaction 2; the reader, which saw
    2's row, still gets 1's at its next read."""
    with DsoStore(postgres_url, origin="one") as one, DsoStore(postgres_url, origin="two") as two, \
            DsoStore(postgres_url) as reader:
        one.put_households([Household(contract(EAN_A), None), Household(contract(EAN_B), None)], now=NOW)
        feed = ChangeFeed(reader.db)
        feed.start()
        with one.transaction():
            one.publish({EAN_A: bandwidth(5)}, now=NOW)  # id n, not committed yet
            two.publish({EAN_B: bandwidth(5)}, now=NOW)  # id n + 1, committed
            assert [c.origin for c in feed.read().changes] == ["two"]
        assert [c.origin for c in feed.read().changes] == ["one"]
        assert feed.read().changes == ()
