"""What a VTN knows about each VEN, held in memory between polls and kept true to the store.

A poll must answer from the store's truth (an event published through the API reaches the next poll), but
reading a VEN's registration, events, answers and last delivery from the database on every poll, and writing
its liveness, made the store the VTN's bottleneck. Here:

* ``VenCache`` keeps per VEN its registration, its household's events that have not ended, the (event,
  modification) pairs it acknowledged and what was last delivered to it, loaded from the store on first use.
  Before it answers, a request waits for ``fresh()``: one read of the store's change log
  (``dso_server.store.changes``) that started after the request arrived, shared by every request that arrived
  meanwhile, drops the entries of the households anything was changed for, by any worker. What this server
  itself writes (a delivery, an acknowledgement) it also applies to its entry, so it skips its own rows of those
  kinds.
* ``Liveness`` keeps when each VEN was last heard from and writes it to the store in one batch every
  ``flush_interval_s`` (and at shutdown) instead of one UPDATE per poll; the batch also prunes the change log.

What a poll then costs is a dictionary lookup and the lifecycle rules on a handful of events
(``dso_server.lifecycle``); the store is read again only for a household that changed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from dso_server.lifecycle import DeliveryKey, delivery_due, delivery_keys, relevant_signals
from dso_server.records import EventResponse, Signal, Ven
from dso_server.store.changes import ACK, DELIVERY, ChangeFeed, prune
from dso_server.store.sqlite import DsoStore

logger = logging.getLogger(__name__)

_FRESH_IN_THIS_TASK: ContextVar[bool] = ContextVar("dso_ven_cache_fresh", default=False)
"""Set by a request's check (``fresh(for_next=True)``) for the handler that follows it in the same task."""

PRUNE_EVERY_S = 60.0


@dataclass
class VenState:
    """One VEN as the store has it, plus what the transport derived from it (``derived``, e.g. its encoded
    answer to a poll with nothing new), which goes with the entry."""

    ven: Ven
    signals: tuple[Signal, ...]
    """Its household's events that had not ended when loaded (in the store's order)."""
    acknowledged: set[tuple[str, int]]
    delivered: frozenset[DeliveryKey] | None
    derived: dict[str, Any] = field(default_factory=dict)

    def plan(self, now: datetime) -> Delivery:
        """What a poll at ``now`` is due: the relevant events and whether they are news to the VEN."""
        relevant = relevant_signals(self.signals, acknowledged=self.acknowledged, now=now)
        keys = delivery_keys(relevant, now)
        return Delivery(relevant, keys, delivery_due(self.delivered, keys),
                        self.delivered is not None and self.delivered != keys)


@dataclass(frozen=True)
class Delivery:
    signals: list[Signal]
    keys: frozenset[DeliveryKey]
    due: bool
    """Something in ``keys`` is news to the VEN: send all of ``signals``."""
    shrank: bool
    """Nothing is news but the set differs from the last delivery (events ended or were acknowledged)."""


class VenCache:
    """Per-VEN state for the VTN, valid as of the last ``fresh()``. Used on the event loop's thread only."""

    def __init__(self, store: DsoStore) -> None:
        self.store = store
        self._feed = ChangeFeed(store.db)
        self._feed.start()
        self._by_ven: dict[str, VenState] = {}
        self._ven_of: dict[str, str] = {}
        """connection point id -> ven id of the cached entries."""
        self._waiters: list[asyncio.Future[None]] = []
        self._scheduled = False
        self.reads = 0
        self.loads = 0

    # ------------------------------------------------------------------------------------------ freshness

    async def fresh(self, *, for_next: bool = False) -> None:
        """Return once every change committed before this call is reflected (one shared read per loop turn).

        ``for_next``: the check of a request before its handler runs (the VEN lookup); the handler's own
        ``fresh()`` in the same asyncio task then returns at once instead of waiting for another read.
        """
        if _FRESH_IN_THIS_TASK.get():
            _FRESH_IN_THIS_TASK.set(False)
            return
        await self._wait_for_read()
        if for_next:
            _FRESH_IN_THIS_TASK.set(True)

    async def _wait_for_read(self) -> None:
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiters.append(waiter)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._read)
        await waiter

    def _read(self) -> None:
        self._scheduled = False
        waiters, self._waiters = self._waiters, []
        try:
            self.refresh()
        except Exception as error:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(error)
            return
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def refresh(self) -> None:
        """Read the change log now and drop what it says is stale."""
        batch = self._feed.read()
        self.reads += 1
        if not batch.complete:
            logger.warning("The change log was pruned past this server's last read; dropping all cached VENs")
            self.clear()
            return
        origin = self.store.origin
        for change in batch.changes:
            if change.origin == origin and change.kind in (DELIVERY, ACK):
                continue  # written by this server, which updated its entry as it wrote
            self.forget(change.connection_point_id)

    def forget(self, connection_point_id: str) -> None:
        ven_id = self._ven_of.pop(connection_point_id, None)
        if ven_id is not None:
            self._by_ven.pop(ven_id, None)

    def clear(self) -> None:
        self._by_ven.clear()
        self._ven_of.clear()

    # ---------------------------------------------------------------------------------------------- state

    def get(self, ven_id: str, now: datetime) -> VenState | None:
        """The VEN's state (loaded from the store when not cached); None for a VEN the store does not know."""
        state = self._by_ven.get(ven_id)
        if state is not None:
            return state
        ven = self.store.ven(ven_id)
        if ven is None:
            return None
        self.loads += 1
        state = VenState(
            ven=ven,
            signals=tuple(self.store.signals(connection_point_id=ven.connection_point_id, ending_after=now)),
            acknowledged=self.store.acknowledged(ven_id),
            delivered=self.store.delivered(ven_id),
        )
        self._by_ven[ven_id] = state
        self._ven_of[ven.connection_point_id] = ven_id
        return state

    def record_delivery(self, state: VenState, keys: frozenset[DeliveryKey], now: datetime) -> None:
        self.store.record_delivery(state.ven.ven_id, keys, now=now, connection_point_id=state.ven.connection_point_id)
        state.delivered = keys

    def record_responses(self, state: VenState, responses: Iterable[EventResponse], now: datetime) -> list[str]:
        responses = list(responses)
        ignored = self.store.record_responses(state.ven.ven_id, responses, now=now)
        state.acknowledged.update((r.event_id, r.modification_number) for r in responses
                                  if r.modification_number is not None and r.event_id not in ignored)
        return ignored

    def __len__(self) -> int:
        return len(self._by_ven)


class Liveness:
    """When each VEN was last heard from, written to the store in batches by a thread of its own.

    ``store`` should be a connection of its own (``DsoStore.reopen()``): the batch is written off the event loop.
    A VEN's time is written again only once it moved on by ``resolution_s`` (server clock) since it was last
    written, so a region of VENs polling every few seconds costs one row update per VEN and ``resolution_s``,
    not per poll; the store's ``last_seen_at`` is at most ``resolution_s`` plus ``flush_interval_s`` behind.
    """

    def __init__(self, store: DsoStore, *, flush_interval_s: float = 5.0, resolution_s: float = 30.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.flush_interval_s = flush_interval_s
        self.resolution = timedelta(seconds=resolution_s)
        self._seen: dict[str, datetime] = {}
        self._written: dict[str, datetime] = {}
        self._monotonic = monotonic
        self._last_prune = monotonic()

    def seen(self, ven_id: str, now: datetime) -> None:
        self._seen[ven_id] = now

    @property
    def pending(self) -> int:
        return len(self._seen)

    def take(self) -> dict[str, datetime]:
        """What is due for writing (call on the thread that calls ``seen``): every VEN seen since the last take
        whose time moved on by the resolution; the others wait for a later take."""
        due: dict[str, datetime] = {}
        for ven_id, moment in self._seen.items():
            written = self._written.get(ven_id)
            if written is None or moment - written >= self.resolution:
                due[ven_id] = moment
        for ven_id in due:
            del self._seen[ven_id]
        self._written.update(due)
        return due

    def write(self, seen: dict[str, datetime]) -> None:
        """Write a batch (one transaction); prune the change log now and then. Any thread."""
        self.store.touch_vens(seen)
        if self._monotonic() - self._last_prune >= PRUNE_EVERY_S:
            self._last_prune = self._monotonic()
            prune(self.store.db)

    async def flush(self) -> int:
        seen = self.take()
        if not seen:
            return 0
        try:
            await asyncio.to_thread(self.write, seen)
        except BaseException:
            for ven_id, moment in seen.items():  # keep them for the next flush, unless seen again since
                self._seen.setdefault(ven_id, moment)
                self._written.pop(ven_id, None)
            raise
        return len(seen)

    async def run(self) -> None:
        """Flush every ``flush_interval_s`` until cancelled; flush once more then."""
        try:
            while True:
                await asyncio.sleep(self.flush_interval_s)
                try:
                    await self.flush()
                except Exception:
                    logger.exception("Writing VEN liveness to the store failed; will try again")
        finally:
            self.resolution = timedelta(0)  # at shutdown everything seen is written
            if self._seen:
                self.write(self.take())
