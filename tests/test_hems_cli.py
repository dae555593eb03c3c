"""``hems-client``: help for every option, readable configuration errors (exit 2), and a short run that copes
with an unreachable VTN."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.contracts import household_toml
from support.security import PLAIN_HTTP  # plain HTTP on loopback: this module is not about security

from hems_client.app import HemsApp
from hems_client.cli import build_parser, main
from hems_client.config import ConfigError, load_contract
from hems_client.control.failsafe import FailsafeState
from hems_client.devices import Weather, make_household
from hems_client.settings import ControllerSettings
from hems_client.store import HemsStore
from protocol import make_ean18
from protocol.clock import AcceleratedClock
from protocol.timebase import floor_to_interval

EAN = make_ean18("87168712000000011")
VALID = household_toml(EAN) + """
[household.comfort]
indoor_setpoint_c = 20.5
ev_departure_local = 06:30:00
ev_required_range_km = 120
timezone = "Europe/Amsterdam"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "contract.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_help_describes_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    run = next(a for a in build_parser()._subparsers._group_actions[0].choices.values())  # the 'run' parser
    for action in run._actions:
        assert action.help, f"{action.option_strings} has no help"
        for option in action.option_strings:
            assert option in text


def test_valid_contract_loads_with_comfort_table(tmp_path: Path) -> None:
    contract = load_contract(write(tmp_path, VALID))
    assert contract.connection_point_id == EAN and contract.comfort.indoor_setpoint_c == 20.5
    assert contract.comfort.ev_departure_local.hour == 6 and contract.comfort.ev_departure_local.minute == 30


@pytest.mark.parametrize(("text", "field", "reason"), [
    (VALID.replace("contracted_max_import_kw = 17.0\n", ""), "household[0].contracted_max_import_kw", "is required"),
    (VALID.replace("= 17.0", "= -3.0"), "household[0].contracted_max_import_kw", "negative"),
    (VALID.replace(f'"{EAN}"', '"871687120000000012"'), "household[0].connection_point_id", "check digit"),
    (VALID.replace("indoor_setpoint_c = 20.5", "indoor_setpoint_c = 50"), "household[0].comfort.indoor_setpoint_c",
     "30"),
    (VALID.replace('timezone = "Europe/Amsterdam"', 'timezone = "Mars/Olympus"'), "household[0].comfort.timezone",
     "Mars"),
    (VALID + "\ncolour = 'blue'\n", "household[0].comfort.colour", "is not a contract field"),
    ("colour = 'blue'\n" + VALID, "", "unknown top-level key(s) ['colour']"),
    (VALID.replace("[[household]]\n", "").replace("[household.comfort]", "[comfort]"), "", "[[household]] tables"),
    (VALID + VALID.replace(EAN, make_ean18("87168712000000022")), "", "holds 2 households"),
])
def test_bad_contract_is_a_readable_error_naming_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, field: str, reason: str
) -> None:
    path = write(tmp_path, text)
    assert main(["run", "--vtn-url", "http://127.0.0.1:9", "--contract", str(path)]) == 2
    error = capsys.readouterr().err
    assert str(path) in error and field in error and reason in error
    with pytest.raises(ConfigError) as raised:
        load_contract(path)
    assert raised.value.field == field


def test_the_dso_contracts_file_serves_too_with_connection_point(tmp_path: Path) -> None:
    """One contract file format everywhere (PROFILE §11): the DSO's file with several households works."""
    other = make_ean18("87168712000000022")
    path = write(tmp_path, VALID.replace("[[household]]", '[[household]]\ngroup = "feeder-1"')
                 + VALID.replace(EAN, other))
    assert load_contract(path, other).connection_point_id == other
    assert load_contract(path, EAN).comfort.indoor_setpoint_c == 20.5
    with pytest.raises(ConfigError, match="holds no household"):
        load_contract(path, make_ean18("87168712000000033"))


def test_unreadable_and_malformed_files_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.toml"
    assert main(["run", "--vtn-url", "http://127.0.0.1:9", "--contract", str(missing)]) == 2
    assert "nope.toml" in capsys.readouterr().err
    broken = write(tmp_path, "connection_point_id = \n")
    assert main(["run", "--vtn-url", "http://127.0.0.1:9", "--contract", str(broken)]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_naive_start_is_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, VALID)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--vtn-url", "http://127.0.0.1:9", "--contract", str(path), "--start", "2025-01-15T00:00"])
    assert exit_info.value.code == 2
    assert "time zone" in capsys.readouterr().err


def test_short_run_without_a_vtn_finishes_and_prints_kpis(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    result = subprocess.run(
        [sys.executable, "-m", "hems_client.cli", "run", "--vtn-url", "http://127.0.0.1:9/OpenADR2/Simple/2.0b",
         "--insecure", "--contract", str(path), "--speed", "3600", "--start", "2025-01-15T00:00+00:00",
         "--duration-h", "1", "--seed", "3", "--poll-interval-s", "0.02", "--log-level", "ERROR"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "not registered" in result.stderr
    assert EAN in result.stdout and "2025-01-15" in result.stdout and "peak kW" in result.stdout


def test_poll_slower_than_the_failsafe_in_simulated_time_is_refused(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, VALID)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--vtn-url", "http://127.0.0.1:9", "--contract", str(path), "--speed", "600",
              "--poll-interval-s", "0.5"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "300 s of clock time at speed 600" in error and "failsafe_after_s 120" in error
    contract = load_contract(path)
    start = floor_to_interval(datetime.now(UTC))
    home = make_household(contract, weather=Weather.constant(start=start, outdoor_temp_c=0.0), seed=1)
    with pytest.raises(ValueError, match="must exceed it"):
        HemsApp(contract, home, AcceleratedClock(start, 600), "http://127.0.0.1:9", poll_interval_s=0.5,
                security=PLAIN_HTTP)
    app = HemsApp(contract, home, AcceleratedClock(start, 600), "http://127.0.0.1:9",
                  settings=ControllerSettings(failsafe_after_s=None), poll_interval_s=0.5, security=PLAIN_HTTP)
    assert app.controller.failsafe is None
    app = HemsApp(contract, home, AcceleratedClock(start, 600), "http://127.0.0.1:9", security=PLAIN_HTTP)
    assert app.ven.poll_interval() == pytest.approx(120 / 3 / 600)  # the VTN's frequency, capped


def test_db_keeps_the_contract_and_failsafe_across_runs_with_the_rule_planner(tmp_path: Path) -> None:
    """No VTN: the failsafe engages after 120 simulated seconds; the second run finds the contract and the
    failsafe in the store and starts in it."""
    path = write(tmp_path, VALID)
    db = tmp_path / "hems.db"
    common = [sys.executable, "-m", "hems_client.cli", "run", "--vtn-url", "http://127.0.0.1:9/OpenADR2/Simple/2.0b",
              "--insecure", "--speed", "3600", "--start", "2025-01-15T00:00+00:00", "--duration-h", "0.5",
              "--seed", "3", "--poll-interval-s", "0.02", "--log-level", "ERROR", "--db", str(db)]
    first = subprocess.run([*common, "--contract", str(path), "--planner", "rule"], capture_output=True, text=True,
                           timeout=60)
    assert first.returncode == 0, first.stderr
    assert "failsafe h" in first.stdout
    store = HemsStore(db)
    assert store.load_contract() == load_contract(path)
    snapshot = store.load_failsafe()
    assert snapshot is not None and snapshot.state is FailsafeState.FAILSAFE
    store.close()
    second = subprocess.run(common, capture_output=True, text=True, timeout=60)  # no --contract
    assert second.returncode == 0, second.stderr
    assert EAN in second.stdout


def test_plain_http_needs_insecure_and_tls_needs_all_three_files(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, VALID)
    assert main(["run", "--vtn-url", "http://127.0.0.1:9", "--contract", str(path)]) == 2
    assert "refused unless insecure is set" in capsys.readouterr().err
    assert main(["run", "--vtn-url", "http://192.0.2.1:9", "--contract", str(path), "--insecure"]) == 2
    assert "only for a VTN on a loopback address" in capsys.readouterr().err
    assert main(["run", "--vtn-url", "https://127.0.0.1:9", "--contract", str(path), "--cert", "a.pem"]) == 2
    assert "key, ca_file missing" in capsys.readouterr().err
