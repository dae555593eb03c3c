"""What the operator sees of performance contracts, composed from the store: a household's needs against its firm
limits, its daily performance reports, and the monthly settlement (JSON and CSV). Read-only.

The need *in force* for an interval is the latest need the HEMS made and the DSO received before the firm run of
that interval's local day (the need the planner allocated for); for a day without a firm run (no grid), before the
day began. Firm and effective limits are what the DSO published (``lowest_per_interval``, ``effective_limits``),
the contract maximum where it published none.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from dso_server.capacity.forecast import day_intervals, local_day
from dso_server.capacity.planner import FIRM
from dso_server.settlement import COLUMNS, Settlement, month_bounds, settle_month
from dso_server.store.grid_store import GridStore
from dso_server.store.performance_store import PerformanceStore
from dso_server.store.sqlite import DsoStore
from protocol import CapacityBandwidth
from protocol.effective import effective_limits, lowest_limits
from protocol.performance import NEED_TOLERANCE_KW
from protocol.signals import Firmness
from protocol.timebase import INTERVAL


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def published_limits(store: DsoStore, ean: str, *, since: datetime, until: datetime
                     ) -> tuple[dict[datetime, float], dict[datetime, float]]:
    """Per interval in [since, until): the lowest firm import limit and the effective import limit published."""
    contract = store.household(ean).contract
    signals = store.bandwidths_overlapping([ean], since=since, until=until)[ean]
    bandwidths = [s.payload for s in signals if not s.cancelled and isinstance(s.payload, CapacityBandwidth)]
    count = int((until - since) / INTERVAL)
    firm = lowest_limits(bandwidths, Firmness.FIRM)
    maximum = contract.contracted_max_import_kw
    effective = {limit.start: limit.import_limit_kw
                 for limit in effective_limits(contract, bandwidths, start=since, count=count)}
    return {s: min(firm.get(s, (maximum, 0.0))[0], maximum) for s in effective}, effective


MAX_WINDOW = timedelta(days=62)
"""The longest window a needs view covers (two months: a settlement month and the days around it)."""


def needs_in_force(store: DsoStore, ean: str, *, since: datetime, until: datetime, timezone: str
                   ) -> dict[datetime, float]:
    """Per interval in [since, until): the need in force (see the module docstring). At most ``MAX_WINDOW``."""
    if until - since > MAX_WINDOW:
        raise ValueError(f"a needs window spans at most {MAX_WINDOW.days} days, not {until - since}")
    gstore, pstore = GridStore(store), PerformanceStore(store)
    out: dict[datetime, float] = {}
    day = local_day(since, timezone)
    while True:
        starts = day_intervals(day, timezone)
        if starts[0] >= until:
            break
        runs = gstore.runs(kind=FIRM, day=day.isoformat(), limit=1)
        as_of = runs[0].run_at if runs else starts[0]
        found = pstore.needs_in_force([ean], since=max(since, starts[0]), until=min(until, starts[-1] + INTERVAL),
                                      as_of=as_of)
        out.update(found.get(ean, {}))
        day += timedelta(days=1)
    return out


def needs_json(store: DsoStore, ean: str, *, since: datetime, until: datetime, timezone: str) -> dict[str, Any]:
    needs = needs_in_force(store, ean, since=since, until=until, timezone=timezone)
    firm, effective = published_limits(store, ean, since=since, until=until)
    intervals = []
    for start in sorted(needs):
        need, granted = needs[start], firm.get(start, store.household(ean).contract.contracted_max_import_kw)
        short = max(need - granted, 0.0)
        intervals.append({"start": _iso(start), "need_kw": round(need, 4), "firm_kw": round(granted, 4),
                          "effective_kw": round(effective.get(start, granted), 4),
                          "honoured": short <= NEED_TOLERANCE_KW,
                          "shortfall_kw": round(short if short > NEED_TOLERANCE_KW else 0.0, 4)})
    return {"connection_point_id": ean, "since": _iso(since), "until": _iso(until), "intervals": intervals}


def performance_json(store: DsoStore, ean: str, *, since: datetime, until: datetime) -> dict[str, Any]:
    store.household(ean)
    reports = PerformanceStore(store).performance_reports(ean, since=since, until=until)
    return {"connection_point_id": ean, "since": _iso(since), "until": _iso(until),
            "reports": [stored.report.model_dump(mode="json") for stored in reports]}


def settlement(store: DsoStore, month: date, connection_point_ids: Sequence[str] | None = None) -> list[Settlement]:
    """The month's settlement of every performance household (or of those named)."""
    households = ([store.household(ean) for ean in connection_point_ids] if connection_point_ids is not None
                  else store.households())
    rows = []
    for household in households:
        contract = household.contract
        if contract.performance is None:
            continue
        zone = contract.comfort.timezone
        start, end = month_bounds(month, zone)
        # Limits of the days around the month too: an EV session before the 1st's departure starts the day before.
        firm, effective = published_limits(store, contract.connection_point_id, since=start - timedelta(days=1),
                                           until=end)
        rows.append(settle_month(
            contract=contract, month=month,
            need_kw=needs_in_force(store, contract.connection_point_id, since=start - timedelta(days=1), until=end,
                                   timezone=zone),
            firm_kw=firm, effective_kw=effective,
            reports=[stored.report for stored in PerformanceStore(store).performance_reports(
                contract.connection_point_id, since=start, until=end)]))
    return rows


def settlement_json(month: date, rows: Iterable[Settlement]) -> dict[str, Any]:
    return {"month": f"{month.year:04d}-{month.month:02d}", "rows": [row.as_row() for row in rows]}


def settlement_csv(rows: Iterable[Settlement]) -> str:
    """The settlement as CSV: a header of ``settlement.COLUMNS``, one line per household and month."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row.as_row())
    return out.getvalue()


def transformer_needs(store: DsoStore, eans: Sequence[str], starts: Sequence[datetime], timezone: str
                      ) -> dict[str, dict[datetime, tuple[float, float]]]:
    """Per performance household of ``eans``: (need in force, firm limit) per interval of ``starts``."""
    if not starts:
        return {}
    since, until = starts[0], starts[-1] + INTERVAL
    out = {}
    for ean in eans:
        if store.household(ean).contract.performance is None:
            continue
        needs = needs_in_force(store, ean, since=since, until=until, timezone=timezone)
        firm, _ = published_limits(store, ean, since=since, until=until)
        out[ean] = {s: (kw, firm[s]) for s, kw in needs.items() if s in firm}
    return out
