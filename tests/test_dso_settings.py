"""One validated settings object for the DSO: ``dso-server serve``'s options, its DSO_* environment variables and
its --config TOML file are all made from ``DsoSettings``, in the precedence options > environment > file >
defaults; a bad value from any source is refused naming that source, the value and the rule; every setting has
exactly one default; the security rules hold whichever source the values came from.

A newcomer's check after adding a setting: ``pytest tests/test_dso_settings.py`` (it asks for a sample value of
the new field and then proves it reachable from all three sources)."""

from __future__ import annotations

import inspect
from datetime import time
from pathlib import Path

import pytest
from dso_process import DsoProcess
from pydantic import SecretStr, ValidationError

from dso_server.api.app import create_app
from dso_server.capacity.planner import PlannerConfig
from dso_server.cli import SERVE_ALIASES, build_parser, main, serve_settings
from dso_server.settings import ENV_PREFIX, ApiSettings, DsoSettings, ServerSettings, VtnSettings
from dso_server.transport.oadr20b.vtn import DsoVtn
from protocol.settings import config_text, env_var, option

PARTS = (ServerSettings, VtnSettings, ApiSettings, PlannerConfig)


def serve_options() -> set[str]:
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    return {spelling for action in serve._actions for spelling in action.option_strings}


def settings(argv: list[str], env: dict[str, str] | None = None) -> DsoSettings:
    return serve_settings(build_parser().parse_args(["serve", *argv]), env or {})


def files(directory: Path) -> dict[str, Path]:
    """Readable files for every setting that names one (the settings check only that they can be read)."""
    pki = directory / "pki"
    pki.mkdir()
    paths = {"pki": pki, "cert": pki / "vtn.crt", "key": pki / "vtn.key", "ca_file": pki / "ca.crt",
             "api_cert": directory / "api.crt", "api_key": directory / "api.key",
             "api_client_ca": directory / "clients.crt", "contracts_file": directory / "contracts.toml",
             "grid_path": directory / "grid.toml"}
    for path in paths.values():
        if path != pki:
            path.write_text("x")
    return paths


def samples(directory: Path) -> dict[str, str]:
    """A value other than the default for every setting, as text (what an option or a variable carries)."""
    return {name: str(value) for name, value in files(directory).items()} | {
        "db_path": str(directory / "dso.sqlite"), "log_level": "DEBUG", "vtn_host": "0.0.0.0", "vtn_port": "8443",
        "vtn_id": "DSO-NORTH", "poll_interval_s": "5", "http_path_prefix": "/oadr/", "max_message_bytes": "65536",
        "key_passphrase": "s3cret", "api_host": "0.0.0.0", "api_port": "9443", "api_session_ttl_s": "3600",
        "timezone": "UTC", "day_ahead_time": "13:30", "near_real_time_interval_s": "60",
        "non_firm_horizon_intervals": "16", "forecast_window_days": "14", "min_history_days": "3",
        "silent_after_intervals": "8", "min_voltage_pu": "0.92", "max_voltage_pu": "1.08", "workers": "2",
        "lead_time_s": "20", "need_scaling_rule": "equal_cap", "need_grace_s": "60", "retention_months": "24"}


BOOLEANS = {"insecure": False, "sign_messages": True, "api_insecure": True}
"""Booleans to set (each unlike its default but insecure, which TLS settings rule out; --no-insecure then)."""


def test_every_setting_has_an_option_an_environment_variable_and_a_config_key(tmp_path: Path) -> None:
    values = samples(tmp_path)
    missing = set(DsoSettings.model_fields) - set(values) - set(BOOLEANS)
    assert not missing, f"give the new setting(s) {sorted(missing)} a sample value in samples() above"
    options = serve_options()
    for name in DsoSettings.model_fields:
        assert option(name) in options, name
    for name, aliases in SERVE_ALIASES.items():
        assert set(aliases) <= options, name
    env = {env_var(ENV_PREFIX, k): v for k, v in values.items()} | {
        env_var(ENV_PREFIX, k): str(v).lower() for k, v in BOOLEANS.items()}
    from_env = settings([], env)
    config = tmp_path / "dso.toml"
    config.write_text("".join(f'{k} = "{v}"\n' for k, v in values.items())
                      + "".join(f"{k} = {str(v).lower()}\n" for k, v in BOOLEANS.items()), encoding="utf-8")
    from_file = settings(["--config", str(config)])
    from_cli = settings([*(a for k, v in values.items() for a in (option(k), v)),
                         *(option(k) if v else "--no-" + option(k)[2:] for k, v in BOOLEANS.items())])
    assert from_env == from_file == from_cli
    for name in DsoSettings.model_fields:  # every value arrived, none is its default
        assert getattr(from_cli, name) != DsoSettings.model_fields[name].default or name == "insecure", name
    assert from_cli.day_ahead_time == time(13, 30) and from_cli.http_path_prefix == "/oadr"
    assert from_cli.key_passphrase == SecretStr("s3cret") and from_cli.key_passphrase_text == "s3cret"
    assert from_cli.planner_config() == PlannerConfig(
        timezone="UTC", day_ahead_time=time(13, 30), near_real_time_interval_s=60, non_firm_horizon_intervals=16,
        forecast_window_days=14, min_history_days=3, silent_after_intervals=8, min_voltage_pu=0.92,
        max_voltage_pu=1.08, lead_time_s=20, need_scaling_rule="equal_cap", need_grace_s=60)


def test_the_old_spellings_still_work_and_a_refusal_names_the_one_typed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = files(tmp_path)
    old = settings(["--db", "a.sqlite", "--host", "::1", "--contracts", str(paths["contracts_file"]), "--grid",
                    str(paths["grid_path"]), "--passphrase", "pw", "--insecure"])
    new = settings(["--db-path", "a.sqlite", "--vtn-host", "::1", "--contracts-file", str(paths["contracts_file"]),
                    "--grid-path", str(paths["grid_path"]), "--key-passphrase", "pw", "--insecure"])
    assert old == new and old.db_path == "a.sqlite" and old.vtn_host == "::1"
    with pytest.raises(SystemExit):
        main(["serve", "--insecure", "--contracts", str(tmp_path / "none.toml")], env={})
    assert f"error: --contracts '{tmp_path / 'none.toml'}': is not a readable file" in capsys.readouterr().err


def test_the_command_line_wins_over_the_environment_and_the_environment_over_the_file(tmp_path: Path) -> None:
    config = tmp_path / "dso.toml"
    config.write_text('vtn_id = "FROM-FILE"\nvtn_port = 1\napi_port = 1\ntimezone = "UTC"\ninsecure = true\n',
                      encoding="utf-8")
    env = {"DSO_CONFIG": str(config), "DSO_VTN_PORT": "2", "DSO_API_PORT": "2", "DSO_API_URL": "http://x"}
    chosen = settings(["--api-port", "3"], env)  # DSO_API_URL belongs to the client commands, not to serve
    assert (chosen.vtn_id, chosen.timezone, chosen.vtn_port, chosen.api_port) == ("FROM-FILE", "UTC", 2, 3)
    assert settings(["--no-insecure", "--pki", str(files(tmp_path)["pki"])], env).insecure is False


@pytest.mark.parametrize(("argv", "env", "config", "says"), [
    (["--vtn-port", "70000"], {}, None, "--vtn-port '70000': Input should be less than or equal to 65535"),
    (["--host", "0.0.0.0"], {}, None, "insecure (plain HTTP) is refused on vtn_host '0.0.0.0'"),
    (["--min-voltage-pu", "nan"], {}, None, "--min-voltage-pu 'nan': Input should be a finite number"),
    (["--day-ahead-time", "14:00+01:00"], {}, None, "--day-ahead-time '14:00+01:00': must be a local time"),
    ([], {"DSO_TIMEZONE": "Mars/Olympus"}, None, "DSO_TIMEZONE 'Mars/Olympus': is not an IANA time zone"),
    ([], {"DSO_POLL_INTERVAL_S": "2.5"}, None, "DSO_POLL_INTERVAL_S '2.5': must be a whole number of seconds"),
    ([], {"DSO_VTN_ID": "dso"}, None, "DSO_VTN_ID 'dso': is all lowercase"),
    ([], {"DSO_LOG_LEVEL": "LOUD"}, None, "DSO_LOG_LEVEL 'LOUD': Input should be 'DEBUG', 'INFO'"),
    ([], {"DSO_PKI": "nowhere"}, None, "DSO_PKI 'nowhere': nowhere/vtn.crt, nowhere/vtn.key, nowhere/ca.crt are"),
    ([], {"DSO_API_HOST": "0.0.0.0"}, None, "api_host '0.0.0.0' is not a loopback address"),
    (["--config", "{config}"], {}, "forecast_window_days = 0\n",
     "dso.toml: forecast_window_days 0: Input should be greater than or equal to 1"),
    (["--config", "{config}"], {}, "http_path_prefix = 'oadr'\n", "dso.toml: http_path_prefix 'oadr': must start"),
    (["--config", "{config}"], {}, "min_history_days = 30\nforecast_window_days = 14\n",
     "min_history_days 30 exceeds forecast_window_days 14"),
    (["--config", "{config}"], {}, "vtn_prot = 8080\n", "dso.toml: 'vtn_prot' is not a setting (known: api_cert,"),
    (["--config", "{config}"], {}, "vtn_port = \n", "dso.toml: is not valid TOML"),
    (["--config", "{config}"], {}, "key_passphrase = 12345678\n",
     "dso.toml: key_passphrase (value not shown): Input should be a valid string"),
    ([], {"DSO_CONFIG": "{config}.missing"}, None, "dso.toml.missing: cannot be read"),
])
def test_a_bad_value_is_refused_naming_its_source_value_and_rule(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], env: dict[str, str],
        config: str | None, says: str) -> None:
    path = tmp_path / "dso.toml"
    if config is not None:
        path.write_text(config, encoding="utf-8")
    argv = [a.format(config=path) for a in argv]
    env = {k: v.format(config=path) for k, v in env.items()}
    insecure = [] if "DSO_PKI" in env else ["--insecure"]
    with pytest.raises(SystemExit) as exit_info:  # --print-config: were the value taken, nothing would serve
        main(["serve", "--db", ":memory:", *insecure, *argv, "--print-config"], env=env)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and "12345678" not in err, err  # a passphrase never echoed


def test_every_setting_has_exactly_one_default() -> None:
    # The planner's settings are declared once, in PlannerConfig; DsoSettings inherits them, defaults included.
    for name, field in PlannerConfig.model_fields.items():
        assert DsoSettings.model_fields[name].default == field.default, name
    assert DsoSettings(insecure=True).planner_config() == PlannerConfig()
    # The command line holds no defaults of its own: an option not given is absent, the model fills it in.
    given = vars(build_parser().parse_args(["serve"]))
    assert set(given) == {"command", "config", "print_config"}, given
    # Each field is declared in exactly one part.
    declared = [name for part in PARTS for name in part.model_fields]
    assert sorted(declared) == sorted(DsoSettings.model_fields)
    # Where a layer below takes the same value as a keyword (Python callers), its default is the setting's.
    vtn = inspect.signature(DsoVtn.__init__).parameters
    for name in ("vtn_id", "poll_interval_s", "http_path_prefix", "max_message_bytes"):
        assert vtn[name].default == DsoSettings.model_fields[name].default, name
    api = inspect.signature(create_app).parameters
    assert api["session_ttl"].default.total_seconds() == DsoSettings.model_fields["api_session_ttl_s"].default


def test_each_part_keeps_its_rules_inside_dso_settings() -> None:
    # DsoSettings inherits validators by name: a name used in two parts would silently drop one of the rules.
    names = [name for part in PARTS for kind in ("field_validators", "model_validators")
             for name in getattr(part.__pydantic_decorators__, kind)]
    assert len(names) == len(set(names)), names
    inherited = DsoSettings.__pydantic_decorators__
    assert set(names) == set(inherited.field_validators) | set(inherited.model_validators)


def test_settings_are_frozen_and_validated_however_they_are_made(tmp_path: Path) -> None:
    made = DsoSettings(insecure=True)
    with pytest.raises(ValidationError, match="frozen"):
        made.vtn_port = 1  # type: ignore[misc]
    with pytest.raises(ValidationError, match="is not an IANA time zone"):
        PlannerConfig(timezone="Mars/Olympus")
    with pytest.raises(ValidationError, match="exceeds forecast_window_days"):
        PlannerConfig(min_history_days=30, forecast_window_days=14)
    with pytest.raises(ValidationError, match="finite"):
        PlannerConfig(max_voltage_pu=float("inf"))
    with pytest.raises(ValidationError, match="refused on vtn_host"):
        DsoSettings(insecure=True, vtn_host="192.0.2.1")
    paths = files(tmp_path)
    by_pki = DsoSettings(pki=paths["pki"])
    assert (by_pki.cert, by_pki.key, by_pki.ca_file) == (paths["cert"], paths["key"], paths["ca_file"])
    assert DsoSettings(pki=paths["pki"], cert=paths["cert"]) == by_pki  # the same file beside pki agrees
    with pytest.raises(ValidationError, match="give pki, or cert, key and ca_file, not both"):
        DsoSettings(pki=paths["pki"], cert=paths["api_cert"])
    assert "s3cret" not in repr(DsoSettings(insecure=True, key_passphrase="s3cret"))


def test_print_config_gives_a_config_file_that_reads_back_to_the_same_settings(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pki = str(files(tmp_path)["pki"])
    argv = ["--pki", pki, "--vtn-port", "0", "--timezone", "UTC", "--day-ahead-time", "13:30", "--sign-messages",
            "--passphrase", "s3cret"]
    assert main(["serve", *argv, "--print-config"], env={"DSO_MIN_HISTORY_DAYS": "3"}) == 0
    text = capsys.readouterr().out
    assert "s3cret" not in text and "# key_passphrase = (set, not shown)" in text
    printed = tmp_path / "printed.toml"
    printed.write_text(text, encoding="utf-8")
    again = settings(["--config", str(printed)])
    assert again == settings(argv, {"DSO_MIN_HISTORY_DAYS": "3"}).model_copy(update={"key_passphrase": None})
    assert config_text(again) == text.rstrip("\n").replace("# key_passphrase = (set, not shown)",
                                                           "# key_passphrase =")


def test_a_real_server_takes_its_settings_from_the_file_and_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve`` with nothing on the command line but the test harness's --db and ports: the VTN's path comes
    from the config file, plain HTTP from DSO_INSECURE (about 2 s: one server start)."""
    config = tmp_path / "dso.toml"
    config.write_text('http_path_prefix = "/oadr/2.0b"\nvtn_id = "DSO-FROM-FILE"\n', encoding="utf-8")
    monkeypatch.setenv("DSO_CONFIG", str(config))
    monkeypatch.setenv("DSO_INSECURE", "true")
    with DsoProcess(tmp_path) as dso:
        assert dso.vtn_url.startswith("http://127.0.0.1:") and dso.vtn_url.endswith("/oadr/2.0b")
