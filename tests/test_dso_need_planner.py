"""The day-ahead run for performance contracts over a real store: needs in force are allocated for, a scarce
transformer's shortfalls are recorded (run summary and need_shortfalls), a catch-up run waits for the needs."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from dso_server.capacity.forecast import day_intervals
from dso_server.capacity.grid import ConnectionPoint, Feeder, Grid, Transformer
from dso_server.capacity.planner import PlannerConfig, needs_matrix, run_day_ahead
from dso_server.store.grid_store import GridStore
from dso_server.store.performance_store import PerformanceStore
from dso_server.store.sqlite import DsoStore
from protocol import CapacityNeed, Firmness, NeedInterval, PerformanceTerms, make_ean18
from protocol.effective import lowest_limits

CONFIG = PlannerConfig()
TODAY, TOMORROW = date(2030, 1, 7), date(2030, 1, 8)
AFTER_14 = datetime(2030, 1, 7, 13, 5, tzinfo=UTC)  # 14:05 in Amsterdam
EANS = [make_ean18(f"8716871299999{k:04d}") for k in range(1, 5)]
Q = timedelta(minutes=15)


def grid(rating_kva: float) -> Grid:
    return Grid(transformers=(Transformer(id="T1", rating_kva=rating_kva),),
                feeders=(Feeder(id="F1", transformer_id="T1"),),
                connection_points=tuple(ConnectionPoint(ean=ean, feeder_id="F1", contracted_max_import_kw=17,
                                                        contracted_max_export_kw=10)
                                        for ean in EANS))


def make_store(rating_kva: float, *, performance: int = 3) -> DsoStore:
    """A transformer of ``rating_kva`` with four households, the first ``performance`` under performance contracts."""
    store = DsoStore()
    saved = GridStore(store).save_grid(grid(rating_kva), now=AFTER_14 - timedelta(days=1), source="test")
    for ean in EANS[:performance]:
        contract = store.household(ean).contract.model_copy(update={"performance": PerformanceTerms()})
        store.put_household(contract, group="F1", now=AFTER_14 - timedelta(days=1))
    assert len(saved.created_households) == 4
    return store


def report_need(store: DsoStore, ean: str, day: date, kw: float, *, evening_kw: float | None = None,
                made: datetime = AFTER_14 - timedelta(hours=2)) -> CapacityNeed:
    starts = day_intervals(day, CONFIG.timezone)
    need = CapacityNeed(created_at=made, intervals=tuple(
        NeedInterval(start=s, import_kw=evening_kw if evening_kw is not None and 68 <= k < 84 else kw)
        for k, s in enumerate(starts)))
    store.store_reports(ean, [need], now=made)
    return need


def firm(store: DsoStore, ean: str, day: date) -> dict[datetime, float]:
    starts = day_intervals(day, CONFIG.timezone)
    signals = store.bandwidths_overlapping([ean], since=starts[0], until=starts[-1] + Q)[ean]
    lowest = lowest_limits([s.payload for s in signals if not s.cancelled], Firmness.FIRM)  # type: ignore[misc]
    return {s: lowest[s][0] for s in starts}


def test_needs_the_transformer_can_carry_are_met_and_the_rest_follows_the_fair_rule() -> None:
    store = make_store(25.0)  # 23.75 kW capacity, 21.375 kW firm
    for ean, kw in zip(EANS[:3], (3.0, 2.0, 4.5), strict=True):
        report_need(store, ean, TOMORROW, 1.0, evening_kw=kw)
    run = run_day_ahead(store, GridStore(store).grid(), day=TOMORROW, now=AFTER_14, config=CONFIG)  # type: ignore[arg-type]
    assert run is not None
    needs = PerformanceStore(store).needs_in_force(EANS, since=run.window_start, until=run.window_end)
    for ean in EANS[:3]:
        limits = firm(store, ean, TOMORROW)
        assert all(limits[s] >= kw - 1e-3 for s, kw in needs[ean].items()), ean
    assert run.summary["need_households"] == 3 and run.summary["needs_not_honoured"] == {}
    assert PerformanceStore(store).shortfalls(run_id=run.run_id) == []
    totals = sum(np.array(list(firm(store, ean, TOMORROW).values())) for ean in EANS)
    assert np.all(totals <= GridStore(store).grid().transformers[0].limit_kw + 1e-6)  # type: ignore[union-attr]


def test_needs_a_scarce_transformer_cannot_carry_are_scaled_and_recorded() -> None:
    store = make_store(10.0)  # 9.5 kW capacity, 8.55 kW firm: the evening's needs (3 x 4 kW) do not fit
    for ean in EANS[:3]:
        report_need(store, ean, TOMORROW, 1.0, evening_kw=4.0)
    run = run_day_ahead(store, GridStore(store).grid(), day=TOMORROW, now=AFTER_14, config=CONFIG)  # type: ignore[arg-type]
    assert run is not None
    starts = day_intervals(TOMORROW, CONFIG.timezone)
    evening = starts[68:84]
    factor = 8.55 / (3 * 4.0)  # proportional: every need to the same share
    for ean in EANS[:3]:
        limits = firm(store, ean, TOMORROW)
        assert all(limits[s] == pytest.approx(4.0 * factor, abs=2e-3) for s in evening)
        assert all(limits[s] >= 1.0 - 1e-3 for s in starts[:68])  # the night's needs fit
    not_honoured = run.summary["needs_not_honoured"]
    assert set(not_honoured) == set(EANS[:3]) and all(v["intervals"] == 16 for v in not_honoured.values())
    recorded = PerformanceStore(store).shortfalls(run_id=run.run_id)
    assert len(recorded) == 3 * 16 and {r.interval_start for r in recorded} == set(evening)
    assert all(r.shortfall_kw == pytest.approx(4.0 * (1 - factor), abs=2e-3) for r in recorded)


def test_a_later_need_replaces_an_earlier_one_and_needs_made_after_the_run_do_not_count() -> None:
    store = make_store(25.0)
    report_need(store, EANS[0], TOMORROW, 1.0, made=AFTER_14 - timedelta(hours=3))
    report_need(store, EANS[0], TOMORROW, 2.5, made=AFTER_14 - timedelta(hours=1))
    report_need(store, EANS[0], TOMORROW, 9.0, made=AFTER_14 + timedelta(minutes=1))
    starts = day_intervals(TOMORROW, CONFIG.timezone)
    needs, performance = needs_matrix(store, GridStore(store).grid(), starts, as_of=AFTER_14)  # type: ignore[arg-type]
    assert performance == EANS[:3]
    assert np.all(needs[0] == 2.5) and np.isnan(needs[1:]).all()


def test_a_catch_up_run_waits_for_the_needs_until_the_grace_ends() -> None:
    store = make_store(25.0)
    g = GridStore(store).grid()
    assert g is not None
    deadline = AFTER_14 + timedelta(minutes=15)
    report_need(store, EANS[0], TODAY, 2.0)
    assert run_day_ahead(store, g, day=TODAY, now=AFTER_14, config=CONFIG, wait_for_needs_until=deadline) is None
    for ean in EANS[1:3]:
        report_need(store, ean, TODAY, 2.0)
    run = run_day_ahead(store, g, day=TODAY, now=AFTER_14, config=CONFIG, wait_for_needs_until=deadline)
    assert run is not None and run.summary["need_households"] == 3
    # Without the needs, the grace ending lets the run go ahead on today's rule for whoever reported none.
    other = make_store(25.0)
    late = run_day_ahead(other, g, day=TODAY, now=deadline, config=CONFIG, wait_for_needs_until=deadline)
    assert late is not None and late.summary["need_households"] == 0
