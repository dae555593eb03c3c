"""The capacity-management JSON endpoints: transformers, a transformer's day, a household's violations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from api_auth import bearer

from dso_server.api.app import create_app
from dso_server.capacity.grid import load_grid
from dso_server.security.tokens import Role
from dso_server.store.grid_store import GridStore
from dso_server.store.sqlite import DsoStore
from protocol import BandwidthInterval, CapacityBandwidth, Firmness, Telemetry, TelemetryInterval
from protocol.clock import ManualClock

EXAMPLE = Path(__file__).parent.parent / "examples" / "grid.toml"
# 2030-01-07 is a Monday; 11:00 UTC = 12:00 in Amsterdam. The local day starts at 23:00 UTC the day before.
NOW = datetime(2030, 1, 7, 11, 0, tzinfo=UTC)
DAY_START = datetime(2030, 1, 6, 23, 0, tzinfo=UTC)
Q = timedelta(minutes=15)
A, B = "871234567890000011", "871234567890000028"


@pytest.fixture
def store(db_location: str) -> DsoStore:
    store = DsoStore(db_location)  # both backends: the transformer and violation queries run on each
    GridStore(store).save_grid(load_grid(EXAMPLE), now=NOW - timedelta(days=1), source=str(EXAMPLE))
    start = NOW - 4 * Q
    firm = CapacityBandwidth(firmness=Firmness.FIRM, intervals=tuple(
        BandwidthInterval(start=start + i * Q, import_limit_kw=5.0, export_limit_kw=5.0) for i in range(8)))
    store.publish({A: firm, B: firm}, now=NOW - timedelta(hours=2))
    # A: 4, 7, 9, 4 kW against 5 kW firm -> one violation of 2 intervals, max 4 kW, (2 + 4) / 4 kWh.
    for ean, values in ((A, [4.0, 7.0, 9.0, 4.0]), (B, [1.0, 1.0, 1.0, 1.0])):
        store.store_reports(ean, [Telemetry(intervals=tuple(
            TelemetryInterval(start=start + i * Q, import_kw=v, export_kw=0.5) for i, v in enumerate(values)))],
            now=NOW)
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


async def test_transformers_listed_with_capacity_and_limit(api: TestClient) -> None:
    [t] = (await call(api, "/api/transformers"))["transformers"]
    assert t == {"id": "T1", "rating_kva": 630.0, "capacity_kw": pytest.approx(598.5),
                 "limit_kw": pytest.approx(538.65), "households": 5}


async def test_transformer_day_has_measured_load_allocation_and_households(api: TestClient) -> None:
    body = await call(api, "/api/transformers/T1")
    assert body["day"] == "2030-01-07" and len(body["intervals"]) == 96
    assert body["intervals"][0]["start"] == DAY_START.isoformat().replace("+00:00", "Z")
    by_start = {datetime.fromisoformat(i["start"]): i for i in body["intervals"]}
    first = by_start[NOW - 4 * Q]
    assert first["load_kw"] == pytest.approx(4.0 - 0.5 + 1.0 - 0.5)
    assert first["firm_kw"] == pytest.approx(10.0) and first["non_firm_kw"] is None
    assert by_start[NOW + 5 * Q]["load_kw"] is None and by_start[NOW + 5 * Q]["firm_kw"] is None
    # No telemetry history yet: the forecast band is the H25 cold start, ordered p10 <= p50 <= p90.
    for interval in body["intervals"]:
        assert 0 <= interval["forecast_p10_kw"] <= interval["forecast_p50_kw"] <= interval["forecast_p90_kw"]
    rows = {h["connection_point_id"]: h for h in body["households"]}
    assert rows[A]["violations"] == 1 and rows[A]["violation_kwh"] == pytest.approx(1.5)
    assert rows[A]["online"] and rows[A]["feeder_id"] == "T1-F1"
    assert rows["871234567890000059"]["online"] is False and rows["871234567890000059"]["last_report_at"] is None


async def test_dst_day_has_100_intervals_and_bad_day_is_400(api: TestClient) -> None:
    body = await call(api, "/api/transformers/T1", params={"day": "2030-10-27"})
    assert len(body["intervals"]) == 100
    assert len((await call(api, "/api/transformers/T1", params={"day": "2030-03-31"}))["intervals"]) == 92
    error = await call(api, "/api/transformers/T1", 400, params={"day": "31-03-2030"})
    assert error["field"] == "day"


async def test_unknown_transformer_is_404_json(api: TestClient) -> None:
    error = await call(api, "/api/transformers/T9", 404)
    assert "T9" in error["error"] and error["field"] == "transformer_id"


async def test_household_violations(api: TestClient) -> None:
    body = await call(api, f"/api/households/{A}/violations")
    [v] = body["violations"]
    assert v["start"] == (NOW - 3 * Q).isoformat().replace("+00:00", "Z")
    assert v["duration_s"] == 1800 and v["max_excess_kw"] == pytest.approx(4.0)
    assert v["energy_kwh"] == pytest.approx(1.5)
    assert datetime.fromisoformat(v["end"]) == NOW - Q
    assert (await call(api, f"/api/households/{B}/violations"))["violations"] == []
    await call(api, "/api/households/871234567890000099/violations", 404)


async def test_without_grid_no_transformers() -> None:
    store = DsoStore()
    async with TestClient(TestServer(create_app(store, ManualClock(NOW))), headers=bearer(store, Role.READ)) as client:
        assert (await call(client, "/api/transformers")) == {"transformers": []}
        await call(client, "/api/transformers/T1", 404)


def test_day_is_local() -> None:
    from dso_server.capacity.forecast import local_day

    assert local_day(DAY_START, "Europe/Amsterdam") == date(2030, 1, 7)
