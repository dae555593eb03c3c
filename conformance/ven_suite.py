"""Plays a scripted VTN against a VEN under test: starts the VEN, runs the scenario, judges what it recorded.

The VEN is started as a subprocess from ``--ven-cmd``; these placeholders are filled in: ``{vtn_url}``, ``{ean}``
(the connection point), ``{contract}`` (PROFILE.md §11's contract file for that EAN), ``{speed}``, ``{start}``
(the simulated start, ISO UTC) and ``{poll_interval_s}`` (wall seconds between polls that make 30 simulated
seconds); for a VEN that speaks TLS ``{ca_file}`` (the CA of the scripted VTN's certificate), ``{cert}`` and
``{key}`` (its client certificate, issued by the suite for the run). How the VEN keeps time is the ``clock`` mode:

* ``own``: the VEN runs its own clock at ``{speed}`` from ``{start}`` (options of the product, as our
  hems-client has); the scripted VTN asks for a poll every wall second.
* ``faketime``: the VEN reads the wall clock, as a product ships. The suite starts it under libfaketime
  (``faketime -f '@<start> x<speed>' <command>``), so its wall clock starts at ``{start}`` and runs ``speed``
  times fast, its sleeps and timeouts with it; the scripted VTN asks for a poll every 30 of the VEN's seconds.
* ``wall``: the VEN reads the real clock and the scenario runs in real time (``--speed 1``, 3.7 hours); the
  scripted VTN asks for a poll every 10 s, as the reference VTN does.

The scenario is ``conformance.ven_scenario.STEPS``, started on the VEN's clock at a quarter-hour just before it
registered; the verdicts come from ``conformance.ven_judge``, which judges by what happened, never by wall time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import ssl
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from conformance.certificates import SuiteCertificates, issue
from conformance.rules import Side, rules_for
from conformance.scripted_vtn import PATH, POLL_FREQ, EventSpec, ScriptedVtn
from conformance.ven_judge import (
    REACT,
    Run,
    VenClock,
    answers_to,
    clock_samples,
    due_intervals,
    estimate_clock,
    judge,
)
from conformance.ven_scenario import (
    CONTRACT,
    EAN,
    END_MIN,
    REPORTS_DUE_UNTIL_MIN,
    STEPS,
    Action,
    Step,
    contract_toml,
    payloads,
)
from conformance.verdicts import Recorder, Report, Verdict, suite_facts
from protocol import INTERVAL, HouseholdContract, floor_to_interval

DEFAULT_SPEED = 120.0
"""Simulated seconds per wall second: the scenario's 224 simulated minutes take 112 s."""
REGISTRATION_TIMEOUT_S = 60.0
"""Wall seconds the VEN may take to start and register (a loaded machine starts a Python HEMS slowly)."""
CLOCK_READ_TIMEOUT_S = 10.0
COMPLETION_TIMEOUT_S = 15.0
"""After the scenario, wall seconds to wait for what the VEN still owes (answers, telemetry, re-registration)."""
START_HOUR_UTC = 19
"""The scenario starts on an evening (20:00 in Amsterdam in winter), when households have load to shift."""
ORIGIN_LATE_MIN = 10
"""The scenario's origin is the quarter-hour the VEN registered in, unless that began more than this many minutes
before: then the next one (interval 1 must start at least 5 minutes after the first distribution)."""
FAKETIME_POLL = timedelta(seconds=30)
WALL_POLL = timedelta(seconds=10)

PLACEHOLDERS = ("vtn_url", "ean", "contract", "speed", "start", "poll_interval_s", "ca_file", "cert", "key")
TLS_PLACEHOLDERS = ("ca_file", "cert", "key")
"""A command that uses any of these gets an https scripted VTN and the security rules (VEN-SEC-01)."""
IMPOSTOR_TIMEOUT_S = 30.0
"""Wall seconds a VEN gets to start and try the impostor VTN."""
VEN_RULES_BESIDES_SECURITY = "only the security rules were run (security_only)"


def uses_tls(ven_cmd: str) -> bool:
    return any(f"{{{name}}}" in ven_cmd for name in TLS_PLACEHOLDERS)


class ClockMode(StrEnum):
    OWN = "own"
    FAKETIME = "faketime"
    WALL = "wall"


def default_clock_mode(ven_cmd: str, speed: float) -> ClockMode:
    """``own`` when the command passes ``{speed}`` on, else real time at speed 1 and faketime otherwise."""
    if "{speed}" in ven_cmd:
        return ClockMode.OWN
    return ClockMode.WALL if speed == 1 else ClockMode.FAKETIME


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


def check_clock_mode(mode: ClockMode, speed: float) -> str | None:
    """Why ``mode`` cannot run at ``speed`` on this machine, or None."""
    if mode is ClockMode.WALL and speed != 1:
        return f"--clock wall runs on the real clock: it needs --speed 1, not {speed:g}"
    if mode is ClockMode.FAKETIME and shutil.which("faketime") is None:
        return ("--clock faketime needs libfaketime's 'faketime' command (Debian: apt-get install faketime); "
                "or run the VEN in real time with --speed 1")
    return None


def scenario_start(now: datetime) -> datetime:
    """The latest 19:00 UTC before ``now``."""
    start = now.astimezone(UTC).replace(hour=START_HOUR_UTC, minute=0, second=0, microsecond=0)
    return start if start <= now else start - timedelta(days=1)


def scenario_origin(registered: datetime) -> datetime:
    """The quarter-hour the scenario's interval 0 starts at, for a VEN that registered at ``registered``."""
    floor = floor_to_interval(registered)
    return floor if registered - floor <= timedelta(minutes=ORIGIN_LATE_MIN) else floor + INTERVAL


def wall_seconds(speed: float) -> float:
    """How long the scenario takes on the wall clock at ``speed``, without the VEN's start-up."""
    return END_MIN * 60 / speed


def faketime_prefix(start: datetime, speed: float) -> list[str]:
    """libfaketime's wrapper: the VEN's wall clock reads ``start`` when it starts and runs ``speed`` times fast.
    faketime reads the timestamp in the process's local time zone, so it is written in that zone."""
    local = start.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return ["faketime", "-f", f"@{local} x{speed:g}"]


class _Script:
    """Turns the scenario's steps into what the scripted VTN distributes."""

    def __init__(self, vtn: ScriptedVtn, origin: datetime) -> None:
        self.vtn = vtn
        self.versions = payloads(origin)
        self.current: dict[str, EventSpec] = {}

    def _spec(self, event_id: str, step: Step, now: datetime, **kind: object) -> EventSpec:
        known = self.current.get(event_id)
        modification = known.modification_number + 1 if known is not None else 0
        payload = self.versions[event_id][min(modification, len(self.versions[event_id]) - 1)]
        return EventSpec(event_id=event_id, modification_number=modification, payload=payload,
                         rule=step.answer_rule, created_at=known.created_at if known else now, modified_at=now,
                         response_required=step.response_required, **kind)  # type: ignore[arg-type]

    async def apply(self, step: Step, now: datetime) -> float | None:
        """Carry out one step; returns the wall time at which the VTN began or stopped refusing."""
        once = None
        if step.action in (Action.PUBLISH, Action.BAD, Action.LIE, Action.FOREIGN):
            extra: dict[str, object] = {Action.BAD: {"invalid": True}, Action.LIE: {"status_lie": "completed"},
                                        Action.FOREIGN: {"foreign": True}}.get(step.action, {})
            for event_id in step.event_ids:
                self.current[event_id] = self._spec(event_id, step, now, **extra)
        elif step.action in (Action.CANCEL, Action.CANCEL_BAD):
            for event_id in step.event_ids:
                known = self.current[event_id]
                self.current[event_id] = EventSpec(
                    event_id=event_id, modification_number=known.modification_number + 1, payload=known.payload,
                    rule=step.answer_rule, created_at=known.created_at, modified_at=now, cancelled=True,
                    invalid=step.action is Action.CANCEL_BAD)
        elif step.action is Action.DROP:
            for event_id in step.event_ids:
                self.current.pop(event_id, None)
        elif step.action is Action.STALE:
            once = [EventSpec(event_id=e.event_id, modification_number=0, payload=self.versions[e.event_id][0],
                              rule=step.answer_rule, created_at=e.created_at, modified_at=e.created_at)
                    if e.event_id in step.event_ids else e for e in self.current.values()]
        elif step.action is Action.REREGISTER:
            self.vtn.request_reregistration()
            return None
        elif step.action in (Action.REFUSE, Action.ACCEPT):
            self.vtn.refuse(step.action is Action.REFUSE)
            return time.monotonic()
        elif step.action is Action.CANCEL_REGISTRATION:
            self.vtn.cancel_registration()
            return None
        self.vtn.set_events(list(self.current.values()), once=once)
        return None


class _Session:
    """One run: the scripted VTN, the VEN's clock as estimated so far, the scenario's origin and its edges."""

    def __init__(self, clock: VenClock, poll_freq: timedelta, *, poll_freq_is_wall: bool, wall_clock: bool,
                 contract: HouseholdContract = CONTRACT) -> None:
        self.prior = self.clock = clock
        self.contract = contract
        self.vtn = ScriptedVtn(lambda: self.clock.at(time.monotonic()), poll_freq=poll_freq, contract=contract)
        self.poll_freq_is_wall = poll_freq_is_wall
        self.wall_clock = wall_clock
        self.origin: datetime | None = None
        self.edges: dict[Action, float] = {}
        self.notes: list[str] = []

    def now(self) -> datetime:
        return self.clock.at(time.monotonic())

    def refine_clock(self) -> str:
        self.clock, note = estimate_clock(self.prior, clock_samples(self.vtn.log, self.vtn.received))
        return note

    async def sleep_until(self, moment: datetime) -> None:
        while (remaining := self.clock.wall_at(moment) - time.monotonic()) > 0:
            await asyncio.sleep(min(0.05, max(remaining, 0.005)))

    def run(self, end: datetime) -> Run:
        assert self.origin is not None
        return Run(origin=self.origin, clock=self.clock, end=end, log=tuple(self.vtn.log),
                   distributions=tuple(self.vtn.distributions), received=self.vtn.received,
                   poll_freq=self.vtn.poll_freq, poll_freq_is_wall=self.poll_freq_is_wall,
                   reregister_wall=self.vtn.reregistration_served, hung_up=tuple(self.vtn.hung_up),
                   down_wall=self.edges.get(Action.REFUSE), up_wall=self.edges.get(Action.ACCEPT),
                   cancel_wall=self.vtn.cancel_served, wall_clock=self.wall_clock,
                   notes=tuple(self.notes), raw=tuple(self.vtn.raw), contract=self.contract)


async def run_ven_suite(ven_cmd: str, *, speed: float = DEFAULT_SPEED, clock_mode: ClockMode | None = None,
                        timeout_s: float | None = None, security_only: bool = False,
                        contract: HouseholdContract = CONTRACT) -> list[Verdict]:
    """Start the VEN under test from ``ven_cmd``, run the scenario against it and return the verdicts."""
    report = await run_ven_suite_report(ven_cmd, speed=speed, clock_mode=clock_mode, timeout_s=timeout_s,
                                        security_only=security_only, contract=contract)
    return report.verdicts


async def run_ven_suite_report(ven_cmd: str, *, speed: float = DEFAULT_SPEED, clock_mode: ClockMode | None = None,
                               timeout_s: float | None = None, security_only: bool = False,
                               contract: HouseholdContract = CONTRACT) -> Report:
    """Start the VEN under test from ``ven_cmd``, run the scenario against it and return the verdicts, the
    findings and the facts of the run.

    When ``ven_cmd`` uses {ca_file}, {cert} or {key}, the suite issues its own certificates (``certificates``),
    first starts the VEN against an impostor VTN whose certificate comes from another CA (VEN-SEC-01), then runs
    the scenario over mutual TLS. ``security_only`` stops after the impostor. ``contract`` is the household's
    (``ven_scenario.CONTRACT``, a performance contract, or ``PLAIN_CONTRACT`` for a product that offers none).
    """
    mode = clock_mode if clock_mode is not None else default_clock_mode(ven_cmd, speed)
    problem = check_clock_mode(mode, speed)
    if problem:
        raise ValueError(problem)
    rec = Recorder(Side.VEN)
    start = datetime.now(UTC) if mode is ClockMode.WALL else scenario_start(datetime.now(UTC))
    poll = {ClockMode.OWN: POLL_FREQ, ClockMode.FAKETIME: FAKETIME_POLL, ClockMode.WALL: WALL_POLL}[mode]
    session = _Session(VenClock.reading(start, time.monotonic(), speed), poll,
                       poll_freq_is_wall=mode is ClockMode.OWN, wall_clock=mode is ClockMode.WALL, contract=contract)
    prefix = faketime_prefix(start, speed) if mode is ClockMode.FAKETIME else []
    with tempfile.TemporaryDirectory() as tmp:
        contract_file = Path(tmp) / "contract.toml"
        contract_file.write_text(contract_toml(contract), encoding="utf-8")
        certs = issue(Path(tmp) / "certificates", [EAN]) if uses_tls(ven_cmd) else None

        def command_for(vtn_url: str) -> list[str]:
            ven_cert, ven_key = certs.ven(EAN) if certs is not None else ("", "")
            return prefix + shlex.split(ven_cmd.format(
                vtn_url=vtn_url, ean=EAN, contract=contract_file, speed=speed, start=start.isoformat(),
                poll_interval_s=round(30 / speed, 3), ca_file=certs.ca_file if certs else "", cert=ven_cert,
                key=ven_key))

        if certs is None:
            rec.skip("VEN-SEC-01", "the VEN ran over plain http: give --ven-cmd the {ca_file} {cert} {key} "
                                   "placeholders to test it over TLS")
        else:
            await _impostor(command_for, certs, rec, Path(tmp))
        if security_only:
            for rule in rules_for(Side.VEN):
                if rule.rule_id != "VEN-SEC-01":
                    rec.skip(rule.rule_id, VEN_RULES_BESIDES_SECURITY)
            return rec.report(**suite_facts(), command=ven_cmd, clock=mode.value, speed=speed)
        if certs is not None:
            session.vtn.ssl_context = certs.server_context()
        async with session.vtn:
            command = command_for(session.vtn.url)
            errors = (Path(tmp) / "ven.stderr").open("w+b")  # a file, not a pipe: a chatty VEN must not block
            session.prior = session.clock = VenClock.reading(start, time.monotonic(), speed)
            process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.DEVNULL,
                                                           stderr=errors, start_new_session=True)
            budget = timeout_s if timeout_s is not None else (
                REGISTRATION_TIMEOUT_S + CLOCK_READ_TIMEOUT_S + wall_seconds(speed) * 1.2 + COMPLETION_TIMEOUT_S)
            try:
                await asyncio.wait_for(_play(session, rec), budget)
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
    if session.origin is None:
        session.origin = scenario_origin(session.now())
    session.notes.append(session.refine_clock())
    session.notes.insert(0, f"clock mode {mode.value}, speed {speed:g}; scenario origin "
                            f"{session.origin.isoformat()} on the VEN's clock")
    run = session.run(session.now())
    judge(rec, run, reports_due_until=session.origin + timedelta(minutes=REPORTS_DUE_UNTIL_MIN))
    return rec.report(**suite_facts(), command=ven_cmd, clock=mode.value, speed=speed,
                      product=", ".join(session.vtn.user_agents) or None,
                      scenario_origin=session.origin.isoformat())


async def _impostor(command_for: Callable[[str], list[str]], certs: SuiteCertificates, rec: Recorder,
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
        *command_for(f"https://127.0.0.1:{port}{PATH}"), stdout=asyncio.subprocess.DEVNULL, stderr=errors,
        start_new_session=True)
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


async def _play(session: _Session, rec: Recorder) -> None:
    vtn = session.vtn
    deadline = time.monotonic() + REGISTRATION_TIMEOUT_S
    while (registration := vtn.first("oadrCreatePartyRegistration")) is None:
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.05)
    deadline = time.monotonic() + CLOCK_READ_TIMEOUT_S
    while vtn.first("oadrRegisterReport") is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    rec.evidence("VEN-LIM-01", session.refine_clock())
    session.origin = origin = scenario_origin(session.clock.at(registration.wall))
    script = _Script(vtn, origin)
    for step in STEPS:
        await session.sleep_until(origin + timedelta(minutes=step.at_min))
        edge = await script.apply(step, session.now())
        if edge is not None:
            session.edges[step.action] = edge
    await session.sleep_until(origin + timedelta(minutes=END_MIN))
    await _complete(session, origin + timedelta(minutes=REPORTS_DUE_UNTIL_MIN))


async def _complete(session: _Session, reports_due_until: datetime) -> None:
    """Wait (at most COMPLETION_TIMEOUT_S) for what a slow but conforming VEN still owes: an answer to every
    distribution, the re-registration asked for, the telemetry of every finished interval, the answer to the
    cancellation of its registration."""
    deadline = time.monotonic() + COMPLETION_TIMEOUT_S
    while time.monotonic() < deadline:
        session.refine_clock()
        run = session.run(session.now())
        answered = answers_to(run)
        unanswered = [d for d in run.served if not answered[d.request_id].responses
                      and any(e.opt_type != "none" for e in d.expected)]
        rereg = run.reregister_wall
        registered_again = rereg is None or bool(run.messages("oadrRequestEvent", after=rereg))
        regular, missed = due_intervals(run, reports_due_until)
        rows = run.telemetry()
        reported = all(s in rows for s in (*regular, *missed))
        cancel = run.cancel_wall
        cancel_answered = cancel is None or bool(run.messages("oadrCanceledPartyRegistration", after=cancel))
        if (not unanswered and registered_again and reported and cancel_answered
                and session.now() >= reports_due_until + REACT):
            return
        await asyncio.sleep(0.2)


async def _stop(process: asyncio.subprocess.Process) -> None:
    """Stop the VEN and whatever it started (faketime runs the VEN as its child): its whole process group, politely
    first, then for good."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(process.wait(), 5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    await process.wait()
