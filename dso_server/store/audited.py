"""The operator's changes together with their audit entries, each pair in one transaction.

Whoever changes what the DSO tells households - the API for a token, ``DsoServer``'s Python methods, the CLI on
the store file, ``serve`` loading its files - goes through these functions, so no change is stored without its
entry and no entry without its change. ``actor`` names who (``dso_server.security.audit``); ``now`` is the
server's clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from dso_server.capacity.grid import Grid
from dso_server.errors import IllegalSignalChange, NotFound
from dso_server.records import Household, Publication, Signal, SignalPayload, kind_of
from dso_server.security.audit import AuditEntry, contract_changes, payload_summary
from dso_server.store.grid_store import GridStore, SavedGrid
from dso_server.store.performance_store import PerformanceStore
from dso_server.store.security_store import SecurityStore
from dso_server.store.sqlite import DsoStore

_LISTED = 20
"""Ids listed in one entry; the counts are always complete."""


def _record(store: DsoStore, now: datetime, actor: str, action: str, target: str | None,
            detail: Mapping[str, object]) -> None:
    SecurityStore(store).record(AuditEntry(at=now, actor=actor, action=action, target=target, detail=detail))


def put_household(store: DsoStore, household: Household, *, now: datetime, actor: str) -> bool:
    """Add or replace a household (True when new); an entry only when something changed."""
    with store.transaction():
        try:
            before: Household | None = store.household(household.connection_point_id)
        except NotFound:
            before = None
        created = store.put_household(household.contract, group=household.group, now=now)
        changes = contract_changes(before.contract if before else None, before.group if before else None,
                                   household.contract, household.group)
        if changes:
            _record(store, now, actor, "household.put", household.connection_point_id, changes)
    return created


def put_households(store: DsoStore, households: Sequence[Household], *, now: datetime, actor: str) -> None:
    with store.transaction():
        for household in households:
            put_household(store, household, now=now, actor=actor)


def publish(store: DsoStore, payloads: Mapping[str, SignalPayload], *, now: datetime, actor: str,
            group: str | None = None) -> Publication:
    """One event per connection point under one publication; one entry for the publication."""
    with store.transaction():
        publication = store.publish(payloads, now=now)
        first = next(iter(payloads.values()))
        ids = list(payloads)
        _record(store, now, actor, "signal.publish", publication.publication_id, {
            "kind": kind_of(first).value, "group": group, "households": len(ids),
            "connection_point_ids": ids[:_LISTED],
            "event_ids": [signal.event_id for signal in publication.signals][:_LISTED], **payload_summary(first)})
    return publication


def modify_signal(store: DsoStore, event_id: str, payload: SignalPayload, *, now: datetime, actor: str) -> Signal:
    """Replace what an event says; an entry only when it changed (the same payload again is no change)."""
    with store.transaction():
        before = store.signal(event_id)
        after = store.modify_signal(event_id, payload, now=now)
        if after.modification_number != before.modification_number:
            _record(store, now, actor, "signal.modify", event_id, {
                "connection_point_id": before.connection_point_id, "publication_id": before.publication_id,
                "modification_number": [before.modification_number, after.modification_number],
                "before": payload_summary(before.payload), "after": payload_summary(payload)})
    return after


def cancel_signal(store: DsoStore, event_id: str, *, now: datetime, actor: str) -> Signal:
    with store.transaction():
        before = store.signal(event_id)
        after = store.cancel_signal(event_id, now=now)
        _record(store, now, actor, "signal.cancel", event_id, {
            "connection_point_id": before.connection_point_id, "publication_id": before.publication_id,
            "modification_number": [before.modification_number, after.modification_number],
            "before": payload_summary(before.payload)})
    return after


def modify_publication(store: DsoStore, publication_id: str, payload: SignalPayload, *, now: datetime, actor: str
                       ) -> tuple[Publication, list[IllegalSignalChange]]:
    with store.transaction():
        before = store.publication(publication_id)
        after, skipped = store.modify_publication(publication_id, payload, now=now)
        _record(store, now, actor, "publication.modify", publication_id, {
            "events": len(after.signals) - len(skipped), "skipped": [e.event_id for e in skipped][:_LISTED],
            "before": payload_summary(before.signals[0].payload), "after": payload_summary(payload)})
    return after, skipped


def cancel_publication(store: DsoStore, publication_id: str, *, now: datetime, actor: str
                       ) -> tuple[Publication, list[IllegalSignalChange]]:
    with store.transaction():
        before = store.publication(publication_id)
        after, skipped = store.cancel_publication(publication_id, now=now)
        _record(store, now, actor, "publication.cancel", publication_id, {
            "events": len(after.signals) - len(skipped), "skipped": [e.event_id for e in skipped][:_LISTED],
            "before": payload_summary(before.signals[0].payload)})
    return after, skipped


def save_grid(store: DsoStore, grid: Grid, *, now: datetime, source: str, actor: str) -> SavedGrid:
    """Replace the stored grid (``GridStore.save_grid``) and record what was loaded from where."""
    with store.transaction():
        saved = GridStore(store).save_grid(grid, now=now, source=source)
        _record(store, now, actor, "grid.load", source, {
            "summary": grid.summary(), "transformers": len(grid.transformers),
            "connection_points": len(grid.connection_points), "created_households": len(saved.created_households)})
    return saved


def export_household(store: DsoStore, connection_point_id: str, *, now: datetime, actor: str
                     ) -> dict[str, list[dict[str, object]]]:
    """Everything the store holds about one connection point (GDPR access); the access itself is audited."""
    with store.transaction():
        data = PerformanceStore(store).household_data(connection_point_id)
        _record(store, now, actor, "household.export", connection_point_id,
                {"rows": {table: len(rows) for table, rows in data.items() if rows}})
    return data


def erase_household(store: DsoStore, connection_point_id: str, *, now: datetime, actor: str) -> dict[str, int]:
    """Remove everything the store holds about one connection point (GDPR erasure), with its audit entry, in one
    transaction. The audit log keeps its entries: the record of who changed what, this erasure included."""
    with store.transaction():
        deleted = PerformanceStore(store).erase_household(connection_point_id)
        _record(store, now, actor, "household.erase", connection_point_id, {"deleted": deleted})
    return deleted
