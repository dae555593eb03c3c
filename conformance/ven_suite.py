"""Plays a scripted VTN against a VEN under test: starts the VEN, runs the scenario, judges what it recorded.

The VEN is started as a subprocess from ``--ven-cmd``; these placeholders are filled in: ``{vtn_url}``, ``{ean}``
(the connection point), ``{contract}`` (a TOML contract file for that EAN), ``{speed}``, ``{start}`` (the
simulated start, ISO UTC) and ``{poll_interval_s}`` (wall seconds between polls that make 30 simulated seconds);
for a VEN that speaks TLS ``{ca_file}`` (the CA of the scripted VTN's certificate), ``{cert}`` and ``{key}`` (its
client certificate, issued by the suite for the run). The VEN must run its clock at ``{speed}`` from ``{start}``:
every time of the profile (the 120 s failsafe, the 60 s poll) is simulated time; the scripted VTN's requested poll
frequency (1 s) is wall time.

The scenario is ``conformance.ven_scenario.STEPS``; the verdicts come from ``conformance.ven_judge``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import ssl
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conformance.certificates import SuiteCertificates, issue
from conformance.rules import Side, rules_for
from conformance.scripted_vtn import PATH, EventSpec, ScriptedVtn
from conformance.ven_judge import Run, judge
from conformance.ven_scenario import CONTRACT, CONTRACT_TOML, EAN, END_MIN, STEPS, Action, Step, payloads, snapshots
from conformance.verdicts import Recorder, Verdict

DEFAULT_SPEED = 120.0
"""Simulated seconds per wall second: the scenario's 210 simulated minutes take 105 s."""
REGISTRATION_TIMEOUT_S = 20.0
CLOCK_READ_TIMEOUT_S = 5.0
MAX_CLOCK_SHIFT = timedelta(minutes=30)
START_HOUR_UTC = 19
"""The scenario starts on an evening (20:00 in Amsterdam in winter), when households have load to shift."""


PLACEHOLDERS = ("vtn_url", "ean", "contract", "speed", "start", "poll_interval_s", "ca_file", "cert", "key")
TLS_PLACEHOLDERS = ("ca_file", "cert", "key")
"""A command that uses any of these gets an https scripted VTN and the security rules (VEN-SEC-01)."""
IMPOSTOR_TIMEOUT_S = 30.0
"""Wall seconds a VEN gets to start and try the impostor VTN."""
VEN_RULES_BESIDES_SECURITY = "only the security rules were run (security_only)"


def uses_tls(ven_cmd: str) -> bool:
    return any(f"{{{name}}}" in ven_cmd for name in TLS_PLACEHOLDERS)


def check_ven_cmd(ven_cmd: str) -> str | None:
    """Why ``ven_cmd`` cannot be used, or None."""
    if "{vtn_url}" not in ven_cmd:
        return "must contain {vtn_url}, where the suite puts its VTN's URL"
    try:
        filled = ven_cmd.format(**dict.fromkeys(PLACEHOLDERS, "x"))
    except (KeyError, IndexError) as error:
        return f"has an unknown placeholder {error}; known are " + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
    except ValueError as error:
        return f"is not a valid template ({error}); write a literal brace as {{{{ or }}}}"
    try:
        shlex.split(filled)
    except ValueError as error:
        return f"cannot be split into words: {error}"
    return None


def scenario_start(now: datetime) -> datetime:
    """The latest 19:00 UTC before ``now``."""
    start = now.astimezone(UTC).replace(hour=START_HOUR_UTC, minute=0, second=0, microsecond=0)
    return start if start <= now else start - timedelta(days=1)


def wall_seconds(speed: float) -> float:
    """How long the scenario takes on the wall clock at ``speed``, without the VEN's start-up."""
    return END_MIN * 60 / speed


class SuiteClock:
    """The suite's simulated clock: ``start`` at wall time ``wall0``, running at ``speed``."""

    def __init__(self, start: datetime, speed: float) -> None:
        self.start, self.speed, self.wall0 = start, speed, time.monotonic()

    def now(self) -> datetime:
        return self.at(time.monotonic())

    def at(self, wall: float) -> datetime:
        return self.start + timedelta(seconds=(wall - self.wall0) * self.speed)

    def follow(self, ven_time: datetime, wall: float) -> timedelta:
        """Shift this clock so that at ``wall`` it read ``ven_time`` (what the VEN's clock said then); returns the
        shift. The VEN under test starts its clock when its process is ready, seconds after the suite's."""
        shift = self.at(wall) - ven_time
        self.wall0 += shift.total_seconds() / self.speed
        return shift


class _Script:
    """Turns the scenario's steps into what the scripted VTN distributes."""

    def __init__(self, vtn: ScriptedVtn, start: datetime) -> None:
        self.vtn = vtn
        self.versions = payloads(start)
        self.current: dict[str, EventSpec] = {}

    def _spec(self, event_id: str, step: Step, now: datetime, **kind: object) -> EventSpec:
        known = self.current.get(event_id)
        modification = known.modification_number + 1 if known is not None else 0
        payload = self.versions[event_id][min(modification, len(self.versions[event_id]) - 1)]
        return EventSpec(event_id=event_id, modification_number=modification, payload=payload,
                         rule=step.answer_rule, created_at=known.created_at if known else now, modified_at=now,
                         response_required=step.response_required, **kind)  # type: ignore[arg-type]

    async def apply(self, step: Step, now: datetime) -> float | None:
        """Carry out one step; returns the wall time of a reregistration request or an outage edge."""
        once = None
        if step.action in (Action.PUBLISH, Action.BAD, Action.LIE):
            extra: dict[str, object] = {"invalid": True} if step.action is Action.BAD else (
                {"status_lie": "completed"} if step.action is Action.LIE else {})
            for event_id in step.event_ids:
                self.current[event_id] = self._spec(event_id, step, now, **extra)
        elif step.action is Action.CANCEL:
            for event_id in step.event_ids:
                known = self.current[event_id]
                self.current[event_id] = EventSpec(
                    event_id=event_id, modification_number=known.modification_number + 1, payload=known.payload,
                    rule=step.answer_rule, created_at=known.created_at, modified_at=now, cancelled=True)
        elif step.action is Action.DROP:
            for event_id in step.event_ids:
                self.current.pop(event_id, None)
        elif step.action is Action.STALE:
            once = [EventSpec(event_id=e.event_id, modification_number=0, payload=self.versions[e.event_id][0],
                              rule=step.answer_rule, created_at=e.created_at, modified_at=e.created_at)
                    if e.event_id in step.event_ids else e for e in self.current.values()]
        elif step.action is Action.REREGISTER:
            self.vtn.request_reregistration()
            return time.monotonic()
        elif step.action is Action.VTN_DOWN:
            await self.vtn.down()
            return time.monotonic()
        elif step.action is Action.VTN_UP:
            await self.vtn.up()
            return time.monotonic()
        self.vtn.set_events(list(self.current.values()), once=once)
        return None


async def run_ven_suite(ven_cmd: str, *, speed: float = DEFAULT_SPEED, timeout_s: float | None = None,
                        security_only: bool = False) -> list[Verdict]:
    """Start the VEN under test from ``ven_cmd``, run the scenario against it and return the verdicts.

    When ``ven_cmd`` uses {ca_file}, {cert} or {key}, the suite issues its own certificates (``certificates``),
    first starts the VEN against an impostor VTN whose certificate comes from another CA (VEN-SEC-01), then runs
    the scenario over mutual TLS. ``security_only`` stops after the impostor.
    """
    rec = Recorder(Side.VEN)
    start = scenario_start(datetime.now(UTC))
    clock = SuiteClock(start, speed)
    edges: dict[Action, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        contract = Path(tmp) / "contract.toml"
        contract.write_text(CONTRACT_TOML, encoding="utf-8")
        certs = issue(Path(tmp) / "certificates", [EAN]) if uses_tls(ven_cmd) else None

        def command_for(vtn_url: str) -> str:
            ven_cert, ven_key = certs.ven(EAN) if certs is not None else ("", "")
            return ven_cmd.format(vtn_url=vtn_url, ean=EAN, contract=contract, speed=speed, start=start.isoformat(),
                                  poll_interval_s=round(30 / speed, 3), ca_file=certs.ca_file if certs else "",
                                  cert=ven_cert, key=ven_key)

        if certs is None:
            rec.skip("VEN-SEC-01", "the VEN ran over plain http: give --ven-cmd the {ca_file} {cert} {key} "
                                   "placeholders to test it over TLS")
        else:
            await _impostor(command_for, certs, rec, Path(tmp))
        if security_only:
            for rule in rules_for(Side.VEN):
                if rule.rule_id != "VEN-SEC-01":
                    rec.skip(rule.rule_id, VEN_RULES_BESIDES_SECURITY)
            return rec.verdicts()
        vtn = ScriptedVtn(clock.now, ssl_context=certs.server_context() if certs is not None else None,
                          contract=CONTRACT)
        async with vtn:
            command = command_for(vtn.url)
            errors = (Path(tmp) / "ven.stderr").open("w+b")  # a file, not a pipe: a chatty VEN must not block
            clock.wall0 = time.monotonic()
            process = await asyncio.create_subprocess_exec(
                *shlex.split(command), stdout=asyncio.subprocess.DEVNULL, stderr=errors)
            try:
                budget = timeout_s if timeout_s is not None else wall_seconds(speed) + 3 * REGISTRATION_TIMEOUT_S
                await asyncio.wait_for(_play(vtn, clock, rec, edges), budget)
            except TimeoutError:
                rec.evidence("VEN-REG-01", f"scenario stopped after {budget:g} s of wall time")
            finally:
                exited_early = process.returncode
                await _stop(process)
                errors.seek(0)
                stderr = errors.read().decode(errors="replace")
                errors.close()
        if exited_early is not None:
            rec.evidence("VEN-REG-01", f"the VEN exited with code {exited_early} before the scenario ended",
                         stderr=stderr[-3000:])
    run = Run(start=start, speed=speed, wall0=clock.wall0, end=clock.now(), log=tuple(vtn.log), raw=tuple(vtn.raw),
              distributions=tuple(vtn.distributions), received=vtn.received, snapshots=tuple(snapshots(start)),
              reregister_wall=edges.get(Action.REREGISTER), down_wall=edges.get(Action.VTN_DOWN),
              up_wall=edges.get(Action.VTN_UP))
    judge(rec, run)
    return rec.verdicts()


async def _impostor(command_for: Callable[[str], str], certs: SuiteCertificates, rec: Recorder,
                    workdir: Path) -> None:
    """VEN-SEC-01: start the VEN against a VTN whose certificate (valid for 127.0.0.1) comes from a CA the VEN
    was not given. It passes when it aborts the TLS handshake, fails when it completes it (and shows what it
    sent), is not run when it never tries within ``IMPOSTOR_TIMEOUT_S``."""
    judged = asyncio.Event()
    context = certs.server_context(impostor=True)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                await writer.start_tls(context)
            except (ssl.SSLError, ConnectionError, OSError) as error:
                if not judged.is_set():
                    rec.check("VEN-SEC-01", True, "the VEN aborted the TLS handshake with an impostor VTN whose "
                              f"certificate comes from a CA it was not given ({type(error).__name__}: {error})")
                return
            try:
                request = await asyncio.wait_for(reader.read(4096), 5)
            except (TimeoutError, ConnectionError, OSError):
                request = b""
            if not judged.is_set():
                first = request.split(b"\r\n", 1)[0].decode(errors="replace")
                kind = _message_kind(request)
                rec.check("VEN-SEC-01", False, "the VEN completed a TLS handshake with an impostor VTN whose "
                          f"certificate comes from a CA it was not given, and sent {first!r} ({kind})")
        finally:
            judged.set()
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    errors = (workdir / "impostor.stderr").open("w+b")
    process = await asyncio.create_subprocess_exec(
        *shlex.split(command_for(f"https://127.0.0.1:{port}{PATH}")), stdout=asyncio.subprocess.DEVNULL,
        stderr=errors)
    try:
        await asyncio.wait_for(judged.wait(), IMPOSTOR_TIMEOUT_S)
    except TimeoutError:
        errors.seek(0)
        rec.skip("VEN-SEC-01", f"the VEN did not connect to the impostor VTN within {IMPOSTOR_TIMEOUT_S:g} s")
        rec.evidence("VEN-SEC-01", "no connection to the impostor VTN",
                     stderr=errors.read().decode(errors="replace")[-2000:])
    finally:
        await _stop(process)
        errors.close()
        server.close()
        await server.wait_closed()


def _message_kind(request: bytes) -> str:
    for kind in ("oadrCreatePartyRegistration", "oadrQueryRegistration", "oadrPoll", "oadrRequestEvent"):
        if kind.encode() in request:
            return kind
    return "no OpenADR message read"


async def _play(vtn: ScriptedVtn, clock: SuiteClock, rec: Recorder, edges: dict[Action, float]) -> None:
    deadline = time.monotonic() + REGISTRATION_TIMEOUT_S
    while vtn.first("oadrCreatePartyRegistration") is None:
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.05)
    await _follow_ven_clock(vtn, clock, rec)
    script = _Script(vtn, clock.start)
    for step in STEPS:
        await _sleep_until(clock, clock.start + timedelta(minutes=step.at_min))
        edge = await script.apply(step, clock.now())
        if edge is not None:
            edges[step.action] = edge
    await _sleep_until(clock, clock.start + timedelta(minutes=END_MIN))


async def _follow_ven_clock(vtn: ScriptedVtn, clock: SuiteClock, rec: Recorder) -> None:
    """Run the scenario on the VEN's clock, read from the createdDateTime of its oadrRegisterReport (§9.1: now)."""
    deadline = time.monotonic() + CLOCK_READ_TIMEOUT_S
    while (offer := vtn.first("oadrRegisterReport")) is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    stamps = [r.get("created_date_time") for r in (offer.payload.get("reports") or [])] if offer else []
    ven_time = next((t for t in stamps if isinstance(t, datetime)), None)
    if offer is None or ven_time is None or abs(clock.at(offer.wall) - ven_time) > MAX_CLOCK_SHIFT:
        rec.evidence("VEN-LIM-01", "could not read the VEN's clock from an oadrRegisterReport; the scenario runs on "
                     "the suite's clock", created_date_time=ven_time)
        return
    shift = clock.follow(ven_time, offer.wall)
    rec.evidence("VEN-LIM-01", f"the scenario runs on the VEN's clock, {shift.total_seconds():.0f} simulated s "
                 "behind the suite's start (the VEN's start-up)", created_date_time=ven_time)


async def _sleep_until(clock: SuiteClock, moment: datetime) -> None:
    while (now := clock.now()) < moment:
        await asyncio.sleep(min(0.05, max((moment - now).total_seconds() / clock.speed, 0.005)))


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), 5)
        if process.returncode is None:
            process.kill()
            await process.wait()
