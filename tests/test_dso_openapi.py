"""``/api/openapi.json``: generated from the route table and the models the API validates with, and a schemathesis
run against a real ``dso-server serve`` process (slow, 20-60 s) that finds no 5xx and no answer outside the
document. ``ST_EXAMPLES`` (default 30 per operation) and ``ST_SEED`` widen the search by hand; 150 examples with
other seeds found nothing more (the run that first found a 500 for a day after pandas' 2262 and a document that
called "06:00:00" an RFC 3339 time is what set the profile's years and the time pattern)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from dso_process import DsoProcess, contracts_toml

from dso_server.api.app import ROUTES, create_app
from dso_server.store.sqlite import DsoStore
from protocol import make_ean18
from protocol.clock import ManualClock

EANS = [make_ean18(f"8716871200000{index:04d}") for index in range(1, 3)]


async def test_the_document_is_openapi_3_1_and_follows_the_route_table() -> None:
    async with TestClient(TestServer(create_app(DsoStore(), ManualClock.__new__(ManualClock)))) as client:
        response = await client.get("/api/openapi.json")  # no credential needed
        assert response.status == 200
        document = await response.json()
    assert document["openapi"] == "3.1.0" and document["info"]["title"] == "DSO operator API"
    schemas = document["components"]["schemas"]
    for route in ROUTES:
        operation = document["paths"][route.path][route.method.lower()]
        if route.role is None:
            assert operation["security"] == []
        else:
            assert {"bearer": []} in operation["security"] and route.role.value in operation["description"]
            assert ({"session": []} in operation["security"]) == (route.method == "GET")
            assert {"401", "403"} <= set(operation["responses"])
        if route.body is not None:
            ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.rsplit("/", 1)[-1] in schemas
        names = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
        assert names == set(route.query.model_fields)
    # The request bodies are the validating models: strict, closed, with the profile's fields.
    bandwidth = schemas["BandwidthPublication"]
    assert bandwidth["additionalProperties"] is False
    assert {"firmness", "intervals", "connection_point_ids", "group"} <= set(bandwidth["properties"])
    assert schemas["BandwidthInterval"]["properties"]["import_limit_kw"]["type"] == "number"
    links = document["paths"]["/api/bandwidths"]["post"]["responses"]["201"]["links"]
    assert links["ModifyEvent"]["parameters"] == {"event_id": "$response.body#/events/0/event_id"}


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_document(tmp_path: Path) -> None:
    contracts = tmp_path / "contracts.toml"
    contracts.write_text(contracts_toml(EANS))
    grid = Path(__file__).parent.parent / "examples" / "grid.toml"
    assert subprocess.run([str(Path(sys.executable).parent / "dso-server"), "grid", "load", str(grid), "--db",
                           str(tmp_path / "dso.sqlite")], capture_output=True).returncode == 0
    # The planner stays idle for the run (its first runs happen at start): the API is what is under test.
    with DsoProcess(tmp_path, "--contracts", str(contracts), "--near-real-time-interval-s", "3600",
                    "--insecure") as dso:  # plain HTTP on loopback for the VTN: the API is under test
        run = subprocess.run(
            [str(Path(sys.executable).parent / "schemathesis"), "run", f"{dso.api_url}/api/openapi.json",
             "--header", f"Authorization: Bearer {dso.token}",
             "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                         "response_schema_conformance,response_headers_conformance",
             "--max-examples", os.environ.get("ST_EXAMPLES", "30"), "--seed", os.environ.get("ST_SEED", "20301"),
             "--workers", "1", "--request-timeout", "20",
             "--report", "junit", "--report-dir", str(tmp_path / "report")],
            capture_output=True, text=True, timeout=180, cwd=tmp_path,
            env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""})
        assert dso.alive()
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "failed" not in run.stdout.split("SUMMARY")[-1].lower()
    assert "Traceback" not in dso.log.read_text()


def test_the_readme_lists_every_route_with_its_role() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    for route in ROUTES:
        role = route.role.value if route.role else "none"
        assert f"| `{route.method} {route.path}` | {role} |" in readme, f"README: {route.method} {route.path}"
