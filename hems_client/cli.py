"""``hems-client``: run one simulated household's HEMS against a VTN."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sqlite3
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hems_client.app import HemsApp, VenSecurity, check_poll_against_failsafe
from hems_client.config import load_contract, validate_contract_file
from hems_client.control.failsafe import DEFAULT_FAILSAFE_AFTER_S
from hems_client.control.optimiser_planner import OptimiserPlanner
from hems_client.control.planning import Planner
from hems_client.control.rule_planner import RulePlanner
from hems_client.devices import Weather, make_household
from hems_client.kpi import format_kpi_table
from hems_client.store import HemsStore, StoreError
from protocol.clock import AcceleratedClock, WallClock
from protocol.contract import HouseholdContract
from protocol.timebase import floor_to_interval


def _iso_datetime(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone; write e.g. 2025-01-15T00:00+00:00")
    return moment.astimezone(UTC)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return value


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
                    "against a VTN, then print the household's daily KPIs.",
    )
    run.add_argument("--vtn-url", required=True,
                     help="the VTN's OpenADR 2.0b base URL, e.g. http://127.0.0.1:8080/OpenADR2/Simple/2.0b")
    run.add_argument("--contract", type=Path, metavar="FILE.toml", default=None,
                     help="the household's contract file, PROFILE.md §11's form: a [[household]] table with the "
                          "contract fields and [household.comfort] (see hems_client/config.py); may be left out "
                          "when --db holds one")
    run.add_argument("--connection-point", metavar="EAN", default=None,
                     help="which household of a --contract file with several is this HEMS's (its EAN)")
    run.add_argument("--db", type=Path, metavar="FILE.db", default=None,
                     help="local SQLite store of the contract, the active DSO signals and the failsafe state; a "
                          "restart with the same file resumes with them (default: none, nothing survives a restart)")
    run.add_argument("--planner", choices=["optimiser", "rule"], default="optimiser",
                     help="optimiser: the convex receding-horizon optimiser (default); rule: the rule-based planner")
    run.add_argument("--failsafe-after-s", type=float, default=DEFAULT_FAILSAFE_AFTER_S, metavar="S",
                     help="simulated seconds without contact to the VTN before the contract's failsafe limits apply "
                          f"(default {DEFAULT_FAILSAFE_AFTER_S:g}, EEBus LPC; 0 disables the failsafe). Must exceed "
                          "the poll interval in simulated time: --poll-interval-s x --speed")
    run.add_argument("--speed", type=_positive, default=1.0,
                     help="simulated seconds per wall-clock second (default 1: real time; 600 runs a day in "
                          "2.4 minutes)")
    run.add_argument("--start", type=_iso_datetime, default=None, metavar="ISO",
                     help="simulated start time with time zone, e.g. 2025-01-15T00:00+00:00 (default: now)")
    run.add_argument("--duration-h", type=float, default=24.0,
                     help="simulated hours to run before printing the KPIs and exiting; 0 runs until Ctrl-C "
                          "(default 24)")
    run.add_argument("--seed", type=int, default=0,
                     help="seed of the household's devices, load noise and weather (default 0)")
    run.add_argument("--outdoor-mean-c", type=float, default=5.0,
                     help="daily mean outdoor temperature of the synthetic weather in °C (default 5)")
    run.add_argument("--cloudiness", type=float, default=0.4,
                     help="mean cloudiness of the synthetic weather, 0 clear to 1 overcast (default 0.4)")
    run.add_argument("--pv-kw", type=float, default=None,
                     help="PV peak power in kWp; 0 for none (default: drawn from the seed, 4-8 kWp)")
    run.add_argument("--annual-kwh", type=float, default=None,
                     help="annual base-load consumption in kWh (default: drawn from the seed, 2500-4500)")
    run.add_argument("--no-heat-pump", action="store_true", help="leave the heat pump out")
    run.add_argument("--no-ev", action="store_true", help="leave the EV out")
    run.add_argument("--no-battery", action="store_true", help="leave the home battery out")
    run.add_argument("--substep-s", type=_positive, default=10.0,
                     help="simulated seconds per physics and guard step: the local guard checks measured power "
                          "this often (default 10)")
    run.add_argument("--poll-interval-s", type=_positive, default=None,
                     help="wall seconds between polls of the VTN (default: the VTN's requested poll frequency, at "
                          "most a third of --failsafe-after-s in simulated time)")
    run.add_argument("--cert", default=None, help="PEM certificate for TLS and message signing (optional)")
    run.add_argument("--key", default=None, help="PEM private key belonging to --cert (optional)")
    run.add_argument("--ca-file", default=None, help="PEM CA bundle to verify the VTN's certificate (optional)")
    run.add_argument("--vtn-fingerprint", default=None,
                     help="fingerprint of the VTN's certificate, to verify its message signatures (optional)")
    run.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                     help="log level (default WARNING)")
    return parser


async def _run(args: argparse.Namespace, contract: HouseholdContract) -> int:
    start = args.start if args.start is not None else floor_to_interval(WallClock().now())
    clock = AcceleratedClock(start=start, speed=args.speed)
    days = max(1, int(args.duration_h // 24) + 2)
    weather = Weather.synthetic(start=start, days=days, seed=args.seed, mean_temp_c=args.outdoor_mean_c,
                                cloudiness=args.cloudiness)
    household = make_household(contract, weather=weather, seed=args.seed, annual_kwh=args.annual_kwh,
                               pv_kw=args.pv_kw, heat_pump=not args.no_heat_pump, ev=not args.no_ev,
                               battery=not args.no_battery)
    security = VenSecurity(cert=args.cert, key=args.key, ca_file=args.ca_file, vtn_fingerprint=args.vtn_fingerprint)
    planner: Planner = RulePlanner() if args.planner == "rule" else OptimiserPlanner()
    app = HemsApp(contract, household, clock, args.vtn_url, planner, substep_s=args.substep_s,
                  poll_interval_s=args.poll_interval_s, security=security, store=args.db,
                  failsafe_after_s=args.failsafe_after_s or None)
    until = start + timedelta(hours=args.duration_h) if args.duration_h > 0 else None
    await app.start(until=until)
    if not app.ven.registered:
        print(f"hems-client: warning: not registered at {args.vtn_url} yet; retrying while the household runs",
              file=sys.stderr)
    try:
        await app.finished()
    finally:
        await app.stop()
        print(format_kpi_table([(contract.connection_point_id, day) for day in app.kpi.days()]))
    return 0


def _contract(args: argparse.Namespace) -> HouseholdContract | None:
    """The contract from --contract, else the one stored in --db; None after printing why there is none."""
    stored = None
    if args.db is not None:
        try:
            store = HemsStore(args.db)
            try:
                stored = store.load_contract()
            finally:
                store.close()
        except (StoreError, sqlite3.DatabaseError) as error:
            print(f"hems-client: error: {args.db}: {error}", file=sys.stderr)
            return None
    if args.contract is None:
        if stored is None:
            print("hems-client: error: give --contract FILE.toml" + (
                f" ({args.db} holds no contract yet)" if args.db is not None else " or a --db that holds one"),
                file=sys.stderr)
        return stored
    problems = validate_contract_file(args.contract, args.connection_point)
    if problems:
        for problem in problems:
            print(f"hems-client: error: {problem}", file=sys.stderr)
        return None
    contract = load_contract(args.contract, args.connection_point)
    if stored is not None and stored.connection_point_id != contract.connection_point_id:
        print(f"hems-client: error: {args.db} belongs to connection point {stored.connection_point_id}, not "
              f"{contract.connection_point_id} from {args.contract}", file=sys.stderr)
        return None
    return contract


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("openleadr").setLevel(args.log_level)
    if args.failsafe_after_s < 0:
        parser.error(f"--failsafe-after-s must be >= 0, not {args.failsafe_after_s}")
    if args.failsafe_after_s > 0 and args.poll_interval_s is not None:
        try:
            check_poll_against_failsafe(poll_interval_s=args.poll_interval_s, speed=args.speed,
                                        failsafe_after_s=args.failsafe_after_s)
        except ValueError as error:
            parser.error(str(error))
    contract = _contract(args)
    if contract is None:
        return 2
    if not 0.0 <= args.cloudiness <= 1.0:
        parser.error(f"--cloudiness must be between 0 and 1, not {args.cloudiness}")
    if args.pv_kw is not None and not 0.0 <= args.pv_kw <= 100.0:
        parser.error(f"--pv-kw must be between 0 and 100 kWp, not {args.pv_kw}")
    if args.annual_kwh is not None and not 0.0 < args.annual_kwh <= 100_000.0:
        parser.error(f"--annual-kwh must be between 0 and 100000 kWh, not {args.annual_kwh}")
    if args.duration_h < 0:
        parser.error(f"--duration-h must be >= 0, not {args.duration_h}")
    try:
        return asyncio.run(_run(args, contract))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
