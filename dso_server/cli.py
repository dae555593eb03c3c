"""``dso-server``: run the DSO (VTN + operator API) or talk to a running one through its operator API.

Exit codes: 0 done; 1 the server refused the request or could not be reached (or could not start);
2 bad arguments or input files. Errors are one readable line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

from dso_server.settings import (
    ENV_PREFIX,
    ApiSettings,
    DsoSettings,
    PlannerConfig,
    ServerSettings,
    VtnSettings,
    is_loopback,
)
from protocol.settings import SettingsError, add_arguments, config_text, resolve

DEFAULT_API_URL = "http://127.0.0.1:8081"
INTERVAL = timedelta(minutes=15)


class UsageError(Exception):
    """Bad arguments or input: exit code 2."""


class Refused(Exception):
    """The server refused or could not be reached: exit code 1."""


# --------------------------------------------------------------------------------------------- arguments


def _api_url_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-url", default=os.environ.get("DSO_API_URL", DEFAULT_API_URL),
                        help="base URL of the running DSO's operator API (default: $DSO_API_URL or %(default)s)")
    parser.add_argument("--token-file", type=Path, default=os.environ.get("DSO_API_TOKEN_FILE"), metavar="PATH",
                        help="file holding the API token ('dso-server token create --output PATH'); default "
                             "$DSO_API_TOKEN_FILE, else the token itself from $DSO_API_TOKEN (never an argument: "
                             "arguments show in 'ps')")
    parser.add_argument("--api-ca", type=Path, default=os.environ.get("DSO_API_CA"), metavar="PEM",
                        help="CA certificate to verify an https:// operator API with (default: $DSO_API_CA, else "
                             "the system's CAs)")


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the server's JSON answer instead of a summary")


def _targets(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--connection-point", action="append", metavar="EAN", dest="connection_points",
                       help="18-digit EAN of a household to send it to; repeat for several")
    group.add_argument("--group", help="send it to every household of this group (as in the contracts file)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dso-server",
        description="The DSO side of the HEMS-DSO interface: an OpenADR 2.0b VTN that publishes capacity "
                    "bandwidths and time-of-use tariffs to households, with an operator JSON API. 'serve' runs "
                    "it; the other commands talk to a running server through its operator API.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _serve_parser(commands)

    publish = commands.add_parser("publish", help="publish a bandwidth or a tariff",
                                  description="Publish a new signal to households; it reaches each VEN at its next "
                                              "poll (or when it registers).")
    kinds = publish.add_subparsers(dest="kind", required=True, metavar="KIND")
    bandwidth = kinds.add_parser(
        "bandwidth", help="publish a capacity bandwidth (import/export limits in kW per 15 minutes)",
        description="Publish a capacity bandwidth: one import and one export limit (kW, >= 0) per 15-minute "
                    "interval from --start. Either give the values inline or a JSON --file.")
    _api_url_option(bandwidth)
    _targets(bandwidth)
    bandwidth.add_argument("--firmness", choices=["firm", "non_firm"],
                           help="firm (released day-ahead, guaranteed) or non_firm (near real time, on top)")
    bandwidth.add_argument("--start", metavar="ISO8601",
                           help="start of the first interval, with a UTC offset and on the quarter hour, "
                                "e.g. 2030-01-01T17:00:00+00:00")
    bandwidth.add_argument("--import-kw", metavar="LIST",
                           help="import limits in kW, comma-separated, one per interval, e.g. 5,5,3,3")
    bandwidth.add_argument("--export-kw", metavar="LIST",
                           help="export limits in kW, one per interval, or one value for all intervals")
    bandwidth.add_argument("--file", type=Path, metavar="JSON",
                           help="JSON body instead of the inline values: {\"firmness\": ..., \"intervals\": "
                                "[{\"start\", \"import_limit_kw\", \"export_limit_kw\"}, ...]}, optionally with "
                                "connection_point_ids or group")
    _json_option(bandwidth)
    tariff = kinds.add_parser(
        "tariff", help="publish a time-of-use tariff (EUR/kWh per 15 minutes)",
        description="Publish a time-of-use tariff: an import and an export price (EUR/kWh, may be negative) per "
                    "15-minute interval from --start. Either give the values inline or a JSON --file.")
    _api_url_option(tariff)
    _targets(tariff)
    tariff.add_argument("--start", metavar="ISO8601",
                        help="start of the first interval, with a UTC offset and on the quarter hour")
    tariff.add_argument("--import-price", metavar="LIST",
                        help="import prices in EUR/kWh, comma-separated, one per interval, e.g. 0.30,0.30,0.12")
    tariff.add_argument("--export-price", metavar="LIST",
                        help="export prices in EUR/kWh, one per interval, or one value for all intervals (a list "
                             "that starts with a minus needs '=': --export-price=-0.05,0.02)")
    tariff.add_argument("--file", type=Path, metavar="JSON",
                        help="JSON body instead of the inline values: {\"intervals\": [{\"start\", "
                             "\"import_price_eur_per_kwh\", \"export_price_eur_per_kwh\"}, ...]}")
    _json_option(tariff)

    modify = commands.add_parser("modify", help="replace what a published signal says (modification number + 1)",
                                 description="Replace the intervals (and firmness) of a signal; the VENs receive it "
                                             "under the same event id with the next modification number.")
    modify.add_argument("event_id", metavar="EVENT_ID", help="the event to modify (or a publication id with "
                                                             "--publication)")
    modify.add_argument("--file", type=Path, required=True, metavar="JSON",
                        help="the new signal body, as for 'publish --file' but without households")
    modify.add_argument("--publication", action="store_true",
                        help="EVENT_ID is a publication id: modify every open event it created")
    _api_url_option(modify)
    _json_option(modify)

    cancel = commands.add_parser("cancel", help="cancel a published signal (modification number + 1)",
                                 description="Cancel a signal; the VENs receive it with status cancelled.")
    cancel.add_argument("event_id", metavar="EVENT_ID", help="the event to cancel (or a publication id with "
                                                             "--publication)")
    cancel.add_argument("--publication", action="store_true",
                        help="EVENT_ID is a publication id: cancel every open event it created")
    _api_url_option(cancel)
    _json_option(cancel)

    grid = commands.add_parser(
        "grid", help="check a grid file, or load one (or a lab benchmark grid) into the store",
        description="The grid the DSO allocates on: transformers (rating kVA), feeders, connection points (18-digit "
                    "EAN, contract size, section 14a devices) and optionally nodes and lines for a power flow. "
                    "Formats: TOML or CSV, described in dso_server/capacity/grid.py (examples/grid.toml, "
                    "examples/grid.csv). "
                    "Every connection point is a household: one without a contract in the store gets one built from "
                    "its row; one with a contract must agree with it on the contracted maxima.")
    grid_commands = grid.add_subparsers(dest="grid_command", required=True, metavar="ACTION")
    check = grid_commands.add_parser("check", help="validate a grid file and print what it holds; stores nothing",
                                     description="Validate a grid file; every problem is listed with file, table "
                                                 "or row, and field. Exit 0 when valid, 2 otherwise.")
    check.add_argument("file", type=Path, metavar="FILE", help="grid file, .toml or .csv")
    load = grid_commands.add_parser(
        "load", help="replace the grid in the store by a file or a lab grid",
        description="Validate the grid and replace the stored grid with it in one transaction; on any problem "
                    "nothing is stored. Run it before 'serve' (a running server picks up a new grid at its next "
                    "allocation run).")
    source = load.add_mutually_exclusive_group(required=True)
    source.add_argument("file", type=Path, nargs="?", metavar="FILE", help="grid file, .toml or .csv")
    source.add_argument("--lab", metavar="NAME",
                        help="a real LV benchmark grid shipped with pandapower (needs pip install -e '.[lab]'); "
                             "'dso-server grid labs' lists the names")
    load.add_argument("--db", default="dso.sqlite", metavar="PATH|URL",
                      help="the DSO's store, as for 'serve': a SQLite file (created when missing) or a PostgreSQL "
                           "URL ('%(default)s')")
    grid_commands.add_parser("labs", help="list the lab grids --lab accepts",
                             description="List the LV benchmark grids 'grid load --lab' converts from pandapower.")
    show = grid_commands.add_parser("show", help="summarise the grid in the store",
                                    description="Print the stored grid's transformers with rating, limit and "
                                                "households, and where it was loaded from.")
    show.add_argument("--db", default="dso.sqlite", metavar="PATH|URL",
                      help="the DSO's store: a SQLite file or a PostgreSQL URL ('%(default)s')")

    _pki_parser(commands)

    households = commands.add_parser("households", help="list households, their VEN and their last telemetry",
                                     description="List the households the DSO serves with their registration.")
    _api_url_option(households)
    _json_option(households)

    signals = commands.add_parser("signals", help="list active and future signals",
                                  description="List signals that have not ended, with modification numbers.")
    signals.add_argument("--connection-point", metavar="EAN", help="only this household's signals")
    _api_url_option(signals)
    _json_option(signals)

    responses = commands.add_parser(
        "responses", help="list the HEMSs' answers to events (optIn/optOut, response code and description)",
        description="List the oadrCreatedEvent answers the VTN stored, newest last: per event and modification "
                    "number the opt type, the response code and the HEMS's description (PROFILE §8).")
    target = responses.add_mutually_exclusive_group()
    target.add_argument("--event-id", help="only the answers to this event")
    target.add_argument("--connection-point", metavar="EAN", help="only this household's answers")
    _api_url_option(responses)
    _json_option(responses)

    telemetry = commands.add_parser("telemetry", help="show a household's measured import and export",
                                    description="Show the telemetry intervals a household's HEMS reported.")
    telemetry.add_argument("--connection-point", metavar="EAN", required=True, help="the household's EAN")
    telemetry.add_argument("--since", metavar="ISO8601", help="first interval start to show (with UTC offset)")
    telemetry.add_argument("--until", metavar="ISO8601", help="show intervals starting before this (with offset)")
    _api_url_option(telemetry)
    _json_option(telemetry)

    token = commands.add_parser(
        "token", help="create, list or revoke operator API tokens (on the server's store file)",
        description="Credentials of the operator API. A token has a name (who, in the audit log) and a role: "
                    "'read' (every GET, the web pages) or 'operate' (also publish, modify, cancel, change "
                    "contracts). The store keeps only a SHA-256 of each token; the token itself is shown once. "
                    "These commands work on the store file (--db), so only who may read the server's files may "
                    "manage tokens; a running server sees a change at its next request.")
    token_commands = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = token_commands.add_parser("create", help="create a token and print it once",
                                       description="Create a token. It is printed on stdout (or written to "
                                                   "--output, readable by you only) and never shown again.")
    create.add_argument("--name", required=True, help="who uses it, e.g. alice or ci-publisher (unique among the "
                                                      "active tokens)")
    create.add_argument("--role", required=True, choices=["read", "operate"], help="what it may do")
    create.add_argument("--expires-days", type=float, metavar="DAYS", help="expire after this many days (default: "
                                                                           "never; revoke it instead)")
    create.add_argument("--output", type=Path, metavar="PATH",
                        help="write the token to this new file (mode 0600) instead of stdout; use it as --token-file")
    create.add_argument("--cert", type=Path, metavar="PEM",
                        help="make a client certificate the credential instead of a secret (the API must run "
                             "with --api-client-ca); nothing secret is printed")
    _db_option(create)
    token_list = token_commands.add_parser("list", help="list tokens with role and state (never the secrets)",
                                           description="List every token: id, name, role, state, created, expires.")
    _db_option(token_list)
    _json_option(token_list)
    revoke = token_commands.add_parser("revoke", help="revoke a token (its web sessions end too)",
                                       description="Revoke a token by name or id; it is refused from the next "
                                                   "request on.")
    revoke.add_argument("token", metavar="NAME_OR_ID", help="the token's name (the active one) or its id")
    _db_option(revoke)

    household = commands.add_parser(
        "household", help="one household's data: export it (GDPR access) or erase it (GDPR erasure)",
        description="Everything the DSO holds about one connection point, on the store file (--db): 'export' "
                    "writes it as JSON (contract, registration, signals and answers, telemetry, plans, needs, "
                    "performance reports, allocation shortfalls, audit entries naming it); 'erase' deletes it. "
                    "Both are recorded in the audit log (which keeps its entries).")
    household_commands = household.add_subparsers(dest="household_command", required=True, metavar="ACTION")
    export = household_commands.add_parser("export", help="write everything held about one household as JSON",
                                           description="Write everything the DSO holds about one connection point "
                                                       "as one JSON document (GDPR access).")
    export.add_argument("--ean", required=True, metavar="EAN", help="the connection point (18-digit EAN)")
    export.add_argument("--output", type=Path, metavar="PATH",
                        help="a new file to write (mode 0600) instead of standard output")
    _db_option(export)
    erase = household_commands.add_parser(
        "erase", help="delete everything held about one household",
        description="Delete everything the DSO holds about one connection point (GDPR erasure): its contract, "
                    "VEN registration, signals and answers, telemetry, plans, needs, performance reports and "
                    "shortfalls, and its place in the grid (a later 'grid load' gives the connection point a "
                    "new, default contract). Irreversible: give --yes.")
    erase.add_argument("--ean", required=True, metavar="EAN", help="the connection point (18-digit EAN)")
    erase.add_argument("--yes", action="store_true", help="confirm: the data cannot be brought back")
    _db_option(erase)

    settlement = commands.add_parser(
        "settlement", help="performance contracts' monthly settlement (JSON, table or CSV)",
        description="Per household with a performance contract and calendar month: the hours its capacity "
                    "guarantee was honoured, the comfort delivered and the discount due (dso_server/settlement.py)."
                    " Read through the operator API (read role), or from the store file with --db.")
    settlement.add_argument("--month", metavar="YYYY-MM", help="the month (default: the current one)")
    settlement.add_argument("--connection-point", metavar="EAN", help="only this household")
    settlement.add_argument("--csv", action="store_true", help="print CSV (one line per household and month)")
    settlement.add_argument("--db", metavar="PATH", help="read the store file instead of asking the API")
    _api_url_option(settlement)
    _json_option(settlement)

    audit = commands.add_parser(
        "audit", help="show the audit log: who changed what, when",
        description="The audit log: publications, modifications, cancellations, contract changes, grid loads, "
                    "token and login events, and refused attempts by authenticated callers. Read through the "
                    "operator API (read role), or straight from the store file with --db.")
    audit.add_argument("--since", metavar="ISO8601", help="entries at or after this instant (with UTC offset)")
    audit.add_argument("--until", metavar="ISO8601", help="entries before this instant (with UTC offset)")
    audit.add_argument("--actor", help="only this actor, e.g. token:alice or local:root")
    audit.add_argument("--action", help="only this action (e.g. signal.cancel) or family (e.g. signal)")
    audit.add_argument("--outcome", choices=["ok", "refused"], help="only changes made, or only refused attempts")
    audit.add_argument("--limit", type=int, default=1000, help="at most this many, the newest (%(default)s)")
    audit.add_argument("--db", metavar="PATH", help="read the store file instead of asking the API")
    _api_url_option(audit)
    _json_option(audit)
    return parser


SERVE_ALIASES = {"db_path": ("--db",), "vtn_host": ("--host",), "contracts_file": ("--contracts",),
                 "grid_path": ("--grid",), "key_passphrase": ("--passphrase",)}
"""Shorter or older spellings of serve options, kept working (the other commands say --db too)."""


def _serve_parser(commands: Any) -> None:
    """``serve``: one option per ``DsoSettings`` field (grouped by its part), made by ``protocol.settings``."""
    serve = commands.add_parser(
        "serve", help="run the VTN and the operator API until interrupted",
        description="Run the OpenADR 2.0b VTN and the operator JSON API. Stop with Ctrl-C (SIGINT) or SIGTERM; "
                    "registrations and signals survive in --db. Every setting can also come from an environment "
                    f"variable ({ENV_PREFIX} + its name in upper case, e.g. {ENV_PREFIX}VTN_PORT) or a TOML config "
                    "file (--config; its keys are the names below with underscores, e.g. vtn_port = 8080); the "
                    "command line wins over the environment, the environment over the file.")
    serve.add_argument("--config", type=Path, metavar="FILE.toml", default=None,
                       help=f"TOML file of settings, e.g. vtn_port = 8080 (default: none; env {ENV_PREFIX}CONFIG)")
    serve.add_argument("--print-config", action="store_true",
                       help="print the settings in force (as a config file would hold them; secrets left out) and "
                            "exit without serving")
    parts = [(serve, ServerSettings),
             (serve.add_argument_group("OpenADR VTN (mutual TLS unless --insecure; --pki or --cert, --key and "
                                       "--ca-file)"), VtnSettings),
             (serve.add_argument_group("operator API and pages"), ApiSettings),
             (serve.add_argument_group("capacity planning (runs while the store holds a grid)"), PlannerConfig)]
    placed: set[str] = set()
    for group, part in parts:
        add_arguments(group, DsoSettings, env_prefix=ENV_PREFIX, only=set(part.model_fields),
                      aliases=SERVE_ALIASES)
        placed |= set(part.model_fields)
    add_arguments(serve, DsoSettings, env_prefix=ENV_PREFIX, exclude=placed, aliases=SERVE_ALIASES)


def serve_settings(args: argparse.Namespace, env: Mapping[str, str]) -> DsoSettings:
    """The settings of ``serve``: defaults < --config (or DSO_CONFIG) < DSO_* variables < options.
    Raises ``SettingsError`` naming every bad value and where it came from."""
    config = args.config if args.config is not None else env.get(f"{ENV_PREFIX}CONFIG")
    return resolve(DsoSettings, cli=args, env=env, env_prefix=ENV_PREFIX, config_file=Path(config) if config else None)


def _pki_parser(commands: Any) -> None:
    pki = commands.add_parser(
        "pki", help="a small certificate authority: the VTN's TLS certificate and one per household VEN",
        description="Certificates for mutual TLS between the VTN and the households' VENs (ECDSA P-256 by default). "
                    "Private keys are written with mode 0600 and never overwritten. A VEN certificate speaks for "
                    "the household it is enrolled for in the DSO's store (issue-ven enrols it; enrol binds a "
                    "certificate from another CA); revoke stops the VTN serving it from its next message on.")
    actions = pki.add_subparsers(dest="pki_command", required=True, metavar="ACTION")

    def directory(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--dir", type=Path, default=Path("pki"), metavar="DIR",
                            help="the PKI directory (%(default)s)")

    def store(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--db", default="dso.sqlite", metavar="PATH",
                            help="the DSO's SQLite file, as for 'serve', where enrolments live ('%(default)s')")

    def key_options(parser: argparse.ArgumentParser, days: int) -> None:
        parser.add_argument("--key-type", choices=["ec", "rsa"], default="ec",
                            help="ec: ECDSA P-256 (default); rsa: RSA 2048 (both certified for OpenADR 2.0b)")
        parser.add_argument("--days", type=int, default=days, help="validity in days (%(default)s)")

    init = actions.add_parser("init", help="create the CA", description="Create the CA key and certificate and an "
                                                                        "empty revocation list in --dir.")
    directory(init)
    init.add_argument("--name", default="DSO lab CA", help="the CA's common name (%(default)s)")
    key_options(init, 3650)
    vtn = actions.add_parser("issue-vtn", help="issue the VTN's TLS server certificate",
                             description="Issue vtn.crt/vtn.key for the host names and addresses VENs connect to.")
    directory(vtn)
    vtn.add_argument("--host", action="append", metavar="HOST",
                     help="DNS name or IP address of the VTN; repeat for several (default: localhost, 127.0.0.1, ::1)")
    key_options(vtn, 825)
    ven = actions.add_parser("issue-ven", help="issue a household VEN's client certificate and enrol it",
                             description="Issue vens/EAN.crt and vens/EAN.key for one household and enrol the "
                                         "certificate in --db, so the VTN serves it for that household only.")
    directory(ven)
    ven.add_argument("--ean", required=True, help="the household's connection point id (18-digit EAN)")
    store(ven)
    ven.add_argument("--no-enrol", action="store_true",
                     help="only issue (the CA runs apart from the server); enrol later with 'pki enrol'")
    key_options(ven, 825)
    enrol = actions.add_parser("enrol", help="bind a VEN certificate (from any CA) to a household",
                               description="Record in --db that this certificate speaks for the household --ean.")
    enrol.add_argument("--ean", required=True, help="the household's connection point id (18-digit EAN)")
    enrol.add_argument("--cert", required=True, type=Path, metavar="PEM", help="the VEN's certificate")
    store(enrol)
    revoke = actions.add_parser("revoke", help="revoke a certificate",
                                description="Revoke a household's current certificate (--ean), the VTN's (--vtn), "
                                            "one by --serial, or an enrolled certificate file (--cert): marked in "
                                            "issued.json and crl.pem of --dir, and refused by the VTN (463) from its "
                                            "next message on through --db.")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--ean", help="revoke this household's current certificate")
    which.add_argument("--serial", help="revoke the certificate with this serial number (hex)")
    which.add_argument("--vtn", action="store_true", help="revoke the VTN's certificate")
    which.add_argument("--cert", type=Path, metavar="PEM", help="revoke this enrolled certificate (any CA)")
    directory(revoke)
    store(revoke)
    revoke.add_argument("--reason", default="unspecified", help="why (kept with the revocation)")
    listing = actions.add_parser("list", help="list issued certificates and enrolments",
                                 description="List what the CA in --dir issued and, with --db, what is enrolled.")
    directory(listing)
    listing.add_argument("--db", default=None, metavar="PATH", help="also list the enrolments of this store")
def _db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default="dso.sqlite", metavar="PATH",
                        help="SQLite file of the DSO (as for 'serve'; created when missing) ('%(default)s')")


# ------------------------------------------------------------------------------------------------- input


def _instant(text: str, option: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{option} {text!r} is not an ISO 8601 timestamp such as 2030-01-01T17:00:00+00:00") from None
    if moment.tzinfo is None:
        raise UsageError(f"{option} {text!r} has no UTC offset; write e.g. {text}+00:00")
    return moment


def _numbers(text: str, option: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"{option} {text!r} must be comma-separated numbers, e.g. 5,5,3.5") from None
    return values


def _columns(first: list[float], second: list[float], names: tuple[str, str]) -> tuple[list[float], list[float]]:
    if len(second) == 1 and len(first) > 1:
        second = second * len(first)
    if len(first) == 1 and len(second) > 1:
        first = first * len(second)
    if len(first) != len(second):
        raise UsageError(f"{names[0]} has {len(first)} values but {names[1]} has {len(second)}; give one per "
                         "interval (or a single value for all)")
    return first, second


def _read_json(path: Path) -> dict[str, Any]:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UsageError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise UsageError(f"{path} must hold a JSON object")
    return body


def _inline_payload(args: argparse.Namespace) -> dict[str, Any]:
    if args.kind == "bandwidth":
        options = ("--firmness", "--start", "--import-kw", "--export-kw")
        given = (args.firmness, args.start, args.import_kw, args.export_kw)
    else:
        options = ("--start", "--import-price", "--export-price")
        given = (args.start, args.import_price, args.export_price)
    missing = [option for option, value in zip(options, given, strict=True) if value is None]
    if missing:
        raise UsageError(f"publish {args.kind} needs {', '.join(missing)} (or --file with the whole signal)")
    start = _instant(args.start, "--start")
    if args.kind == "bandwidth":
        imports, exports = _columns(_numbers(args.import_kw, "--import-kw"), _numbers(args.export_kw, "--export-kw"),
                                    ("--import-kw", "--export-kw"))
        return {"firmness": args.firmness, "intervals": [
            {"start": (start + index * INTERVAL).isoformat(), "import_limit_kw": value,
             "export_limit_kw": exports[index]}
            for index, value in enumerate(imports)]}
    imports, exports = _columns(_numbers(args.import_price, "--import-price"),
                                _numbers(args.export_price, "--export-price"), ("--import-price", "--export-price"))
    return {"intervals": [
        {"start": (start + index * INTERVAL).isoformat(), "import_price_eur_per_kwh": value,
         "export_price_eur_per_kwh": exports[index]}
        for index, value in enumerate(imports)]}


def _check_payload(kind: str, payload: dict[str, Any]) -> None:
    """Validate locally what the server would, so a bad argument is exit 2 with the same message."""
    from dso_server.api.codec import invalid
    from protocol import CapacityBandwidth, TouTariff

    model = CapacityBandwidth if kind == "bandwidth" else TouTariff
    try:
        model.model_validate(payload)
    except ValidationError as error:
        raise UsageError(invalid(error, what=kind).message) from None


def publish_body(args: argparse.Namespace) -> dict[str, Any]:
    inline = [option for option in ("firmness", "start", "import_kw", "export_kw", "import_price", "export_price")
              if getattr(args, option, None) is not None]
    if args.file is not None:
        if inline:
            option = "--" + inline[0].replace("_", "-")
            raise UsageError(f"give either --file or the inline values, not both (also got {option})")
        body = _read_json(args.file)
    else:
        body = _inline_payload(args)
    if args.connection_points or args.group:
        body = {key: value for key, value in body.items() if key not in ("connection_point_ids", "group")}
    if args.connection_points:
        body["connection_point_ids"] = args.connection_points
    elif args.group:
        body["group"] = args.group
    if "connection_point_ids" not in body and "group" not in body:
        raise UsageError("name the households: --connection-point EAN (repeatable) or --group NAME")
    _check_payload(args.kind, {k: v for k, v in body.items() if k not in ("connection_point_ids", "group")})
    return body


# ------------------------------------------------------------------------------------------------- HTTP


def api_token(args: argparse.Namespace) -> str:
    """The token from --token-file / $DSO_API_TOKEN_FILE, else $DSO_API_TOKEN. Never from an argument's value:
    command lines are visible to every user of the machine (ps, /proc)."""
    path = getattr(args, "token_file", None)
    if path:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise UsageError(f"cannot read the token file {path}: {getattr(error, 'strerror', None) or error}"
                             ) from None
        with contextlib.suppress(OSError):
            if path.stat().st_mode & 0o077:
                print(f"dso-server: warning: {path} is readable by other users; chmod 600 it", file=sys.stderr)
        if not text:
            raise UsageError(f"the token file {path} is empty")
        return text
    text = os.environ.get("DSO_API_TOKEN", "").strip()
    if not text:
        raise UsageError("no API token: give --token-file PATH (or $DSO_API_TOKEN_FILE) or set $DSO_API_TOKEN; "
                         "create one on the server with 'dso-server token create --name NAME --role read|operate'")
    return text


def _ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    ca = getattr(args, "api_ca", None)
    if not str(args.api_url).startswith("https://"):
        return None
    try:
        return ssl.create_default_context(cafile=str(ca) if ca else None)
    except (OSError, ssl.SSLError) as error:
        raise UsageError(f"cannot use --api-ca {ca}: {error}") from None


def request(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None,
            query: dict[str, str] | None = None) -> Any:
    """Call the operator API with the token of ``args``; the answer's JSON, or Refused/UsageError."""
    api_url = args.api_url
    url = api_url.rstrip("/") + path
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--api-url {api_url!r} is not an http:// or https:// URL")
    if query:
        url += "?" + urllib.parse.urlencode({key: value for key, value in query.items() if value is not None})
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json",
               "Authorization": f"Bearer {api_token(args)}"}
    message = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(message, timeout=30, context=_ssl_context(args)) as answer:
            return json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        try:
            problem = json.loads(error.read())
            text = problem.get("error") or str(problem)
        except (ValueError, AttributeError):
            text = f"{error.code} {error.reason}"
        raise Refused(f"the DSO refused {method} {path}: {text}") from None
    except urllib.error.URLError as error:
        raise Refused(f"cannot reach the operator API at {api_url}: {error.reason}") from None
    except (TimeoutError, ConnectionError) as error:
        raise Refused(f"cannot reach the operator API at {api_url}: {error}") from None
    except ValueError as error:
        raise Refused(f"the operator API at {api_url} did not answer JSON: {error}") from None


# ----------------------------------------------------------------------------------------------- output


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [list(map(str, header))] + [["" if cell is None else str(cell) for cell in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def _print_publication(answer: dict[str, Any]) -> None:
    print(f"publication {answer['publication_id']}")
    print(_table([(e["event_id"], e["connection_point_id"], e["modification_number"], e["status"])
                  for e in answer["events"]], ("event_id", "connection_point", "modification", "status")))
    for skipped in answer.get("skipped", []):
        print(f"skipped {skipped['event_id']}: {skipped['reason']}")


def _print_change(answer: dict[str, Any], args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(answer, indent=2))
    elif args.publication:
        _print_publication(answer)
    else:
        _print_signal(answer)


def _print_signal(answer: dict[str, Any]) -> None:
    print(f"event {answer['event_id']} for {answer['connection_point_id']}: {answer['kind']}, modification "
          f"{answer['modification_number']}, status {answer['status']}, {answer['start']} .. {answer['end']}")


# ----------------------------------------------------------------------------------------------- commands


def _serve(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from dso_server.service import DsoServer, run_event_loop

    try:
        settings = serve_settings(args, env)
    except SettingsError as error:
        raise UsageError("\n  ".join(error.problems)) from None
    if args.print_config:
        print(config_text(settings))
        return 0
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("openleadr").setLevel(max(logging.WARNING, logging.getLevelName(settings.log_level)))

    if settings.workers > 1:
        return _serve_workers(settings)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, stop.set)
        async with DsoServer(settings) as dso:
            from dso_server.store.security_store import SecurityStore

            no_token = not any(t.usable_at(dso.clock.now()) for t in SecurityStore(dso.store).tokens())
            _announce(settings, dso.vtn_url, dso.api_url, no_token=no_token)
            if dso.vtn.fingerprint:
                print(f"dso-server: messages signed; VTN certificate fingerprint {dso.vtn.fingerprint}", flush=True)
            await stop.wait()
            print("dso-server: stopping", flush=True)

    with _start_errors():
        run_event_loop(run())
    return 0


def _serve_workers(settings: Any) -> int:
    from dso_server.service import _url
    from dso_server.workers import Supervisor

    supervisor = Supervisor(settings, settings.workers)
    with _start_errors():
        listeners = supervisor.open()
    vtn_url = (_url(settings.vtn_host, listeners.vtn.getsockname()[1], "http" if settings.insecure else "https")
               + settings.http_path_prefix.rstrip("/"))
    api_url = _url(settings.api_host, listeners.api.getsockname()[1], "https" if settings.api_tls else "http")
    with _open_store(settings.db_path) as store:
        from dso_server.store.security_store import SecurityStore

        no_token = not any(t.usable_at(datetime.now(UTC)) for t in SecurityStore(store).tokens())
    supervisor.serve(on_ready=lambda: _announce(settings, vtn_url, api_url, no_token=no_token,
                                                 workers=settings.workers))
    print("dso-server: stopping", flush=True)
    return 0


@contextlib.contextmanager
def _start_errors() -> Iterator[None]:
    """What can stop ``serve`` from starting, as the CLI's usage error or refusal."""
    from dso_server.contracts import ContractsFileError
    from dso_server.errors import ConfigurationError, SchemaError, StoreError

    try:
        yield
    except (ContractsFileError, ConfigurationError) as error:
        raise UsageError(str(error)) from None
    except SchemaError as error:
        raise Refused(str(error)) from None
    except StoreError as error:
        raise Refused(error.message) from None
    except OSError as error:
        raise Refused(f"cannot start: {error.strerror or error}") from None


def _announce(settings: Any, vtn_url: str, api_url: str, *, no_token: bool, workers: int = 1) -> None:
    """The lines ``serve`` prints once it listens: where, and the warnings its settings call for."""
    if settings.insecure:
        print(f"dso-server: WARNING: --insecure: the VTN serves plain HTTP without client certificates; any "
              f"process that reaches {settings.vtn_host} can act as any household. Demo and tests only.",
              file=sys.stderr, flush=True)
    print(f"dso-server: VTN at {vtn_url}" + (f" ({workers} workers)" if workers > 1 else ""), flush=True)
    print(f"dso-server: operator API at {api_url}/api/", flush=True)
    if not settings.api_tls and not is_loopback(settings.api_host):
        print(f"dso-server: WARNING: INSECURE: the operator API listens on {settings.api_host} over plain "
              "HTTP (--api-insecure): tokens and session cookies cross the network in clear text",
              file=sys.stderr, flush=True)
    if no_token:
        print(f"dso-server: no API token exists yet; create one with 'dso-server token create --db "
              f"{settings.db_path} --name NAME --role operate'", flush=True)


def _read_grid(args: argparse.Namespace) -> Any:
    from dso_server.capacity.grid import GridFileError, load_grid

    if getattr(args, "lab", None):
        from dso_server.capacity.lab_grids import lab_grid

        try:
            return lab_grid(args.lab)
        except ValueError as error:
            raise UsageError(f"--lab: {error}") from None
        except RuntimeError as error:
            raise Refused(str(error)) from None
    try:
        return load_grid(args.file)
    except GridFileError as error:
        raise UsageError(str(error)) from None


def _grid(args: argparse.Namespace) -> int:
    if args.grid_command == "labs":
        from dso_server.capacity.lab_grids import LAB_GRIDS

        print(_table([(g.name, g.description) for g in LAB_GRIDS.values()], ("name", "grid")))
        return 0
    if args.grid_command == "check":
        grid = _read_grid(args)
        print(f"{args.file}: valid: {grid.summary()}")
        return 0
    from dso_server.errors import SchemaError, StoreError
    from dso_server.store.engine import redact
    from dso_server.store.grid_store import GridConflict, GridStore
    from dso_server.store.sqlite import DsoStore

    try:
        where = redact(args.db)
        with DsoStore(args.db) as store:
            gstore = GridStore(store)
            if args.grid_command == "show":
                grid = gstore.grid()
                if grid is None:
                    print(f"{where}: no grid loaded")
                    return 0
                source, loaded_at = gstore.grid_source() or ("?", None)
                print(f"{where}: {grid.summary()}; loaded from {source} at {loaded_at}")
                counts = {t.id: len(grid.connection_points_of(t.id)) for t in grid.transformers}
                print(_table([(t.id, f"{t.rating_kva:g}", f"{t.limit_kw:.1f}", counts[t.id],
                               "yes" if t.busbar_node else "no") for t in grid.transformers],
                             ("transformer", "rating_kva", "limit_kw", "households", "grid_model")))
                return 0
            grid = _read_grid(args)
            source = f"lab:{args.lab}" if args.lab else str(args.file)
            from dso_server.security.audit import local_actor
            from dso_server.store import audited

            try:
                saved = audited.save_grid(store, grid, now=datetime.now(UTC), source=source, actor=local_actor())
            except GridConflict as error:
                raise UsageError(f"{source}: {error.message}") from None
    except SchemaError as error:
        raise Refused(str(error)) from None
    except StoreError as error:
        raise Refused(error.message) from None
    print(f"{redact(args.db)}: loaded {source}: {grid.summary()}; {len(saved.created_households)} new household(s)")
    return 0


def _publish(args: argparse.Namespace) -> int:
    answer = request(args, "POST", f"/api/{'bandwidths' if args.kind == 'bandwidth' else 'tariffs'}",
                     publish_body(args))
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        _print_publication(answer)
    return 0


def _modify(args: argparse.Namespace) -> int:
    body = _read_json(args.file)
    collection = "publications" if args.publication else "signals"
    answer = request(args, "PUT", f"/api/{collection}/{urllib.parse.quote(args.event_id)}", body)
    _print_change(answer, args)
    return 0


def _cancel(args: argparse.Namespace) -> int:
    collection = "publications" if args.publication else "signals"
    answer = request(args, "DELETE", f"/api/{collection}/{urllib.parse.quote(args.event_id)}")
    _print_change(answer, args)
    return 0


def _households(args: argparse.Namespace) -> int:
    answer = request(args, "GET", "/api/households")
    while answer.get("next_after"):  # the API pages; this command lists them all
        page = request(args, "GET", "/api/households", query={"after": answer["next_after"]})
        answer = {"households": answer["households"] + page["households"], "next_after": page.get("next_after")}
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    print(_table([(h["connection_point_id"], h["group"], "yes" if h["registered"] else "no", h["last_seen_at"],
                   h["last_telemetry_interval_start"]) for h in answer["households"]],
                 ("connection_point", "group", "registered", "last_seen_at", "last_telemetry_interval")))
    return 0


def _signals(args: argparse.Namespace) -> int:
    answer = request(args, "GET", "/api/signals", query={"connection_point_id": args.connection_point})
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    print(_table([(s["event_id"], s["connection_point_id"], s["kind"], s["modification_number"], s["status"],
                   s["start"], s["end"]) for s in answer["signals"]],
                 ("event_id", "connection_point", "kind", "modification", "status", "start", "end")))
    return 0


def _responses(args: argparse.Namespace) -> int:
    answer = request(args, "GET", "/api/responses", query={
        "event_id": args.event_id, "connection_point_id": args.connection_point})
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    print(_table([(r["received_at"], r["connection_point_id"], r["event_id"], r["modification_number"],
                   r["opt_type"], r["response_code"], r["response_description"]) for r in answer["responses"]],
                 ("received_at", "connection_point", "event_id", "modification", "opt_type", "code",
                  "description")))
    return 0


def _telemetry(args: argparse.Namespace) -> int:
    for value, option in ((args.since, "--since"), (args.until, "--until")):
        if value is not None:
            _instant(value, option)
    answer = request(args, "GET", "/api/telemetry", query={
        "connection_point_id": args.connection_point, "since": args.since, "until": args.until})
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    print(_table([(i["start"], f"{i['import_kw']:.3f}", f"{i['export_kw']:.3f}", f"{i['net_import_kw']:.3f}")
                  for i in answer["intervals"]], ("start", "import_kw", "export_kw", "net_import_kw")))
    return 0


@contextlib.contextmanager
def _open_store(path: str) -> Any:
    from dso_server.errors import SchemaError, StoreError
    from dso_server.store.sqlite import DsoStore

    try:
        with DsoStore(path) as store:
            yield store
    except SchemaError as error:
        raise Refused(str(error)) from None
    except StoreError as error:
        raise Refused(error.message) from None


def _certificate_sha256(path: Path) -> str:
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as error:
        raise UsageError(f"--cert {path} is not a readable PEM certificate: {error}") from None
    return hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()


def _write_secret(path: Path, secret: str) -> None:
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"--output {path} exists already; a token file is never overwritten") from None
    except OSError as error:
        raise UsageError(f"cannot create --output {path}: {error.strerror or error}") from None
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(secret + "\n")


def _token(args: argparse.Namespace) -> int:
    from dso_server.errors import DsoError
    from dso_server.security.audit import local_actor
    from dso_server.security.tokens import Role
    from dso_server.store.security_store import SecurityStore

    now = datetime.now(UTC)
    with _open_store(args.db) as store:
        security = SecurityStore(store)
        try:
            if args.token_command == "create":
                if args.expires_days is not None and not 0 < args.expires_days <= 3650:
                    raise UsageError(f"--expires-days {args.expires_days} must be more than 0 and at most 3650")
                if args.cert is not None and args.output is not None:
                    raise UsageError("--cert makes a certificate the credential: there is no secret to --output")
                fingerprint = _certificate_sha256(args.cert) if args.cert is not None else None
                expires = now + timedelta(days=args.expires_days) if args.expires_days is not None else None
                if args.output is not None and args.output.exists():
                    raise UsageError(f"--output {args.output} exists already; a token file is never overwritten")
                token, secret = security.create_token(args.name, Role(args.role), now=now, actor=local_actor(),
                                                      expires_at=expires, cert_sha256=fingerprint)
                what = f"certificate {fingerprint}" if fingerprint else "token"
                print(f"dso-server: {what} {token.name!r} ({token.role.value}, id {token.token_id}) created in "
                      f"{args.db}" + (f"; expires {expires.isoformat()}" if expires else ""), file=sys.stderr)
                if secret is not None and args.output is not None:
                    _write_secret(args.output, secret)
                    print(f"dso-server: written to {args.output} (mode 0600); use it with --token-file",
                          file=sys.stderr)
                elif secret is not None:
                    print("dso-server: this is the only time the token is shown:", file=sys.stderr)
                    print(secret, flush=True)
                return 0
            if args.token_command == "revoke":
                token = security.revoke_token(args.token, now=now, actor=local_actor())
                print(f"dso-server: revoked token {token.name!r} ({token.token_id})")
                return 0
        except ValueError as error:
            raise UsageError(str(error)) from None
        except DsoError as error:
            raise UsageError(error.message) from None
        tokens = security.tokens()
    if args.json:
        print(json.dumps({"tokens": [{
            "token_id": t.token_id, "name": t.name, "role": t.role.value, "kind": t.kind, "state": t.state_at(now),
            "created_at": t.created_at.isoformat(), "created_by": t.created_by,
            "expires_at": t.expires_at.isoformat() if t.expires_at else None,
            "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None, "revoked_by": t.revoked_by,
            "cert_sha256": t.cert_sha256} for t in tokens]}, indent=2))
        return 0
    print(_table([(t.token_id, t.name, t.role.value, t.kind, t.state_at(now),
                   t.created_at.isoformat(timespec="seconds"), t.created_by,
                   t.expires_at.isoformat(timespec="seconds") if t.expires_at else "never")
                  for t in tokens], ("token_id", "name", "role", "kind", "state", "created_at", "created_by",
                                     "expires_at")))
    return 0


def _audit(args: argparse.Namespace) -> int:
    for value, option in ((args.since, "--since"), (args.until, "--until")):
        if value is not None:
            _instant(value, option)
    if not 1 <= args.limit <= 10_000:
        raise UsageError(f"--limit {args.limit} must be from 1 to 10000")
    if args.db is not None:
        from dso_server.api.codec import audit_json
        from dso_server.store.security_store import SecurityStore

        with _open_store(args.db) as store:
            entries = SecurityStore(store).audit(
                since=_instant(args.since, "--since") if args.since else None,
                until=_instant(args.until, "--until") if args.until else None,
                actor=args.actor, action=args.action, outcome=args.outcome, limit=args.limit)
            answer = {"entries": [audit_json(entry) for entry in entries]}
    else:
        answer = request(args, "GET", "/api/audit", query={
            "since": args.since, "until": args.until, "actor": args.actor, "action": args.action,
            "outcome": args.outcome, "limit": str(args.limit)})
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    print(_table([(e["at"], e["actor"], e["action"], e["target"] or "", e["outcome"], _short(e["detail"]))
                  for e in answer["entries"]], ("at", "actor", "action", "target", "outcome", "detail")))
    return 0


def _household(args: argparse.Namespace) -> int:
    from datetime import UTC

    from dso_server.errors import DsoError
    from dso_server.security.audit import local_actor
    from dso_server.store import audited

    if args.household_command == "erase" and not args.yes:
        raise UsageError(f"erasing {args.ean} cannot be undone; add --yes to confirm")
    if args.household_command == "export" and args.output is not None and args.output.exists():
        raise UsageError(f"--output {args.output} exists already; give a new file")
    now = datetime.now(UTC)
    with _open_store(args.db) as store:
        try:
            if args.household_command == "erase":
                deleted = audited.erase_household(store, args.ean, now=now, actor=local_actor())
                print(f"dso-server: erased {args.ean} from {args.db}: " + ", ".join(
                    f"{count} {table}" for table, count in sorted(deleted.items())))
                return 0
            data = audited.export_household(store, args.ean, now=now, actor=local_actor())
        except DsoError as error:
            raise UsageError(error.message) from None
    text = json.dumps({"format": "hems-dso-interface/dso-household-export/1", "connection_point_id": args.ean,
                       "exported_at": now.isoformat(), "tables": data}, indent=2, ensure_ascii=False) + "\n"
    if args.output is None:
        sys.stdout.write(text)
        return 0
    _write_secret(args.output, text.rstrip("\n"))
    print(f"dso-server: wrote what {args.db} holds about {args.ean} to {args.output} ("
          f"{sum(len(rows) for rows in data.values())} rows)", file=sys.stderr)
    return 0


def _month(text: str | None) -> str | None:
    if text is None:
        return None
    import re

    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", text):
        raise UsageError(f"--month {text!r} is not a month such as 2030-01")
    return text


def _settlement(args: argparse.Namespace) -> int:
    month = _month(args.month)
    if args.db is not None:
        from datetime import UTC, date

        from dso_server.api import performance_views
        from dso_server.errors import DsoError

        day = date.fromisoformat(month + "-01") if month else datetime.now(UTC).date()
        with _open_store(args.db) as store:
            try:
                ids = [args.connection_point] if args.connection_point else None
                rows = performance_views.settlement(store, day, ids)
            except DsoError as error:
                raise UsageError(error.message) from None
        answer = performance_views.settlement_json(day, rows)
    else:
        answer = request(args, "GET", "/api/settlement", query={"month": month,
                                                                "connection_point_id": args.connection_point})
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    if args.csv:
        import csv
        import io

        from dso_server.settlement import COLUMNS

        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(answer["rows"])
        sys.stdout.write(out.getvalue())
        return 0
    print(_table([(r["connection_point_id"], r["month"], f"{r['honoured_hours']:g}/{r['need_hours']:g}",
                   f"{r['shortfall_kwh']:.2f}", f"{r['degree_hours_outside_band']:.2f}",
                   f"{r['degree_hours_dso_caused']:.2f}", f"{r['ev_departures_short']}/{r['ev_departures']}",
                   f"{r['total_eur']:.2f}") for r in answer["rows"]],
                 ("connection_point", "month", "honoured_h", "shortfall_kwh", "K·h_out", "K·h_dso", "ev_short",
                  "due_eur")))
    return 0


def _short(detail: dict[str, Any], width: int = 100) -> str:
    text = json.dumps(detail, separators=(",", ":"), sort_keys=True)
    return text if len(text) <= width else text[:width - 1] + "…"


def _pki(args: argparse.Namespace) -> int:
    from dso_server.security.pki import Pki, PkiError

    try:
        return _pki_command(args, Pki(getattr(args, "dir", None) or "pki"))
    except PkiError as error:
        raise UsageError(str(error)) from None


def _pki_command(args: argparse.Namespace, pki: Any) -> int:
    from dso_server.security.pki import DEFAULT_VTN_HOSTS, fingerprint_sha256, load_certificate

    command = args.pki_command
    if command == "init":
        row = pki.init(name=args.name, key_type=args.key_type, days=args.days)
        print(f"{args.dir}: CA {row.subject}, valid until {row.not_after}; certificate {pki.ca_cert_path} (give it "
              "to every VEN), key ca.key (keep it off the server where you can)")
        return 0
    if command == "issue-vtn":
        row = pki.issue_vtn(hosts=tuple(args.host or DEFAULT_VTN_HOSTS), key_type=args.key_type, days=args.days)
        print(f"{args.dir}: VTN certificate {pki.vtn_cert_path} and key {pki.vtn_key_path} for "
              f"{', '.join(args.host or DEFAULT_VTN_HOSTS)}, valid until {row.not_after}")
        print(f"serve it with: dso-server serve --pki {args.dir}")
        return 0
    if command == "issue-ven":
        row = pki.issue_ven(ean=args.ean, key_type=args.key_type, days=args.days)
        cert_path, key_path = pki.ven_paths(args.ean)
        print(f"{args.dir}: VEN certificate {cert_path} and key {key_path} for household {args.ean}, serial "
              f"{row.serial}, valid until {row.not_after}")
        if args.no_enrol:
            print(f"not enrolled; on the server run: dso-server pki enrol --ean {args.ean} --cert {cert_path}")
            return 0
        return _enrol(args.db, args.ean, load_certificate(cert_path))
    if command == "enrol":
        return _enrol(args.db, args.ean, load_certificate(args.cert))
    if command == "revoke":
        fingerprint = None
        if args.cert is not None:
            fingerprint = fingerprint_sha256(load_certificate(args.cert))
            issued = [r for r in pki.issued() if r.fingerprint_sha256 == fingerprint and r.revoked_at is None]
            if issued:
                pki.revoke(serial=issued[0].serial, reason=args.reason)
        else:
            row = pki.revoke(ean=args.ean, serial=args.serial, vtn=args.vtn, reason=args.reason)
            fingerprint = row.fingerprint_sha256 if row.kind == "ven" else None
            print(f"{args.dir}: revoked serial {row.serial} ({row.subject}); crl.pem rewritten")
        if fingerprint is not None:
            _revoke_enrolment(args.db, fingerprint, args.reason, must_exist=args.cert is not None)
        return 0
    rows = pki.issued()
    print(_table([(r.kind, r.serial, r.subject, r.not_after[:10], r.revoked_at or "") for r in rows],
                 ("kind", "serial", "subject", "not_after", "revoked_at")))
    if args.db:
        from dso_server.store.certificates import CertificateStore
        from dso_server.store.sqlite import DsoStore

        with DsoStore(args.db) as store:
            enrolments = CertificateStore(store).enrolments()
        print(_table([(e.connection_point_id, e.fingerprint_sha256[:16] + "...", e.subject, e.revoked_at or "")
                      for e in enrolments], ("household", "fingerprint_sha256", "subject", "revoked_at")))
    return 0


def _enrol(db: str, ean: str, certificate: Any) -> int:
    from datetime import UTC

    from dso_server.errors import DsoError, StoreError
    from dso_server.security.pki import check_ean, fingerprint_sha256, openadr_fingerprint
    from dso_server.store.certificates import CertificateStore, Enrolment
    from dso_server.store.sqlite import DsoStore

    check_ean(ean)
    enrolment = Enrolment(fingerprint_sha256=fingerprint_sha256(certificate), connection_point_id=ean,
                          subject=certificate.subject.rfc4514_string(), serial=f"{certificate.serial_number:x}",
                          not_after=certificate.not_valid_after_utc, enrolled_at=datetime.now(UTC))
    try:
        with DsoStore(db) as store:
            new = CertificateStore(store).enrol(enrolment)
    except StoreError as error:
        raise Refused(error.message) from None
    except DsoError as error:
        raise UsageError(error.message) from None
    print(f"{db}: certificate {enrolment.fingerprint_sha256} (OpenADR fingerprint {openadr_fingerprint(certificate)}) "
          f"{'enrolled' if new else 'was already enrolled'} for household {ean}")
    return 0


def _revoke_enrolment(db: str, fingerprint: str, reason: str, *, must_exist: bool) -> None:
    from datetime import UTC

    from dso_server.errors import StoreError
    from dso_server.store.certificates import CertificateStore, UnknownCertificate
    from dso_server.store.sqlite import DsoStore

    try:
        with DsoStore(db) as store:
            enrolment = CertificateStore(store).revoke(fingerprint, reason=reason, now=datetime.now(UTC))
    except UnknownCertificate as error:
        if must_exist:
            raise UsageError(f"{db}: {error.message}") from None
        print(f"{db}: the certificate was not enrolled there; nothing to refuse")
        return
    except StoreError as error:
        raise Refused(error.message) from None
    print(f"{db}: certificate {fingerprint} of household {enrolment.connection_point_id} revoked; the VTN refuses "
          "it from its next message on")


_COMMANDS = {"pki": _pki, "grid": _grid, "publish": _publish, "modify": _modify, "cancel": _cancel,
             "households": _households, "signals": _signals, "responses": _responses, "telemetry": _telemetry,
             "token": _token, "audit": _audit, "household": _household, "settlement": _settlement}


def _fail(code: int, message: str) -> NoReturn:
    print(f"dso-server: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """``env``: the environment variables ``serve`` reads its settings from (default: the process's)."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args, os.environ if env is None else env)
        return _COMMANDS[args.command](args)
    except UsageError as error:
        _fail(2, str(error))
    except Refused as error:
        _fail(1, str(error))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
