"""The operator API for performance contracts: a household's needs against its firm limits, its daily reports, the
monthly settlement as JSON and CSV, and the transformer's day showing which needs were not honoured."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from api_auth import bearer

from dso_server.api.app import create_app
from dso_server.capacity.grid import ConnectionPoint, Feeder, Grid, Transformer
from dso_server.security.tokens import Role
from dso_server.settlement import COLUMNS
from dso_server.store.grid_store import GridStore
from dso_server.store.sqlite import DsoStore
from protocol import (
    BandwidthInterval,
    CapacityBandwidth,
    CapacityNeed,
    ComfortLoss,
    Firmness,
    NeedInterval,
    PerformanceReport,
    PerformanceTerms,
    make_ean18,
)
from protocol.clock import ManualClock

NOW = datetime(2030, 1, 7, 11, 0, tzinfo=UTC)  # 12:00 in Amsterdam
DAY_START = datetime(2030, 1, 6, 23, 0, tzinfo=UTC)
Q = timedelta(minutes=15)
A, B = make_ean18("87168712888800001"), make_ean18("87168712888800002")
EVENING = DAY_START + 68 * Q  # 17:00 local


@pytest.fixture
def store() -> DsoStore:
    store = DsoStore()
    grid = Grid(transformers=(Transformer(id="T1", rating_kva=25.0),), feeders=(Feeder(id="F1", transformer_id="T1"),),
                connection_points=tuple(ConnectionPoint(ean=ean, feeder_id="F1", contracted_max_import_kw=17,
                                                        contracted_max_export_kw=10) for ean in (A, B)))
    GridStore(store).save_grid(grid, now=NOW - timedelta(days=2), source="test")
    contract = store.household(A).contract.model_copy(update={"performance": PerformanceTerms(
        monthly_discount_eur=10.0, compensation_eur_per_degree_hour=2.0)})
    store.put_household(contract, group="F1", now=NOW - timedelta(days=2))
    store.store_reports(A, [CapacityNeed(created_at=DAY_START - timedelta(hours=10), intervals=tuple(
        NeedInterval(start=EVENING + k * Q, import_kw=3.0) for k in range(4)))], now=DAY_START - timedelta(hours=10))
    firm = CapacityBandwidth(firmness=Firmness.FIRM, intervals=tuple(
        BandwidthInterval(start=EVENING + k * Q, import_limit_kw=2.0 if k == 1 else 3.5, export_limit_kw=5.0)
        for k in range(4)))
    store.publish({A: firm, B: firm}, now=DAY_START - timedelta(hours=9))
    store.store_reports(A, [PerformanceReport(
        start=DAY_START - timedelta(days=1), end=DAY_START, created_at=DAY_START,
        degree_hours_outside_band=0.5, comfort_losses=(ComfortLoss(start=DAY_START - 4 * Q, degree_hours=0.5,
                                                                   limit_kw=17.0),))], now=DAY_START)
    return store


@pytest.fixture
async def api(store: DsoStore) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_app(store, ManualClock(NOW))), headers=bearer(store, Role.READ)) as client:
        yield client


async def call(api: TestClient, path: str, expected: int = 200, **kwargs: Any) -> Any:
    response = await api.get(path, **kwargs)
    body = await response.json()
    assert response.status == expected, body
    return body


async def test_needs_against_firm_limits(api: TestClient) -> None:
    body = await call(api, f"/api/households/{A}/needs")
    assert [(i["need_kw"], i["firm_kw"], i["honoured"], i["shortfall_kw"]) for i in body["intervals"]] == [
        (3.0, 3.5, True, 0.0), (3.0, 2.0, False, 1.0), (3.0, 3.5, True, 0.0), (3.0, 3.5, True, 0.0)]
    assert (await call(api, f"/api/households/{B}/needs"))["intervals"] == []
    await call(api, f"/api/households/{make_ean18('87168712888800003')}/needs", 404)
    await call(api, f"/api/households/{A}/needs", 400, params={"since": "2030-01-07T00:00:00Z",
                                                               "until": "2030-01-06T00:00:00Z"})


async def test_daily_reports(api: TestClient) -> None:
    body = await call(api, f"/api/households/{A}/performance")
    (report,) = body["reports"]
    assert report["degree_hours_outside_band"] == 0.5 and report["comfort_losses"][0]["limit_kw"] == 17.0


async def test_settlement_as_json_and_csv(api: TestClient) -> None:
    body = await call(api, "/api/settlement", params={"month": "2030-01"})
    (row,) = body["rows"]  # B has no performance contract: not settled
    assert body["month"] == "2030-01" and row["connection_point_id"] == A
    assert (row["need_hours"], row["honoured_hours"], row["not_honoured_hours"]) == (1.0, 0.75, 0.25)
    assert row["shortfall_kwh"] == 0.25 and row["days_reported"] == 1 and row["degree_hours_outside_band"] == 0.5
    assert row["total_eur"] == 10.0  # the comfort loss happened under the contract maximum: no compensation
    response = await api.get("/api/settlement.csv", params={"month": "2030-01"})
    assert response.status == 200 and response.content_type == "text/csv"
    assert "settlement-2030-01.csv" in response.headers["Content-Disposition"]
    lines = list(csv.DictReader(io.StringIO(await response.text())))
    assert list(lines[0]) == list(COLUMNS) and lines[0]["connection_point_id"] == A and lines[0]["total_eur"] == "10.0"
    await call(api, "/api/settlement", 404, params={"connection_point_id": B})
    await call(api, "/api/settlement", 400, params={"month": "2030-13"})
    await call(api, "/api/settlement", 400, params={"month": "January"})


async def test_the_transformer_day_shows_needs_not_honoured(api: TestClient) -> None:
    body = await call(api, "/api/transformers/T1", params={"day": "2030-01-07"})
    evening = {i["start"]: i for i in body["intervals"] if i["need_kw"] is not None}
    assert len(evening) == 4 and all(i["need_kw"] == 3.0 for i in evening.values())
    assert [i["needs_not_honoured"] for i in evening.values()] == [0, 1, 0, 0]
    households = {h["connection_point_id"]: h for h in body["households"]}
    assert households[A]["performance"] and households[A]["need_intervals"] == 4
    assert households[A]["needs_not_honoured"] == 1 and households[A]["need_shortfall_kwh"] == 0.25
    assert not households[B]["performance"] and households[B]["need_intervals"] == 0
