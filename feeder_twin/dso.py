"""The DSO side of the study: the live store and planner, and the in-process stand-in for the wire.

:class:`StudyDso` is a :class:`~dso_server.store.sqlite.DsoStore` (SQLite, in memory unless a path is given)
holding the study's grid (``GridStore.save_grid``, so every connection point is a household with the contract
the grid gives it). Everything the DSO sends goes through the store as in the live server: tariffs are published
as ToU events, and for the allocating strategies the live planner runs over the store
(``dso_server.capacity.planner.run_day_ahead`` for the firm limits, on the server's schedule: at once for the
current day, at 14:00 local for the next; ``run_near_real_time`` for the non-firm limits). The telemetry it
learns from is what each HEMS metered and would have reported, stored with ``store_reports``.

Performance contracts: the households' contracts (with their performance terms) replace the grid's default ones
in the store, as a contracts file does for the live server; the needs and daily verdicts their HEMSs send are
stored with ``store_reports`` (what the VTN does with them), and the day-ahead run allocates for the needs in force
(``run_day_ahead``), waiting for the first ones up to ``need_grace_s`` after the start like the live planning loop.

The wire, in process: :meth:`StudyDso.deliveries` is what the VTN's poll answer holds (``relevant_signals``: every
signal of the household that has not ended), turned into the decoded events the VEN hands its signal book. A
household is sent a new distribution only when one of its events is new or has a new modification number
(the VTN sends one on every status change too; the signal book ignores those, so leaving them out changes
nothing but time).

Timing against the live server: the near-real-time run happens once per interval, at its boundary, right after
the interval's telemetry arrived, instead of every 5 minutes. Its inputs (the last complete interval and the
intra-day forecast) and its window (from the next interval on) are the same for every run within an interval,
so the releases are those of the live loop; only the telemetry's delivery delay is zero here.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

import numpy as np

from dso_server.capacity.grid import Grid
from dso_server.capacity.planner import (
    FIRM,
    PlannerConfig,
    days_due,
    next_day_ahead_run,
    run_day_ahead,
    run_near_real_time,
)
from dso_server.capacity.powerflow import FeederModel
from dso_server.lifecycle import relevant_signals
from dso_server.records import Signal
from dso_server.store.grid_store import AllocationRun, GridStore
from dso_server.store.performance_store import PerformanceStore
from dso_server.store.sqlite import MEMORY, DsoStore, to_text
from protocol.contract import HouseholdContract
from protocol.effective import lowest_limits
from protocol.oadr20b.events import DecodedEvent, EventMeta
from protocol.performance import CapacityNeed, PerformanceReport
from protocol.reports import Telemetry, TelemetryInterval
from protocol.signals import CapacityBandwidth, Firmness, TouTariff


class StudyDso:
    def __init__(self, grid: Grid, *, now: datetime, path: str = MEMORY, config: PlannerConfig | None = None,
                 contracts: Iterable[HouseholdContract] = ()) -> None:
        """``contracts``: households whose contract differs from the grid's default (performance terms)."""
        counter = itertools.count(1)
        # Sequential ids: a run is reproducible to the event id (the live server uses random ones).
        self.store = DsoStore(path, id_factory=lambda prefix: f"{prefix}-{next(counter):06d}")
        self.grid = grid
        self.config = config if config is not None else PlannerConfig()
        self.eans = [cp.ean for cp in grid.connection_points]
        GridStore(self.store).save_grid(grid, now=now, source="feeder study")
        for contract in contracts:
            group = self.store.household(contract.connection_point_id).group
            self.store.put_household(contract, group=group, now=now)
        self._grace_until = now + timedelta(seconds=self.config.need_grace_s)
        self._models: dict[str, FeederModel] = {}
        self._delivered: dict[str, frozenset[tuple[str, int]]] = {}
        self._parsed: dict[str, Signal] = {}
        self._changed = True
        self._next_day_ahead: datetime | None = None
        self.runs: list[AllocationRun] = []
        self.failures: list[tuple[datetime, str]] = []
        """(when, error) of every planning step that failed."""

    def close(self) -> None:
        self.store.close()

    # ------------------------------------------------------------------------------------------ publishing

    def publish_tariffs(self, tariffs: Mapping[str, Iterable[TouTariff]], *, now: datetime) -> None:
        """Per connection point, its tariff events (one per day), published at ``now``."""
        by_day: dict[int, dict[str, TouTariff]] = {}
        for ean, days in tariffs.items():
            for position, tariff in enumerate(days):
                by_day.setdefault(position, {})[ean] = tariff
        with self.store.transaction():
            for payloads in by_day.values():
                self.store.publish(payloads, now=now)
        self._changed = True

    def record_telemetry(self, interval_start: datetime, eans: Sequence[str], telemetry: np.ndarray, *,
                         now: datetime) -> None:
        """Each household's metered (import, export) means of the interval, as its HEMS reports them."""
        with self.store.transaction():
            for ean, (import_kw, export_kw) in zip(eans, telemetry, strict=True):
                report = Telemetry(intervals=(TelemetryInterval(start=interval_start, import_kw=float(import_kw),
                                                                export_kw=float(export_kw)),))
                self.store.store_reports(ean, [report], now=now)

    def record_reports(self, reports: Iterable[tuple[str, CapacityNeed | PerformanceReport]], *,
                       now: datetime) -> None:
        """Capacity needs and daily verdicts the HEMSs sent, as the VTN stores them."""
        with self.store.transaction():
            for ean, report in reports:
                self.store.store_reports(ean, [report], now=now)

    def needs_in_force(self, eans: Sequence[str], *, since: datetime, until: datetime
                       ) -> dict[str, dict[datetime, float]]:
        """Per household and interval: the need in force at the end (the latest made)."""
        return PerformanceStore(self.store).needs_in_force(eans, since=since, until=until)

    def shortfalls(self) -> int:
        """Household-intervals the firm runs recorded as short of the need (``need_shortfalls``)."""
        return len(PerformanceStore(self.store).shortfalls())

    # ------------------------------------------------------------------------------------------ planning

    def plan(self, now: datetime) -> None:
        """The live server's planning loop body at ``now``: firm runs that are due, then a non-firm run. A run
        that fails is recorded in ``failures`` and the loop goes on, as the live loop logs it and tries again at
        its next wake-up (here: the next interval); the households keep the limits they have."""
        try:
            self._plan(now)
        except Exception as error:
            self.failures.append((now, f"{type(error).__name__}: {error}"))

    def _plan(self, now: datetime) -> None:
        if self._next_day_ahead is None or now >= self._next_day_ahead:
            waiting = False
            for day in days_due(now, self.config):
                run = run_day_ahead(self.store, self.grid, day=day, now=now, config=self.config, models=self._models,
                                    wait_for_needs_until=self._grace_until)
                self._record(run)
                waiting |= run is None and now < self._grace_until and not GridStore(self.store).runs(
                    kind=FIRM, day=day.isoformat(), limit=1)
            # A catch-up run waiting for needs looks again at the next interval (the live loop: every minute).
            self._next_day_ahead = now if waiting else next_day_ahead_run(now + timedelta(microseconds=1),
                                                                           self.config)
        self._record(run_near_real_time(self.store, self.grid, now=now, config=self.config, models=self._models))

    def _record(self, run: AllocationRun | None) -> None:
        if run is not None:
            self.runs.append(run)
            self._changed = True

    # ------------------------------------------------------------------------------------------ the wire

    def deliveries(self, now: datetime) -> dict[str, tuple[DecodedEvent, ...]]:
        """Per household with news since its last delivery: every relevant signal, decoded."""
        if not self._changed:
            return {}
        self._changed = False
        # Versions first (no payloads parsed); full signals only for the households with news.
        versions: dict[str, set[tuple[str, int]]] = {ean: set() for ean in self.eans}
        for row in self.store.db.query("SELECT event_id, connection_point_id, modification_number FROM signals "
                                       "WHERE end_at > ?", [to_text(now)]):
            versions.setdefault(row["connection_point_id"], set()).add((row["event_id"],
                                                                        row["modification_number"]))
        out = {}
        for ean, keys in versions.items():
            if frozenset(keys) == self._delivered.get(ean):
                continue
            self._delivered[ean] = frozenset(keys)
            signals = []
            for event_id, modification in keys:
                known = self._parsed.get(event_id)
                if known is None or known.modification_number != modification:
                    known = self._parsed[event_id] = self.store.signal(event_id)
                signals.append(known)
            signals.sort(key=lambda s: (s.start, s.created_at, s.event_id))  # the store's order
            relevant = relevant_signals(signals, acknowledged=(), now=now)
            out[ean] = tuple(
                DecodedEvent(meta=EventMeta(event_id=s.event_id, modification_number=s.modification_number,
                                            status=s.status_at(now), created_at=s.created_at),
                             payload=s.payload)
                for s in relevant if isinstance(s.payload, CapacityBandwidth | TouTariff))
        return out

    # ------------------------------------------------------------------------------------------ reading back

    def limits(self, *, since: datetime, until: datetime) -> dict[str, dict[datetime, tuple[float, float]]]:
        """Per household and interval: the (firm, firm + non-firm) import limits the DSO published, final
        versions (for the plots and the record)."""
        signals = self.store.bandwidths_overlapping(self.eans, since=since, until=until)
        out: dict[str, dict[datetime, tuple[float, float]]] = {}
        for ean, rows in signals.items():
            bandwidths = [s.payload for s in rows if not s.cancelled and isinstance(s.payload, CapacityBandwidth)]
            firm = lowest_limits(bandwidths, Firmness.FIRM)
            non_firm = lowest_limits(bandwidths, Firmness.NON_FIRM)
            out[ean] = {start: (value[0], value[0] + non_firm.get(start, (0.0, 0.0))[0])
                        for start, value in firm.items() if since <= start < until}
        return out
