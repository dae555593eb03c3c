"""Store load benchmark: what a day of a region costs the store, per household, on SQLite and on PostgreSQL.

For ``--households`` households it writes, through ``DsoStore`` exactly as the server does, what one local day
brings (``--intervals`` quarter hours of it, scaled to 96):

* at start: the households, their VEN registrations, the day-ahead firm publication (96 intervals each) and the
  first non-firm publication;
* every quarter hour: the planner's non-firm modification of every household's event (``modify_signals``, one
  transaction), then per household what the VTN writes when its VEN fetches it (the delivery, the VEN's
  eventResponse) and the telemetry report of the interval, grouped ``--batch`` to a transaction as the VTN's
  group commit (``WriteBatcher``) does under load;
* every 30 s: the liveness of every VEN (``Liveness``: one batched update per VEN and resolution).

It prints, per backend, the rows written and the store time per household and day by kind of write, the write
rate a region of 1 M households needs (rows per second, and store-seconds per second of a single connection,
the number of busy connections it takes), and the database size per household and day. The last line:

    households=<n> pg_bytes_per_household_day=<b> pg_rows_per_s_1m=<r> pg_connections_1m=<c>
    sqlite_bytes_per_household_day=<s>

(bytes: what the store keeps of each household-day, the events, eventResponses and telemetry)

(one line; wrapped here)

These figures size the region in the README (1 M households); polls themselves write nothing (see
``bench/vtn_load.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dso_server.records import EventResponse, Household
from dso_server.store.sqlite import DsoStore
from protocol import BandwidthInterval, CapacityBandwidth, Firmness, HouseholdContract, Telemetry, TelemetryInterval
from protocol.contract import make_ean18

DAY = datetime(2030, 1, 7, 23, 0, tzinfo=UTC)  # 2030-01-08 00:00 Europe/Amsterdam
Q = timedelta(minutes=15)
LIVENESS_EVERY_S = 30
REGION = 1_000_000


@dataclass
class Tally:
    seconds: dict[str, float] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)

    @contextlib.contextmanager
    def timed(self, kind: str, rows: int) -> Iterator[None]:
        began = time.perf_counter()
        yield
        self.seconds[kind] = self.seconds.get(kind, 0.0) + time.perf_counter() - began
        self.rows[kind] = self.rows.get(kind, 0) + rows


def contract(ean: str) -> HouseholdContract:
    return HouseholdContract(connection_point_id=ean, contracted_max_import_kw=17.0, contracted_max_export_kw=10.0,
                             failsafe_import_kw=4.2, failsafe_export_kw=4.2, failsafe_duration_s=7200)


def bandwidth(first: int, count: int, firmness: Firmness, kw: float) -> CapacityBandwidth:
    return CapacityBandwidth(firmness=firmness, intervals=tuple(
        BandwidthInterval(start=DAY + (first + i) * Q, import_limit_kw=kw, export_limit_kw=5.0) for i in range(count)))


def _batched(store: DsoStore, items: list[str], batch: int, write: Callable[[str], object]) -> None:
    for first in range(0, len(items), batch):
        with store.transaction():
            for item in items[first:first + batch]:
                write(item)


def simulate(store: DsoStore, households: int, intervals: int, batch: int) -> Tally:
    tally = Tally()
    eans = [make_ean18(f"87167{i:012d}") for i in range(households)]
    now = DAY - timedelta(hours=10)
    store.put_households([Household(contract(ean), "bench") for ean in eans], now=now)
    vens = {ean: store.register_ven(ean, now=now).ven_id for ean in eans}
    with tally.timed("firm publication", households):
        store.publish(dict.fromkeys(eans, bandwidth(0, 96, Firmness.FIRM, 5.0)), now=now)
    now = DAY
    with tally.timed("non-firm publication", households):
        events = {s.connection_point_id: s.event_id for s in store.publish(
            dict.fromkeys(eans, bandwidth(0, 8, Firmness.NON_FIRM, 1.0)), now=now).signals}
    for step in range(intervals):
        now = DAY + step * Q + timedelta(minutes=5)
        with tally.timed("non-firm modification", households):
            payload = bandwidth(0, min(96, step + 9), Firmness.NON_FIRM, 1.0 + (step % 3) * 0.5)
            store.modify_signals({events[ean]: payload for ean in eans}, now=now)
        with tally.timed("delivery", households):
            _batched(store, eans, batch, lambda ean, step=step, now=now: store.record_delivery(
                vens[ean], frozenset({(events[ean], step + 1, "active")}), now=now, connection_point_id=ean))
        with tally.timed("event response", households):
            _batched(store, eans, batch, lambda ean, step=step, now=now: store.record_responses(
                vens[ean], [EventResponse(events[ean], step + 1, "optIn", 200, "OK")], now=now))
        with tally.timed("telemetry", households):
            _batched(store, eans, batch, lambda ean, step=step, now=now: store.store_reports(ean, [Telemetry(
                intervals=(TelemetryInterval(start=DAY + (step - 1) * Q, import_kw=1.5, export_kw=0.2),))], now=now))
        flushes = 15 * 60 // LIVENESS_EVERY_S
        with tally.timed("liveness", households * flushes):
            for flush in range(flushes):
                moment = now + timedelta(seconds=flush * LIVENESS_EVERY_S)
                store.touch_vens(dict.fromkeys(vens.values(), moment))
    return tally


def table_bytes(store: DsoStore) -> dict[str, int]:
    """Bytes per table with its indexes (and TOAST), after a VACUUM on PostgreSQL."""
    if store.db.dialect == "postgresql":
        rows = store.db.query("SELECT relname AS name, pg_total_relation_size(c.oid) AS n FROM pg_class c JOIN "
                              "pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname = current_schema() AND "
                              "c.relkind = 'r'")
        return {row["name"]: int(row["n"]) for row in rows}
    rows = store.db.query("SELECT m.tbl_name AS name, SUM(d.pgsize) AS n FROM dbstat AS d JOIN sqlite_master AS m "
                          "ON d.name = m.name GROUP BY m.tbl_name")
    return {row["name"]: int(row["n"]) for row in rows}


KEPT = ("signals", "responses", "telemetry")
"""What a household adds every day and the store keeps (until a retention policy deletes it); the rest is
bounded (registrations, deliveries, liveness, the pruned change log) or reused after VACUUM."""


def size_bytes(store: DsoStore, path: Path | None) -> int:
    if store.db.dialect == "postgresql":
        store.db.execute("VACUUM ANALYZE")
        return int(store.db.query("SELECT pg_database_size(current_database()) AS n")[0]["n"])
    assert path is not None
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size


def empty_size(location: str, path: Path | None) -> int:
    with DsoStore(location) as store:
        return size_bytes(store, path)


def report(name: str, tally: Tally, households: int, intervals: int, size: int,
           tables: dict[str, int]) -> tuple[float, float, float, float]:
    scale = 96 / intervals  # to a whole day
    print(f"\n{name}: {households} households, {intervals} quarter hours (x{scale:g} for a day)")
    print(f"  {'write':<22}{'rows/household/day':>20}{'store ms/household/day':>24}{'us/row':>9}")
    total_rows = total_s = 0.0
    for kind in tally.rows:
        fixed = kind.endswith("publication")
        rows = tally.rows[kind] / households * (1 if fixed else scale)
        seconds = tally.seconds[kind] / households * (1 if fixed else scale)
        total_rows += rows
        total_s += seconds
        print(f"  {kind:<22}{rows:>20.1f}{seconds * 1000:>24.2f}{tally.seconds[kind] / tally.rows[kind] * 1e6:>9.0f}")
    per_day = size / households * scale
    rows_per_s = total_rows * REGION / 86400
    connections = total_s * REGION / 86400
    print(f"  {'all':<22}{total_rows:>20.1f}{total_s * 1000:>24.2f}")
    kept = sum(tables.get(t, 0) for t in KEPT) / households * scale
    print("  tables, KiB per household: " + ", ".join(
        f"{t} {n / households / 1024:.1f}" for t, n in sorted(tables.items(), key=lambda item: -item[1]) if n))
    print(f"  database: {per_day / 1024:.1f} KiB per household after the day ({kept / 1024:.1f} KiB of it kept every "
          f"day: {', '.join(KEPT)}); a region of 1 M households writes {rows_per_s:,.0f} rows/s, keeping "
          f"{connections:.1f} store connections busy, and keeps {kept * REGION / 1e9:.1f} GB more every day")
    return per_day, rows_per_s, connections, kept


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--households", type=int, default=500, help="households simulated (%(default)s)")
    parser.add_argument("--intervals", type=int, default=96, help="quarter hours simulated (%(default)s of 96)")
    parser.add_argument("--batch", type=int, default=100, help="writes per transaction (%(default)s)")
    parser.add_argument("--backends", default="sqlite,postgresql", help="%(default)s")
    args = parser.parse_args()
    figures: dict[str, tuple[float, float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="store-load-") as tmp:
        for backend in args.backends.split(","):
            if backend == "sqlite":
                path = Path(tmp) / "dso.sqlite"
                baseline = empty_size(str(Path(tmp) / "empty.sqlite"), Path(tmp) / "empty.sqlite")
                with DsoStore(path) as store:
                    tally = simulate(store, args.households, args.intervals, args.batch)
                    size = size_bytes(store, path) - baseline
                    tables = table_bytes(store)
                figures[backend] = report("SQLite (one file, WAL)", tally, args.households, args.intervals, size,
                                          tables)
            else:
                from dso_server.store.pgtemp import TemporaryPostgres

                with TemporaryPostgres() as postgres:
                    baseline = empty_size(postgres.create_database(), None)
                    with DsoStore(postgres.create_database()) as store:
                        tally = simulate(store, args.households, args.intervals, args.batch)
                        size = size_bytes(store, None) - baseline
                        tables = table_bytes(store)
                figures[backend] = report("PostgreSQL (local socket, fsync off)", tally, args.households,
                                          args.intervals, size, tables)
    pg = figures.get("postgresql", (float("nan"),) * 4)
    lite = figures.get("sqlite", (float("nan"),) * 4)
    print(f"households={args.households} pg_bytes_per_household_day={pg[3]:.0f} pg_rows_per_s_1m={pg[1]:.0f} "
          f"pg_connections_1m={pg[2]:.1f} sqlite_bytes_per_household_day={lite[3]:.0f}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
