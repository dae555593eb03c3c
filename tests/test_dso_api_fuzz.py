"""Fuzzing the operator API of a real ``dso-server serve`` process (slow, about a minute).

Hypothesis draws requests over the API's request models (bodies of every model, near-valid and broken: wrong
types, edge-of-calendar timestamps, unknown fields) and a fixed corpus of hostile ones (deep nesting, a body over
the size limit, invalid UTF-8, NaN, wrong and missing content types), each with a credential drawn from: none, a
malformed header, an unknown, a revoked and an expired token, a read and an operate token. After every request:

* the answer is not a 5xx and is JSON (no traceback, no HTML error page);
* when the request was refused (4xx) or only read (GET), the store is unchanged: a logical dump of every table
  (rows sorted) is compared before and after; the only row allowed to appear is one audit entry of outcome
  ``refused``, and only for a change attempted with a valid credential;
* at the end the process is alive, answers its health check and logged no traceback.
"""

from __future__ import annotations

import http.client
import json
import sqlite3
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dso_process import DsoProcess, contracts_toml, dso_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dso_server.api.app import ROUTES
from dso_server.security.tokens import Role, new_token
from dso_server.store.security_store import SecurityStore
from dso_server.store.sqlite import DsoStore
from protocol import floor_to_interval, make_ean18

pytestmark = pytest.mark.slow
PRODUCES = {(route.method, route.path): route.content_type for route in ROUTES}
"""What each route answers with 200 (JSON, but Prometheus text for /metrics)."""

EANS = [make_ean18(f"8716871200000{index:04d}") for index in range(1, 4)]
UNKNOWN_EAN = make_ean18("87168712000009999")
EXAMPLES = 1000
"""Drawn requests; with the corpus (about 200) about 40 s on this 2-core machine."""


# ------------------------------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class Dump:
    state: dict[str, list[tuple[Any, ...]]]
    refused: list[tuple[Any, ...]]


def dump(db: Path) -> Dump:
    """Every table's rows, sorted; the audit log's refused entries apart (the one thing a refusal may add)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        tables = [row[0] for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        state: dict[str, list[tuple[Any, ...]]] = {}
        refused: list[tuple[Any, ...]] = []
        for table in tables:
            rows = sorted(connection.execute(f"SELECT * FROM {table}"), key=repr)
            if table == "audit_log":
                columns = [column[1] for column in connection.execute("PRAGMA table_info(audit_log)")]
                outcome = columns.index("outcome")
                refused = [row for row in rows if row[outcome] == "refused"]
                rows = [row for row in rows if row[outcome] != "refused"]
            state[table] = rows
        state["user_version"] = [tuple(connection.execute("PRAGMA user_version").fetchone())]
    connection.close()
    return Dump(state, refused)


# ------------------------------------------------------------------------------------------------ credentials


@dataclass(frozen=True)
class Credentials:
    operate: str
    read: str
    revoked: str
    expired: str

    def header(self, kind: str) -> dict[str, str]:
        values = {"none": None, "malformed": "Bearer", "basic": "Basic b3BlcmF0b3I6c2VjcmV0",
                  "unknown": f"Bearer {new_token()}", "revoked": f"Bearer {self.revoked}",
                  "expired": f"Bearer {self.expired}", "read": f"Bearer {self.read}",
                  "operate": f"Bearer {self.operate}"}
        value = values[kind]
        return {} if value is None else {"Authorization": value}


VALID_KINDS = {"read": "token:fuzz-read", "operate": "token:fuzz-operate"}


def make_credentials(db: Path) -> Credentials:
    """Tokens made by the CLI, plus an expired one (written with a past clock: nothing waits for it to expire)."""
    def create(name: str, role: str) -> str:
        made = dso_server("token", "create", "--db", str(db), "--name", name, "--role", role)
        assert made.returncode == 0, made.stderr
        return made.stdout.strip()

    operate, read, revoked = create("fuzz-operate", "operate"), create("fuzz-read", "read"), create("gone", "operate")
    assert dso_server("token", "revoke", "gone", "--db", str(db)).returncode == 0
    past = datetime.now(UTC) - timedelta(days=2)
    with DsoStore(db) as store:
        _, expired = SecurityStore(store).create_token("old", Role.OPERATE, now=past, actor="test",
                                                       expires_at=past + timedelta(days=1))
    assert expired is not None
    return Credentials(operate=operate, read=read, revoked=revoked, expired=expired)


# ------------------------------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    credential: str
    body: bytes | None = None
    content_type: str | None = "application/json"
    action: str | None = None


class Client:
    def __init__(self, api_url: str) -> None:
        parsed = urllib.parse.urlsplit(api_url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.connection = http.client.HTTPConnection(self.host, self.port, timeout=30)

    def send(self, request: Request, headers: dict[str, str]) -> tuple[int, bytes, str]:
        headers = dict(headers)
        if request.body is not None and request.content_type is not None:
            headers["Content-Type"] = request.content_type
        for attempt in range(2):
            try:
                self.connection.request(request.method, request.path, body=request.body, headers=headers)
                response = self.connection.getresponse()
                data = response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self.connection.close()
                return response.status, data, response.getheader("Content-Type", "")
            except (http.client.HTTPException, ConnectionError):
                # The server may close a connection after refusing a body it did not read: reconnect once.
                self.connection.close()
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.connection.close()


def json_values() -> st.SearchStrategy[Any]:
    leaves = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**20), max_value=10**20),
                       st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
    return st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                        max_leaves=12)


def instants(now: datetime) -> st.SearchStrategy[Any]:
    base = floor_to_interval(now)
    quarter = st.integers(min_value=-8, max_value=96 * 3).map(lambda k: (base + k * timedelta(minutes=15)).isoformat())
    anywhere = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                            timezones=st.sampled_from([UTC, None])).map(lambda d: d.isoformat())
    edges = st.sampled_from(["9999-12-31T23:59:59.999999+00:00", "0001-01-01T00:00:00+14:00",
                             "9999-12-31T23:45:00Z", "1969-12-31T23:45:00Z", "2030-02-30T00:00:00Z", "now", ""])
    return st.one_of(quarter, quarter, anywhere, edges, json_values())


def numbers() -> st.SearchStrategy[Any]:
    return st.one_of(st.floats(min_value=0, max_value=30), st.integers(min_value=-5, max_value=300),
                     st.floats(), st.sampled_from(["5", True, False, None, [], {}, 1e309, -0.0, 10**400]))


def interval(now: datetime, kind: str) -> st.SearchStrategy[dict[str, Any]]:
    names = (("import_limit_kw", "export_limit_kw") if kind == "bandwidth"
             else ("import_price_eur_per_kwh", "export_price_eur_per_kwh"))
    return st.fixed_dictionaries({"start": instants(now), names[0]: numbers(), names[1]: numbers()},
                                 optional={"priority": json_values()})


def contiguous(now: datetime, kind: str) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Intervals that mostly follow each other (so many bodies get past the series rules)."""
    def build(first: int, values: list[tuple[float, float]]) -> list[dict[str, Any]]:
        start = floor_to_interval(now) + first * timedelta(minutes=15)
        names = (("import_limit_kw", "export_limit_kw") if kind == "bandwidth"
                 else ("import_price_eur_per_kwh", "export_price_eur_per_kwh"))
        return [{"start": (start + index * timedelta(minutes=15)).isoformat(), names[0]: a, names[1]: b}
                for index, (a, b) in enumerate(values)]
    pair = st.tuples(st.floats(min_value=0, max_value=20), st.floats(min_value=0, max_value=20))
    return st.builds(build, st.integers(min_value=-2, max_value=96), st.lists(pair, min_size=1, max_size=8))


def signal_body(now: datetime, kind: str) -> st.SearchStrategy[dict[str, Any]]:
    """Half of them valid (they are stored: the server's state moves on), half broken somewhere."""
    valid: dict[str, st.SearchStrategy[Any]] = {"intervals": contiguous(now, kind)}
    intervals = st.one_of(contiguous(now, kind), st.lists(interval(now, kind), max_size=4), json_values())
    broken: dict[str, st.SearchStrategy[Any]] = {"intervals": intervals}
    if kind == "bandwidth":
        valid["firmness"] = st.sampled_from(["firm", "non_firm"])
        broken["firmness"] = st.one_of(st.sampled_from(["firm", "non_firm"]), json_values())
    return st.one_of(st.fixed_dictionaries(valid),
                     st.fixed_dictionaries(broken, optional={"unexpected": json_values()}))


def targets() -> st.SearchStrategy[dict[str, Any]]:
    ids = st.lists(st.sampled_from([*EANS, UNKNOWN_EAN]) | st.text(max_size=20), min_size=0, max_size=4)
    return st.one_of(
        st.just({"group": "feeder-1"}), st.lists(st.sampled_from(EANS), min_size=1, max_size=3, unique=True).map(
            lambda chosen: {"connection_point_ids": chosen}),
        st.fixed_dictionaries({"connection_point_ids": ids}),
        st.fixed_dictionaries({"group": st.sampled_from(["feeder-1", "feeder-9", "", " "]) | st.text(max_size=10)}),
        st.fixed_dictionaries({"connection_point_ids": ids, "group": st.just("feeder-1")}),
        st.just({}), st.fixed_dictionaries({"connection_point_ids": json_values()}))


def household_body() -> st.SearchStrategy[dict[str, Any]]:
    contract = st.fixed_dictionaries({
        "connection_point_id": st.sampled_from([*EANS, make_ean18("87168712000000050"), "123"]) | st.text(max_size=20),
        "contracted_max_import_kw": numbers(), "contracted_max_export_kw": numbers(),
        "failsafe_import_kw": numbers(), "failsafe_export_kw": numbers(),
        "failsafe_duration_s": st.integers(min_value=0, max_value=200_000) | numbers(),
    }, optional={"comfort": st.fixed_dictionaries({}, optional={
        "indoor_setpoint_c": numbers(), "ev_departure_local": st.text(max_size=10), "time_zone": st.text(max_size=20)}),
        "group": st.text(max_size=10) | json_values()})
    return st.one_of(contract, st.builds(lambda c, g: {"contract": c, "group": g}, contract, st.text(max_size=5)))


def queries(now: datetime) -> st.SearchStrategy[dict[str, str]]:
    values = st.one_of(st.sampled_from([*EANS, UNKNOWN_EAN, "true", "false", "maybe", "0", "10000", "-1"]),
                       instants(now).map(str), st.text(max_size=20))
    keys = st.sampled_from(["connection_point_id", "since", "until", "event_id", "publication_id", "include_ended",
                            "day", "actor", "action", "outcome", "limit", "unknown"])
    return st.dictionaries(keys, values, max_size=4)


def drawn_requests(now: datetime, ids: dict[str, list[str]]) -> st.SearchStrategy[Request]:
    credential = st.one_of(st.just("operate"), st.sampled_from(
        ["none", "malformed", "basic", "unknown", "revoked", "expired", "read", "operate"]))

    @st.composite
    def build(draw: st.DrawFn) -> Request:
        writes = [r for r in ROUTES if r.action is not None]
        route = draw(st.one_of(st.sampled_from(writes), st.sampled_from(writes), st.sampled_from(ROUTES)))
        path = route.path
        for name, known in ids.items():
            if "{" + name + "}" in path:
                value = draw(st.one_of(st.sampled_from(known), st.sampled_from(known),
                                       st.text(min_size=1, max_size=30)))
                path = path.replace("{" + name + "}", urllib.parse.quote(value, safe=""))
        query = draw(queries(now) if route.method == "GET" or draw(st.integers(0, 4)) == 0 else st.just({}))
        if query:
            path += "?" + urllib.parse.urlencode(query)
        body: Any = None
        if route.body is not None or draw(st.integers(0, 9)) == 0:
            if "bandwidths" in route.path or "tariffs" in route.path:
                kind = "bandwidth" if "bandwidths" in route.path else "tariff"
                body = {**draw(targets()), **draw(signal_body(now, kind))}
            elif "households" in route.path:
                body = draw(household_body())
            elif "session" in route.path:
                body = {"token": draw(st.sampled_from(["operate", "read", "revoked"]) | st.text(max_size=50))}
            else:
                body = draw(signal_body(now, draw(st.sampled_from(["bandwidth", "tariff"]))) | json_values())
        content_type = draw(st.sampled_from(["application/json"] * 12 + [
            "application/json; charset=utf-8", "text/plain", "application/x-www-form-urlencoded", None]))
        raw = None if body is None else json.dumps(body, allow_nan=True).encode()
        return Request(route.method, path, draw(credential), raw, content_type, route.action)

    return build()


def hostile_corpus(now: datetime) -> Iterator[Request]:
    start = floor_to_interval(now) + timedelta(hours=1)
    good = {"group": "feeder-1", "firmness": "firm", "intervals": [
        {"start": start.isoformat(), "import_limit_kw": 5.0, "export_limit_kw": 5.0}]}
    bodies: list[tuple[bytes, str | None]] = [
        (b"[" * 100_000 + b"]" * 100_000, "application/json"),
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "application/json"),
        (b'{"group": "' + b"x" * (5 * 1024 * 1024) + b'"}', "application/json"),
        (b'{"group": "\xff\xfe"}', "application/json"),
        (b'{"group": "feeder-1", "firmness": "firm", "intervals": NaN}', "application/json"),
        (b'{"intervals": [{"start": "2030-01-01T00:00:00Z", "import_limit_kw": ' + b"9" * 10_000 + b"}]}",
         "application/json"),
        (b'{"group": "feeder-1"', "application/json"),
        (b"", "application/json"),
        (b"null", "application/json"),
        (json.dumps(good).encode(), None),
        (json.dumps(good).encode(), "text/plain"),
        (b"group=feeder-1&firmness=firm", "application/x-www-form-urlencoded"),
        (b"--b\r\nContent-Disposition: form-data; name=\"group\"\r\n\r\nfeeder-1\r\n--b--",
         "multipart/form-data; boundary=b"),
        (json.dumps(good).encode(), "application/json; charset=utf-16"),
        (json.dumps({**good, "intervals": [{**good["intervals"][0], "start": "9999-12-31T23:45:00+00:00"}]}).encode(),
         "application/json"),
        (json.dumps({**good, "intervals": [{**good["intervals"][0], "start": "0001-01-01T00:00:00+01:00"}]}).encode(),
         "application/json"),
        (json.dumps({**good, "intervals": [{**good["intervals"][0], "import_limit_kw": "5"}]}).encode(),
         "application/json"),
        (json.dumps({**good, "intervals": [{**good["intervals"][0], "export_limit_kw": True}]}).encode(),
         "application/json"),
        (json.dumps({**good, "surprise": 1}).encode(), "application/json"),
    ]
    for credential in ("operate", "read", "none", "revoked", "expired"):
        for data, content_type in bodies:
            for path, method in (("/api/bandwidths", "POST"), ("/api/households", "POST")):
                yield Request(method, path, credential, data, content_type,
                              "signal.publish" if "bandwidths" in path else "household.put")
    for query in ("since=9999-12-31T23:59:59.999999%2B00:00", "until=0001-01-01T00:00:00%2B14:00",
                  "since=2030-01-01T00:00:00&until=x", "connection_point_id=" + "9" * 5000):
        yield Request("GET", f"/api/telemetry?connection_point_id={EANS[0]}&{query}", "read")
        yield Request("GET", f"/api/households/{EANS[0]}/violations?{query.split('&')[0]}", "read")
    yield Request("GET", "/api/transformers/T1?day=9999-12-31", "read")
    yield Request("GET", "/api/audit?limit=99999999999999999999", "read")
    yield Request("GET", "/api/audit?since=9999-12-31T23:59:59%2B00:00", "read")
    yield Request("GET", "/api/signals/%00", "operate")
    yield Request("DELETE", "/api/signals/" + "x" * 5000, "operate", action="signal.cancel")
    yield Request("PUT", "/api/publications/..%2F..%2Fetc", "operate", json.dumps(good).encode(),
                  action="publication.modify")


# ------------------------------------------------------------------------------------------------------ test


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[DsoProcess, Credentials]]:
    contracts = tmp_path / "contracts.toml"
    contracts.write_text(contracts_toml(EANS))
    db = tmp_path / "dso.sqlite"
    credentials = make_credentials(db)
    # Plain HTTP on loopback for the VTN: this test is about the operator API (the VTN's: test_dso_vtn_fuzz.py).
    with DsoProcess(tmp_path, "--contracts", str(contracts), "--insecure", db=db) as process:
        yield process, credentials


def test_hostile_and_random_requests_leave_the_server_up_and_the_store_intact(
        server: tuple[DsoProcess, Credentials]) -> None:
    process, credentials = server
    now = datetime.now(UTC)
    client = Client(process.api_url)
    checked = {"requests": 0, "refused": 0, "changed": 0}

    # Some events and publications to modify and cancel.
    ids: dict[str, list[str]] = {"event_id": ["ev-unknown"], "publication_id": ["pub-unknown"],
                                 "transformer_id": ["T1"], "connection_point_id": [*EANS, UNKNOWN_EAN]}
    for _ in range(3):
        start = floor_to_interval(now) + timedelta(hours=2)
        body = {"group": "feeder-1", "firmness": "firm", "intervals": [
            {"start": (start + i * timedelta(minutes=15)).isoformat(), "import_limit_kw": 5.0,
             "export_limit_kw": 5.0} for i in range(4)]}
        status, data, _ = client.send(Request("POST", "/api/bandwidths", "operate", json.dumps(body).encode()),
                                      credentials.header("operate"))
        assert status == 201, data
        answer = json.loads(data)
        ids["publication_id"].append(answer["publication_id"])
        ids["event_id"].extend(event["event_id"] for event in answer["events"])

    def check(request: Request) -> None:
        before = dump(process.db)
        status, data, content_type = client.send(request, credentials.header(request.credential))
        checked["requests"] += 1
        assert status < 500, (request, data[:500])
        # Every answer is JSON but a document of another type that succeeded (/metrics, a CSV download); errors on
        # those routes are JSON too.
        csv_download = status == 200 and request.path.split("?")[0].endswith(".csv")
        produces = PRODUCES.get((request.method, request.path), "application/json") if status == 200 else (
            "application/json")
        expected = "text/csv" if csv_download else produces.split(";")[0]
        assert content_type.startswith(expected), (request, status, content_type)
        assert b"Traceback" not in data
        after = dump(process.db)
        if status >= 400 or request.method == "GET":
            checked["refused" if status >= 400 else "requests"] += 0
            assert after.state == before.state, (request, status, data[:300])
            added = [row for row in after.refused if row not in before.refused]
            may_log = (status >= 400 and request.credential in VALID_KINDS and request.action is not None
                       and request.method != "GET" and status != 413)
            assert len(added) <= (1 if may_log else 0), (request, status, added)
            if added:
                assert VALID_KINDS[request.credential] in added[0] and request.action in added[0]
            checked["refused"] += status >= 400
        else:
            checked["changed"] += 1

    for request in hostile_corpus(now):
        check(request)

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
    @given(drawn_requests(now, ids))
    def random_requests(request: Request) -> None:
        check(request)

    random_requests()
    client.close()
    assert process.alive(), "the server process died"
    health = http.client.HTTPConnection(client.host, client.port, timeout=10)
    health.request("GET", "/api/health")
    assert health.getresponse().status == 200
    health.close()
    assert process.stop() == 0
    log = process.log.read_text()
    assert "Traceback" not in log, log[-3000:]
    # The run exercised both sides: many refusals, and some changes that went through.
    assert checked["refused"] > 500 and checked["changed"] > 20, checked
