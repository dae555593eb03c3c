"""Planning runs over a real store: day-ahead firm publication, near-real-time non-firm modification, invariants."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest
from api_auth import bearer
from support.security import plain_settings  # plain HTTP on loopback: this module is not about security

from dso_server.api.views import lowest_per_interval
from dso_server.capacity.forecast import day_intervals
from dso_server.capacity.lab_grids import lab_grid
from dso_server.capacity.planner import PlannerConfig, days_due, next_day_ahead_run, run_day_ahead, run_near_real_time
from dso_server.store.grid_store import GridStore
from dso_server.store.sqlite import DsoStore
from protocol import Firmness, Telemetry, TelemetryInterval

CONFIG = PlannerConfig()
TOMORROW = date(2030, 1, 8)
AFTER_14 = datetime(2030, 1, 7, 13, 5, tzinfo=UTC)  # 14:05 in Amsterdam
Q = timedelta(minutes=15)


@pytest.fixture
def store(db_location: str) -> DsoStore:
    store = DsoStore(db_location)  # both backends: the planner's reads and its one-transaction writes
    GridStore(store).save_grid(lab_grid("kerber-landnetz-kabel-1"), now=AFTER_14 - timedelta(days=1), source="lab")
    return store


def _firm_sums(store: DsoStore, day: date) -> np.ndarray:
    starts = day_intervals(day, CONFIG.timezone)
    eans = [c.ean for c in GridStore(store).grid().connection_points]  # type: ignore[union-attr]
    signals = store.bandwidths_overlapping(eans, since=starts[0], until=starts[-1] + Q)
    total = np.zeros(len(starts))
    for sig in signals.values():
        lowest = lowest_per_interval(sig, Firmness.FIRM, "import_limit_kw")
        total += [lowest[s] for s in starts]
    return total


def test_day_ahead_publishes_one_firm_bandwidth_per_household_once(store: DsoStore) -> None:
    assert days_due(AFTER_14, CONFIG) == [date(2030, 1, 7), TOMORROW]
    assert next_day_ahead_run(AFTER_14, CONFIG) == datetime(2030, 1, 8, 13, 0, tzinfo=UTC)
    run = run_day_ahead(store, lab_grid("kerber-landnetz-kabel-1"), day=TOMORROW, now=AFTER_14, config=CONFIG)
    assert run is not None and run.publication_id is not None
    publication = store.publication(run.publication_id)
    assert len(publication.signals) == 8
    assert all(len(s.payload.intervals) == 96 and s.payload.firmness is Firmness.FIRM  # type: ignore[union-attr]
               for s in publication.signals)
    limit = GridStore(store).grid().transformers[0].limit_kw  # type: ignore[union-attr]
    assert np.all(_firm_sums(store, TOMORROW) <= limit + 1e-6)
    # A second run (a restart) does not stack a second firm publication.
    assert run_day_ahead(store, lab_grid("kerber-landnetz-kabel-1"), day=TOMORROW, now=AFTER_14, config=CONFIG) is None
    assert len(GridStore(store).forecasts("T1", since=run.window_start, until=run.window_end)) == 96


def test_today_catch_up_covers_only_intervals_to_come(store: DsoStore) -> None:
    grid = GridStore(store).grid()
    assert grid is not None
    run = run_day_ahead(store, grid, day=date(2030, 1, 7), now=AFTER_14, config=CONFIG)
    assert run is not None and run.window_start == datetime(2030, 1, 7, 13, 15, tzinfo=UTC)


def _telemetry(store: DsoStore, start: datetime, count: int, kw: float) -> None:
    for cp in GridStore(store).grid().connection_points:  # type: ignore[union-attr]
        store.store_reports(cp.ean, [Telemetry(intervals=tuple(
            TelemetryInterval(start=start + i * Q, import_kw=kw, export_kw=0.0) for i in range(count)))],
            now=start + count * Q)


def test_near_real_time_modifies_one_event_per_household_and_keeps_the_invariant(store: DsoStore) -> None:
    grid = GridStore(store).grid()
    assert grid is not None
    now = datetime(2030, 1, 8, 17, 3, tzinfo=UTC)  # 18:03 local: the evening peak the day-ahead p90 covers
    run_day_ahead(store, grid, day=TOMORROW, now=AFTER_14, config=CONFIG)
    # Measured well below that p90: the difference is released as non-firm.
    _telemetry(store, now.replace(minute=0) - 4 * Q, 4, 0.1)
    first = run_near_real_time(store, grid, now=now, config=CONFIG)
    assert first is not None and first.summary["published"] == 8
    events = {s.connection_point_id: s for s in store.publication(first.publication_id).signals}  # type: ignore[arg-type]
    nf = next(iter(events.values()))
    assert nf.payload.firmness is Firmness.NON_FIRM and nf.start == datetime(2030, 1, 8, 17, 15, tzinfo=UTC)
    assert first.summary["non_firm_import_kw"] > 0
    assert len(nf.payload.intervals) == CONFIG.non_firm_horizon_intervals
    # Later, with the load up: the same events are modified (modification number 1), begun intervals kept.
    later = now + timedelta(minutes=20)
    _telemetry(store, now.replace(minute=0), 1, 0.6)
    second = run_near_real_time(store, grid, now=later, config=CONFIG)
    assert second is not None and second.summary["published"] == 0 and second.summary["modified"] == 8
    again = store.signal(nf.event_id)
    assert again.modification_number == 1
    assert again.payload.intervals[0] == nf.payload.intervals[0]
    assert again.start == nf.start and len(again.payload.intervals) == CONFIG.non_firm_horizon_intervals + 1
    # Invariant: firm + non-firm never above the contract max, and the non-firm total is what headroom allows.
    t = grid.transformers[0]
    for signal in store.signals(publication_id=first.publication_id):
        cp = next(c for c in grid.connection_points if c.ean == signal.connection_point_id)
        firm = lowest_per_interval(store.signals(connection_point_id=cp.ean), Firmness.FIRM, "import_limit_kw")
        for it in signal.payload.intervals:
            assert firm[it.start] + it.import_limit_kw <= cp.contracted_max_import_kw + 1e-6
    assert second.summary["non_firm_import_kw"] <= t.limit_kw


def _lowered_run(store: DsoStore, *, lead_time_s: float) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """A first non-firm run with little load, then, five seconds before the next interval, a run with the load
    up: per household, the non-firm import limits published by each, by interval start (17:15 on)."""
    grid = GridStore(store).grid()
    assert grid is not None
    config = PlannerConfig(lead_time_s=lead_time_s)
    run_day_ahead(store, grid, day=TOMORROW, now=AFTER_14, config=config)
    now = datetime(2030, 1, 8, 17, 3, tzinfo=UTC)
    _telemetry(store, now.replace(minute=0) - 4 * Q, 4, 0.1)
    first = run_near_real_time(store, grid, now=now, config=config)
    assert first is not None and first.publication_id is not None
    before = {s.connection_point_id: [i.import_limit_kw for i in s.payload.intervals]  # type: ignore[union-attr]
              for s in store.publication(first.publication_id).signals}
    _telemetry(store, now.replace(minute=0), 2, 0.9)
    later = datetime(2030, 1, 8, 17, 29, 55, tzinfo=UTC)  # the 17:30 interval starts in 5 s
    run_near_real_time(store, grid, now=later, config=config)
    after = {s.connection_point_id: [i.import_limit_kw for i in s.payload.intervals]  # type: ignore[union-attr]
             for s in store.publication(first.publication_id).signals}
    return before, after


def test_non_firm_limits_starting_within_one_poll_period_are_never_lowered(store: DsoStore) -> None:
    before, after = _lowered_run(store, lead_time_s=10.0)
    # Intervals 17:15 (begun) and 17:30 (starts in 5 s, inside the 10 s lead) keep what every VEN already has.
    assert all(after[ean][:2] == before[ean][:2] for ean in before)
    # The run did lower what lies beyond the lead time, so without it 17:30 would have dropped too:
    assert any(after[ean][2] < before[ean][2] - 1e-6 for ean in before)
    control = DsoStore()
    GridStore(control).save_grid(lab_grid("kerber-landnetz-kabel-1"), now=AFTER_14 - timedelta(days=1), source="lab")
    control_before, control_after = _lowered_run(control, lead_time_s=0.0)
    assert control_before == before
    assert any(control_after[ean][1] < control_before[ean][1] - 1e-6 for ean in control_before)


def test_without_grid_nothing_runs() -> None:
    store = DsoStore()
    assert GridStore(store).grid() is None
    assert store.signals() == []


async def test_server_with_grid_publishes_firm_day_ahead_on_its_clock(tmp_path: object) -> None:
    import asyncio
    import json
    import urllib.request
    from pathlib import Path

    from dso_server.security.tokens import Role
    from dso_server.service import DsoServer
    from protocol.clock import AcceleratedClock

    example = Path(__file__).parent.parent / "examples" / "grid.toml"
    clock = AcceleratedClock(datetime(2030, 1, 7, 12, 50, tzinfo=UTC), speed=3600)  # 13:50 local, 1 h per s
    settings = plain_settings(db_path=":memory:", vtn_port=0, api_port=0, grid_path=example)
    async with DsoServer(settings, clock) as dso:
        gstore = GridStore(dso.store)
        for _ in range(100):
            if gstore.runs(kind="firm", day="2030-01-08"):
                break
            await asyncio.sleep(0.05)
        today, tomorrow = gstore.runs(kind="firm", day="2030-01-07"), gstore.runs(kind="firm", day="2030-01-08")
        assert len(today) == 1 and len(tomorrow) == 1
        assert tomorrow[0].run_at >= datetime(2030, 1, 7, 13, 0, tzinfo=UTC)  # released at 14:00 local, not before
        assert gstore.runs(kind="non_firm")
        url = f"{dso.api_url}/api/transformers/T1?day=2030-01-08"
        request = urllib.request.Request(url, headers=bearer(dso, Role.READ))
        body = await asyncio.to_thread(lambda: json.loads(urllib.request.urlopen(request, timeout=10).read()))
    # Five households whose contracts (87 kW) fit under the 538.65 kW limit: everyone gets the contract max.
    assert {i["firm_kw"] for i in body["intervals"]} == {87.0}


async def test_a_failed_run_is_recorded_in_the_store_and_the_loop_carries_on(monkeypatch: pytest.MonkeyPatch
                                                                             ) -> None:
    import asyncio
    from pathlib import Path

    import dso_server.service
    from dso_server.service import DsoServer
    from dso_server.settings import DsoSettings
    from protocol.clock import AcceleratedClock

    calls = []

    def broken(*args: object, **kwargs: object) -> None:
        calls.append(kwargs["now"])
        raise ValueError("no forecast for transformer T9")

    monkeypatch.setattr(dso_server.service, "run_near_real_time", broken)
    example = Path(__file__).parent.parent / "examples" / "grid.toml"
    clock = AcceleratedClock(datetime(2030, 1, 7, 12, 50, tzinfo=UTC), speed=3600)
    settings = DsoSettings(db_path=":memory:", vtn_port=0, api_port=0, grid_path=example, insecure=True)
    async with DsoServer(settings, clock) as dso:
        gstore = GridStore(dso.store)
        for _ in range(200):
            if len(gstore.runs(kind="non_firm", status="failed")) >= 2:
                break
            await asyncio.sleep(0.02)
        failed = gstore.runs(kind="non_firm", status="failed")
        assert len(failed) >= 2 and len(calls) >= 2  # recorded, and the loop ran again at the next interval
        assert failed[0].error == "ValueError: no forecast for transformer T9"
        assert failed[0].publication_id is None and failed[0].worker == dso.origin
        assert gstore.runs(kind="firm", status="ok")  # the day-ahead runs were not held up
