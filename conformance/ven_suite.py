"""Plays a scripted VTN (raw OpenADR 2.0b XML through openleadr.messaging on aiohttp) against a VEN under test.

The VEN is started as a subprocess from ``--ven-cmd``; these placeholders are filled in: ``{vtn_url}``, ``{ean}``
(the connection point), ``{contract}`` (a TOML contract file for that EAN), ``{speed}`` and ``{start}`` (the
simulated start, ISO UTC). The VEN must run its clock at ``{speed}`` from ``{start}`` so that 15-minute intervals
pass in seconds.

Scenario: registration → oadrRequestEvent → report registration → a valid firm bandwidth (import limit
``LIMIT_KW``) → optIn expected → telemetry watched → an out-of-profile event (negative import limit) → optOut
with an error code expected → telemetry keeps respecting the last valid limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from openleadr.messaging import create_message, parse_message

from conformance.rules import Side
from conformance.verdicts import Recorder, Verdict
from protocol import INTERVAL, BandwidthInterval, CapacityBandwidth, Firmness, floor_to_interval, make_ean18
from protocol.errors import ProfileError
from protocol.oadr20b import decode_report, encode_event, report_requests_for
from protocol.oadr20b.names import REPORT_TELEMETRY, SIGNAL_IMPORT_LIMIT
from protocol.reports import Telemetry

LIMIT_KW = 2.5
EXPORT_LIMIT_KW = 5.0
WATCH_INTERVALS = 4
"""How many simulated 15-minute intervals of telemetry are watched after each event."""
SKEW_MARGIN = 2 * INTERVAL
"""The VEN's accelerated clock starts when its process does, so it lags ours by its start-up time (at speed 600,
one wall second is ten simulated minutes). Intervals closer than this to the out-of-profile event are not judged."""
TOLERANCE_KW = 0.1
TOLERANCE_FRACTION = 0.02
VEN_ID = "conformance-ven-1"
CONTRACT_TOML = """connection_point_id = "{ean}"
contracted_max_import_kw = 17.0
contracted_max_export_kw = 10.0
failsafe_import_kw = 4.2
failsafe_export_kw = 4.2
failsafe_duration_s = 7200

[comfort]
indoor_setpoint_c = 21.0
"""


def tolerance_kw(limit_kw: float) -> float:
    return max(TOLERANCE_KW, TOLERANCE_FRACTION * limit_kw)


@dataclass
class Seen:
    """What the scripted VTN received, each with the wall time it arrived."""

    log: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    telemetry: list[tuple[float, Telemetry]] = field(default_factory=list)

    def first(self, kind: str) -> tuple[float, dict[str, Any]] | None:
        return next(((t, p) for t, k, p in self.log if k == kind), None)


class ScriptedVtn:
    def __init__(self) -> None:
        self.seen = Seen()
        self.events: list[dict[str, Any]] = []
        self.pending = False
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            kind, payload = parse_message(await request.read())
        except Exception as error:
            self.seen.log.append((time.monotonic(), "unparseable", {"error": str(error)}))
            return web.Response(status=400, text=str(error))
        self.seen.log.append((time.monotonic(), kind, payload))
        answer_kind, answer = self._answer(kind, payload)
        answer.setdefault("response", {"response_code": 200, "response_description": "OK",
                                       "request_id": payload.get("request_id")})
        return web.Response(text=create_message(answer_kind, **answer), content_type="application/xml")

    def _answer(self, kind: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if kind in ("oadrCreatePartyRegistration", "oadrQueryRegistration"):
            self.pending = bool(self.events)
            return "oadrCreatedPartyRegistration", {
                "ven_id": VEN_ID, "registration_id": "reg-1", "vtn_id": "CONFORMANCE-VTN",
                "profiles": [{"profile_name": "2.0b", "transports": [{"transport_name": "simpleHttp"}]}],
                "requested_oadr_poll_freq": timedelta(seconds=1)}
        if kind == "oadrRequestEvent":
            return "oadrDistributeEvent", {"events": list(self.events), "vtn_id": "CONFORMANCE-VTN",
                                           "request_id": "dist"}
        if kind == "oadrPoll" and self.pending:
            self.pending = False
            return "oadrDistributeEvent", {"events": list(self.events), "vtn_id": "CONFORMANCE-VTN",
                                           "request_id": "dist"}
        if kind == "oadrRegisterReport":
            ids = (f"rr-{i}" for i in range(100))
            return "oadrRegisteredReport", {"ven_id": VEN_ID, "report_requests": report_requests_for(
                payload.get("reports") or [], request_ids=ids)}
        if kind == "oadrUpdateReport":
            for report in payload.get("reports") or []:
                if report.get("report_name") == REPORT_TELEMETRY:
                    with contextlib.suppress(ProfileError, ValueError):
                        decoded = decode_report(report)
                        if isinstance(decoded, Telemetry):
                            self.seen.telemetry.append((time.monotonic(), decoded))
            return "oadrUpdatedReport", {"ven_id": VEN_ID}
        return "oadrResponse", {"ven_id": VEN_ID}

    def distribute(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.pending = True

    async def __aenter__(self) -> ScriptedVtn:
        app = web.Application()
        app.router.add_post("/OpenADR2/Simple/2.0b/{service}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/OpenADR2/Simple/2.0b"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def _wait(predicate: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.1)
    return predicate()


def _answers(seen: Seen, event_id: str) -> list[dict[str, Any]]:
    return [r for _, k, p in seen.log if k == "oadrCreatedEvent"
            for r in p.get("event_responses") or [] if r.get("event_id") == event_id]


async def run_ven_suite(ven_cmd: str, *, speed: float = 600.0, timeout_s: float = 40.0) -> list[Verdict]:
    rec = Recorder(Side.VEN)
    ean = make_ean18("87168712999990077")
    start = floor_to_interval(datetime.now(UTC))
    with tempfile.TemporaryDirectory() as tmp:
        contract = Path(tmp) / "contract.toml"
        contract.write_text(CONTRACT_TOML.format(ean=ean), encoding="utf-8")
        async with ScriptedVtn() as vtn:
            command = ven_cmd.format(vtn_url=vtn.url, ean=ean, contract=contract, speed=speed,
                                     start=start.isoformat())
            wall0 = time.monotonic()
            process = await asyncio.create_subprocess_exec(
                *shlex.split(command), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
            try:
                await asyncio.wait_for(_scenario(vtn, rec, start, wall0, speed, ean), timeout_s)
            except TimeoutError:
                rec.evidence("VEN-REG-01", f"scenario stopped after {timeout_s} s")
            finally:
                if process.returncode is None:
                    process.terminate()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(process.wait(), 5)
                    if process.returncode is None:
                        process.kill()
                        await process.wait()
    return rec.verdicts()


async def _scenario(vtn: ScriptedVtn, rec: Recorder, start: datetime, wall0: float, speed: float,
                    ean: str) -> None:
    seen = vtn.seen

    def sim(wall: float) -> datetime:
        return start + timedelta(seconds=(wall - wall0) * speed)

    registered = await _wait(lambda: seen.first("oadrCreatePartyRegistration"), 15)
    if not registered:
        rec.check("VEN-REG-01", False, "no oadrCreatePartyRegistration within 15 s")
        return
    name = str(registered[1].get("ven_name"))  # openleadr parses an all-digit name to int
    rec.check("VEN-REG-01", len(name) == 18 and name.isdigit()
              and make_ean18(name[:17]) == name, f"venName {name!r}", payload=registered[1])
    requested = await _wait(lambda: seen.first("oadrRequestEvent"), 3)
    rec.check("VEN-REG-02", requested is not None and requested[0] >= registered[0],
              "oadrRequestEvent after registration" if requested else "no oadrRequestEvent within 3 s")
    await asyncio.sleep(2)
    polls = [t for t, k, _ in seen.log if k == "oadrPoll" and t > registered[0]]
    rec.check("VEN-REG-03", len(polls) >= 2, f"{len(polls)} oadrPoll in the 2 s after registration "
              "(poll frequency 1 s)")
    offer = seen.first("oadrRegisterReport")
    names = [r.get("report_name") for r in (offer[1].get("reports") or [])] if offer else []
    rec.check("VEN-RPT-01", REPORT_TELEMETRY in names or "METADATA_" + REPORT_TELEMETRY in names,
              f"offered reports {names}")

    valid = CapacityBandwidth(firmness=Firmness.FIRM, intervals=tuple(
        BandwidthInterval(start=start + i * INTERVAL, import_limit_kw=LIMIT_KW, export_limit_kw=EXPORT_LIMIT_KW)
        for i in range(96)))
    now = sim(time.monotonic())
    good = encode_event(valid, event_id="conf-bw-1", modification_number=0, ven_id=VEN_ID, created_at=now,
                        modified_at=now, now=now)
    vtn.distribute([good])
    sent_at = time.monotonic()
    answers = await _wait(lambda: _answers(seen, "conf-bw-1"), 4)
    ok = any(a.get("opt_type") == "optIn" and int(a.get("modification_number", -1)) == 0 for a in answers)
    rec.check("VEN-ANS-01", ok, f"answers to conf-bw-1#0: {answers}")
    await asyncio.sleep(WATCH_INTERVALS * INTERVAL.total_seconds() / speed)

    bad = encode_event(valid, event_id="conf-bad-1", modification_number=0, ven_id=VEN_ID, created_at=now,
                       modified_at=now, now=sim(time.monotonic()))
    for signal in bad["event_signals"]:
        if signal["signal_name"] == SIGNAL_IMPORT_LIMIT:
            for interval in signal["intervals"]:
                interval["signal_payload"] = -1.0
    vtn.distribute([good, bad])
    bad_at = time.monotonic()
    answers = await _wait(lambda: _answers(seen, "conf-bad-1"), 4)
    ok = any(a.get("opt_type") == "optOut" and int(a.get("response_code", 200)) >= 400 for a in answers)
    rec.check("VEN-EVT-01", ok, f"answers to conf-bad-1 (negative import limit): {answers}")
    await asyncio.sleep(WATCH_INTERVALS * INTERVAL.total_seconds() / speed)
    _judge_telemetry(rec, seen, sim(sent_at), sim(bad_at))


def _judge_telemetry(rec: Recorder, seen: Seen, limit_known: datetime, bad_sent: datetime) -> None:
    rows = {i.start: i for _, t in seen.telemetry for i in t.intervals}
    rec.check("VEN-RPT-02", len(rows) >= 2, f"{len(rows)} TELEMETRY_USAGE intervals received")
    judged_from = floor_to_interval(limit_known) + INTERVAL
    allowed = LIMIT_KW + tolerance_kw(LIMIT_KW)
    for start, row in sorted(rows.items()):
        if start < judged_from:
            continue
        if start >= floor_to_interval(bad_sent) + INTERVAL:
            rule = "VEN-LIM-02"
        elif start + SKEW_MARGIN <= bad_sent:
            rule = "VEN-LIM-01"
        else:  # too close to the out-of-profile event to say which limit the VEN's own clock was under
            continue
        rec.check(rule, row.import_kw <= allowed, f"interval {start.isoformat()}: import {row.import_kw:.3f} kW, "
                  f"limit {LIMIT_KW} kW + tolerance {tolerance_kw(LIMIT_KW)} kW", import_kw=row.import_kw,
                  limit_kw=LIMIT_KW)
