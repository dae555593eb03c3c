"""One household's data as a whole: 'dso-server household export' writes everything the DSO holds about a
connection point (GDPR access), 'erase' removes it and nothing of anyone else, both audited; retention deletes
what households sent once it is past its months; the settlement CLI reads the store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dso_server.capacity.grid import ConnectionPoint, Feeder, Grid, Transformer
from dso_server.cli import main
from dso_server.records import EventResponse
from dso_server.retention import retention_cutoff
from dso_server.store.grid_store import GridStore
from dso_server.store.performance_store import PerformanceStore
from dso_server.store.security_store import SecurityStore
from dso_server.store.sqlite import DsoStore
from protocol import (
    BandwidthInterval,
    CapacityBandwidth,
    CapacityNeed,
    Firmness,
    NeedInterval,
    PerformanceReport,
    PerformanceTerms,
    Telemetry,
    TelemetryInterval,
    make_ean18,
)

NOW = datetime(2030, 1, 7, 11, 0, tzinfo=UTC)
Q = timedelta(minutes=15)
A, B = make_ean18("87168712777700001"), make_ean18("87168712777700002")


def fill(path: Path) -> None:
    """Two households with something in every table a household's data lives in."""
    with DsoStore(path) as store:
        grid = Grid(transformers=(Transformer(id="T1", rating_kva=25.0),),
                    feeders=(Feeder(id="F1", transformer_id="T1"),),
                    connection_points=tuple(ConnectionPoint(ean=ean, feeder_id="F1", contracted_max_import_kw=17,
                                                            contracted_max_export_kw=10) for ean in (A, B)))
        GridStore(store).save_grid(grid, now=NOW - timedelta(days=400), source="test")
        for ean in (A, B):
            contract = store.household(ean).contract.model_copy(update={"performance": PerformanceTerms()})
            store.put_household(contract, group="F1", now=NOW - timedelta(days=400))
            ven = store.register_ven(ean, now=NOW - timedelta(days=1))
            bandwidth = CapacityBandwidth(firmness=Firmness.FIRM, intervals=(
                BandwidthInterval(start=NOW, import_limit_kw=3.0, export_limit_kw=3.0),))
            publication = store.publish({ean: bandwidth}, now=NOW - timedelta(hours=1))
            store.record_responses(ven.ven_id, [EventResponse(publication.signals[0].event_id, 0, "optIn", 200, "OK")],
                                   now=NOW - timedelta(minutes=50))
            for moment in (NOW - timedelta(days=420), NOW - 2 * Q):  # one far past its retention
                store.store_reports(ean, [
                    Telemetry(intervals=(TelemetryInterval(start=moment, import_kw=1.5, export_kw=0.0),)),
                    CapacityNeed(created_at=moment, intervals=(NeedInterval(start=moment + Q, import_kw=2.0),)),
                ], now=moment + Q)
            start = NOW.replace(hour=23) - timedelta(days=2)
            store.store_reports(ean, [PerformanceReport(start=start, end=start + timedelta(days=1), created_at=NOW,
                                                        degree_hours_outside_band=0.0)], now=NOW)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_export_writes_everything_about_one_household_and_nothing_about_others(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "dso.sqlite"
    fill(db)
    code, out, _ = run(["household", "export", "--ean", A, "--db", str(db)], capsys)
    assert code == 0
    document = json.loads(out)
    tables = document["tables"]
    assert document["connection_point_id"] == A
    for table in ("households", "vens", "signals", "responses", "telemetry", "capacity_needs", "performance_reports",
                  "grid_connection_points", "deliveries", "audit_log"):
        assert table in tables
    assert len(tables["telemetry"]) == 2 and len(tables["capacity_needs"]) == 2 and len(tables["responses"]) == 1
    assert tables["households"][0]["contract"]["performance"]["monthly_discount_eur"] == 10.0
    assert B not in json.dumps({k: v for k, v in tables.items() if k != "audit_log"})
    output = tmp_path / "a.json"
    assert run(["household", "export", "--ean", A, "--db", str(db), "--output", str(output)], capsys)[0] == 0
    assert output.stat().st_mode & 0o777 == 0o600 and json.loads(output.read_text())["connection_point_id"] == A
    code, _, err = run(["household", "export", "--ean", A, "--db", str(db), "--output", str(output)], capsys)
    assert code == 2 and "exists already" in err
    code, _, err = run(["household", "export", "--ean", make_ean18("87168712777700003"), "--db", str(db)], capsys)
    assert code == 2 and "87168712777700003" in err


def test_erase_removes_one_household_entirely_and_is_audited(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "dso.sqlite"
    fill(db)
    code, _, err = run(["household", "erase", "--ean", A, "--db", str(db)], capsys)
    assert code == 2 and "--yes" in err
    code, out, _ = run(["household", "erase", "--ean", A, "--db", str(db), "--yes"], capsys)
    assert code == 0 and "erased" in out and "2 telemetry" in out
    with DsoStore(db) as store:
        for table, column in (("households", "connection_point_id"), ("vens", "connection_point_id"),
                              ("signals", "connection_point_id"), ("telemetry", "connection_point_id"),
                              ("capacity_needs", "connection_point_id"), ("performance_reports", "connection_point_id"),
                              ("grid_connection_points", "ean")):
            assert not list(store.db.query(f"SELECT 1 FROM {table} WHERE {column} = ?", [A])), table
        assert store.household(B).contract.performance is not None
        assert len(store.telemetry(B)) == 2 and len(PerformanceStore(store).needs(B)) == 2
        assert len(store.responses(connection_point_id=B)) == 1
        (entry,) = SecurityStore(store).audit(action="household.erase")
        assert entry.target == A and entry.actor.startswith("local:") and entry.detail["deleted"]["telemetry"] == 2
    code, _, err = run(["household", "erase", "--ean", A, "--db", str(db), "--yes"], capsys)
    assert code == 2 and A in err


def test_retention_deletes_what_households_sent_past_its_months(tmp_path: Path) -> None:
    db = tmp_path / "dso.sqlite"
    fill(db)
    with DsoStore(db) as store:
        deleted = PerformanceStore(store).delete_before(retention_cutoff(NOW, months=13, timezone="Europe/Amsterdam"))
        assert deleted == {"telemetry": 2, "capacity_needs": 2}
        assert [row.interval_start for row in store.telemetry(A)] == [NOW - 2 * Q]
        assert len(store.signals(connection_point_id=A)) == 1  # what the DSO decided stays


def test_settlement_from_the_store_as_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "dso.sqlite"
    fill(db)
    code, out, _ = run(["settlement", "--db", str(db), "--month", "2030-01", "--csv"], capsys)
    assert code == 0
    header, *rows = out.strip().splitlines()
    assert header.startswith("connection_point_id,month,need_hours") and len(rows) == 2
    code, out, _ = run(["settlement", "--db", str(db), "--month", "2030-01", "--connection-point", A], capsys)
    assert code == 0 and A in out and B not in out
    code, _, err = run(["settlement", "--db", str(db), "--month", "2030-1"], capsys)
    assert code == 2 and "not a month" in err
