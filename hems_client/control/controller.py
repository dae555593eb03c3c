"""The controller loop: re-plans every interval, on new signals and on failsafe changes, steps the household
under a local guard, meters each interval and reports telemetry, plan and comfort status.

All timing follows the injected clock. The household is stepped in sub-steps of ``substep_s`` clock seconds;
each sub-step the guard (``hems_client.control.guard``) corrects the plan's setpoints against the last measured load.
Sending never blocks the loop: reports go through an outbox drained by a separate task. Telemetry the transport
could not deliver is kept (up to two days) and sent again once contact returns (PROFILE.md §9.3.3): the interval
that just ended at once, the missed ones after a random wait of 0-300 s (so that a region reconnecting at once does
not stampede the VTN), the oldest first, at most 96 per message. Plans go at most once per 15-minute interval and
at least every 4 h (§9.4.1).

Failsafe (``hems_client.control.failsafe``): with a ``link`` (the VEN's ``last_contact_at``) the controller applies the
contract's failsafe limits after ``failsafe_after_s`` of clock time without contact, instead of the signal-based
limits, for the guard and the plan alike; it wakes exactly at the failsafe's deadlines. Transitions are written
into the next decision's ``notes``, the time spent in failsafe into the KPIs. Without a link (a controller
driven without transport) the failsafe never moves: it stays normal, or in a failsafe resumed from the store.

Store (``hems_client.store``): with a ``store`` the contract, the signal book and the failsafe state are written
on every change, and a controller built without a signal book resumes from the stored one.

Planner interface (``hems_client.control.planning``): ``Planner.plan(now, state, limits, tariff, contract) ->
ControlDecision``; :class:`OptimiserPlanner` (the convex optimiser, compiled once) is the default,
:class:`RulePlanner` drops in behind the same call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Protocol

from hems_client.control.failsafe import (
    Failsafe,
    FailsafeState,
    FailsafeTransition,
    failsafe_limit,
)
from hems_client.control.guard import guard_setpoints, interval_budget_kw
from hems_client.control.need_planner import NeedWindow
from hems_client.control.optimiser_planner import OptimiserPlanner
from hems_client.control.over_limit import IntervalLog, attribute
from hems_client.control.performance_reporting import PerformanceReporting
from hems_client.control.planning import ControlDecision, HouseholdState, Planner
from hems_client.control.rule_planner import RulePlanner
from hems_client.control.signal_book import DEFAULT_PRICES, SignalBook
from hems_client.devices.household import Household
from hems_client.kpi import KpiTracker
from hems_client.optimiser import COMFORT_OR_EV_FORCED
from hems_client.settings import ControllerSettings
from hems_client.store import HemsStore
from protocol.clock import Clock, sleep_until
from protocol.contract import HouseholdContract
from protocol.effective import EffectiveLimit, binding_limits_kw
from protocol.performance import CapacityNeed, PerformanceReport
from protocol.reports import MAX_REPORT_INTERVALS, ComfortStatus, Plan, PlanInterval, Telemetry, TelemetryInterval
from protocol.signals import TariffInterval
from protocol.timebase import INTERVAL, INTERVAL_S, floor_to_interval

__all__ = ["ContactSource", "ControlDecision", "Controller", "HouseholdState", "IntervalMeter",
           "OptimiserPlanner", "Planner", "Reporter", "RulePlanner"]

logger = logging.getLogger(__name__)

TELEMETRY_CHUNK = 96
"""PROFILE.md §9.3.2: at most 96 intervals per telemetry report."""
BACKFILL_MAX_WAIT_S = 300.0
"""PROFILE.md §9.3.3: after a loss of contact the missed intervals wait a random 0-300 s."""
DEFAULT_SETTINGS = ControllerSettings()

ATTRIBUTION_LOOKBACK_INTERVALS = 24
"""How far back (6 h) an over-limit interval looks for base load that ran above its forecast."""
TRACKING_WINDOW_S = 3600.0
"""The guard's margin covers the largest one-sub-step rise of the load it saw over this many clock seconds."""


class Reporter(Protocol):
    """Where the controller's reports go (the VEN). Each call returns True when the VTN accepted the report."""

    async def send_telemetry(self, telemetry: Telemetry) -> bool: ...

    async def send_plan(self, plan: Plan) -> bool: ...

    async def send_comfort(self, status: ComfortStatus) -> bool: ...

    async def send_need(self, need: CapacityNeed) -> bool: ...

    async def send_performance(self, report: PerformanceReport) -> bool: ...


class ContactSource(Protocol):
    """Link health for the failsafe (``HemsVen``), in clock time: the last exchange the VTN answered, and the
    last exchange that ended, answered or failed (None: unknown, then silence is judged up to now)."""

    @property
    def last_contact_at(self) -> datetime | None: ...

    @property
    def last_attempt_at(self) -> datetime | None: ...


class IntervalMeter:
    """Accumulates import and export energy per 15-minute interval; steps that cross a boundary are split."""

    def __init__(self) -> None:
        self._open: dict[datetime, list[float]] = {}

    def add(self, start: datetime, end: datetime, *, import_kw: float, export_kw: float) -> None:
        moment = start
        while moment < end:
            boundary = floor_to_interval(moment) + INTERVAL
            piece_end = min(boundary, end)
            seconds = (piece_end - moment).total_seconds()
            bucket = self._open.setdefault(floor_to_interval(moment), [0.0, 0.0, 0.0])
            bucket[0] += import_kw * seconds
            bucket[1] += export_kw * seconds
            bucket[2] += seconds
            moment = piece_end

    def close_before(self, moment: datetime) -> list[TelemetryInterval]:
        """Close every interval that ended by ``moment``: mean kW over the time it was metered."""
        closed = []
        for start in sorted(s for s in self._open if s + INTERVAL <= moment):
            import_ks, export_ks, seconds = self._open.pop(start)
            if seconds > 0:
                closed.append(TelemetryInterval(start=start, import_kw=import_ks / seconds,
                                                export_kw=export_ks / seconds))
        return closed


class Controller:
    def __init__(
        self,
        *,
        contract: HouseholdContract,
        household: Household,
        clock: Clock,
        signal_book: SignalBook | None = None,
        planner: Planner | None = None,
        reporter: Reporter | None = None,
        link: ContactSource | None = None,
        store: HemsStore | None = None,
        kpi: KpiTracker | None = None,
        settings: ControllerSettings = DEFAULT_SETTINGS,
        performance: PerformanceReporting | None = None,
    ) -> None:
        """``signal_book``: the book the transport fills; None resumes the store's (or starts empty).
        ``link``: where contact with the VTN is seen (the VEN; may be set after construction); without one
        the failsafe never moves. ``settings``: how the loop runs (validated when made; its
        ``failsafe_after_s`` None disables the failsafe, and must exceed the VEN's poll period in clock time).
        ``performance``: needs and daily verdicts of a performance contract (made from the contract when it has
        performance terms and none is given)."""
        if not isinstance(settings, ControllerSettings):
            raise TypeError(f"settings must be ControllerSettings, not {type(settings).__name__}")
        self.settings = settings
        failsafe_after_s = settings.failsafe_after_s
        self.contract = contract
        self.household = household
        self.clock = clock
        self.store = store
        if store is not None:
            store.save_contract(contract)  # refuses a store that belongs to another connection point
        if signal_book is None:
            signal_book = (store.load_signal_book() if store is not None
                           else SignalBook(default_prices=settings.default_prices))
        self.signal_book = signal_book
        self.planner: Planner = (planner if planner is not None
                                 else OptimiserPlanner(horizon_intervals=settings.horizon_intervals))
        self.reporter = reporter
        self.link = link
        self.kpi = kpi if kpi is not None else KpiTracker(timezone=contract.comfort.timezone)
        if performance is None and contract.performance is not None:
            performance = PerformanceReporting(contract, store=store)
        self.performance = performance
        """Capacity needs and daily verdicts (PROFILE §9.5, §9.6); None without a performance contract."""
        self.substep_s = settings.substep_s
        self.horizon_intervals = settings.horizon_intervals
        self.default_prices = settings.default_prices
        self.guard_margin_kw = settings.guard_margin_kw
        self.plan_tolerance_kw = settings.plan_tolerance_kw
        self.plan_resend_s = settings.plan_resend_s
        self.history_intervals = settings.history_intervals

        self.decision: ControlDecision | None = None
        self.telemetry: list[TelemetryInterval] = []
        """The last ``history_intervals`` closed intervals, measured."""
        self.limits_applied: dict[datetime, EffectiveLimit] = {}
        """The effective limit the guard applied in each interval (the last one, if it changed), as long as
        the interval is in ``telemetry`` or still open."""
        self.replans = 0
        self.plan_failures = 0
        """Re-plans that raised; the loop carried on (see ``_unplanned_decision``)."""
        self.send_failures = 0
        self._meter = IntervalMeter()
        self._last_step_at: datetime | None = None
        self._signals_dirty = False
        self._seen_version = -1
        self._last_plan_sent: Plan | None = None
        self._unsent_telemetry: list[TelemetryInterval] = []
        self._delivery_lost = False
        """The last telemetry could not be delivered: the next success is contact returning (§9.3.3)."""
        self._backfill_at: datetime | None = None
        """Until then only the newest interval goes; the missed ones after it (§9.3.3)."""
        self._rng = random.Random(contract.connection_point_id)  # spreads a region, reproducible per household
        self._prices_applied: dict[datetime, TariffInterval] = {}
        self._limit_cache: tuple[datetime, int, FailsafeState, EffectiveLimit, TariffInterval] | None = None
        self._budget_key: tuple[datetime, float, float] | None = None
        self._budget_used = [0.0, 0.0, 0.0]
        """Import kW·s, export kW·s and seconds since the interval began or its limit last changed."""
        self._outbox: asyncio.Queue[Callable[[], Awaitable[bool]]] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._saved_revision = signal_book.revision
        self._pending_notes: list[str] = []
        self._tracking: deque[tuple[datetime, float]] = deque()
        """(time, kW) of the guard's one-sub-step tracking errors that could matter: the largest rise of the
        measured over the expected net import in the last ``TRACKING_WINDOW_S``, as a monotone queue."""
        self._interval_logs: dict[datetime, IntervalLog] = {}
        """Per open interval, what the over-limit attribution (``control.over_limit``) needs."""
        self._base_load_excess_kwh: deque[float] = deque(maxlen=ATTRIBUTION_LOOKBACK_INTERVALS)
        """Base load above its forecast in each of the last closed intervals, kWh."""
        self._plugged: set[datetime] = set()
        """Open intervals in which the EV was plugged in at some sub-step (for the performance verdict)."""
        self._failsafe_intervals: set[datetime] = set()
        """Open intervals in which the failsafe limit applied at some sub-step."""

        self.failsafe: Failsafe | None = None
        """The failsafe state machine (None when disabled)."""
        self.failsafe_transitions: list[FailsafeTransition] = []
        if failsafe_after_s is not None:
            snapshot = store.load_failsafe() if store is not None else None
            self.failsafe = Failsafe(after_s=failsafe_after_s, hold_s=contract.failsafe_duration_s,
                                     watch_from=clock.now(), snapshot=snapshot)
            if self.failsafe.state.failsafe_limits:
                self._pending_notes.append(f"failsafe resumed from the store: in force since "
                                           f"{self.failsafe.entered_at:%Y-%m-%d %H:%M:%S}Z")

    # ------------------------------------------------------------------------------------- state

    @property
    def failsafe_state(self) -> FailsafeState:
        return FailsafeState.NORMAL if self.failsafe is None else self.failsafe.state

    def limits_in_force(self, moment: datetime) -> EffectiveLimit:
        """The limit the guard applies at ``moment``: signal-based, or the contract's failsafe limit."""
        return self._in_force(moment)[0]

    def horizon_limits(self, start: datetime, count: int | None = None) -> list[EffectiveLimit]:
        """The limits the planner gets for the horizon (or ``count`` intervals) from ``start``. In failsafe
        without contact the failsafe limit covers the whole horizon (when contact returns is unknown); with
        contact back, until the hold ends (the release is certain by then)."""
        count = self.horizon_intervals if count is None else count
        limits = self.signal_book.effective_limits(self.contract, start=start, count=count)
        failsafe = self.failsafe
        if failsafe is None or not failsafe.state.failsafe_limits:
            return limits
        until = failsafe.hold_until if failsafe.state is FailsafeState.FAILSAFE_RECONNECTED else None
        return [failsafe_limit(self.contract, limit.start) if until is None or limit.start < until else limit
                for limit in limits]

    # ------------------------------------------------------------------------------------- the loop

    def signals_changed(self) -> None:
        """Listener for the transport: the signal book changed; store it now, re-plan at the next sub-step."""
        self._signals_dirty = True
        self._persist_signals()

    async def run(self, until: datetime | None = None) -> None:
        """Run until ``until`` (clock time) or until cancelled."""
        self._start_sender()
        try:
            if self._last_step_at is None:
                self._last_step_at = self.clock.now()
                if self.failsafe is not None:
                    self.failsafe.watch_from = self._last_step_at  # silence counts from the start of the loop
                self._update_failsafe(self._last_step_at)
                self._replan(self._last_step_at)
                self._report_performance(self._last_step_at)
            while until is None or self._last_step_at < until:
                previous = self._last_step_at
                target = min(previous + timedelta(seconds=self.substep_s), floor_to_interval(previous) + INTERVAL)
                deadline = self._failsafe_deadline()
                if deadline is not None and deadline > previous:
                    target = min(target, deadline)  # engage (or release) exactly on time
                if until is not None:
                    target = min(target, until)
                await sleep_until(self.clock, target)
                now = max(self.clock.now(), target)
                self._advance(previous, now)
                self._last_step_at = now
                self._persist_signals()
                self._backfill_due(now)
                failsafe_moved = self._update_failsafe(now)
                if floor_to_interval(now) > floor_to_interval(previous):
                    self._close_intervals(now)
                    self._replan(now)
                    self._report_performance(now)
                elif failsafe_moved or self._signals_dirty or self.signal_book.version != self._seen_version:
                    self._replan(now)
            await self.flush()  # reached ``until``: deliver the last interval's reports
        finally:
            await self._stop_sender()

    async def flush(self, timeout_s: float = 5.0) -> None:
        """Wait (wall time) until the outbox is empty, for a clean shutdown."""
        if self._outbox is not None and self._sender is not None and not self._sender.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox.join(), timeout_s)

    # ------------------------------------------------------------------------------------- planning

    def _replan(self, now: datetime) -> None:
        self._signals_dirty = False
        self._seen_version = self.signal_book.version
        start = floor_to_interval(now)
        planned = True
        try:
            if self.signal_book.expire(now):
                self._persist_signals()
            limits = self.horizon_limits(start)
            tariff = self.signal_book.tariff(start=start, count=self.horizon_intervals, default=self.default_prices)
            measured_state = self.household.state(now, self.horizon_intervals)
            state = self._with_guard_reserve(measured_state, limits)
            decision = self.planner.plan(now, state, limits, tariff, self.contract)
            self._log_plan(start, measured_state, state, limits[0], decision)
        except Exception as error:  # a bad value must not stop the household's control loop
            planned = False
            self.plan_failures += 1
            logger.exception("%s: planning failed at %s", self.contract.connection_point_id, now)
            decision = self._unplanned_decision(now, start, error)
        notes = [*self._pending_notes, *self._failsafe_notes()]
        self._pending_notes.clear()
        self.decision = replace(decision, notes=(*notes, *decision.notes)) if notes else decision
        self.replans += 1
        if planned and self._plan_due(self.decision.plan):
            self._last_plan_sent = self.decision.plan
            plan = self.decision.plan
            self._enqueue(lambda: self._send(lambda reporter: reporter.send_plan(plan)))

    def _log_plan(self, start: datetime, measured: HouseholdState, planned: HouseholdState, limit: EffectiveLimit,
                  decision: ControlDecision) -> None:
        """What the over-limit attribution needs from a plan: the base load it expected in the interval now
        running, and whether (and why) it went over that interval's limit."""
        log = self._interval_logs.setdefault(start, IntervalLog())
        if log.forecast_base_kw is None and len(measured.forecast):
            log.forecast_base_kw = measured.forecast.base_load_kw[0]
        first = decision.plan.intervals[0] if decision.plan.intervals else None
        if first is None or first.start != start:
            return
        reserve = planned.forecast.base_load_kw[0] - measured.forecast.base_load_kw[0]
        over_kw = first.net_import_kw - reserve - limit.import_limit_kw
        stamp = f"{start:%Y-%m-%d %H:%M}Z"
        notes = [note for note in decision.notes if "import limit" in note]
        note = next((n for n in notes if stamp in n), notes[0] if notes else None)
        log.add_plan(over_kw=over_kw, note=note, comfort_forced=note is not None and COMFORT_OR_EV_FORCED in note)

    def _with_guard_reserve(self, state: HouseholdState, limits: Sequence[EffectiveLimit]) -> HouseholdState:
        """Where an import limit is within the guard's margin of 0, the guard keeps that much export (import
        once drawn cannot be taken back): the plan carries it as base load, so that the battery covering a
        0 kW window is not drained by the margin before the window ends."""
        margin = self.guard_margin()
        forecast = state.forecast
        extra = [max(margin - limit.import_limit_kw, 0.0) for limit in limits]
        if not any(extra):
            return state
        base = tuple(kw + (extra[k] if k < len(extra) else 0.0) for k, kw in enumerate(forecast.base_load_kw))
        return replace(state, forecast=replace(forecast, base_load_kw=base))

    def _unplanned_decision(self, now: datetime, start: datetime, error: Exception) -> ControlDecision:
        """What the household runs on when planning failed: the previous setpoints (the guard clips them to what
        each device can do now and keeps the limit in force), or none at all; the plan is not sent."""
        note = (f"planning failed ({type(error).__name__}: {error}); the guard keeps the limit in force with "
                + ("the previous plan's setpoints" if self.decision is not None else "no setpoints"))
        if self.decision is not None:
            return replace(self.decision, created_at=now, notes=(note,))
        limit = self.limits_in_force(start)
        plan = Plan(created_at=now, intervals=(PlanInterval(start=start, net_import_kw=limit.import_limit_kw),))
        return ControlDecision(created_at=now, setpoints={}, plan=plan, notes=(note,))

    def _plan_due(self, plan: Plan) -> bool:
        """Send this plan? The first; then at most one per 15-minute interval (a change waits for the next
        interval's plan), when it changed or ``plan_resend_s`` (4 h) passed (PROFILE.md §9.4.1)."""
        last = self._last_plan_sent
        if last is None:
            return True
        if floor_to_interval(plan.created_at) == floor_to_interval(last.created_at):
            return False
        if (plan.created_at - last.created_at).total_seconds() >= self.plan_resend_s:
            return True
        before = {interval.start: interval.net_import_kw for interval in last.intervals}
        return any(abs(interval.net_import_kw - before[interval.start]) > self.plan_tolerance_kw
                   for interval in plan.intervals if interval.start in before)

    def _in_force(self, moment: datetime) -> tuple[EffectiveLimit, TariffInterval]:
        start = floor_to_interval(moment)
        cache = self._limit_cache
        state = self.failsafe_state
        if cache is None or cache[0] != start or cache[1] != self.signal_book.version or cache[2] is not state:
            try:
                if state.failsafe_limits:
                    limit = failsafe_limit(self.contract, start)
                else:
                    limit = self.signal_book.effective_limits(self.contract, start=start, count=1)[0]
                price = self.signal_book.tariff(start=start, count=1, default=self.default_prices).intervals[0]
            except Exception:  # never stop the loop: the contract's failsafe limit is the safe assumption
                logger.exception("%s: the limit in force at %s cannot be computed; applying the contract's "
                                 "failsafe limit", self.contract.connection_point_id, start)
                limit = failsafe_limit(self.contract, start)
                price = TariffInterval(start=start, import_price_eur_per_kwh=DEFAULT_PRICES.import_price_eur_per_kwh,
                                       export_price_eur_per_kwh=DEFAULT_PRICES.export_price_eur_per_kwh)
            cache = self._limit_cache = (start, self.signal_book.version, state, limit, price)
        return cache[3], cache[4]

    # ------------------------------------------------------------------------------------- failsafe, store

    def _failsafe_deadline(self) -> datetime | None:
        if self.failsafe is None or self.link is None:
            return None
        return self.failsafe.next_deadline(self.link.last_contact_at)

    def _update_failsafe(self, now: datetime) -> bool:
        """Feed the failsafe what has been seen by ``now``; True when its state moved."""
        if self.failsafe is None or self.link is None:
            return False
        transitions = self.failsafe.update(now=now, last_contact_at=self.link.last_contact_at,
                                           limits_changed_at=self.signal_book.fresh_limits_at(now),
                                           last_attempt_at=self.link.last_attempt_at)
        if not transitions:
            return False
        self.failsafe_transitions.extend(transitions)
        for transition in transitions:
            note = transition.describe(self.contract)
            self._pending_notes.append(note)
            logger.warning("%s: %s", self.contract.connection_point_id, note)
        if self.store is not None:
            self.store.save_failsafe(self.failsafe.snapshot())
        return True

    def _failsafe_notes(self) -> list[str]:
        failsafe = self.failsafe
        if failsafe is None or not failsafe.state.failsafe_limits:
            return []
        limit = failsafe_limit(self.contract, self.clock.now())
        return [f"failsafe limits in force ({failsafe.state.value}): {limit.import_limit_kw:.2f} kW import / "
                f"{limit.export_limit_kw:.2f} kW export since {failsafe.entered_at:%Y-%m-%d %H:%M:%S}Z, held at "
                f"least until {failsafe.hold_until:%Y-%m-%d %H:%M:%S}Z"]

    def _persist_signals(self) -> None:
        if self.store is not None and self.signal_book.revision != self._saved_revision:
            self.store.save_signal_book(self.signal_book)
            self._saved_revision = self.signal_book.revision

    # ------------------------------------------------------------------------------------- the plant

    def _advance(self, start: datetime, end: datetime) -> None:
        """Step the household from ``start`` to ``end`` in sub-steps, under the guard."""
        assert self.decision is not None
        household = self.household
        comfort = self.contract.comfort
        moment = start
        while moment < end:
            dt_s = min(self.substep_s, (end - moment).total_seconds())
            if dt_s <= 1e-6:
                break
            limit, price = self._in_force(moment)
            self.limits_applied[limit.start] = limit
            self._prices_applied[limit.start] = price
            ranges = household.power_ranges_kw(moment, dt_s)
            uncontrolled = sum(ranges[d.name][0] for d in household.devices if not d.flexible)
            import_limit_kw, export_limit_kw = self._budget_limits(moment, limit)
            import_margin_kw, export_margin_kw = self._margins(moment, import_limit_kw, export_limit_kw)
            guarded = guard_setpoints(
                devices=household.devices, setpoints=self.decision.setpoints, ranges=ranges,
                uncontrolled_kw=uncontrolled, import_limit_kw=import_limit_kw,
                export_limit_kw=export_limit_kw, margin_kw=import_margin_kw, export_margin_kw=export_margin_kw,
            )
            result = household.step(moment, dt_s, guarded.setpoints)
            log = self._interval_logs.setdefault(limit.start, IntervalLog())
            log.add_step(dt_s=dt_s, import_limit_kw=limit.import_limit_kw, unshed_kw=guarded.unresolved_kw,
                         uncontrolled_kw=sum(
                result.power_kw.get(d.name, 0.0) for d in household.devices if not d.flexible))
            self._track(moment, result.net_import_kw - guarded.expected_net_import_kw)
            used = self._budget_used
            used[0], used[1], used[2] = (used[0] + result.import_kw * dt_s, used[1] + result.export_kw * dt_s,
                                         used[2] + dt_s)
            step_end = moment + timedelta(seconds=dt_s)
            self._meter.add(moment, step_end, import_kw=result.import_kw, export_kw=result.export_kw)
            if self.failsafe_state.failsafe_limits:
                self.kpi.record_failsafe(at=moment, dt_s=dt_s)
                self._failsafe_intervals.add(floor_to_interval(moment))
            if household.indoor_temp_c is not None:
                self.kpi.record_comfort(at=moment, dt_s=dt_s, indoor_temp_c=household.indoor_temp_c,
                                        comfort_min_c=comfort.comfort_min_c, comfort_max_c=comfort.comfort_max_c)
            if self.performance is not None:
                self.performance.record_step(at=moment, dt_s=dt_s, indoor_temp_c=household.indoor_temp_c)
                if household.ev is not None and household.ev.plugged_in:
                    self._plugged.add(floor_to_interval(moment))
            for departure in result.departures:
                self.kpi.record_departure(at=departure.at, range_km=departure.range_km,
                                          required_range_km=comfort.ev_required_range_km)
                if self.performance is not None:
                    self.performance.record_departure(at=departure.at, range_km=departure.range_km)
            moment = step_end

    def guard_margin(self) -> float:
        """How far inside the limits the guard aims: ``guard_margin_kw``, or more where the load rose more
        between two sub-steps than that in the last ``TRACKING_WINDOW_S`` (the largest rise of the measured over
        the guard's expected net import): the guard sees the load a sub-step late, and import drawn in that
        step cannot be taken back when the budget is 0."""
        return max(self.guard_margin_kw, self._tracking[0][1]) if self._tracking else self.guard_margin_kw

    def _track(self, at: datetime, error_kw: float) -> None:
        queue = self._tracking
        while queue and queue[-1][1] <= error_kw:  # an older, smaller error can never be the window's largest
            queue.pop()
        queue.append((at, error_kw))
        horizon = at - timedelta(seconds=TRACKING_WINDOW_S)
        while queue[0][0] < horizon:
            queue.popleft()

    def _margins(self, moment: datetime, import_budget_kw: float, export_budget_kw: float) -> tuple[float, float]:
        """The guard's import and export margins for the next sub-step. An overshoot the rest of the interval
        can take back needs none (the budget does it): the margin applies in the interval's last two sub-steps
        and where the budget is within a margin of 0 (import drawn then cannot be taken back). Keeping the
        margin all interval long would drain the battery covering a binding limit by the margin, unplanned."""
        margin = self.guard_margin()
        remaining_s = (floor_to_interval(moment) + INTERVAL - moment).total_seconds()
        closing = remaining_s <= 2 * self.substep_s
        return (margin if closing or import_budget_kw <= margin else 0.0,
                margin if closing or export_budget_kw <= margin else 0.0)

    def _budget_limits(self, moment: datetime, limit: EffectiveLimit) -> tuple[float, float]:
        """Import and export limits for the guard's next sub-step: the limit in force, tightened by what this
        interval has already taken (``guard.interval_budget_kw``). The budget counts from the start of the
        interval or from the last change of its limit, whichever is later: a limit that tightens mid-interval
        (failsafe, a new signal) is not charged for the power drawn under the looser one."""
        key = (floor_to_interval(moment), limit.import_limit_kw, limit.export_limit_kw)
        if key != self._budget_key:
            self._budget_key = key
            self._budget_used = [0.0, 0.0, 0.0]
        import_kws, export_kws, used_s = self._budget_used
        remaining_s = (key[0] + INTERVAL - moment).total_seconds()
        return (interval_budget_kw(limit_kw=limit.import_limit_kw, used_kws=import_kws, used_s=used_s,
                                   remaining_s=remaining_s),
                interval_budget_kw(limit_kw=limit.export_limit_kw, used_kws=export_kws, used_s=used_s,
                                   remaining_s=remaining_s))

    def _close_intervals(self, now: datetime) -> None:
        closed = self._meter.close_before(floor_to_interval(now))
        for interval in closed:
            limit = self.limits_applied.get(interval.start) or self._in_force(interval.start)[0]
            price = self._prices_applied.pop(interval.start, None) or self._in_force(interval.start)[1]
            log = self._interval_logs.pop(interval.start, None) or IntervalLog()
            import_limit_kw = binding_limits_kw(self.contract, limit.import_limit_kw, limit.export_limit_kw)[0]
            reason, detail = (attribute(log, import_kw=interval.import_kw, limit_kw=import_limit_kw,
                                        earlier_excess_kwh=sum(self._base_load_excess_kwh),
                                        earlier_h=len(self._base_load_excess_kwh) * INTERVAL_S / 3600)
                              if interval.import_kw > import_limit_kw else (None, ""))  # the KPI decides what counts
            self._base_load_excess_kwh.append(log.base_load_excess_kwh)
            self.kpi.record_interval(
                start=interval.start, import_kw=interval.import_kw, export_kw=interval.export_kw,
                import_limit_kw=import_limit_kw, import_price_eur_per_kwh=price.import_price_eur_per_kwh,
                export_price_eur_per_kwh=price.export_price_eur_per_kwh, over_reason=reason, over_detail=detail,
            )
            if self.performance is not None:
                self.performance.interval_closed(
                    start=interval.start, failsafe=interval.start in self._failsafe_intervals,
                    dso_limit_kw=self.signal_book.effective_limits(self.contract, start=interval.start,
                                                                   count=1)[0].import_limit_kw,
                    plugged=interval.start in self._plugged)
            self._plugged.discard(interval.start)
            self._failsafe_intervals.discard(interval.start)
        if not closed:
            return
        self.telemetry = (self.telemetry + closed)[-self.history_intervals:]
        oldest = self.telemetry[0].start
        for start in [s for s in self.limits_applied if s < oldest]:
            del self.limits_applied[start]
        self._unsent_telemetry = (self._unsent_telemetry + closed)[-MAX_REPORT_INTERVALS:]
        self._enqueue(self._send_telemetry_backlog)
        status = self.comfort_status(now)
        if status is not None:
            self._enqueue(lambda: self._send(lambda reporter: reporter.send_comfort(status)))

    def _report_performance(self, now: datetime) -> None:
        """Under a performance contract: the needs that are due and the daily verdicts that are ready."""
        reporting = self.performance
        if reporting is None or self.reporter is None:
            return
        try:
            made = reporting.make_needs(
                now, state=lambda: self.household.state(now, reporting.horizon_intervals),
                limits=lambda start, count: self.horizon_limits(start, count),
                tariff=lambda start, count: self.signal_book.tariff(start=start, count=count,
                                                                    default=self.default_prices))
        except Exception:  # the household's control loop goes on; the need is tried again next interval
            logger.exception("%s: capacity needs failed at %s", self.contract.connection_point_id, now)
            made = []
        for window, need in made:
            async def send_need(window: NeedWindow = window, need: CapacityNeed = need) -> bool:
                delivered = False
                try:
                    delivered = await self._send(lambda reporter: reporter.send_need(need))
                finally:
                    reporting.need_delivered(window, need, delivered)
                return delivered
            self._enqueue(send_need)
        for report in reporting.reports_due(now):
            async def send_report(report: PerformanceReport = report) -> bool:
                delivered = False
                try:
                    delivered = await self._send(lambda reporter: reporter.send_performance(report))
                finally:
                    reporting.report_delivered(report, delivered)
                return delivered
            self._enqueue(send_report)

    def comfort_status(self, now: datetime) -> ComfortStatus | None:
        """The household against its comfort terms now: raw readings, so only under the household's consent
        (``raw_data_consent``, PROFILE §14), and only with a heat pump to measure indoors."""
        if not self.contract.raw_data_consent or self.household.indoor_temp_c is None:
            return None
        comfort = self.contract.comfort
        ev = self.household.ev
        return ComfortStatus(
            measured_at=now, indoor_temperature_c=self.household.indoor_temp_c,
            comfort_min_c=comfort.comfort_min_c, comfort_max_c=comfort.comfort_max_c,
            ev_range_km=ev.range_km if ev is not None and ev.plugged_in else None,
            ev_required_range_km=comfort.ev_required_range_km if ev is not None else None,
        )

    # ------------------------------------------------------------------------------------- sending

    def _start_sender(self) -> None:
        if self._sender is None or self._sender.done():
            self._outbox = asyncio.Queue(maxsize=256)
            self._sender = asyncio.get_running_loop().create_task(self._drain())

    async def _stop_sender(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._sender = None

    def _enqueue(self, job: Callable[[], Awaitable[bool]]) -> None:
        if self.reporter is None or self._outbox is None:
            return
        try:
            self._outbox.put_nowait(job)
        except asyncio.QueueFull:
            # The link is down and the outbox full: drop this report; telemetry stays in its own backlog.
            self.send_failures += 1

    async def _drain(self) -> None:
        assert self._outbox is not None
        while True:
            job = await self._outbox.get()
            try:
                if not await job():
                    self.send_failures += 1
            except Exception:  # a transport bug must not stop the household's control loop
                self.send_failures += 1
                logger.exception("sending a report failed")
            finally:
                self._outbox.task_done()

    async def _send(self, call: Callable[[Reporter], Awaitable[bool]]) -> bool:
        return True if self.reporter is None else await call(self.reporter)

    async def _send_telemetry_backlog(self) -> bool:
        """Send what is owed (PROFILE.md §9.3.3): normally everything, oldest first in chunks of 96; after a loss
        of contact first only the newest interval, the missed ones once a random 0-300 s have passed."""
        if not self._unsent_telemetry or self.reporter is None:
            return True
        now = self.clock.now()
        waiting = self._delivery_lost or (self._backfill_at is not None and now < self._backfill_at)
        batch = tuple(self._unsent_telemetry[-1:] if waiting else self._unsent_telemetry[:TELEMETRY_CHUNK])
        delivered = await self.reporter.send_telemetry(Telemetry(intervals=batch))
        if not delivered:
            self._delivery_lost = True
            return False
        sent = {interval.start for interval in batch}
        self._unsent_telemetry = [i for i in self._unsent_telemetry if i.start not in sent]
        if self._delivery_lost:  # contact is back: the missed intervals wait their turn (``_backfill_due``)
            self._delivery_lost = False
            self._backfill_at = now + timedelta(seconds=self._rng.uniform(0.0, BACKFILL_MAX_WAIT_S))
        elif self._unsent_telemetry and not waiting:
            self._enqueue(self._send_telemetry_backlog)  # the next chunk
        return True

    def _backfill_due(self, now: datetime) -> None:
        """On the control loop's steps: once the random wait after a loss is over, send the missed intervals."""
        if self._backfill_at is not None and now >= self._backfill_at:
            self._backfill_at = None
            if self._unsent_telemetry:
                self._enqueue(self._send_telemetry_backlog)
