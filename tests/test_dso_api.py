"""The operator JSON API: publishing, changing and reading signals; bad input answered clearly, nothing stored."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from api_auth import bearer

from dso_server.api.app import create_app
from dso_server.records import Household
from dso_server.store.security_store import SecurityStore
from dso_server.store.sqlite import DsoStore
from protocol import (
    ComfortStatus,
    HouseholdContract,
    Plan,
    PlanInterval,
    Telemetry,
    TelemetryInterval,
    make_ean18,
)
from protocol.clock import ManualClock

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
Q = timedelta(minutes=15)
START = NOW + timedelta(hours=1)
EAN_A = make_ean18("87168712000000001")
EAN_B = make_ean18("87168712000000002")
EAN_C = make_ean18("87168712000000003")
EAN_UNKNOWN = make_ean18("87168712000000099")


def contract_body(ean: str, **extra: Any) -> dict[str, Any]:
    return {"connection_point_id": ean, "contracted_max_import_kw": 17.0, "contracted_max_export_kw": 10.0,
            "failsafe_import_kw": 4.2, "failsafe_export_kw": 4.2, "failsafe_duration_s": 7200, **extra}


def bandwidth_intervals(*imports: float, start: datetime = START) -> list[dict[str, Any]]:
    return [{"start": (start + index * Q).isoformat(), "import_limit_kw": value, "export_limit_kw": 5.0}
            for index, value in enumerate(imports)]


def tariff_intervals(*prices: float, start: datetime = START) -> list[dict[str, Any]]:
    return [{"start": (start + index * Q).isoformat(), "import_price_eur_per_kwh": value,
             "export_price_eur_per_kwh": -0.02} for index, value in enumerate(prices)]


@pytest.fixture
def store() -> DsoStore:
    store = DsoStore()
    store.put_households([Household(HouseholdContract.model_validate(contract_body(EAN_A)), "feeder-1"),
                          Household(HouseholdContract.model_validate(contract_body(EAN_B)), "feeder-1")], now=NOW)
    return store


@pytest.fixture
async def api(store: DsoStore) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_app(store, ManualClock(NOW))), headers=bearer(store)) as client:
        yield client


async def call(api: TestClient, method: str, path: str, expected: int, **kwargs: Any) -> Any:
    response = await api.request(method, path, **kwargs)
    body = await response.json()
    assert response.status == expected, body
    return body


async def publish(api: TestClient, *imports: float, **targets: Any) -> dict[str, Any]:
    targets = targets or {"connection_point_ids": [EAN_A]}
    return await call(api, "POST", "/api/bandwidths", 201,
                      json={**targets, "firmness": "firm", "intervals": bandwidth_intervals(*imports)})


# ----------------------------------------------------------------------------------------------- households


async def test_households_are_added_listed_and_replaced(api: TestClient, store: DsoStore) -> None:
    created = await call(api, "POST", "/api/households", 201, json=contract_body(EAN_C, group="feeder-2"))
    assert created["group"] == "feeder-2" and created["registered"] is False
    await call(api, "POST", "/api/households", 200,
               json={"contract": contract_body(EAN_C, contracted_max_import_kw=25.0), "group": "feeder-2"})
    listed = (await call(api, "GET", "/api/households", 200))["households"]
    assert [h["connection_point_id"] for h in listed] == [EAN_A, EAN_B, EAN_C]
    assert listed[2]["contract"]["contracted_max_import_kw"] == 25.0
    assert listed[0]["last_telemetry_interval_start"] is None and listed[0]["last_seen_at"] is None


async def test_households_are_listed_a_page_at_a_time(api: TestClient, store: DsoStore) -> None:
    """A region has millions of households: the list comes in pages (``limit``, then ``after`` the previous page's
    ``next_after``), together exactly the whole list in order, each with its own VEN and telemetry."""
    added = [make_ean18(f"871687120000001{i:02d}") for i in range(5)]
    for ean in added:
        await call(api, "POST", "/api/households", 201, json=contract_body(ean))
    store.register_ven(added[3], now=NOW)
    whole = await call(api, "GET", "/api/households", 200)
    assert whole["next_after"] is None
    everyone = [h["connection_point_id"] for h in whole["households"]]
    assert everyone == sorted([EAN_A, EAN_B, *added])
    pages: list[list[dict]] = []  # type: ignore[type-arg]
    after: str | None = None
    while True:
        answer = await call(api, "GET", "/api/households", 200, params={"limit": "2", **({"after": after} if after
                                                                                         else {})})
        pages.append(answer["households"])
        after = answer["next_after"]
        if after is None:
            break
        assert after == answer["households"][-1]["connection_point_id"]
    assert [len(page) for page in pages] == [2, 2, 2, 1]
    assert [h for page in pages for h in page] == whole["households"]
    assert [h["registered"] for page in pages for h in page] == [ean == added[3] for ean in everyone]


async def test_an_invalid_contract_is_refused(api: TestClient, store: DsoStore) -> None:
    bad_ean = EAN_C[:-1] + str((int(EAN_C[-1]) + 1) % 10)
    error = await call(api, "POST", "/api/households", 400, json=contract_body(bad_ean))
    assert error["field"] == "connection_point_id" and "check digit" in error["error"]
    error = await call(api, "POST", "/api/households", 400, json=contract_body(EAN_C, failsafe_import_kw=30))
    assert "exceeds contracted_max_import_kw" in error["error"]
    assert len(store.households()) == 2


# ------------------------------------------------------------------------------------------------ publishing


async def test_publish_bandwidth_to_households_and_to_a_group(api: TestClient, store: DsoStore) -> None:
    single = await publish(api, 5, 4, 3)
    [event] = single["events"]
    assert (event["connection_point_id"], event["modification_number"], event["status"]) == (EAN_A, 0, "far")
    grouped = await publish(api, 2, group="feeder-1")
    assert {e["connection_point_id"] for e in grouped["events"]} == {EAN_A, EAN_B}
    signals = (await call(api, "GET", "/api/signals", 200, params={"connection_point_id": EAN_A}))["signals"]
    assert [s["event_id"] for s in signals] == [event["event_id"], grouped["events"][0]["event_id"]]
    assert signals[0]["payload"]["intervals"][2]["import_limit_kw"] == 3.0
    assert signals[0]["payload"]["firmness"] == "firm" and signals[0]["kind"] == "bandwidth"
    assert signals[0]["start"] == START.isoformat()


async def test_publish_tariff(api: TestClient) -> None:
    body = {"connection_point_ids": [EAN_B], "intervals": tariff_intervals(0.31, 0.12)}
    answer = await call(api, "POST", "/api/tariffs", 201, json=body)
    [signal] = (await call(api, "GET", "/api/signals", 200, params={"connection_point_id": EAN_B}))["signals"]
    assert signal["event_id"] == answer["events"][0]["event_id"] and signal["kind"] == "tariff"
    assert signal["payload"]["intervals"][1]["export_price_eur_per_kwh"] == -0.02


def _naive(body: dict[str, Any]) -> dict[str, Any]:
    body["intervals"][0]["start"] = "2030-01-01T13:00:00"
    return body


def _overlap(body: dict[str, Any]) -> dict[str, Any]:
    body["intervals"][1]["start"] = body["intervals"][0]["start"]
    return body


def _negative(body: dict[str, Any]) -> dict[str, Any]:
    body["intervals"][1]["import_limit_kw"] = -3
    return body


def _watts(body: dict[str, Any]) -> dict[str, Any]:
    body["intervals"][0]["export_limit_kw"] = 5000
    return body


def _off_grid(body: dict[str, Any]) -> dict[str, Any]:
    body["intervals"][0]["start"] = "2030-01-01T13:05:00+00:00"
    return body


def _past(body: dict[str, Any]) -> dict[str, Any]:
    body["intervals"] = bandwidth_intervals(5, 5, start=NOW - 4 * Q)
    return body


def _both_targets(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "group": "feeder-1"}


def _no_targets(body: dict[str, Any]) -> dict[str, Any]:
    del body["connection_point_ids"]
    return body


def _extra(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "priority": 1}


def _bad_firmness(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "firmness": "sometimes"}


@pytest.mark.parametrize(("change", "status", "field", "words"), [
    (_naive, 400, "intervals[0].start", "naive"),
    (_overlap, 400, "intervals[1]", "overlaps"),
    (_negative, 400, "intervals[1].import_limit_kw", "negative"),
    (_watts, 400, "intervals[0].export_limit_kw", "W sent as kW"),
    (_off_grid, 400, "intervals[0].start", "15-minute grid"),
    (_past, 400, "intervals", "already past"),
    (_both_targets, 400, "connection_point_ids", "not both"),
    (_no_targets, 400, "connection_point_ids", "Name the households"),
    (_extra, 400, "priority", "not a field"),
    (_bad_firmness, 400, "firmness", "firm"),
])
async def test_bad_bandwidths_are_refused_and_nothing_is_stored(
    api: TestClient, store: DsoStore, change: Any, status: int, field: str, words: str,
) -> None:
    body = {"connection_point_ids": [EAN_A, EAN_B], "firmness": "firm", "intervals": bandwidth_intervals(5, 4, 3)}
    error = await call(api, "POST", "/api/bandwidths", status, json=change(body))
    assert error["field"] == field
    assert words in error["error"]
    assert error["error"].endswith(".")
    assert isinstance(error["detail"], list)
    assert store.signals() == []


async def test_unknown_targets_are_not_found_and_nothing_is_stored(api: TestClient, store: DsoStore) -> None:
    body = {"firmness": "firm", "intervals": bandwidth_intervals(5)}
    error = await call(api, "POST", "/api/bandwidths", 404, json={**body, "connection_point_ids": [EAN_A, EAN_UNKNOWN]})
    assert error["field"] == "connection_point_ids[1]" and EAN_UNKNOWN in error["error"]
    error = await call(api, "POST", "/api/bandwidths", 404, json={**body, "group": "feeder-9"})
    assert error["field"] == "group"
    assert store.signals() == []


async def test_bodies_that_are_not_json_objects_are_refused(api: TestClient, store: DsoStore) -> None:
    error = await call(api, "POST", "/api/bandwidths", 400, data="{not json",
                       headers={"Content-Type": "application/json"})
    assert error["field"] == "body" and "not valid JSON" in error["error"]
    error = await call(api, "POST", "/api/tariffs", 400, json=[1, 2])
    assert "JSON object" in error["error"]
    error = await call(api, "POST", "/api/tariffs", 400,
                       json={"connection_point_ids": [EAN_A], "intervals": tariff_intervals(55.0)})
    assert error["field"] == "intervals[0].import_price_eur_per_kwh" and "EUR/MWh" in error["error"]
    assert store.signals() == []


# -------------------------------------------------------------------------------------- modify and cancel


async def test_modify_and_cancel_follow_the_openadr_rules(api: TestClient, store: DsoStore) -> None:
    event_id = (await publish(api, 5, 4))["events"][0]["event_id"]
    new_body = {"firmness": "firm", "intervals": bandwidth_intervals(2, 2, 2)}
    modified = await call(api, "PUT", f"/api/signals/{event_id}", 200, json=new_body)
    assert (modified["event_id"], modified["modification_number"]) == (event_id, 1)
    assert [i["import_limit_kw"] for i in modified["payload"]["intervals"]] == [2, 2, 2]
    same = await call(api, "PUT", f"/api/signals/{event_id}", 200, json=new_body)
    assert same["modification_number"] == 1  # nothing changed, nothing to tell the VEN
    cancelled = await call(api, "DELETE", f"/api/signals/{event_id}", 200)
    assert (cancelled["status"], cancelled["modification_number"], cancelled["cancelled"]) == ("cancelled", 2, True)
    error = await call(api, "PUT", f"/api/signals/{event_id}", 409, json=new_body)
    assert "cancelled" in error["error"] and error["field"] == "event_id"
    await call(api, "DELETE", f"/api/signals/{event_id}", 409)
    assert store.signal(event_id).modification_number == 2


async def test_modifying_with_a_bad_body_changes_nothing(api: TestClient, store: DsoStore) -> None:
    event_id = (await publish(api, 5))["events"][0]["event_id"]
    error = await call(api, "PUT", f"/api/signals/{event_id}", 400, json={"intervals": tariff_intervals(0.2)})
    assert error["detail"] and error["field"] in ("firmness", "intervals[0].import_limit_kw")
    await call(api, "PUT", "/api/signals/ev-unknown", 404, json={"firmness": "firm", "intervals": []})
    await call(api, "DELETE", "/api/signals/ev-unknown", 404)
    assert store.signal(event_id).modification_number == 0


async def test_publication_changes_apply_to_every_open_event(api: TestClient, store: DsoStore) -> None:
    publication = await publish(api, 5, group="feeder-1")
    first, second = publication["events"]
    await call(api, "DELETE", f"/api/signals/{first['event_id']}", 200)
    changed = await call(api, "PUT", f"/api/publications/{publication['publication_id']}", 200,
                         json={"firmness": "non_firm", "intervals": bandwidth_intervals(1)})
    assert [s["event_id"] for s in changed["skipped"]] == [first["event_id"]]
    assert store.signal(second["event_id"]).modification_number == 1
    cancelled = await call(api, "DELETE", f"/api/publications/{publication['publication_id']}", 200)
    assert {e["status"] for e in cancelled["events"]} == {"cancelled"}
    await call(api, "DELETE", f"/api/publications/{publication['publication_id']}", 409)
    await call(api, "DELETE", "/api/publications/pub-unknown", 404)


# ---------------------------------------------------------------------------------------------- read back


async def test_telemetry_plans_and_comfort_read_back(api: TestClient, store: DsoStore) -> None:
    start = NOW - 4 * Q
    store.store_reports(EAN_A, [
        Telemetry(intervals=tuple(TelemetryInterval(start=start + i * Q, import_kw=i, export_kw=0) for i in range(4))),
        Plan(created_at=NOW, intervals=(PlanInterval(start=NOW, net_import_kw=2.5),)),
        ComfortStatus(measured_at=NOW, indoor_temperature_c=20.5, comfort_min_c=19, comfort_max_c=21),
    ], now=NOW)
    answer = await call(api, "GET", "/api/telemetry", 200, params={
        "connection_point_id": EAN_A, "since": (start + Q).isoformat(), "until": (start + 3 * Q).isoformat()})
    assert [i["import_kw"] for i in answer["intervals"]] == [1, 2]
    # An unencoded '+' in the query arrives as a space; the API reads it as the offset it was meant to be.
    raw = await api.get(f"/api/telemetry?connection_point_id={EAN_A}&since={(start + 3 * Q).isoformat()}")
    assert [i["import_kw"] for i in (await raw.json())["intervals"]] == [3]
    plan = await call(api, "GET", "/api/plans", 200, params={"connection_point_id": EAN_A})
    assert plan["plan"]["intervals"][0]["net_import_kw"] == 2.5
    comfort = await call(api, "GET", "/api/comfort", 200, params={"connection_point_id": EAN_A})
    assert comfort["status"]["indoor_temperature_c"] == 20.5
    assert (await call(api, "GET", "/api/plans", 200, params={"connection_point_id": EAN_B}))["plan"] is None
    households = (await call(api, "GET", "/api/households", 200))["households"]
    assert households[0]["last_telemetry_interval_start"] == (start + 3 * Q).isoformat()


async def test_read_queries_are_checked(api: TestClient) -> None:
    error = await call(api, "GET", "/api/telemetry", 400)
    assert error["field"] == "connection_point_id"
    error = await call(api, "GET", "/api/telemetry", 400, params={"connection_point_id": EAN_A,
                                                                  "since": "2030-01-01T00:00:00"})
    assert error["field"] == "since" and "UTC offset" in error["error"]
    await call(api, "GET", "/api/telemetry", 404, params={"connection_point_id": EAN_UNKNOWN})
    await call(api, "GET", "/api/comfort", 404, params={"connection_point_id": EAN_UNKNOWN})
    await call(api, "GET", "/api/responses", 404, params={"event_id": "ev-unknown"})
    assert (await call(api, "GET", "/api/responses", 200))["responses"] == []
    error = await call(api, "GET", "/api/nothing-here", 404)
    assert "no endpoint" in error["error"]
    await call(api, "PATCH", "/api/households", 405)


def test_the_readme_names_every_route_the_operator_api_serves() -> None:
    """The README's route table and the server agree both ways: no undocumented route, no documented ghost."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(GET|POST|PUT|DELETE) (/[^`]*)` \|", readme, flags=re.MULTILINE))
    app = create_app(DsoStore(), ManualClock(NOW))
    served = {(route.method, route.resource.canonical) for route in app.router.routes()
              if route.method != "HEAD" and route.resource is not None}
    assert documented == served
# ------------------------------------------------------------------------------------------- hostile input


def _nested(depth: int) -> str:
    return '{"connection_point_ids": ["' + EAN_A + '"], "firmness": "firm", "intervals": ' + "[" * depth \
        + "]" * depth + "}"


@pytest.mark.parametrize(("content_type", "data", "status", "words"), [
    (None, b'{"group": "feeder-1"}', 415, "Content-Type: application/json, not none"),
    ("text/plain", b'{"group": "feeder-1"}', 415, "not text/plain"),
    ("application/x-www-form-urlencoded", b"group=feeder-1&firmness=firm", 415, "x-www-form-urlencoded"),
    ("multipart/form-data; boundary=x", b"--x--", 415, "multipart/form-data"),
    ("application/json; charset=latin-1", b'{"group": "feeder-1"}', 415, "UTF-8"),
    ("application/json", b'{"group": "\xff"}', 400, "not UTF-8"),
    ("application/json", _nested(5000).encode(), 400, "deeper than 32 levels"),
    ("application/json", _nested(40).encode(), 400, "deeper than 32 levels"),
    ("application/json", b'{"group": "feeder-1", "x": ' + b"9" * 5000 + b"}", 400, "not valid JSON"),
    ("application/json", b'{"group": "feeder-1", "x": NaN}', 400, "NaN is not a number JSON allows"),
    ("application/json", b'"feeder-1"', 400, "JSON object, not a string"),
    ("application/json", b"", 400, "not valid JSON"),
])
async def test_bodies_that_are_not_plain_json_objects_are_refused(
    api: TestClient, store: DsoStore, content_type: str | None, data: bytes, status: int, words: str,
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = await api.post("/api/bandwidths", data=data, headers=headers,
                              skip_auto_headers=() if content_type else ("Content-Type",))
    error = await response.json()
    assert response.status == status, error
    assert words in error["error"] and "Traceback" not in error["error"]
    assert store.signals() == []


async def test_an_oversized_body_is_413(api: TestClient, store: DsoStore) -> None:
    body = b'{"group": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    response = await api.post("/api/bandwidths", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 413 and "larger than" in (await response.json())["error"]
    assert store.signals() == []


def _as_string(body: dict[str, Any]) -> dict[str, Any]:
    body["intervals"][0]["import_limit_kw"] = "5"
    return body


def _as_bool(body: dict[str, Any]) -> dict[str, Any]:
    body["intervals"][0]["export_limit_kw"] = True
    return body


def _as_epoch(body: dict[str, Any]) -> dict[str, Any]:
    body["intervals"][0]["start"] = 1893502800
    return body


def _year_9999(body: dict[str, Any]) -> dict[str, Any]:
    body["intervals"] = bandwidth_intervals(5, start=datetime(9999, 12, 31, 23, 45, tzinfo=UTC))
    return body


def _year_1(body: dict[str, Any]) -> dict[str, Any]:
    body["intervals"][0]["start"] = "0001-01-01T00:00:00+01:00"
    return body


def _ids_as_string(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "connection_point_ids": EAN_A}


def _nested_unknown(body: dict[str, Any]) -> dict[str, Any]:
    body["intervals"][0]["priority"] = 1
    return body


@pytest.mark.parametrize(("change", "field", "words"), [
    (_as_string, "intervals[0].import_limit_kw", "valid number"),
    (_as_bool, "intervals[0].export_limit_kw", "valid number"),
    (_as_epoch, "intervals[0].start", "valid datetime"),
    (_year_9999, "intervals[0].start", "outside the years 1970-2200"),
    (_year_1, "intervals[0].start", "outside the years 1970-2200"),
    (_ids_as_string, "connection_point_ids", "valid array"),
    (_nested_unknown, "intervals[0].priority", "not a field"),
])
async def test_wrong_types_and_edge_dates_in_bodies_are_400(
    api: TestClient, store: DsoStore, change: Any, field: str, words: str,
) -> None:
    body = {"connection_point_ids": [EAN_A], "firmness": "firm", "intervals": bandwidth_intervals(5, 4)}
    error = await call(api, "POST", "/api/bandwidths", 400, json=change(body))
    assert error["field"] == field and words in error["error"], error
    assert store.signals() == []


@pytest.mark.parametrize(("path", "params", "field", "words"), [
    ("/api/telemetry", {"connection_point_id": EAN_A, "since": "9999-12-31T23:59:59.999999+00:00"}, "since",
     "outside the years"),
    ("/api/telemetry", {"connection_point_id": EAN_A, "until": "0001-01-01T00:00:00+14:00"}, "until",
     "outside the years"),
    ("/api/telemetry", {"connection_point_id": EAN_A, "since": "2030-01-02T00:00:00Z",
                        "until": "2030-01-01T00:00:00Z"}, "until", "later than since"),
    (f"/api/households/{EAN_A}/violations", {"until": "9999-12-31T23:59:59+00:00"}, "until", "outside the years"),
    (f"/api/households/{EAN_A}/violations", {"since": "0001-01-01T00:00:00-12:00"}, "since", "outside the years"),
    ("/api/signals", {"include_ended": "maybe"}, "include_ended", "true or false"),
    ("/api/signals", {"connection_point": EAN_A}, "connection_point", "not a query parameter"),
    ("/api/households", {"page": "1"}, "page", "not a query parameter"),
    ("/api/households", {"limit": "10001"}, "limit", "less than or equal to 10000"),
    ("/api/households", {"limit": "two"}, "limit", "whole number"),
    ("/api/audit", {"limit": "1e9"}, "limit", "whole number"),
    ("/api/audit", {"limit": "0"}, "limit", "greater than or equal to 1"),
    ("/api/audit", {"outcome": "maybe"}, "outcome", "'ok' or 'refused'"),
    ("/api/transformers/T1", {"day": "9999-12-31"}, "day", "outside the years"),
    ("/api/transformers/T1", {"day": "0001-01-01"}, "day", "outside the years"),
])
async def test_bad_queries_are_400_naming_the_parameter(api: TestClient, path: str, params: dict[str, str],
                                                        field: str, words: str) -> None:
    error = await call(api, "GET", path, 400, params=params)
    assert error["field"] == field and words in error["error"], error


async def test_a_repeated_query_parameter_is_refused(api: TestClient) -> None:
    error = await call(api, "GET", f"/api/telemetry?connection_point_id={EAN_A}&connection_point_id={EAN_B}", 400)
    assert error["field"] == "connection_point_id" and "more than once" in error["error"]


_NUL_REQUESTS = [
    ("GET", "/api/households?after=%00", None, "after"),
    ("GET", "/api/telemetry?connection_point_id=871687120000000017%00", None, "connection_point_id"),
    ("GET", "/api/signals?x%00=1", None, "x\\u0000"),
    ("GET", "/api/households/%00/violations", None, "path"),
    ("DELETE", "/api/signals/e%00", None, "path"),
    ("POST", "/api/households", {**contract_body(EAN_C), "group": "feeder\u0000"}, "group"),
    ("POST", "/api/bandwidths", {"connection_point_ids": [EAN_A, "\u0000"], "firmness": "firm",
                                 "intervals": bandwidth_intervals(5)}, "connection_point_ids[1]"),
    ("POST", "/api/bandwidths", {"group": "feeder-1", "firmness": "firm", "intervals": bandwidth_intervals(5),
                                 "x\u0000": 1}, "x\\u0000"),
]


async def test_a_group_with_a_control_character_is_refused_as_in_the_contracts_file(
    api: TestClient, store: DsoStore,
) -> None:
    error = await call(api, "POST", "/api/households", 400, json={**contract_body(EAN_C), "group": "feeder\t1"})
    assert error["field"] == "group" and "control character U+0009" in error["error"], error
    assert [h.connection_point_id for h in store.households()] == [EAN_A, EAN_B]


@pytest.mark.parametrize(("method", "path", "body", "field"), _NUL_REQUESTS)
async def test_a_nul_character_anywhere_is_400_on_both_backends_and_nothing_is_stored(
    db_location: str, method: str, path: str, body: dict[str, Any] | None, field: str,
) -> None:
    # PostgreSQL's text cannot hold U+0000: let through, it was a 500 there and stored text on SQLite.
    store = DsoStore(db_location)
    store.put_households([Household(HouseholdContract.model_validate(contract_body(EAN_A)), "feeder-1")], now=NOW)
    async with TestClient(TestServer(create_app(store, ManualClock(NOW))), headers=bearer(store)) as api:
        before, audit_before = (store.households(), store.signals()), SecurityStore(store).audit()
        error = await call(api, method, path, 400, json=body)
        assert error["field"] == field and "U+0000" in error["error"], error
        assert (store.households(), store.signals()) == before
        added = SecurityStore(store).audit()[len(audit_before):]
        assert [entry.outcome for entry in added] in ([], ["refused"])  # a refused change is audited, as ever
        assert (await call(api, "GET", "/api/households", 200))["households"][0]["group"] == "feeder-1"
