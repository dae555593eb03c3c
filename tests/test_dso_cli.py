"""``dso-server`` CLI, the contracts file and the settings: clear errors, right exit codes, no tracebacks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from support.security import plain_settings  # plain HTTP on loopback where the test is not about TLS

from dso_server.cli import build_parser, main, serve_settings
from dso_server.contracts import ContractsFileError, load_contracts, parse_contracts
from dso_server.records import EventResponse, Household
from dso_server.security.tokens import Role
from dso_server.service import DsoServer
from dso_server.settings import DsoSettings
from protocol import HouseholdContract, floor_to_interval, make_ean18
from protocol.clock import WallClock

EAN_A = make_ean18("87168712000000001")
EAN_B = make_ean18("87168712000000002")
HOUSEHOLD = """
[[household]]
connection_point_id = "{ean}"
group = "feeder-1"
contracted_max_import_kw = 17.0
contracted_max_export_kw = 10.0
failsafe_import_kw = 4.2
failsafe_export_kw = 4.2
failsafe_duration_s = 7200
"""
FILE = Path("contracts.toml")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv, env={})  # serve reads no DSO_* variable of the machine running the tests
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


async def run_async(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    # The CLI blocks on urllib; the API it talks to runs in this event loop.
    return await asyncio.to_thread(run, argv, capsys)


# -------------------------------------------------------------------------------------------- contracts


def test_a_contracts_file_is_read_with_groups_and_comfort(tmp_path: Path) -> None:
    path = tmp_path / "contracts.toml"
    path.write_text(HOUSEHOLD.format(ean=EAN_A) + HOUSEHOLD.format(ean=EAN_B).replace('group = "feeder-1"\n', "")
                    + "[household.comfort]\nindoor_setpoint_c = 21.5\nev_departure_local = 07:15:00\n")
    first, second = load_contracts(path)
    assert (first.connection_point_id, first.group) == (EAN_A, "feeder-1")
    assert second.group is None
    assert second.contract.comfort.indoor_setpoint_c == 21.5
    assert second.contract.comfort.ev_departure_local == time(7, 15)


@pytest.mark.parametrize(("text", "message"), [
    (HOUSEHOLD.format(ean=EAN_A).replace("failsafe_duration_s = 7200\n", ""),
     "contracts.toml: household[0].failsafe_duration_s: is required"),
    (HOUSEHOLD.format(ean=EAN_A) + HOUSEHOLD.format(ean=EAN_B).replace("4.2", "40", 1),
     "contracts.toml: household[1]: failsafe_import_kw 40.0 exceeds contracted_max_import_kw 17.0"),
    (HOUSEHOLD.format(ean=EAN_A) + "[household.comfort]\nsetpoint = 20\n",
     "contracts.toml: household[0].comfort.setpoint: is not a contract field"),
    (HOUSEHOLD.format(ean=EAN_A) * 2, f"household[1].connection_point_id: {EAN_A} is already household[0]"),
    (HOUSEHOLD.format(ean=EAN_A[:-1] + "0" if EAN_A[-1] != "0" else EAN_A[:-1] + "1"),
     "household[0].connection_point_id"),
    ("[household]\nconnection_point_id = 'x'\n", "write [[household]], not [household]"),
    ("[[households]]\n", "unknown top-level key(s) ['households']"),
    ("[[household]\n", "is not valid TOML"),
    (HOUSEHOLD.format(ean=EAN_A).replace('group = "feeder-1"', "group = 3"), "household[0].group: must be"),
    (HOUSEHOLD.format(ean=EAN_A).replace('group = "feeder-1"', 'group = "feeder\\u0000"'),
     "household[0].group: the group holds the control character U+0000"),
])
def test_contract_file_errors_name_the_file_household_and_field(text: str, message: str) -> None:
    with pytest.raises(ContractsFileError) as caught:
        parse_contracts(text, path=FILE)
    assert message in str(caught.value)


def test_a_missing_contracts_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ContractsFileError, match=r"nope\.toml: cannot be read"):
        load_contracts(tmp_path / "nope.toml")


# --------------------------------------------------------------------------------------------- settings


def test_settings_are_checked_once_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="all lowercase"):
        DsoSettings(vtn_id="dso-vtn")
    with pytest.raises(ValidationError, match="is not a readable file"):
        DsoSettings(cert=tmp_path, key=tmp_path)
    key = tmp_path / "key.pem"
    key.write_text("x")
    with pytest.raises(ValidationError, match="cert and key go together"):
        DsoSettings(key=key)
    with pytest.raises(ValidationError, match="not a readable file"):
        DsoSettings(contracts_file=tmp_path / "missing.toml")
    with pytest.raises(ValidationError):
        DsoSettings(vtn_port=70000)
    with pytest.raises(ValidationError, match="whole number of seconds"):
        DsoSettings(poll_interval_s=1.5)
    with pytest.raises(ValidationError, match="cert, key, ca_file missing"):
        DsoSettings()
    with pytest.raises(ValidationError, match=r"insecure \(plain HTTP\) is refused on vtn_host '0\.0\.0\.0'"):
        DsoSettings(insecure=True, vtn_host="0.0.0.0")
    settings = DsoSettings(http_path_prefix="/oadr/", insecure=True)
    assert settings.http_path_prefix == "/oadr"
    with pytest.raises(ValidationError):
        settings.vtn_port = 1  # type: ignore[misc]


# ------------------------------------------------------------------------------------------------- CLI


def test_every_command_explains_itself(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["serve", "--help"], ["publish", "bandwidth", "--help"], ["publish", "tariff", "--help"],
                 ["modify", "--help"], ["cancel", "--help"], ["households", "--help"], ["signals", "--help"],
                 ["telemetry", "--help"], ["responses", "--help"]):
        code, out, _ = run(argv, capsys)
        assert code == 0 and "usage: dso-server" in out
    served = serve_settings(build_parser().parse_args(["serve", "--insecure"]), {})
    assert (served.vtn_port, served.api_port, served.poll_interval_s) == (8080, 8081, 10.0)


@pytest.mark.parametrize(("argv", "words"), [
    (["publish", "bandwidth", "--connection-point", EAN_A, "--firmness", "firm", "--start", "2030-01-01T17:00:00",
      "--import-kw", "5", "--export-kw", "5"], "has no UTC offset"),
    (["publish", "bandwidth", "--connection-point", EAN_A, "--firmness", "firm", "--start",
      "2030-01-01T17:00:00+00:00", "--import-kw", "5,5,3", "--export-kw", "5,5"], "--import-kw has 3 values"),
    (["publish", "bandwidth", "--connection-point", EAN_A, "--start", "2030-01-01T17:00:00+00:00"],
     "needs --firmness, --import-kw, --export-kw"),
    (["publish", "bandwidth", "--connection-point", EAN_A, "--firmness", "firm", "--start",
      "2030-01-01T17:00:00+00:00", "--import-kw", "5,five", "--export-kw", "5"], "comma-separated numbers"),
    (["publish", "bandwidth", "--firmness", "firm", "--start", "2030-01-01T17:00:00+00:00", "--import-kw", "5",
      "--export-kw", "5"], "name the households"),
    (["publish", "bandwidth", "--group", "g", "--firmness", "firm", "--start", "2030-01-01T17:05:00+00:00",
      "--import-kw", "5", "--export-kw", "5"], "15-minute grid"),
    (["publish", "tariff", "--group", "g", "--start", "2030-01-01T17:00:00+00:00", "--import-price", "300",
      "--export-price", "0"], "EUR/MWh"),
    (["modify", "ev-1", "--file", "/nonexistent/body.json"], "cannot read /nonexistent/body.json"),
    (["serve", "--vtn-id", "dso", "--db", ":memory:"], "--vtn-id 'dso': is all lowercase"),
    (["telemetry", "--connection-point", EAN_A, "--since", "yesterday"], "not an ISO 8601 timestamp"),
])
def test_bad_arguments_exit_2_with_a_message(argv: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(argv, capsys)
    assert code == 2
    assert words in err
    assert "Traceback" not in err


def test_an_invalid_contracts_file_stops_serve_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    contracts = tmp_path / "contracts.toml"
    contracts.write_text(HOUSEHOLD.format(ean=EAN_A).replace("17.0", "-17.0"))
    code, _, err = run(["serve", "--db", ":memory:", "--vtn-port", "0", "--api-port", "0", "--contracts",
                        str(contracts), "--insecure"], capsys)
    assert code == 2
    assert f"{contracts}: household[0].contracted_max_import_kw" in err and "negative" in err


def test_an_unreachable_api_exits_1(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSO_API_TOKEN", "dso_" + "x" * 43)
    code, _, err = run(["households", "--api-url", "http://127.0.0.1:9"], capsys)
    assert code == 1 and "cannot reach the operator API" in err


@pytest.fixture
async def dso(tmp_path: Path) -> AsyncIterator[DsoServer]:
    contracts = tmp_path / "contracts.toml"
    contracts.write_text(HOUSEHOLD.format(ean=EAN_A) + HOUSEHOLD.format(ean=EAN_B))
    settings = plain_settings(db_path=":memory:", vtn_port=0, api_port=0, contracts_file=contracts)
    async with DsoServer(settings, WallClock()) as server:
        yield server


async def test_publish_modify_cancel_and_read_through_the_cli(
    dso: DsoServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Changes with an operate token from a file; reads with a read token from the environment.
    token_file = tmp_path / "operate.token"
    token_file.write_text(dso.create_token("cli-operator") + "\n")
    token_file.chmod(0o600)
    monkeypatch.setenv("DSO_API_TOKEN", dso.create_token("cli-reader", Role.READ))
    url = ["--api-url", dso.api_url, "--token-file", str(token_file)]
    read_url = ["--api-url", dso.api_url]
    start = floor_to_interval(datetime.now(UTC)) + timedelta(hours=2)
    code, out, err = await run_async(["publish", "bandwidth", *url, "--group", "feeder-1", "--firmness", "non_firm",
                                      "--start", start.isoformat(), "--import-kw", "5,4.5,3", "--export-kw", "6",
                                      "--json"], capsys)
    assert code == 0, err
    publication = json.loads(out)
    assert {e["connection_point_id"] for e in publication["events"]} == {EAN_A, EAN_B}
    event_id = next(e["event_id"] for e in publication["events"] if e["connection_point_id"] == EAN_A)
    signal = dso.store.signal(event_id)
    assert [i.import_limit_kw for i in signal.payload.intervals] == [5, 4.5, 3]
    assert [i.export_limit_kw for i in signal.payload.intervals] == [6, 6, 6]

    body = tmp_path / "modified.json"
    body.write_text(json.dumps({"firmness": "firm", "intervals": [
        {"start": start.isoformat(), "import_limit_kw": 2, "export_limit_kw": 2}]}))
    code, out, err = await run_async(["modify", event_id, "--file", str(body), *url], capsys)
    assert code == 0, err
    assert "modification 1" in out
    code, out, _ = await run_async(["cancel", publication["publication_id"], "--publication", *url], capsys)
    assert code == 0 and "cancelled" in out
    assert dso.store.signal(event_id).modification_number == 2

    code, _, err = await run_async(["cancel", event_id, *url], capsys)
    assert code == 1 and "the DSO refused" in err and "cancelled before" in err

    code, _, err = await run_async(["publish", "tariff", *url, "--connection-point", make_ean18("87168712000000099"),
                                    "--start", start.isoformat(), "--import-price", "0.3", "--export-price=-0.05"],
                                   capsys)
    assert code == 1 and "No household has connection point id" in err

    code, out, _ = await run_async(["households", *read_url], capsys)
    assert code == 0 and EAN_A in out and "feeder-1" in out
    # More households than one page of the API (1,000): the command lists them all, each once, in order.
    dso.store.put_households([Household(HouseholdContract(
        connection_point_id=make_ean18(f"8716871300000{i:04d}"), contracted_max_import_kw=17.0,
        contracted_max_export_kw=10.0, failsafe_import_kw=4.2, failsafe_export_kw=4.2, failsafe_duration_s=7200),
        "feeder-9") for i in range(1200)], now=datetime.now(UTC))
    code, out, _ = await run_async(["households", *read_url, "--json"], capsys)
    listed = [h["connection_point_id"] for h in json.loads(out)["households"]]
    assert code == 0 and listed == sorted(h.connection_point_id for h in dso.store.households())
    assert len(listed) == len(set(listed)) > 1200
    code, out, _ = await run_async(["signals", *read_url, "--connection-point", EAN_A], capsys)
    assert code == 0 and event_id in out and "cancelled" in out
    code, out, _ = await run_async(["telemetry", *read_url, "--connection-point", EAN_A], capsys)
    assert code == 0 and "import_kw" in out
    # The read token cannot change anything.
    code, _, err = await run_async(["cancel", event_id, *read_url], capsys)
    assert code == 1 and "has the role read" in err and "needs operate" in err

    # Who did what: the audit log through the API and straight from the store agree.
    code, out, err = await run_async(["audit", *read_url, "--actor", "token:cli-operator", "--json"], capsys)
    assert code == 0, err
    actions = [(e["action"], e["outcome"]) for e in json.loads(out)["entries"]]
    assert actions == [("signal.publish", "ok"), ("signal.modify", "ok"), ("publication.cancel", "ok"),
                       ("signal.cancel", "refused"), ("signal.publish", "refused")]
    code, out, _ = await run_async(["audit", *read_url, "--action", "signal.cancel"], capsys)
    assert code == 0 and "token:cli-reader" in out and "refused" in out

    ven = dso.store.register_ven(EAN_A, now=datetime.now(UTC))
    dso.store.record_responses(ven.ven_id, [EventResponse(
        event_id=event_id, modification_number=0, opt_type="optOut", response_code=454,
        response_description="event.eventSignals[x-IMPORT_CAPACITY_LIMIT].itemBase.scale: is 'none'")],
        now=datetime.now(UTC))
    code, out, err = await run_async(["responses", *url, "--event-id", event_id], capsys)
    assert code == 0, err
    assert event_id in out and "optOut" in out and "454" in out and "itemBase.scale" in out
    code, out, _ = await run_async(["responses", *url, "--connection-point", EAN_B, "--json"], capsys)
    assert code == 0 and json.loads(out) == {"responses": []}
    code, _, err = await run_async(["responses", *url, "--event-id", "no-such-event"], capsys)
    assert code == 1 and "no-such-event" in err


def test_certificates_that_do_not_load_stop_serve_with_exit_2(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    cert, key = tmp_path / "vtn.crt", tmp_path / "vtn.key"
    cert.write_text("not a certificate")
    key.write_text("not a key")
    common = ["serve", "--db", ":memory:", "--vtn-port", "0", "--api-port", "0", "--cert", str(cert), "--key", str(key)]
    code, _, err = run([*common, "--ca-file", str(cert)], capsys)
    assert code == 2 and "cannot serve TLS with certificate" in err and "Traceback" not in err
    code, _, err = run([*common, "--insecure", "--sign-messages"], capsys)
    assert code == 2 and "Cannot sign OpenADR messages" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["serve"], "cert, key, ca_file missing (create them with 'dso-server pki')"),
    (["serve", "--insecure", "--host", "0.0.0.0"], "insecure (plain HTTP) is refused on vtn_host '0.0.0.0'"),
    (["serve", "--pki", "nowhere"], "--pki 'nowhere': nowhere/vtn.crt, nowhere/vtn.key, nowhere/ca.crt are not "
                                    "readable files"),
    (["serve", "--pki", "nowhere", "--cert", "x.pem"], "give pki, or cert, key and ca_file, not both"),
])
def test_serve_is_secure_by_default(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run([*argv, "--db", ":memory:", "--vtn-port", "0", "--api-port", "0"], capsys)
    assert code == 2 and message in err and "Traceback" not in err, err


def test_serve_reports_a_busy_port_and_an_unusable_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = run(["serve", "--db", str(tmp_path / "dso.sqlite"), "--vtn-port", "0", "--api-port",
                            str(port), "--insecure"], capsys)
    assert code == 1 and "cannot start" in err and "Traceback" not in err
    code, _, err = run(["serve", "--db", str(tmp_path / "missing" / "dso.sqlite"), "--vtn-port", "0",
                        "--api-port", "0", "--insecure"], capsys)
    assert code == 1 and "cannot use the database" in err
