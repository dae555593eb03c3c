"""``hems-client``: run one simulated household's HEMS against a VTN."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sqlite3
import sys
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path

from hems_client.app import HemsApp, VenSecurity
from hems_client.config import load_contract, validate_contract_file
from hems_client.control.optimiser_planner import OptimiserPlanner
from hems_client.control.planning import Planner
from hems_client.control.rule_planner import RulePlanner
from hems_client.data_export import export_document
from hems_client.devices import Weather, make_household
from hems_client.kpi import format_kpi_table
from hems_client.settings import ENV_PREFIX, ControllerSettings, HemsSettings
from hems_client.store import HemsStore, StoreError
from protocol.clock import AcceleratedClock, WallClock
from protocol.contract import HouseholdContract
from protocol.settings import SettingsError, add_arguments, config_text, resolve
from protocol.timebase import floor_to_interval


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hems-client",
        description="Home energy management system (HEMS) with a simulated household, talking OpenADR 2.0b "
                    "to a DSO's VTN: it receives capacity bandwidths and ToU tariffs, keeps the household "
                    "inside them, and reports telemetry, its plan and its comfort status.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run", help="run one simulated household against a VTN",
        description="Run one simulated household (base load, PV, heat pump, EV, home battery) and its HEMS "
                    "against a VTN, then print the household's daily KPIs. Every setting can also come from "
                    f"an environment variable ({ENV_PREFIX} + its name in upper case) or a TOML config file "
                    "(--config; its keys are the names below with underscores); the command line wins over the "
                    "environment, the environment over the file.",
    )
    run.add_argument("--config", type=Path, metavar="FILE.toml", default=None,
                     help=f"TOML file of settings, e.g. substep_s = 5 (default: none; env {ENV_PREFIX}CONFIG)")
    run.add_argument("--print-config", action="store_true",
                     help="print the settings in force (as a config file would hold them) and exit")
    own = set(HemsSettings.model_fields) - set(ControllerSettings.model_fields)
    add_arguments(run, HemsSettings, env_prefix=ENV_PREFIX, only=own)
    add_arguments(run.add_argument_group("control loop"), HemsSettings, env_prefix=ENV_PREFIX,
                  only=set(ControllerSettings.model_fields))
    tls = run.add_argument_group("mutual TLS and message signing (an https:// VTN needs --cert, --key, --ca-file)")
    tls.add_argument("--cert", default=None, help="the VEN's PEM certificate for mutual TLS")
    tls.add_argument("--key", default=None, help="PEM private key belonging to --cert")
    tls.add_argument("--ca-file", default=None,
                     help="PEM CA bundle the VTN's certificate must chain to; the VEN refuses any other VTN")
    tls.add_argument("--vtn-fingerprint", default=None,
                     help="OpenADR fingerprint of the VTN's signing certificate: every answer must be signed by it")
    tls.add_argument("--sign-messages", action="store_true",
                     help="sign outgoing OpenADR messages with --cert/--key (XML signatures) and require every "
                          "answer to be signed by the VTN (its TLS certificate, or --vtn-fingerprint's)")
    tls.add_argument("--insecure", action="store_true",
                     help="talk plain HTTP to a VTN on a loopback address, without certificates (demo, tests only)")
    data = commands.add_parser("data", help="what this HEMS sent to the DSO",
                               description="The household's own data: what its HEMS sent to the DSO.")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    export = data_commands.add_parser(
        "export", help="write everything this HEMS sent to the DSO as JSON",
        description="Write everything this HEMS sent to the DSO (GDPR access and portability) as one JSON "
                    "document: the contract, the capacity needs the DSO accepted and every OpenADR message but "
                    "polls, as sent (XML) and parsed, from the store given with --db.")
    export.add_argument("--db", type=Path, required=True, metavar="FILE.db",
                        help="the HEMS's store (what 'hems-client run --db' wrote)")
    export.add_argument("--output", type=Path, default=None, metavar="FILE.json",
                        help="a new file to write (readable by you only); default: standard output")
    return parser


def _export(args: argparse.Namespace) -> int:
    if not args.db.is_file():
        print(f"hems-client: error: --db {args.db}: no such file (a store 'hems-client run --db' wrote)",
              file=sys.stderr)
        return 2
    try:
        store = HemsStore(args.db)
        try:
            document = export_document(store, exported_at=WallClock().now())
        finally:
            store.close()
    except (StoreError, sqlite3.DatabaseError) as error:
        print(f"hems-client: error: --db {args.db}: {error}", file=sys.stderr)
        return 2
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        descriptor = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"hems-client: error: --output {args.output} exists; give a new file", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"hems-client: error: --output {args.output}: {error.strerror or error}", file=sys.stderr)
        return 2
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    print(f"wrote {len(document['messages'])} message(s) sent to the DSO to {args.output}", file=sys.stderr)
    return 0


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> HemsSettings:
    """The run's settings: defaults < --config (or HEMS_CONFIG) < HEMS_* variables < options."""
    config = args.config if args.config is not None else env.get(f"{ENV_PREFIX}CONFIG")
    return resolve(HemsSettings, cli=args, env=env, env_prefix=ENV_PREFIX,
                   config_file=Path(config) if config else None)


async def _run(settings: HemsSettings, security: VenSecurity, contract: HouseholdContract) -> int:
    start = settings.start if settings.start is not None else floor_to_interval(WallClock().now())
    clock = AcceleratedClock(start=start, speed=settings.speed)
    days = max(1, int(settings.duration_h // 24) + 2)
    weather = Weather.synthetic(start=start, days=days, seed=settings.seed, mean_temp_c=settings.outdoor_mean_c,
                                cloudiness=settings.cloudiness)
    household = make_household(contract, weather=weather, seed=settings.seed, annual_kwh=settings.annual_kwh,
                               pv_kw=settings.pv_kw, heat_pump=settings.heat_pump, ev=settings.ev,
                               battery=settings.battery)
    planner: Planner = (RulePlanner() if settings.planner == "rule"
                        else OptimiserPlanner(horizon_intervals=settings.horizon_intervals))
    try:
        app = HemsApp(contract, household, clock, settings.vtn_url, planner, settings=settings,
                      poll_interval_s=settings.poll_interval_s, security=security, store=settings.db)
    except (ValueError, OSError) as error:  # secure-by-default refusals, certificate files that do not load
        print(f"hems-client: error: {error}", file=sys.stderr)
        return 2
    if security.insecure:
        print(f"hems-client: WARNING: --insecure: plain HTTP to {settings.vtn_url}; the VTN is not authenticated. "
              "Demo and tests only.", file=sys.stderr)
    until = start + timedelta(hours=settings.duration_h) if settings.duration_h > 0 else None
    await app.start(until=until)
    if not app.ven.registered:
        print(f"hems-client: warning: not registered at {settings.vtn_url} yet; retrying while the household runs",
              file=sys.stderr)
    try:
        await app.finished()
    finally:
        await app.stop()
        print(format_kpi_table([(contract.connection_point_id, day) for day in app.kpi.days()]))
    return 0


def _contract(settings: HemsSettings) -> HouseholdContract | None:
    """The contract from --contract, else the one stored in --db; None after printing why there is none."""
    stored = None
    if settings.db is not None:
        try:
            store = HemsStore(settings.db)
            try:
                stored = store.load_contract()
            finally:
                store.close()
        except (StoreError, sqlite3.DatabaseError) as error:
            print(f"hems-client: error: {settings.db}: {error}", file=sys.stderr)
            return None
    if settings.contract is None:
        if stored is None:
            print("hems-client: error: give --contract FILE.toml" + (
                f" ({settings.db} holds no contract yet)" if settings.db is not None else " or a --db that holds one"),
                file=sys.stderr)
        return stored
    problems = validate_contract_file(settings.contract, settings.connection_point)
    if problems:
        for problem in problems:
            print(f"hems-client: error: {problem}", file=sys.stderr)
        return None
    contract = load_contract(settings.contract, settings.connection_point)
    if stored is not None and stored.connection_point_id != contract.connection_point_id:
        print(f"hems-client: error: {settings.db} belongs to connection point {stored.connection_point_id}, not "
              f"{contract.connection_point_id} from {settings.contract}", file=sys.stderr)
        return None
    return contract


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """``env``: the environment variables to read (default: the process's)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "data":
        return _export(args)
    try:
        settings = settings_from(args, os.environ if env is None else env)
    except SettingsError as error:
        parser.error("\n  ".join(error.problems))
    if args.print_config:
        print(config_text(settings))
        return 0
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("openleadr").setLevel(settings.log_level)
    contract = _contract(settings)
    if contract is None:
        return 2
    security = VenSecurity(cert=args.cert, key=args.key, ca_file=args.ca_file, vtn_fingerprint=args.vtn_fingerprint,
                           insecure=args.insecure, sign_messages=args.sign_messages)
    try:
        return asyncio.run(_run(settings, security, contract))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
