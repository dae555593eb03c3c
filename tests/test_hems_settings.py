"""One validated settings object for the HEMS: the command line, the HEMS_* environment and a TOML config file
are all made from ``HemsSettings``, in that order of precedence; every bad value is refused naming where it came
from, the value and the rule; the object is frozen and the controller takes nothing else."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from hems_client.cli import build_parser, config_text, main, settings_from
from hems_client.control.controller import Controller
from hems_client.devices import BaseLoad, Household, Weather
from hems_client.settings import ControllerSettings, HemsSettings
from protocol import ComfortTerms, HouseholdContract, make_ean18
from protocol.clock import ManualClock
from protocol.settings import env_var, option

URL = "http://127.0.0.1:9/OpenADR2/Simple/2.0b"


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", *argv])


def test_every_setting_has_an_option_an_environment_variable_and_a_config_key(tmp_path: Path) -> None:
    parser_options = {o for action in build_parser()._subparsers._group_actions[0].choices["run"]._actions
                      for o in action.option_strings}
    for name in HemsSettings.model_fields:
        assert option(name) in parser_options, name
    # A value for every field through each source arrives in the object.
    samples = {"vtn_url": URL, "contract": "c.toml", "db": "h.db", "planner": "rule", "speed": "60",
               "start": "2025-01-15T00:00+01:00", "duration_h": "2", "seed": "4", "outdoor_mean_c": "-3",
               "cloudiness": "0.9", "pv_kw": "5", "annual_kwh": "3000", "poll_interval_s": "0.2",
               "log_level": "ERROR", "substep_s": "5", "failsafe_after_s": "150", "horizon_intervals": "48",
               "default_import_price_eur_per_kwh": "0.25", "default_export_price_eur_per_kwh": "0.01",
               "guard_margin_kw": "0.02", "plan_tolerance_kw": "0.2", "plan_resend_s": "3600",
               "history_intervals": "96"}
    assert set(samples) | {"heat_pump", "ev", "battery"} == set(HemsSettings.model_fields)
    from_env = settings_from(parse(), {env_var("HEMS_", k): v for k, v in samples.items()} | {"HEMS_EV": "false"})
    config = tmp_path / "hems.toml"
    config.write_text("\n".join(f'{k} = "{v}"' for k, v in samples.items()) + "\nev = false\n", encoding="utf-8")
    from_file = settings_from(parse("--config", str(config)), {})
    from_cli = settings_from(parse(*(a for k, v in samples.items() for a in (option(k), v)), "--no-ev"), {})
    assert from_env == from_file == from_cli
    assert from_cli.substep_s == 5.0 and from_cli.start == datetime(2025, 1, 14, 23, 0, tzinfo=UTC)
    assert from_cli.ev is False and from_cli.heat_pump is True
    assert from_cli.default_prices.export_price_eur_per_kwh == 0.01


def test_the_command_line_wins_over_the_environment_and_the_environment_over_the_file(tmp_path: Path) -> None:
    config = tmp_path / "hems.toml"
    config.write_text(f'vtn_url = "{URL}"\nsubstep_s = 5\nseed = 1\nspeed = 30\n', encoding="utf-8")
    env = {"HEMS_SEED": "2", "HEMS_SPEED": "40", "HEMS_CONFIG": str(config), "HEMS_REQUIRE_BROWSER": "1"}
    settings = settings_from(parse("--speed", "50"), env)  # an unknown HEMS_ variable is none of its business
    assert (settings.substep_s, settings.seed, settings.speed) == (5.0, 2, 50.0)


@pytest.mark.parametrize(("argv", "env", "config", "says"), [
    (["--cloudiness", "2"], {}, None, "--cloudiness '2': Input should be less than or equal to 1"),
    ([], {"HEMS_SUBSTEP_S": "abc"}, None, "HEMS_SUBSTEP_S 'abc': Input should be a valid number"),
    (["--config", "{config}"], {}, "substep_s = -1\n", "hems.toml: substep_s -1: Input should be greater than 0"),
    (["--config", "{config}"], {}, "colour = 'blue'\n", "hems.toml: 'colour' is not a setting (known: annual_kwh,"),
    (["--config", "{config}"], {}, "substep_s = \n", "hems.toml: is not valid TOML"),
    (["--guard-margin-kw", "nan"], {}, None, "--guard-margin-kw 'nan': Input should be a finite number"),
    (["--default-import-price-eur-per-kwh", "300"], {}, None, "is beyond +-10.0 EUR/kWh"),
    (["--start", "2025-01-15T00:00"], {}, None, "--start '2025-01-15T00:00': has no time zone"),
    (["--speed", "600", "--poll-interval-s", "0.5"], {}, None, "300 s of clock time at speed 600"),
    (["--vtn-url", "ftp://x"], {}, None, "--vtn-url 'ftp://x': must be an http:// or https:// URL"),
])
def test_a_bad_value_is_refused_naming_its_source_value_and_rule(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], env: dict[str, str],
        config: str | None, says: str) -> None:
    path = tmp_path / "hems.toml"
    if config is not None:
        path.write_text(config, encoding="utf-8")
    argv = [a.format(config=path) for a in argv]
    if "--vtn-url" not in argv:
        argv += ["--vtn-url", URL]
    with pytest.raises(SystemExit) as exit_info:
        main(["run", *argv], env=env)
    assert exit_info.value.code == 2
    assert says in capsys.readouterr().err


def test_a_missing_vtn_url_says_where_it_may_come_from(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run"], env={})
    assert "--vtn-url is required (or HEMS_VTN_URL, or vtn_url in the config file)" in capsys.readouterr().err


def test_print_config_gives_a_config_file_that_reads_back_to_the_same_settings(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--vtn-url", URL, "--substep-s", "5", "--no-battery", "--print-config"], env={}) == 0
    text = capsys.readouterr().out
    config = tmp_path / "printed.toml"
    config.write_text(text, encoding="utf-8")
    assert settings_from(parse("--config", str(config)), {}) == settings_from(
        parse("--vtn-url", URL, "--substep-s", "5", "--no-battery"), {})
    assert config_text(settings_from(parse("--config", str(config)), {})) == text.rstrip("\n")


def test_settings_are_frozen_validated_when_made_and_the_controller_takes_only_them() -> None:
    settings = ControllerSettings(substep_s=5)
    with pytest.raises(ValidationError, match="frozen"):
        settings.substep_s = 1  # type: ignore[misc]
    with pytest.raises(ValidationError, match="finite"):
        ControllerSettings(default_import_price_eur_per_kwh=float("nan"))
    with pytest.raises(ValidationError, match="substep_s"):
        ControllerSettings(substep_s=0)
    assert ControllerSettings(failsafe_after_s=0).failsafe_after_s is None  # 0 disables, as on the command line
    contract = HouseholdContract(connection_point_id=make_ean18("87168712000000099"), contracted_max_import_kw=17.0,
                                 contracted_max_export_kw=10.0, failsafe_import_kw=4.2, failsafe_export_kw=4.2,
                                 failsafe_duration_s=7200, comfort=ComfortTerms(timezone="UTC"))
    start = datetime(2025, 1, 15, tzinfo=UTC)
    home = Household(weather=Weather.constant(start=start, outdoor_temp_c=0.0), base_load=BaseLoad(timezone="UTC"))
    with pytest.raises(TypeError, match="settings must be ControllerSettings"):
        Controller(contract=contract, household=home, clock=ManualClock(start), settings={"substep_s": 5})  # type: ignore[arg-type]
    controller = Controller(contract=contract, household=home, clock=ManualClock(start), settings=settings)
    assert controller.substep_s == 5.0 and controller.settings is settings
    assert controller.signal_book.default_prices == settings.default_prices
