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
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

from dso_server.settings import DEFAULT_POLL_INTERVAL_S

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

    serve = commands.add_parser("serve", help="run the VTN and the operator API until interrupted",
                                description="Run the OpenADR 2.0b VTN and the operator JSON API. Stop with Ctrl-C "
                                            "(SIGINT) or SIGTERM; registrations and signals survive in --db.")
    serve.add_argument("--db", default="dso.sqlite", metavar="PATH|URL",
                       help="the store holding households, registrations, signals and reports: a SQLite file, "
                            "created when missing ('%(default)s'; ':memory:' keeps nothing), or a PostgreSQL URL "
                            "such as postgresql://dso@db.example/dso (needs pip install -e '.[postgres]')")
    serve.add_argument("--host", default="127.0.0.1", help="address the VTN and the API listen on (%(default)s)")
    serve.add_argument("--api-host", default=None, help="address of the operator API if it differs from --host")
    serve.add_argument("--vtn-port", type=int, default=8080,
                       help="TCP port of the OpenADR VTN (%(default)s; 0 picks a free one)")
    serve.add_argument("--api-port", type=int, default=8081,
                       help="TCP port of the operator API (%(default)s; 0 picks a free one)")
    serve.add_argument("--vtn-id", default="DSO-VTN", help="the vtnID sent in every OpenADR message (%(default)s)")
    serve.add_argument("--poll-interval-s", type=float, default=DEFAULT_POLL_INTERVAL_S, metavar="SECONDS",
                       help="poll interval the VTN asks VENs for at registration (%(default)s)")
    serve.add_argument("--contracts", type=Path, metavar="TOML",
                       help="households file ([[household]] tables: connection_point_id, group, contract fields, "
                            "[household.comfort]); added to or updated in the store at start")
    serve.add_argument("--grid", type=Path, metavar="FILE",
                       help="grid file (.toml or .csv: transformers, feeders, connection points; see "
                            "'dso-server grid --help') loaded into the store at start; with a grid in the store the "
                            "server allocates firm capacity day-ahead and non-firm capacity every few minutes")
    serve.add_argument("--timezone", default="Europe/Amsterdam",
                       help="the DSO's local time zone: days of the allocation and the API (%(default)s)")
    serve.add_argument("--day-ahead-time", default="14:00", metavar="HH:MM",
                       help="local time the next day's firm allocation is released (%(default)s)")
    serve.add_argument("--near-real-time-interval-s", type=float, default=300.0, metavar="SECONDS",
                       help="how often the non-firm allocation is recomputed from measured headroom (%(default)s)")
    serve.add_argument("--cert", type=Path, metavar="PEM",
                       help="certificate for XML signatures on outgoing OpenADR messages (with --key; off by "
                            "default)")
    serve.add_argument("--key", type=Path, metavar="PEM", help="private key belonging to --cert")
    serve.add_argument("--passphrase", default=os.environ.get("DSO_KEY_PASSPHRASE"),
                       help="passphrase of --key (default: $DSO_KEY_PASSPHRASE)")
    serve.add_argument("--workers", type=int, default=1, metavar="N",
                       help="VTN worker processes sharing the sockets and the store (%(default)s); each serves the "
                            "VTN and the operator API, one of them runs the planner; more than one is meant for a "
                            "PostgreSQL --db")
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                       help="how much the server logs to stderr (%(default)s)")

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

    households = commands.add_parser("households", help="list households, their VEN and their last telemetry",
                                     description="List the households the DSO serves with their registration.")
    _api_url_option(households)
    _json_option(households)

    signals = commands.add_parser("signals", help="list active and future signals",
                                  description="List signals that have not ended, with modification numbers.")
    signals.add_argument("--connection-point", metavar="EAN", help="only this household's signals")
    _api_url_option(signals)
    _json_option(signals)

    telemetry = commands.add_parser("telemetry", help="show a household's measured import and export",
                                    description="Show the telemetry intervals a household's HEMS reported.")
    telemetry.add_argument("--connection-point", metavar="EAN", required=True, help="the household's EAN")
    telemetry.add_argument("--since", metavar="ISO8601", help="first interval start to show (with UTC offset)")
    telemetry.add_argument("--until", metavar="ISO8601", help="show intervals starting before this (with offset)")
    _api_url_option(telemetry)
    _json_option(telemetry)
    return parser


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


def request(api_url: str, method: str, path: str, body: dict[str, Any] | None = None,
            query: dict[str, str] | None = None) -> Any:
    url = api_url.rstrip("/") + path
    if query:
        url += "?" + urllib.parse.urlencode({key: value for key, value in query.items() if value is not None})
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    message = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(message, timeout=30) as answer:
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
        if url.startswith(("http://", "https://")):
            raise Refused(f"the operator API at {api_url} did not answer JSON: {error}") from None
        raise UsageError(f"--api-url {api_url!r} is not an http:// URL") from None


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


def _serve(args: argparse.Namespace) -> int:
    from dso_server.contracts import ContractsFileError
    from dso_server.errors import ConfigurationError, SchemaError, StoreError
    from dso_server.service import DsoServer, run_event_loop
    from dso_server.settings import DsoSettings

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("openleadr").setLevel(max(logging.WARNING, logging.getLevelName(args.log_level)))
    try:
        settings = DsoSettings(
            db_path=args.db, vtn_host=args.host, vtn_port=args.vtn_port, api_host=args.api_host or args.host,
            api_port=args.api_port, vtn_id=args.vtn_id, poll_interval_s=args.poll_interval_s,
            contracts_file=args.contracts, cert=args.cert, key=args.key, passphrase=args.passphrase,
            grid_path=args.grid, timezone=args.timezone, day_ahead_time=args.day_ahead_time,
            near_real_time_interval_s=args.near_real_time_interval_s, workers=args.workers,
        )
    except ValidationError as error:
        item = error.errors()[0]
        field = ".".join(str(part) for part in item["loc"]) or "settings"
        raise UsageError(f"{field}: {item['msg'].removeprefix('Value error, ')}") from None

    if settings.workers > 1:
        return _serve_workers(settings, args)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, stop.set)
        async with DsoServer(settings) as dso:
            print(f"dso-server: VTN at {dso.vtn_url}", flush=True)
            print(f"dso-server: operator API at {dso.api_url}/api/", flush=True)
            if dso.vtn.fingerprint:
                print(f"dso-server: messages signed; VTN certificate fingerprint {dso.vtn.fingerprint}", flush=True)
            await stop.wait()
            print("dso-server: stopping", flush=True)

    try:
        run_event_loop(run())
    except (ContractsFileError, ConfigurationError) as error:
        raise UsageError(str(error)) from None
    except SchemaError as error:
        raise Refused(str(error)) from None
    except StoreError as error:
        raise Refused(error.message) from None
    except OSError as error:
        raise Refused(f"cannot start: {error.strerror or error}") from None
    return 0


def _serve_workers(settings: Any, args: argparse.Namespace) -> int:
    from dso_server.contracts import ContractsFileError
    from dso_server.errors import ConfigurationError, SchemaError, StoreError
    from dso_server.service import _url
    from dso_server.workers import Supervisor

    supervisor = Supervisor(settings, settings.workers)
    try:
        listeners = supervisor.open()
    except (ContractsFileError, ConfigurationError) as error:
        raise UsageError(str(error)) from None
    except SchemaError as error:
        raise Refused(str(error)) from None
    except StoreError as error:
        raise Refused(error.message) from None
    except OSError as error:
        raise Refused(f"cannot start: {error.strerror or error}") from None
    vtn_url = _url(settings.vtn_host, listeners.vtn.getsockname()[1]) + settings.http_path_prefix.rstrip("/")
    api_url = _url(settings.api_host, listeners.api.getsockname()[1])

    def ready() -> None:
        print(f"dso-server: VTN at {vtn_url} ({settings.workers} workers)", flush=True)
        print(f"dso-server: operator API at {api_url}/api/", flush=True)

    supervisor.serve(on_ready=ready)
    print("dso-server: stopping", flush=True)
    return 0


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
            from datetime import UTC

            source = f"lab:{args.lab}" if args.lab else str(args.file)
            try:
                saved = gstore.save_grid(grid, now=datetime.now(UTC), source=source)
            except GridConflict as error:
                raise UsageError(f"{source}: {error.message}") from None
    except SchemaError as error:
        raise Refused(str(error)) from None
    except StoreError as error:
        raise Refused(error.message) from None
    print(f"{redact(args.db)}: loaded {source}: {grid.summary()}; {len(saved.created_households)} new household(s)")
    return 0


def _publish(args: argparse.Namespace) -> int:
    answer = request(args.api_url, "POST", f"/api/{'bandwidths' if args.kind == 'bandwidth' else 'tariffs'}",
                     publish_body(args))
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        _print_publication(answer)
    return 0


def _modify(args: argparse.Namespace) -> int:
    body = _read_json(args.file)
    collection = "publications" if args.publication else "signals"
    answer = request(args.api_url, "PUT", f"/api/{collection}/{urllib.parse.quote(args.event_id)}", body)
    _print_change(answer, args)
    return 0


def _cancel(args: argparse.Namespace) -> int:
    collection = "publications" if args.publication else "signals"
    answer = request(args.api_url, "DELETE", f"/api/{collection}/{urllib.parse.quote(args.event_id)}")
    _print_change(answer, args)
    return 0


def _households(args: argparse.Namespace) -> int:
    answer = request(args.api_url, "GET", "/api/households")
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    print(_table([(h["connection_point_id"], h["group"], "yes" if h["registered"] else "no", h["last_seen_at"],
                   h["last_telemetry_interval_start"]) for h in answer["households"]],
                 ("connection_point", "group", "registered", "last_seen_at", "last_telemetry_interval")))
    return 0


def _signals(args: argparse.Namespace) -> int:
    answer = request(args.api_url, "GET", "/api/signals", query={"connection_point_id": args.connection_point})
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    print(_table([(s["event_id"], s["connection_point_id"], s["kind"], s["modification_number"], s["status"],
                   s["start"], s["end"]) for s in answer["signals"]],
                 ("event_id", "connection_point", "kind", "modification", "status", "start", "end")))
    return 0


def _telemetry(args: argparse.Namespace) -> int:
    for value, option in ((args.since, "--since"), (args.until, "--until")):
        if value is not None:
            _instant(value, option)
    answer = request(args.api_url, "GET", "/api/telemetry", query={
        "connection_point_id": args.connection_point, "since": args.since, "until": args.until})
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    print(_table([(i["start"], f"{i['import_kw']:.3f}", f"{i['export_kw']:.3f}", f"{i['net_import_kw']:.3f}")
                  for i in answer["intervals"]], ("start", "import_kw", "export_kw", "net_import_kw")))
    return 0


_COMMANDS = {"serve": _serve, "grid": _grid, "publish": _publish, "modify": _modify, "cancel": _cancel,
             "households": _households,
             "signals": _signals, "telemetry": _telemetry}


def _fail(code: int, message: str) -> NoReturn:
    print(f"dso-server: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except UsageError as error:
        _fail(2, str(error))
    except Refused as error:
        _fail(1, str(error))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
