"""What a VTN knows about each VEN, held in memory between polls and kept true to the store.

A poll must answer from the store's truth (an event published through the API reaches the next poll), but
reading a VEN's registration, events, answers and last delivery from the database on every poll, and writing
its liveness, made the store the VTN's bottleneck. Here:

* ``VenCache`` keeps per VEN its registration, its household's events that have not ended, the (event,
  modification) pairs it acknowledged and what was last delivered to it, loaded from the store on first use.
  Before it answers, a request waits for ``fresh()``: one read of the store's change log
  (``dso_server.store.changes``) that started after the request arrived, shared by every request that arrived
  meanwhile; the entries of the households anything was changed for, by any worker, are reloaded (a few
  statements for all of them). What this server itself writes (a delivery, an acknowledgement) it also applies
  to its entry, so it skips its own rows of those kinds. Events are kept without their payloads (a few hundred
  bytes each instead of tens of kilobytes): a delivery reads the payloads it sends from the store.
* ``Liveness`` keeps when each VEN was last heard from and writes it to the store in one batch every
  ``flush_interval_s`` (and at shutdown) instead of one UPDATE per poll; the batch also prunes the change log.
* ``WriteBatcher`` writes what many requests must store (a delivery, eventResponses, reports, a registration)
  in one transaction on a connection and thread of its own, and answers each request only after that commit:
  nothing acknowledged is lost, and a disk that takes milliseconds per commit (fsync) costs one commit per
  batch instead of one per request, without holding up the event loop.

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
from typing import Any, TypeVar

from dso_server import metrics
from dso_server.lifecycle import DeliveryKey, delivery_due, delivery_keys, relevant_signals
from dso_server.records import EventResponse, Signal, SignalHead, Ven
from dso_server.store.certificates import CertificateStore, Enrolment
from dso_server.store.changes import ACK, CERTIFICATE, DELIVERY, ChangeFeed, prune
from dso_server.store.sqlite import DsoStore

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_FRESH_IN_THIS_TASK: ContextVar[bool] = ContextVar("dso_ven_cache_fresh", default=False)
"""Set by a request's check (``fresh(for_next=True)``) for the handler that follows it in the same task."""

PRUNE_EVERY_S = 60.0


@dataclass
class VenState:
    """One VEN as the store has it, plus what the transport derived from it (``derived``, e.g. its encoded
    answer to a poll with nothing new), which goes with the entry."""

    ven: Ven
    signals: tuple[SignalHead, ...]
    """Its household's events that had not ended when loaded (in the store's order), without their payloads:
    the transport reads those from the store when it delivers."""
    acknowledged: set[tuple[str, int]]
    delivered: frozenset[DeliveryKey] | None
    derived: dict[str, Any] = field(default_factory=dict)

    def plan(self, now: datetime) -> Delivery:
        """What a poll at ``now`` is due: the relevant events and whether they are news to the VEN."""
        relevant = relevant_signals(self.signals, acknowledged=self.acknowledged, now=now)
        keys = delivery_keys(relevant, now)
        return Delivery(relevant, keys, delivery_due(self.delivered, keys, self.acknowledged),
                        self.delivered is not None and self.delivered != keys)


@dataclass(frozen=True)
class Delivery:
    signals: list[SignalHead]
    keys: frozenset[DeliveryKey]
    due: bool
    """Something in ``keys`` is news to the VEN: send all of ``signals``."""
    shrank: bool
    """Nothing is news but the set differs from the last delivery (events ended or were acknowledged)."""


class VenCache:
    """Per-VEN state for the VTN, valid as of the last ``fresh()``. Used on the event loop's thread only."""

    def __init__(self, store: DsoStore, now: Callable[[], datetime]) -> None:
        self.store = store
        self._now = now
        self._certificates = CertificateStore(store)
        self._feed = ChangeFeed(store.db)
        self._feed.start()
        self._by_ven: dict[str, VenState] = {}
        self._ven_of: dict[str, str] = {}
        """connection point id -> ven id of the cached entries."""
        self._enrolments: dict[str, Enrolment] = {}
        """certificate fingerprint (SHA-256) -> its enrolment, for certificates that are enrolled."""
        self._waiters: list[asyncio.Future[None]] = []
        self._scheduled = False
        self._wanted: list[tuple[list[str], asyncio.Future[dict[str, Signal]]]] = []
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

    async def signals(self, event_ids: list[str]) -> dict[str, Signal]:
        """The events with these ids as the store has them (the cache keeps no payloads), read in one statement
        together with those every other request wants in the same event-loop turn: when a change reaches many
        VENs at once, one read serves all of their distributions instead of one read each."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Signal]] = loop.create_future()
        if not self._wanted:
            loop.call_soon(self._read_signals)
        self._wanted.append((event_ids, future))
        return await future

    def _read_signals(self) -> None:
        wanted, self._wanted = self._wanted, []
        try:
            found = self.store.signals_by_id(list(dict.fromkeys(i for ids, _ in wanted for i in ids)))
        except Exception as error:
            for _, future in wanted:
                if not future.done():
                    future.set_exception(error)
            return
        metrics.STORE_READS.labels("signals").inc()
        for ids, future in wanted:
            if not future.done():
                future.set_result({event_id: found[event_id] for event_id in ids if event_id in found})

    def refresh(self) -> None:
        """Read the change log now; reload (in a few statements for all of them) the cached VENs it names."""
        batch = self._feed.read()
        self.reads += 1
        metrics.STORE_READS.labels("change_log").inc()
        if not batch.complete:
            logger.warning("The change log was pruned past this server's last read; dropping all cached VENs")
            self.clear()
            return
        origin = self.store.origin
        certificates = {c.connection_point_id for c in batch.changes if c.kind == CERTIFICATE}
        if certificates:
            self._enrolments = {fingerprint: enrolment for fingerprint, enrolment in self._enrolments.items()
                                if enrolment.connection_point_id not in certificates}
        stale = [self._ven_of[change.connection_point_id] for change in batch.changes
                 if change.connection_point_id in self._ven_of
                 and not (change.origin == origin and change.kind in (DELIVERY, ACK))]  # own writes: applied
        if stale:
            for ven_id in stale:
                self._drop(ven_id)
            self._load(stale, self._now())

    def _drop(self, ven_id: str) -> None:
        state = self._by_ven.pop(ven_id, None)
        if state is not None:
            self._ven_of.pop(state.ven.connection_point_id, None)

    def _load(self, ven_ids: list[str], now: datetime) -> None:
        self.loads += len(ven_ids)
        metrics.STORE_READS.labels("ven_state").inc(len(ven_ids))
        for ven_id, view in self.store.ven_views(ven_ids, now=now).items():
            self._by_ven[ven_id] = VenState(ven=view.ven, signals=view.signals, acknowledged=set(view.acknowledged),
                                            delivered=view.delivered)
            self._ven_of[view.ven.connection_point_id] = ven_id

    def clear(self) -> None:
        self._by_ven.clear()
        self._ven_of.clear()
        self._enrolments.clear()

    def enrolment(self, fingerprint_sha256: str) -> Enrolment | None:
        """The enrolment of a client certificate (as of the last ``fresh``); None when it is not enrolled. An
        unknown certificate is looked up again at every request: it may have been enrolled meanwhile."""
        enrolment = self._enrolments.get(fingerprint_sha256)
        if enrolment is None:
            enrolment = self._certificates.enrolment(fingerprint_sha256)
            if enrolment is not None:
                self._enrolments[fingerprint_sha256] = enrolment
        return enrolment

    # ---------------------------------------------------------------------------------------------- state

    def get(self, ven_id: str, now: datetime) -> VenState | None:
        """The VEN's state (loaded from the store when not cached); None for a VEN the store does not know."""
        state = self._by_ven.get(ven_id)
        if state is None:
            self._load([ven_id], now)
            state = self._by_ven.get(ven_id)
        return state

    async def record_delivery(self, state: VenState, keys: frozenset[DeliveryKey], now: datetime,
                              writer: WriteBatcher | None = None) -> None:
        ven = state.ven
        await _write(self.store, writer, lambda store: store.record_delivery(
            ven.ven_id, keys, now=now, connection_point_id=ven.connection_point_id))
        state.delivered = keys

    async def record_responses(self, state: VenState, responses: Iterable[EventResponse], now: datetime,
                               writer: WriteBatcher | None = None) -> list[str]:
        responses = list(responses)
        ignored = await _write(self.store, writer, lambda store: store.record_responses(
            state.ven.ven_id, responses, now=now))
        state.acknowledged.update((r.event_id, r.modification_number) for r in responses
                                  if r.modification_number is not None and r.event_id not in ignored)
        return ignored

    def __len__(self) -> int:
        return len(self._by_ven)


async def _write(store: DsoStore, writer: WriteBatcher | None, work: Callable[[DsoStore], _T]) -> _T:
    return await writer.write(work) if writer is not None else work(store)


class WriteBatcher:
    """Group commit for the VTN: ``await write(work)`` runs ``work(store)`` in the next batch's transaction and
    returns its result once that transaction committed (or raises what ``work`` raised).

    One batch runs at a time, in a thread, on ``store`` (a connection of its own: ``DsoStore.reopen()``); what
    arrives meanwhile forms the next batch, of at most ``max_batch`` writes. A write that fails rolls the batch
    back; its writes are then tried one transaction each, so one bad write never costs the others theirs.
    """

    def __init__(self, store: DsoStore, *, max_batch: int = 500) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: list[tuple[Callable[[DsoStore], Any], asyncio.Future[Any]]] = []
        self._draining: asyncio.Task[None] | None = None
        self.batches = 0
        self.writes = 0

    async def write(self, work: Callable[[DsoStore], _T]) -> _T:
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._queue.append((work, future))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.create_task(self._drain(), name="dso-write-batch")
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch:]
            try:
                outcomes = await asyncio.to_thread(self._run, [work for work, _ in batch])
            except BaseException as error:  # the commit itself failed, or we were cancelled: nothing stored
                outcomes = [(False, error)] * len(batch)
                if not isinstance(error, Exception):
                    for _, future in batch:
                        if not future.done():
                            future.cancel()
                    raise
            self.batches += 1
            self.writes += len(batch)
            for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    def _run(self, works: list[Callable[[DsoStore], Any]]) -> list[tuple[bool, Any]]:
        try:
            with self.store.batch():  # the works' own transactions join it: no savepoint per write
                return [(True, work(self.store)) for work in works]
        except Exception:
            if len(works) == 1:
                raise
        outcomes: list[tuple[bool, Any]] = []
        for work in works:  # someone's write failed: each on its own, so only that one fails
            try:
                with self.store.transaction():
                    outcomes.append((True, work(self.store)))
            except Exception as error:
                outcomes.append((False, error))
        return outcomes

    async def close(self) -> None:
        """Wait for what was submitted."""
        if self._draining is not None:
            await asyncio.shield(self._draining)


class Liveness:
    """When each VEN was last heard from, written to the store in batches (through the ``WriteBatcher``).

    A VEN's time is written again only once it moved on by ``resolution_s`` (server clock) since it was last
    written, so a region of VENs polling every few seconds costs one row update per VEN and ``resolution_s``,
    not per poll; the store's ``last_seen_at`` is at most ``resolution_s`` plus ``flush_interval_s`` behind.
    """

    def __init__(self, writer: WriteBatcher, *, flush_interval_s: float = 5.0, resolution_s: float = 30.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.writer = writer
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

    def _write(self, store: DsoStore, seen: dict[str, datetime], prune_too: bool) -> None:
        store.touch_vens(seen)
        if prune_too:
            prune(store.db)

    async def flush(self) -> int:
        """Write what is due (one transaction); prune the change log now and then. How many VENs were written."""
        seen = self.take()
        prune_too = self._monotonic() - self._last_prune >= PRUNE_EVERY_S
        if not seen and not prune_too:
            return 0
        if prune_too:
            self._last_prune = self._monotonic()
        try:
            await self.writer.write(lambda store: self._write(store, seen, prune_too))
        except BaseException:
            for ven_id, moment in seen.items():  # keep them for the next flush, unless seen again since
                self._seen.setdefault(ven_id, moment)
                self._written.pop(ven_id, None)
            raise
        return len(seen)

    async def run(self) -> None:
        """Flush every ``flush_interval_s`` until cancelled; then write everything seen (resolution or not)."""
        try:
            while True:
                await asyncio.sleep(self.flush_interval_s)
                try:
                    await self.flush()
                except Exception:
                    logger.exception("Writing VEN liveness to the store failed; will try again")
        finally:
            self.resolution = timedelta(0)
            seen = self.take()
            if seen:
                self.writer.store.touch_vens(seen)
