"""The audit log's entries and the short summaries they carry. Pure: no I/O, no clock.

One entry per change an operator (or a local command) made: who (``token:<name>`` for an API credential,
``local:<os user>`` for a command run on the server's files, ``serve:<os user>`` for what ``serve`` loads at
start), when (the server's clock), what (``action``, the ``target`` id, a ``detail`` with a short before/after),
and whether it happened (``outcome``: ``ok``, or ``refused`` for an authenticated request that was turned down,
with the HTTP status and the reason). Requests without a valid credential get no entry: anyone could fill the
log with them; the server's log records them instead.

The capacity planner's own publications are not audited here: each run is recorded with its publication id in
``allocation_runs`` (``dso_server.store.grid_store``).
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from protocol import CapacityBandwidth, HouseholdContract, TouTariff

ACTIONS = (
    "household.put", "signal.publish", "signal.modify", "signal.cancel", "publication.modify",
    "publication.cancel", "token.create", "token.revoke", "grid.load", "session.login", "session.logout",
)
"""Every action the log knows; ``dso-server audit --action`` accepts these."""


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    actor: str
    action: str
    target: str | None
    outcome: str = "ok"
    detail: Mapping[str, Any] = field(default_factory=dict)
    entry_id: int | None = None
    """Assigned by the store; the log's order."""


def local_actor(prefix: str = "local") -> str:
    """``local:<os user>`` for commands run on the server's own files (the OS account is the identity there)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container without a passwd entry for this uid
        user = f"uid{os.getuid()}"
    return f"{prefix}:{user}"


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _span(values: list[float]) -> list[float]:
    return [min(values), max(values)]


def payload_summary(payload: CapacityBandwidth | TouTariff) -> dict[str, Any]:
    """What a signal says in a few numbers: its window and the range of its values."""
    summary: dict[str, Any] = {"start": _iso(payload.start), "end": _iso(payload.end),
                               "intervals": len(payload.intervals)}
    if isinstance(payload, CapacityBandwidth):
        summary["firmness"] = payload.firmness.value
        summary["import_limit_kw"] = _span([i.import_limit_kw for i in payload.intervals])
        summary["export_limit_kw"] = _span([i.export_limit_kw for i in payload.intervals])
    else:
        summary["import_price_eur_per_kwh"] = _span([i.import_price_eur_per_kwh for i in payload.intervals])
        summary["export_price_eur_per_kwh"] = _span([i.export_price_eur_per_kwh for i in payload.intervals])
    return summary


def contract_changes(before: HouseholdContract | None, before_group: str | None, after: HouseholdContract,
                     after_group: str | None) -> dict[str, Any]:
    """``{"created": True, ...}`` for a new household, else ``{field: [before, after]}`` of what changed."""
    if before is None:
        return {"created": True, "group": after_group, **_flat(after)}
    old, new = _flat(before), _flat(after)
    changed: dict[str, Any] = {key: [old.get(key), value] for key, value in new.items() if old.get(key) != value}
    if before_group != after_group:
        changed["group"] = [before_group, after_group]
    return changed


def _flat(contract: HouseholdContract) -> dict[str, Any]:
    data = contract.model_dump(mode="json")
    comfort = data.pop("comfort", {})
    return {**data, **{f"comfort.{key}": value for key, value in comfort.items()}}
