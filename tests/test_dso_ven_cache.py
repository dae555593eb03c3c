"""The VTN's per-VEN cache and batched liveness over a real store (both backends): a poll sees every change
committed before it, by this writer or another; nothing is read again for a household that did not change;
liveness reaches the store in batches and never goes backwards."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from dso_server.records import EventResponse, Household
from dso_server.store.sqlite import DsoStore
from dso_server.transport.ven_cache import Liveness, VenCache, WriteBatcher
from protocol import BandwidthInterval, CapacityBandwidth, Firmness, HouseholdContract, make_ean18

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
Q = timedelta(minutes=15)
EAN_A = make_ean18("87168712000000001")
EAN_B = make_ean18("87168712000000002")


def contract(ean: str) -> HouseholdContract:
    return HouseholdContract(connection_point_id=ean, contracted_max_import_kw=17.0, contracted_max_export_kw=10.0,
                             failsafe_import_kw=4.2, failsafe_export_kw=4.2, failsafe_duration_s=7200)


def bandwidth(value: float) -> CapacityBandwidth:
    return CapacityBandwidth(firmness=Firmness.FIRM, intervals=(
        BandwidthInterval(start=NOW + 4 * Q, import_limit_kw=value, export_limit_kw=5.0),))


@pytest.fixture
def stores(db_location: str) -> Iterator[tuple[DsoStore, DsoStore]]:
    """The VTN's store and another writer's (another worker, the planner's thread)."""
    with DsoStore(db_location, origin="vtn") as vtn, DsoStore(db_location, origin="elsewhere") as other:
        vtn.put_households([Household(contract(EAN_A), None), Household(contract(EAN_B), None)], now=NOW)
        yield vtn, other


async def test_a_change_by_any_writer_reaches_the_next_poll_and_nothing_else_is_reloaded(
        stores: tuple[DsoStore, DsoStore]) -> None:
    vtn, other = stores
    a, b = vtn.register_ven(EAN_A, now=NOW), vtn.register_ven(EAN_B, now=NOW)
    cache = VenCache(vtn, lambda: NOW)
    await cache.fresh()
    state_a, state_b = cache.get(a.ven_id, NOW), cache.get(b.ven_id, NOW)
    assert state_a is not None and state_b is not None and cache.loads == 2
    assert state_a.plan(NOW).keys == frozenset() and not state_a.plan(NOW).due
    event = other.publish({EAN_A: bandwidth(5)}, now=NOW).signals[0]  # another worker's API
    assert cache.get(a.ven_id, NOW) is state_a  # not yet read: the cache answers as it was ...
    await cache.fresh()  # ... until the next poll's read
    fresh_a = cache.get(a.ven_id, NOW)
    assert fresh_a is not state_a and cache.get(b.ven_id, NOW) is state_b and cache.loads == 3
    plan = fresh_a.plan(NOW)
    assert plan.due and [s.event_id for s in plan.signals] == [event.event_id]
    await cache.record_delivery(fresh_a, plan.keys, NOW)
    await cache.fresh()
    assert cache.get(a.ven_id, NOW) is fresh_a and fresh_a.plan(NOW).due  # its own delivery: kept, unanswered
    await cache.record_responses(fresh_a, [EventResponse(event.event_id, 0, "optIn", 200, "OK")], NOW)
    assert not fresh_a.plan(NOW).due  # answered: nothing to send again (PROFILE 7.4.3)
    other.modify_signal(event.event_id, bandwidth(3), now=NOW)
    await cache.fresh()
    assert cache.get(a.ven_id, NOW).plan(NOW).due  # type: ignore[union-attr]
    other.record_delivery(a.ven_id, frozenset({(event.event_id, 1, "far")}), now=NOW)  # delivered elsewhere
    other.record_responses(a.ven_id, [EventResponse(event.event_id, 1, "optIn", 200, "OK")], now=NOW)
    await cache.fresh()
    assert not cache.get(a.ven_id, NOW).plan(NOW).due  # type: ignore[union-attr]
    assert cache.get("ven-unknown", NOW) is None


async def test_one_read_of_the_change_log_serves_every_request_waiting(stores: tuple[DsoStore, DsoStore]) -> None:
    cache = VenCache(stores[0], lambda: NOW)
    await asyncio.gather(*(cache.fresh() for _ in range(50)))
    assert cache.reads == 1
    await cache.fresh()
    assert cache.reads == 2


async def test_a_cancellation_acknowledged_here_or_elsewhere_leaves_the_delivery(
        stores: tuple[DsoStore, DsoStore]) -> None:
    vtn, other = stores
    a = vtn.register_ven(EAN_A, now=NOW)
    event = vtn.publish({EAN_A: bandwidth(5)}, now=NOW).signals[0]
    cache = VenCache(vtn, lambda: NOW)
    other.cancel_signal(event.event_id, now=NOW)
    await cache.fresh()
    state = cache.get(a.ven_id, NOW)
    assert state is not None and [s.cancelled for s in state.plan(NOW).signals] == [True]
    await cache.record_responses(state, [EventResponse(event.event_id, 1, "optIn", 200, "OK")], NOW,
                                 WriteBatcher(vtn.reopen()))
    assert state.plan(NOW).signals == []
    other.register_ven(EAN_A, now=NOW)  # registering again elsewhere forgets what was delivered
    await cache.fresh()
    assert cache.get(a.ven_id, NOW) is not state


async def test_liveness_is_written_in_batches_and_never_goes_back(stores: tuple[DsoStore, DsoStore]) -> None:
    vtn, other = stores
    a, b = vtn.register_ven(EAN_A, now=NOW), vtn.register_ven(EAN_B, now=NOW)
    liveness = Liveness(WriteBatcher(other), flush_interval_s=0.01, resolution_s=30)
    for second in range(100):
        liveness.seen(a.ven_id, NOW + timedelta(seconds=second))
    liveness.seen(b.ven_id, NOW + timedelta(seconds=5))
    assert vtn.ven(a.ven_id).last_seen_at == NOW  # type: ignore[union-attr]
    assert await liveness.flush() == 2
    assert vtn.ven(a.ven_id).last_seen_at == NOW + timedelta(seconds=99)  # type: ignore[union-attr]
    liveness.seen(a.ven_id, NOW + timedelta(seconds=110))  # within the resolution: not written yet
    assert await liveness.flush() == 0
    liveness.seen(a.ven_id, NOW + timedelta(seconds=129))
    assert await liveness.flush() == 1
    assert vtn.ven(a.ven_id).last_seen_at == NOW + timedelta(seconds=129)  # type: ignore[union-attr]
    older = Liveness(WriteBatcher(vtn), resolution_s=30)  # another worker, flushing an older sighting later
    older.seen(a.ven_id, NOW + timedelta(seconds=50))
    assert await older.flush() == 1
    assert vtn.ven(a.ven_id).last_seen_at == NOW + timedelta(seconds=129)  # type: ignore[union-attr]
    assert vtn.ven(b.ven_id).last_seen_at == NOW + timedelta(seconds=5)  # type: ignore[union-attr]


async def test_concurrent_writes_share_a_commit_and_a_bad_one_fails_alone(stores: tuple[DsoStore, DsoStore]) -> None:
    vtn, other = stores
    writer = WriteBatcher(other)
    names = [EAN_A, EAN_B, "871687120000000999", EAN_A]  # the third is no household
    outcomes = await asyncio.gather(*(writer.write(lambda store, name=name: store.register_ven(name, now=NOW))
                                      for name in names), return_exceptions=True)
    assert writer.batches == 1 and writer.writes == 4
    assert [type(o).__name__ for o in outcomes] == ["Ven", "Ven", "UnknownHousehold", "Ven"]
    assert outcomes[0].ven_id == outcomes[3].ven_id  # type: ignore[union-attr]
    assert sorted(v.connection_point_id for v in vtn.vens()) == [EAN_A, EAN_B]  # the others were stored


async def test_a_work_that_fails_after_writing_leaves_nothing_and_the_others_land(
        stores: tuple[DsoStore, DsoStore]) -> None:
    """The batch's works write without savepoints of their own, so a failure after a write must roll back the
    whole batch; each work is then tried alone and only the failing one is lost."""
    vtn, other = stores
    writer = WriteBatcher(other)

    def write_then_fail(store: DsoStore) -> None:
        store.register_ven(EAN_B, now=NOW)
        raise RuntimeError("failed after writing")

    outcomes = await asyncio.gather(writer.write(lambda store: store.register_ven(EAN_A, now=NOW)),
                                    writer.write(write_then_fail), return_exceptions=True)
    assert writer.batches == 1 and isinstance(outcomes[1], RuntimeError)
    assert [v.connection_point_id for v in vtn.vens()] == [EAN_A]


def test_transactions_inside_a_batch_join_it_and_elsewhere_are_savepoints(stores: tuple[DsoStore, DsoStore]) -> None:
    vtn, _ = stores
    with vtn.batch(), contextlib.suppress(RuntimeError), vtn.transaction():
        vtn.register_ven(EAN_A, now=NOW)
        raise RuntimeError("caught inside the batch")
    assert [v.connection_point_id for v in vtn.vens()] == [EAN_A]  # joined the batch: committed with it
    with vtn.transaction(), contextlib.suppress(RuntimeError), vtn.transaction():
        vtn.register_ven(EAN_B, now=NOW)
        raise RuntimeError("caught inside the transaction")
    assert [v.connection_point_id for v in vtn.vens()] == [EAN_A]  # a savepoint: rolled back to it


async def test_event_payloads_wanted_in_one_loop_turn_are_read_together(
        stores: tuple[DsoStore, DsoStore], monkeypatch: pytest.MonkeyPatch) -> None:
    """A change to many households: every VEN's distribution needs its events' payloads; the requests of one
    event-loop turn share one read, and each gets exactly its own events, as the store has them now."""
    vtn, other = stores
    cache = VenCache(vtn, lambda: NOW)
    events = other.publish({EAN_A: bandwidth(5), EAN_B: bandwidth(4)}, now=NOW).signals
    a, b = (next(s.event_id for s in events if s.connection_point_id == ean) for ean in (EAN_A, EAN_B))
    reads: list[list[str]] = []
    original = vtn.signals_by_id
    monkeypatch.setattr(vtn, "signals_by_id", lambda ids: reads.append(list(ids)) or original(ids))
    got_a, got_b, got_none = await asyncio.gather(cache.signals([a]), cache.signals([b, "ev-gone"]),
                                                  cache.signals(["ev-gone"]))
    assert reads == [[a, b, "ev-gone"]]
    assert list(got_a) == [a] and list(got_b) == [b] and got_none == {}
    assert got_b[b].payload.intervals[0].import_limit_kw == 4  # type: ignore[union-attr]
    other.modify_signal(b, bandwidth(3), now=NOW)
    assert (await cache.signals([b]))[b].modification_number == 1  # read now, not kept
