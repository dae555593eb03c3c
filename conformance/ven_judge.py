"""Verdicts on a VEN from what the scripted VTN recorded. Pure: the run is data, the checks go into a Recorder.

Theory of operation
-------------------
Nothing here depends on how fast the machine was. The judge never asks "did it happen within so many wall
seconds"; it asks what a conforming VEN owed given what the suite knows happened:

* **The VEN's clock** (``VenClock``): it reads ``base + speed × wall``. Every timestamp the VEN sends (the
  createdDateTime of its oadrRegisterReport and oadrUpdateReports) says its clock read at least that much when the
  message arrived, so the largest such lower bound is its clock up to the fastest message's transport time. Under
  faketime the suite also knows the clock it gave the VEN.
* **When each change reached the VEN**: the wall time the scripted VTN served each oadrDistributeEvent, and when
  the VEN answered it (oadrCreatedEvent carrying the distribution's requestID), mapped onto the VEN's clock.
  A conforming VEN applies a change somewhere between being served it and ``REACT`` after it answered. The
  failsafe is owed from 120 s after the last exchange the VTN answered before it began to refuse (§10.1: a refusal
  or a request to re-register is no contact; §10.2), give or take ``FAILSAFE_ALLOWANCE``; it is released by the
  first distribution after the VTN's return that brings fresh limits covering the present (§10.3).
* **Each judged interval** (labelled by the VEN's own clock in its telemetry) is held against every limit a
  conforming VEN could have had during it: the interval passes when its mean import is within the lowest of them
  (plus the tolerance of §5.2.2), fails when it exceeds even the highest, and is **inconclusive** — with the
  change and the moments named — when it lies between, which happens only when a change reached the VEN so late
  that a conforming VEN and a faulty one cannot be told apart.
* Answers, re-registration and telemetry are judged by what arrived before the run ended (the suite waits for
  what is owed), never by a window of wall time.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from conformance.scripted_vtn import Distribution, EventSpec, Message, Received
from conformance.ven_scenario import CHEAP, CONTRACT, EXPENSIVE, JUDGED, PERFORMANCE_RULES, RESUMED, tariff
from conformance.verdicts import Finding, Recorder
from protocol import INTERVAL, CapacityBandwidth, HouseholdContract, TouTariff, floor_to_interval, make_ean18
from protocol.effective import effective_limits
from protocol.limits import MAX_POWER_KW, exceeds_limit, limit_tolerance_kw
from protocol.oadr20b.names import (
    RAW_COMFORT_RIDS,
    READING_MEAN,
    REPORT_COMFORT,
    REPORT_NEED,
    REPORT_PERFORMANCE,
    REPORT_TELEMETRY,
    SPECIFIER_TELEMETRY,
)
from protocol.reports import TelemetryInterval
from protocol.timebase import local_day_bounds

REACT = timedelta(seconds=60)
"""How long after answering a distribution a conforming VEN may take to have the new limit in force."""
FAILSAFE_AFTER = timedelta(seconds=120)
"""PROFILE §10.2."""
FAILSAFE_ALLOWANCE = timedelta(seconds=120)
"""How late after 120 s of silence a conforming VEN may still engage its failsafe (one poll period and its
control step)."""
SEND_WITHIN = timedelta(minutes=1)
"""A finished interval's telemetry is due within 60 s (PROFILE.md §9.3.1)."""
TELEMETRY_CHUNK = 96
"""PROFILE.md §9.3.2: at most 96 intervals per telemetry report."""
REGISTER_FIRST_WAIT_S = 60.0
REGISTER_MAX_WAIT_S = 600.0
REGISTER_JITTER = 0.2
"""PROFILE.md §2.11: after a refusal 60 s, doubling up to 10 minutes, each wait ×0.8-1.2."""
POLL_MEDIAN_FACTOR = 1.5
"""VEN-REG-03: the median gap between polls may be this many times the requested poll frequency."""
TOU_MIN_SHIFT_KW = 0.5


# ------------------------------------------------------------------------------------------------ clock


@dataclass(frozen=True)
class VenClock:
    """The VEN's clock as the suite sees it: at wall time ``wall`` (time.monotonic()) it reads ``base + speed ×
    wall``."""

    base: datetime
    speed: float

    @classmethod
    def reading(cls, moment: datetime, wall: float, speed: float) -> VenClock:
        """The clock that reads ``moment`` at ``wall``."""
        return cls(moment - timedelta(seconds=wall * speed), speed)

    def at(self, wall: float) -> datetime:
        return self.base + timedelta(seconds=wall * self.speed)

    def wall_at(self, moment: datetime) -> float:
        return (moment - self.base).total_seconds() / self.speed


def clock_samples(log: Iterable[Message], received: Received) -> list[tuple[float, datetime]]:
    """(arrival wall, VEN timestamp) pairs: the createdDateTime of every report the VEN offered or sent."""
    samples = []
    for message in log:
        if message.kind in ("oadrRegisterReport", "oadrUpdateReport"):
            for report in message.payload.get("reports") or []:
                stamp = report.get("created_date_time") if isinstance(report, dict) else None
                if isinstance(stamp, datetime) and stamp.tzinfo is not None:
                    samples.append((message.wall, stamp))
    return samples


def estimate_clock(prior: VenClock, samples: Sequence[tuple[float, datetime]], *,
                   earliest: timedelta = timedelta(hours=2), latest: timedelta = timedelta(minutes=5)
                   ) -> tuple[VenClock, str]:
    """Refine ``prior`` with the VEN's timestamps; also a sentence for the evidence. Each sample bounds the clock
    from below; the largest bound within [prior - earliest, prior + latest] wins (a VEN starts its clock at or
    after its launch, so it runs behind the prior, never far ahead)."""
    bounds = [VenClock.reading(stamp, wall, prior.speed).base for wall, stamp in samples]
    usable = [b for b in bounds if prior.base - earliest <= b <= prior.base + latest]
    if not usable:
        why = "it sent no timestamp" if not bounds else (
            f"its {len(bounds)} timestamps are {min(abs(b - prior.base) for b in bounds)} or more off that clock")
        return prior, f"the VEN's clock is taken to be the one it was given ({why})"
    base = max(usable)
    shift = (base - prior.base).total_seconds()
    return VenClock(base, prior.speed), (f"the VEN's clock, from {len(usable)} of its timestamps, runs {shift:+.0f} "
                                        "simulated s from the clock it was given")


# ------------------------------------------------------------------------------------------------ the run


@dataclass(frozen=True)
class Run:
    """What one run of the scenario recorded, and the VEN's clock as finally estimated."""

    origin: datetime
    """The scenario's origin S on the VEN's clock (interval k starts at S + 15k minutes)."""
    clock: VenClock
    end: datetime
    """The VEN's clock when the run ended."""
    log: tuple[Message, ...]
    distributions: tuple[Distribution, ...]
    received: Received
    poll_freq: timedelta
    poll_freq_is_wall: bool
    """Whether the requested poll frequency is wall time (a VEN on its own simulated clock) or VEN time."""
    reregister_wall: float | None = None
    down_wall: float | None = None
    """When the VTN began to refuse (no contact from then, PROFILE.md §10.1)."""
    up_wall: float | None = None
    """When it accepted again."""
    cancel_wall: float | None = None
    """When a poll was answered with oadrCancelPartyRegistration."""
    wall_clock: bool = False
    """The VEN ran on the real clock (--clock wall): its timestamps can be held to ±2 s (VEN-CLK-01)."""
    hung_up: tuple[tuple[float, str], ...] = ()
    """(wall, message type): requests the VEN gave up on before the suite's answer went out."""
    notes: tuple[str, ...] = ()
    raw: tuple[tuple[float, str], ...] = ()
    """(wall time, XML) of every message the VEN sent, as it arrived."""
    contract: HouseholdContract = CONTRACT
    """The household's contract the VEN was given."""

    @property
    def served(self) -> tuple[Distribution, ...]:
        """The distributions the VEN received (not those it hung up on)."""
        return tuple(d for d in self.distributions if d.delivered)

    def at(self, wall: float) -> datetime:
        return self.clock.at(wall)

    def messages(self, kind: str, after: float = float("-inf")) -> list[Message]:
        return [m for m in self.log if m.kind == kind and m.wall >= after]

    def telemetry(self) -> dict[datetime, TelemetryInterval]:
        return {i.start: i for _, _, t in self.received.telemetry for i in t.intervals}

    def interval(self, k: int) -> datetime:
        return self.origin + k * INTERVAL


# ------------------------------------------------------------------------------------------------ registration


def judge_registration(rec: Recorder, run: Run) -> bool:
    """VEN-REG-01..04. False when the VEN never registered (nothing else can be judged)."""
    registrations = run.messages("oadrCreatePartyRegistration")
    if not registrations:
        rec.check("VEN-REG-01", False, "no oadrCreatePartyRegistration arrived")
        return False
    first = registrations[0]
    name = str(first.payload.get("ven_name"))  # openleadr parses an all-digit name to int
    rec.check("VEN-REG-01", len(name) == 18 and name.isdigit() and make_ean18(name[:17]) == name,
              f"venName {name!r}", payload=first.payload)
    requested = run.messages("oadrRequestEvent", after=first.wall)
    rec.check("VEN-REG-02", bool(requested), "oadrRequestEvent after registration" if requested
              else "no oadrRequestEvent after registration")
    judge_poll_rate(rec, run, first.wall)
    if run.reregister_wall is not None:
        asked = run.reregister_wall
        again = [m for m in registrations if m.wall > asked]
        delay = f", {(run.at(again[0].wall) - run.at(asked)).total_seconds():.0f} simulated s later" if again else ""
        rec.check("VEN-REG-04", bool(again), f"{len(again)} oadrCreatePartyRegistration after the "
                  f"oadrRequestReregistration{delay}")
        if again:
            after = run.messages("oadrRequestEvent", after=again[0].wall)
            rec.check("VEN-REG-04", bool(after), "oadrRequestEvent after registering again" if after
                      else "no oadrRequestEvent after registering again")
    return True


def judge_poll_rate(rec: Recorder, run: Run, registered: float) -> None:
    """VEN-REG-03: the median gap between polls (outside the outage) against the requested frequency, both in the
    units the frequency was requested in (wall seconds for a VEN on its own clock, else the VEN's seconds)."""
    polls = [m.wall for m in run.messages("oadrPoll", after=registered)]
    scale = 1.0 if run.poll_freq_is_wall else run.clock.speed
    gaps = [(b - a) * scale for a, b in itertools.pairwise(polls) if not _spans_outage(run, a, b)]
    requested = run.poll_freq.total_seconds()
    unit = "wall s" if run.poll_freq_is_wall else "s"
    if len(gaps) < 2:
        rec.check("VEN-REG-03", False, f"{len(polls)} oadrPoll after registration (poll frequency {requested:g} "
                  f"{unit})")
        return
    median = statistics.median(gaps)
    rec.check("VEN-REG-03", median <= POLL_MEDIAN_FACTOR * requested,
              f"{len(polls)} oadrPoll, median gap {median:.2f} {unit}, largest {max(gaps):.2f} {unit} (requested "
              f"{requested:g} {unit}, allowed median {POLL_MEDIAN_FACTOR * requested:g})")


def _spans_outage(run: Run, a: float, b: float) -> bool:
    if run.down_wall is None:
        return False
    up = run.up_wall if run.up_wall is not None else float("inf")
    return a <= up and b >= run.down_wall


def judge_report_offer(rec: Recorder, run: Run) -> None:
    offer = run.messages("oadrRegisterReport")
    names = [r.get("report_name") for r in (offer[0].payload.get("reports") or [])] if offer else []
    rec.check("VEN-RPT-01", REPORT_TELEMETRY in names or "METADATA_" + REPORT_TELEMETRY in names,
              f"offered reports {names}" if offer else "no oadrRegisterReport arrived")


# ------------------------------------------------------------------------------------------------ answers


@dataclass(frozen=True)
class Answered:
    """The VEN's answers to one distribution: by (event id, modification number), and when they arrived."""

    responses: dict[tuple[str, int | None], dict[str, Any]]
    first_wall: float | None


def answers_to(run: Run) -> dict[str, Answered]:
    """Per distribution requestID, the eventResponses the VEN sent under it (§8.1: each carries the requestID of
    the oadrDistributeEvent it answers). A distribution left unanswered counts as answered by the answer to a later
    one that carried the same event versions (the VTN sends a distribution again until it is answered, §7.4.3: the
    first one, or its answer, may have been lost)."""
    found: dict[str, Answered] = {d.request_id: Answered({}, None) for d in run.served}
    for message in run.messages("oadrCreatedEvent"):
        for response in message.payload.get("event_responses") or []:
            request_id = str(response.get("request_id"))
            if request_id not in found:
                continue
            known = found[request_id]
            key = (str(response.get("event_id")), _int(response.get("modification_number")))
            known.responses.setdefault(key, response)
            if known.first_wall is None:
                found[request_id] = Answered(known.responses, message.wall)
    served = list(run.served)
    for index, distribution in enumerate(served):
        if found[distribution.request_id].responses:
            continue
        owed = {(e.event_id, e.modification_number) for e in distribution.expected if e.opt_type != "none"}
        if not owed:
            continue
        later = next((found[d.request_id] for d in served[index + 1:] if found[d.request_id].responses
                      and owed <= set(found[d.request_id].responses)), None)
        if later is not None:
            found[distribution.request_id] = later
    return found


def judge_answers(rec: Recorder, run: Run, answered: dict[str, Answered]) -> None:
    """Every distributed event answered under the distribution's requestID with the owed opt type, eventID and
    modificationNumber; each check goes to the rule of the event version it answers. How long the VEN took is
    evidence, not a verdict."""
    unqualified = [r for m in run.messages("oadrCreatedEvent") for r in m.payload.get("event_responses") or []
                   if str(r.get("request_id")) not in answered]
    for distribution in run.served:
        answers = answered[distribution.request_id]
        delay = "" if answers.first_wall is None else (
            f" after {(run.at(answers.first_wall) - run.at(distribution.wall)).total_seconds():.0f} simulated s")
        for owed in distribution.expected:
            got = answers.responses.get((owed.event_id, owed.modification_number))
            what = f"{distribution.request_id}: {owed.event_id}#{owed.modification_number}"
            if owed.opt_type == "none":
                if got is not None:
                    rec.check(owed.rule, False, f"{what} has oadrResponseRequired never but was answered "
                              f"{got.get('opt_type')}", answer=got)
                elif answers.responses:
                    rec.check(owed.rule, True, f"{what} (oadrResponseRequired never) not answered; the other "
                              "events of the distribution were")
                continue
            if got is None:
                stray = [r for r in unqualified if str(r.get("event_id")) == owed.event_id]
                hint = (f"; the VEN answered this event under requestID {stray[-1].get('request_id')!r} instead of "
                        f"{distribution.request_id!r}" if stray else "")
                rec.check(owed.rule, False, f"{what} never answered (owed {owed.opt_type}){hint}",
                          answers=list(answers.responses.values()))
                continue
            code = _int(got.get("response_code"))
            description = str(got.get("response_description") or "")
            path_ok = owed.opt_type == "optIn" or description.startswith("event")
            ok = got.get("opt_type") == owed.opt_type and code == owed.code and path_ok
            rec.check(owed.rule, ok, f"{what} answered {got.get('opt_type')} {code} {description!r}{delay} (owed "
                      f"{owed.opt_type} {owed.code}" + ("" if owed.opt_type == "optIn" else
                                                        ", a description starting with the field's path") + ")",
                      answer=got)


def _int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


# ------------------------------------------------------------------------------------- what a conforming VEN holds


@dataclass(frozen=True)
class Held:
    """What a conforming VEN keeps: its bandwidths, or the failsafe limits."""

    bandwidths: tuple[CapacityBandwidth, ...] = ()
    failsafe: bool = False

    def import_limit_kw(self, interval_start: datetime) -> float:
        if self.failsafe:
            return CONTRACT.failsafe_import_kw
        return effective_limits(CONTRACT, self.bandwidths, start=interval_start, count=1)[0].import_limit_kw


@dataclass(frozen=True)
class Change:
    """A conforming VEN moved to ``held`` at some moment in [earliest, latest] (its clock)."""

    earliest: datetime
    latest: datetime
    held: Held
    cause: str


@dataclass
class _Book:
    """The events a conforming VEN holds (PROFILE §7.3, §7.4, §8.2), by id: (modificationNumber, payload)."""

    events: dict[str, tuple[int, CapacityBandwidth | TouTariff]] = field(default_factory=dict)

    def apply(self, specs: Sequence[EventSpec]) -> list[EventSpec]:
        """Apply one distribution; the valid new versions it brought."""
        new = []
        for spec in specs:
            known = self.events.get(spec.event_id)
            if not spec.applies or (known is not None and spec.modification_number <= known[0]):
                continue
            if spec.cancelled:
                self.events.pop(spec.event_id, None)
            else:
                self.events[spec.event_id] = (spec.modification_number, spec.payload)
                new.append(spec)
        present = {spec.event_id for spec in specs}
        for gone in [e for e in self.events if e not in present]:
            del self.events[gone]
        return new

    def bandwidths(self) -> tuple[CapacityBandwidth, ...]:
        return tuple(p for _, p in self.events.values() if isinstance(p, CapacityBandwidth))


def conforming_changes(run: Run, answered: dict[str, Answered]) -> list[Change]:
    """The moments at which a conforming VEN's limits changed in this run, each with its uncertainty."""
    book = _Book()
    held = Held()
    changes: list[Change] = []
    failsafe_at: datetime | None = None
    held_at_loss: set[tuple[str, int]] = set()
    last_contact = max((m.wall for m in run.log if run.down_wall is not None and m.wall < run.down_wall),
                       default=None)
    up = run.at(run.up_wall) if run.up_wall is not None else None
    if last_contact is not None:
        failsafe_at = run.at(last_contact) + FAILSAFE_AFTER
        if up is not None and up <= failsafe_at:
            failsafe_at = None  # back before a conforming VEN needed its failsafe
    for distribution in run.served:
        if failsafe_at is not None and run.down_wall is not None and distribution.wall > run.down_wall:
            held = Held(held.bandwidths, failsafe=True)
            held_at_loss = {(e, v[0]) for e, v in book.events.items()}
            changes.append(Change(failsafe_at, failsafe_at + FAILSAFE_ALLOWANCE, held,
                                  "the VTN went away: the failsafe (§10.2)"))
            failsafe_at = None
        served = run.at(distribution.wall)
        new = book.apply(distribution.events)
        release = held.failsafe and any(
            isinstance(spec.payload, CapacityBandwidth) and not spec.cancelled
            and (spec.event_id, spec.modification_number) not in held_at_loss
            and spec.payload.start <= served < spec.payload.end for spec in new)
        after = Held(book.bandwidths(), failsafe=held.failsafe and not release)
        if after != held:
            first = answered[distribution.request_id].first_wall
            ready = max(served, run.at(first)) if first is not None else served
            cause = (f"{distribution.request_id} (served {served:%H:%M:%S}"
                     + (f", answered {run.at(first):%H:%M:%S})" if first is not None else ", never answered)")
                     + (", fresh limits ending the failsafe (§10.3)" if release else ""))
            changes.append(Change(served, ready + REACT, after, cause))
            held = after
    if failsafe_at is not None:  # no distribution after the VTN went away
        changes.append(Change(failsafe_at, failsafe_at + FAILSAFE_ALLOWANCE, Held(held.bandwidths, True),
                              "the VTN went away: the failsafe (§10.2)"))
    return changes


def possible(changes: Sequence[Change], start: datetime, end: datetime) -> list[tuple[Held, str]]:
    """Every state a conforming VEN could have been in during [start, end), with what brought it."""
    states = [(Held(), "the start"), *((c.held, c.cause) for c in changes)]
    first = max([0] + [i + 1 for i, c in enumerate(changes) if c.latest <= start])
    last = max([0] + [i + 1 for i, c in enumerate(changes) if c.earliest < end])
    return states[first:max(first, last) + 1]


# ------------------------------------------------------------------------------------------------- limits


def judge_limits(rec: Recorder, run: Run, changes: Sequence[Change]) -> None:
    """Telemetry of each interval of ``JUDGED`` against the limits a conforming VEN could have kept in it;
    VEN-FS-02's return from ``RESUMED``; a finding when the VEN is over by the same amount whatever the limit."""
    rows = run.telemetry()
    failsafe_kw = CONTRACT.failsafe_import_kw
    had_load_above_failsafe = False
    judged: dict[str, int] = {}
    over: list[tuple[int, str, float, float]] = []
    """(interval, rule, import, limit) of the intervals over a limit that was the only one owed."""
    for k, rule in sorted(JUDGED.items()):
        start = run.interval(k)
        row = rows.get(start)
        if row is None:
            continue
        judged[rule] = judged.get(rule, 0) + 1
        options = possible(changes, start, start + INTERVAL)
        limits = sorted({held.import_limit_kw(start) for held, _ in options})
        low, high = limits[0], limits[-1]
        label = f"interval {k} ({start:%H:%M}Z): import {row.import_kw:.3f} kW"
        data = {"interval_start": start, "import_kw": row.import_kw}
        if not exceeds_limit(row.import_kw, low):
            failsafe = all(held.failsafe for held, _ in options)
            rec.check(rule, True, f"{label}, limit {low:g} kW{' (failsafe)' if failsafe else ''} + tolerance "
                      f"{limit_tolerance_kw(low):g} kW", limit_kw=low, **data)
        elif exceeds_limit(row.import_kw, high):
            failsafe = all(held.failsafe for held, _ in options if held.import_limit_kw(start) == high)
            rec.check(rule, False, f"{label}, limit {high:g} kW{' (failsafe)' if failsafe else ''} + tolerance "
                      f"{limit_tolerance_kw(high):g} kW", limit_kw=high, **data)
            if low == high:
                over.append((k, rule, row.import_kw, high))
        else:
            late = [cause for held, cause in options[1:]]
            rec.inconclusive(rule, f"{label}: over the limit {low:g} kW a conforming VEN kept once "
                             f"{'; '.join(late)} took effect, but within {high:g} kW, which it may still have kept "
                             "in this interval; the change came too late to be owed here", limit_kw=low,
                             limits_kw=limits, **data)
            continue
        if k < RESUMED and low > failsafe_kw and exceeds_limit(row.import_kw, failsafe_kw):
            had_load_above_failsafe = True
    for rule in sorted(set(JUDGED.values()) - set(judged)):
        missing = [f"{k} ({run.interval(k):%H:%M}Z)" for k, r in sorted(JUDGED.items()) if r == rule]
        rec.not_judged(rule, f"not judged: no telemetry for interval {', '.join(missing)}")
    _constant_offset(rec, over)
    start = run.interval(RESUMED)
    resumed = rows.get(start)
    if resumed is None:
        return
    if any(held.failsafe for held, _ in possible(changes, start, start + INTERVAL)):
        rec.inconclusive("VEN-FS-02", f"interval {RESUMED}: the fresh limits reached the VEN too late for it to owe "
                         "them here")
    elif exceeds_limit(resumed.import_kw, failsafe_kw):
        rec.check("VEN-FS-02", True, f"interval {RESUMED}: after the fresh limits the VEN imported "
                  f"{resumed.import_kw:.3f} kW, above the failsafe limit {failsafe_kw:g} kW")
    elif had_load_above_failsafe:
        rec.check("VEN-FS-02", False, f"interval {RESUMED}: after the fresh limits the VEN still imported only "
                  f"{resumed.import_kw:.3f} kW, within the failsafe limit {failsafe_kw:g} kW, though it imported "
                  "more under such limits before: it did not leave the failsafe")
    else:
        rec.not_judged("VEN-FS-02", "not judged: the VEN's load never exceeded the failsafe limit where it was "
                       "allowed to, so whether it left the failsafe does not show")


OFFSET_SPREAD_KW = 0.15
"""Excesses within this of each other count as one constant offset."""


def _constant_offset(rec: Recorder, over: Sequence[tuple[int, str, float, float]]) -> None:
    """A VEN over different limits by the same amount in intervals judged for different rules breaks one thing,
    not each of those rules: say so first."""
    if len(over) < 3:
        return
    excess = statistics.median(imported - limit for _, _, imported, limit in over)
    same = [o for o in over if abs(o[2] - o[3] - excess) <= OFFSET_SPREAD_KW]
    rules = sorted({rule for _, rule, _, _ in same})
    limits = sorted({limit for _, _, _, limit in same})
    if len(same) < 3 or len(rules) < 2 or len(limits) < 2:
        return
    every = "every limit" if len(same) == len(over) else f"{len(same)} of the {len(over)} limits it broke"
    rec.finding(Finding(
        title=f"over {every} by {excess:.1f} kW",
        detail=(f"in intervals {', '.join(str(k) for k, _, _, _ in same)} the VEN imported {excess:.2f} kW (± "
                f"{OFFSET_SPREAD_KW:g}) more than the limit, whether the limit was {limits[0]:g} or {limits[-1]:g} "
                "kW: one constant offset, not the separate faults the rules judged in those intervals name. Look for "
                "a load the HEMS leaves out of its budget, a meter read as gross instead of net, or a limit applied "
                "per device rather than at the connection point (PROFILE §5.2.1, §6)."),
        explains=tuple(rules)))


def judge_return(rec: Recorder, run: Run) -> None:
    """VEN-FS-02: once the VTN accepts again the VEN comes back (registers again, as it was asked to, or polls)."""
    if run.up_wall is None:
        return
    back = [m for m in run.log if m.wall >= run.up_wall and m.kind in ("oadrCreatePartyRegistration", "oadrPoll")]
    if not back:
        rec.check("VEN-FS-02", False, "after the VTN accepted again the VEN neither registered nor polled")
        return
    delay = (run.at(back[0].wall) - run.at(run.up_wall)).total_seconds()
    rec.check("VEN-FS-02", True, f"the VEN came back ({back[0].kind}) {delay:.0f} simulated s after the VTN "
              "accepted again")


def judge_refusals(rec: Recorder, run: Run) -> None:
    """VEN-REG-06: while the VTN refuses, each registration waits at least 60 s (less 20 % jitter) after the
    previous refusal, doubling up to 10 minutes (PROFILE.md §2.11)."""
    if run.down_wall is None:
        return
    end = run.up_wall if run.up_wall is not None else float("inf")
    refused = [m.wall for m in run.messages("oadrCreatePartyRegistration", after=run.down_wall) if m.wall < end]
    if len(refused) < 2:
        rec.not_judged("VEN-REG-06", f"not judged: the VEN registered {len(refused)} time(s) while the VTN refused")
        return
    for n, (a, b) in enumerate(itertools.pairwise(refused)):
        gap = (run.at(b) - run.at(a)).total_seconds()
        least = (1 - REGISTER_JITTER) * min(REGISTER_FIRST_WAIT_S * 2 ** n, REGISTER_MAX_WAIT_S)
        rec.check("VEN-REG-06", gap >= least, f"refused registration {n + 2} came {gap:.0f} simulated s after the "
                  f"previous one (at least {least:.0f} s owed)")


def judge_cancellation(rec: Recorder, run: Run) -> None:
    """VEN-REG-05: the VTN's oadrCancelPartyRegistration is answered, and the VEN never registers again."""
    if run.cancel_wall is None:
        return
    answers = [m for m in run.messages("oadrCanceledPartyRegistration", after=run.cancel_wall)]
    codes = [_int((m.payload.get("response") or {}).get("response_code")) for m in answers]
    rec.check("VEN-REG-05", 200 in codes, f"oadrCancelPartyRegistration answered oadrCanceledPartyRegistration "
              f"{codes[0]}" if codes else "oadrCancelPartyRegistration never answered")
    again = run.messages("oadrCreatePartyRegistration", after=run.cancel_wall)
    left = (run.end - run.at(run.cancel_wall)).total_seconds()
    rec.check("VEN-REG-05", not again, f"the VEN registered again {len(again)} time(s) after the VTN cancelled its "
              "registration" if again else f"no registration in the {left:.0f} simulated s after the cancellation")


# ---------------------------------------------------------------------------------------------- reports


def due_intervals(run: Run, until: datetime) -> tuple[list[datetime], list[datetime]]:
    """The intervals whose telemetry is owed by the end of the run: (regular, missed during the outage). An
    interval whose report was due near an edge of the outage may go either way and is judged by neither rule."""
    down = run.at(run.down_wall) if run.down_wall is not None else None
    up = run.at(run.up_wall) if run.up_wall is not None else None
    regular, missed = [], []
    moment = run.interval(1)
    while moment + INTERVAL <= until:
        due_from, due_by = moment + INTERVAL, moment + INTERVAL + SEND_WITHIN
        if down is None or up is None or due_by < down or due_from > up:
            regular.append(moment)
        elif due_from > down and due_by < up:
            missed.append(moment)
        moment += INTERVAL
    return regular, missed


def judge_telemetry_delivery(rec: Recorder, run: Run, until: datetime) -> None:
    """VEN-RPT-02: an interval for every finished interval, at most 96 per report; VEN-RPT-03: those due while the
    VTN refused, sent after it accepted again, the oldest first."""
    rows = run.telemetry()
    regular, missed = due_intervals(run, until)
    absent = [s.isoformat() for s in regular if s not in rows]
    rec.check("VEN-RPT-02", bool(regular) and not absent,
              f"{len(regular) - len(absent)} of {len(regular)} finished intervals reported"
              + (f"; missing {absent}" if absent else ""), received=len(rows))
    sizes = [len(t.intervals) for _, _, t in run.received.telemetry]
    if sizes:
        rec.check("VEN-RPT-02", max(sizes) <= TELEMETRY_CHUNK, f"{len(sizes)} TELEMETRY_USAGE reports of at most "
                  f"{max(sizes)} intervals (at most {TELEMETRY_CHUNK} allowed)")
    if missed:
        lost = [s.isoformat() for s in missed if s not in rows]
        rec.check("VEN-RPT-03", not lost, f"{len(missed) - len(lost)} of {len(missed)} intervals due while the "
                  "VTN refused were sent after it accepted again" + (f"; never sent {lost}" if lost else ""))
        order = [i.start for _, _, t in run.received.telemetry for i in t.intervals if i.start in missed]
        rec.check("VEN-RPT-03", order == sorted(order), f"the missed intervals arrived in the order "
                  f"{[s.strftime('%H:%M') for s in order]} (oldest first)")
    for name, why, _ in run.received.bad_reports:
        rule = {REPORT_TELEMETRY: "VEN-RPT-02", REPORT_NEED: "VEN-NEED-01",
                REPORT_PERFORMANCE: "VEN-PERF-01"}.get(name, "VEN-RPT-04")
        rec.check(rule, False, f"a {name} report broke the profile: {why}")


def judge_plans(rec: Recorder, run: Run) -> None:
    """VEN-RPT-04: 96-192 contiguous intervals from the interval of planning, at most one plan per interval."""
    plans = run.received.plans
    if not plans:
        rec.check("VEN-RPT-04", False, "no x-HEMS_PLAN report arrived")
        return
    for _, plan in plans:
        first = plan.intervals[0].start
        rec.check("VEN-RPT-04", 96 <= len(plan.intervals) <= 192 and first == floor_to_interval(plan.created_at),
                  f"plan made {plan.created_at.isoformat()}: {len(plan.intervals)} intervals from "
                  f"{first.isoformat()}")
    made = [floor_to_interval(plan.created_at) for _, plan in plans]
    twice = sorted({m.strftime("%H:%M") for m in made if made.count(m) > 1})
    rec.check("VEN-RPT-04", not twice, f"{len(made)} plans, " + (f"several made in the interval(s) {twice}" if twice
                                                                 else "at most one per 15-minute interval"))


def judge_report_reading_types(rec: Recorder, run: Run) -> None:
    """VEN-RPT-01: the telemetry rIDs are offered with readingType Mean (PROFILE.md §9.1)."""
    offers = run.messages("oadrRegisterReport")
    reports = (offers[0].payload.get("reports") or []) if offers else []
    telemetry = [d for r in reports if r.get("report_specifier_id") == SPECIFIER_TELEMETRY
                 for d in r.get("report_descriptions") or []]
    if telemetry:
        types = {str(d.get("r_id")): d.get("reading_type") for d in telemetry}
        rec.check("VEN-RPT-01", all(t == READING_MEAN for t in types.values()), f"telemetry rIDs offered with "
                  f"readingType {types} ({READING_MEAN!r} owed)")


CLOCK_TOLERANCE = timedelta(seconds=2)
TRANSPORT_ALLOWANCE = timedelta(seconds=1)
WALL_ONLY = ("VEN-CLK-01",)
"""Rules judged only when the VEN runs on the real clock."""


def judge_clock(rec: Recorder, run: Run) -> None:
    """VEN-CLK-01: on the real clock, the createdDateTime of each report the VEN sends is within 2 s of when it
    arrived (PROFILE.md §3.7), plus a second for the way there."""
    if not run.wall_clock:
        rec.not_judged("VEN-CLK-01", "not judged: a VEN's clock is held to UTC only in real time (--clock wall)")
        return
    for wall, stamp in clock_samples(run.log, run.received):
        arrived = run.at(wall)
        rec.check("VEN-CLK-01", arrived - CLOCK_TOLERANCE - TRANSPORT_ALLOWANCE <= stamp <= arrived + CLOCK_TOLERANCE,
                  f"createdDateTime {stamp:%H:%M:%S.%f} of a report that arrived at {arrived:%H:%M:%S.%f} UTC")


NEED_WITHIN = timedelta(minutes=15)
"""The capacity need is owed within 15 simulated minutes of the VEN's registration (PROFILE §9.5)."""
VERDICT_WITHIN = timedelta(minutes=30)
"""A day's performance report is owed within 30 simulated minutes of the day's end (PROFILE §9.6)."""


def judge_needs(rec: Recorder, run: Run) -> None:
    """VEN-NEED-01 on the scenario's performance contract: what the needs received soon after registration cover."""
    contract = run.contract
    terms, zone = contract.performance, contract.comfort.timezone
    registrations = run.messages("oadrCreatePartyRegistration")
    if terms is None:
        for rule_id in PERFORMANCE_RULES:
            rec.skip(rule_id, "the scenario's contract has no performance terms (--contract plain)")
        return
    if not registrations:
        return
    registered = run.at(registrations[0].wall)
    needs = run.received.needs
    if not needs:
        rec.check("VEN-NEED-01", False, "no x-CAPACITY_NEED report arrived under a performance contract")
        return
    local = registered.astimezone(ZoneInfo(zone))
    end = local_day_bounds(local.date(), zone)[1]
    if local >= datetime.combine(local.date(), terms.need_deadline_local, tzinfo=local.tzinfo) - timedelta(hours=1):
        end = local_day_bounds(local.date() + timedelta(days=1), zone)[1]
    first = floor_to_interval(registered) + 2 * INTERVAL
    early = [need for arrived, need in needs if run.at(arrived) <= registered + NEED_WITHIN]
    covered = {i.start for need in early for i in need.intervals}
    owed = [first + k * INTERVAL for k in range(int((end - first) / INTERVAL))]
    missing = [s for s in owed if s not in covered]
    rec.check("VEN-NEED-01", not missing, f"{len(early)} need report(s) within {NEED_WITHIN} of registering at "
              f"{registered.isoformat()} cover {len(owed) - len(missing)} of the {len(owed)} intervals owed up to "
              f"{end.isoformat()}" + (f"; missing from {missing[0].isoformat()}" if missing else ""))
    above = [(i.start, i.import_kw) for _, need in needs for i in need.intervals
             if i.import_kw > contract.contracted_max_import_kw]
    rec.check("VEN-NEED-01", not above, f"{sum(len(n.intervals) for _, n in needs)} need interval(s) within the "
              f"contracted maximum {contract.contracted_max_import_kw} kW" + (f"; above it: {above[:3]}" if above
                                                                               else ""))


def judge_verdicts(rec: Recorder, run: Run) -> None:
    """VEN-PERF-01: a report for every local day that ended while the VEN ran, in time and consistent."""
    zone = run.contract.comfort.timezone
    registrations = run.messages("oadrCreatePartyRegistration")
    if run.contract.performance is None or not registrations:
        return
    registered = run.at(registrations[0].wall)
    day = registered.astimezone(ZoneInfo(zone)).date()
    ended = []
    while (bounds := local_day_bounds(day, zone))[1] + VERDICT_WITHIN <= run.end:
        ended.append(bounds)
        day += timedelta(days=1)
    if not ended:
        return
    received = run.received.performance
    for start, end in ended:
        found = [(run.at(arrived), r) for arrived, r in received if r.start == start and r.end == end]
        rec.check("VEN-PERF-01", bool(found) and found[0][0] <= end + VERDICT_WITHIN,
                  f"local day {start.isoformat()} .. {end.isoformat()}: " + (
                      f"report arrived at {found[0][0].isoformat()}" if found else "no x-PERFORMANCE report"))
        for arrived, report in found[:1]:
            # Each listed interval names the need the VEN had reported for it (the latest that arrived before).
            for loss in report.comfort_losses:
                reported = [need.by_start()[loss.start] for when, need in run.received.needs
                            if run.at(when) <= arrived and loss.start in need.by_start()]
                owed = reported[-1] if reported else None
                rec.check("VEN-PERF-01", loss.need_kw == owed or (
                    loss.need_kw is not None and owed is not None and abs(loss.need_kw - owed) < 1e-3),
                    f"interval {loss.start.isoformat()}: need_kw {loss.need_kw}, the VEN had reported {owed}")
    stray = [r for _, r in received if (r.start, r.end) not in ended and r.end > run.end]
    rec.check("VEN-PERF-01", not stray, "no report for a day that had not ended" + (
        f"; got one for {stray[0].start.isoformat()}" if stray else ""))


def judge_privacy(rec: Recorder, run: Run) -> None:
    """VEN-PRIV-01: without consent, no raw comfort reading in any message, read off the XML as it arrived."""
    if run.contract.raw_data_consent or not run.raw:
        return
    leaks = []
    for wall, xml in run.raw:
        named = [rid for rid in RAW_COMFORT_RIDS if f">{rid}<" in xml] + ([REPORT_COMFORT] if REPORT_COMFORT in xml
                                                                           else [])
        if named:
            leaks.append((run.at(wall), named))
    rec.check("VEN-PRIV-01", not leaks, f"{len(run.raw)} message(s) read" + (
        f"; {len(leaks)} carry raw comfort readings, the first at {leaks[0][0].isoformat()}: {leaks[0][1]}"
        if leaks else ", none carries an indoor temperature or an EV range"))


def judge_tou(rec: Recorder, run: Run) -> None:
    """VEN-TOU-01: less import in the expensive intervals than on average in the cheap ones that follow."""
    rows = run.telemetry()
    prices = {i.start: i.import_price_eur_per_kwh for i in tariff(run.origin).intervals}
    dear = [rows[s] for s in (run.interval(k) for k in EXPENSIVE) if s in rows]
    cheap = [rows[s] for s in (run.interval(k) for k in CHEAP) if s in rows]
    if not dear or not cheap:
        rec.not_judged("VEN-TOU-01", f"not judged: no telemetry for intervals {[*EXPENSIVE, *CHEAP]}")
        return
    dear_kw, cheap_kw = statistics.mean(r.import_kw for r in dear), statistics.mean(r.import_kw for r in cheap)
    rec.check("VEN-TOU-01", cheap_kw - dear_kw >= TOU_MIN_SHIFT_KW,
              f"mean import {dear_kw:.2f} kW at {[prices[r.start] for r in dear]} EUR/kWh, {cheap_kw:.2f} kW at "
              f"{[prices[r.start] for r in cheap]} EUR/kWh (shift {cheap_kw - dear_kw:.2f} kW, at least "
              f"{TOU_MIN_SHIFT_KW} kW expected)")


TELEMETRY_RULES = tuple(sorted({*JUDGED.values(), "VEN-TOU-01"}))
"""The rules judged on the VEN's telemetry."""
CLOCK_OFFSET = timedelta(minutes=20)
"""A VEN's telemetry labelled this far off its own clock is labelled on another clock (local time as UTC, …)."""


def telemetry_diagnosis(rec: Recorder, run: Run) -> str | None:
    """Why the VEN's telemetry cannot be judged at all, with a finding naming the cause; None when it can."""
    bad = [(why, report) for name, why, report in run.received.bad_reports if name == REPORT_TELEMETRY]
    if not run.received.telemetry:
        if not bad:
            return "not judged: no telemetry arrived (see VEN-RPT-01, VEN-RPT-02)"
        values = [v for _, report in bad for v in _report_values(report)]
        if values and max(values) > MAX_POWER_KW and max(values) / 1000 <= MAX_POWER_KW:
            rec.finding(Finding(
                title="telemetry in W, not kW",
                detail=(f"all {len(bad)} TELEMETRY_USAGE reports were refused: values such as {max(values):g} exceed "
                        f"the {MAX_POWER_KW:g} kW plausibility bound (PROFILE §4.6), and divided by 1000 they are "
                        "plausible household power in kW. The rules judged on telemetry cannot be judged."),
                explains=("VEN-RPT-02", "VEN-RPT-03", *TELEMETRY_RULES)))
        return (f"not judged: no valid telemetry — all {len(bad)} TELEMETRY_USAGE reports broke the profile, e.g. "
                f"{bad[0][0]}")
    lags = [created - (max(i.start for i in t.intervals) + INTERVAL)
            for _, created, t in run.received.telemetry if created is not None and t.intervals]
    if lags:
        lag = statistics.median(lags)
        if abs(lag) > CLOCK_OFFSET:
            # lag = the labels' shift (whole intervals) + the VEN's delay in making the report (0 to a few minutes,
            # longer on a busy machine): the shift is lag rounded down to whole intervals, whatever the load.
            minutes = abs(math.floor(lag / INTERVAL)) * round(INTERVAL.total_seconds() / 60)
            direction = "ahead of" if lag < timedelta(0) else "behind"
            rec.finding(Finding(
                title=f"telemetry labelled {minutes} min {direction} the VEN's own clock",
                detail=(f"the newest interval of each TELEMETRY_USAGE report starts {minutes} minutes {direction} "
                        "the report's own createdDateTime would have it (a finished interval ends just before the "
                        "report is made): its intervals are labelled on another clock — local time written as UTC, "
                        "or an interval counter that drifted (PROFILE §3.1, §9.3). The suite cannot tell which "
                        "interval a value belongs to, so the rules judged on telemetry cannot be judged."),
                explains=("VEN-RPT-02", *TELEMETRY_RULES)))
            return "not judged: the telemetry's interval labels do not follow the VEN's own clock (see findings)"
    return None


def _report_values(report: Any) -> list[float]:
    values = []
    for interval in (report.get("intervals") or []) if isinstance(report, dict) else []:
        value = (interval.get("report_payload") or {}).get("value") if isinstance(interval, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            values.append(float(value))
    return values


STARTUP = ("oadrQueryRegistration", "oadrCreatePartyRegistration", "oadrRegisterReport", "oadrRequestEvent")
"""Requests a VEN need not retry once it got no answer: a VEN that gave up on one of them may never recover."""


def judge_fairness(rec: Recorder, run: Run) -> None:
    """A VEN whose timeout ran out before the suite answered was cut off by the suite's delay, not by its own fault,
    when the delay is within what it may expect in the field (its timeouts shrink with the speed of its clock). A
    distribution it hung up on counts as not served (the scripted VTN sends it again); a hang-up on a start-up
    request makes every failure of the run inconclusive."""
    if not run.hung_up:
        return
    kinds = sorted({kind for _, kind in run.hung_up})
    rec.evidence("VEN-REG-03", f"the VEN gave up waiting for {len(run.hung_up)} of the suite's answers "
                 f"({', '.join(kinds)}); at {run.clock.speed:g} simulated s per wall second its timeouts are that "
                 "much shorter")
    startup = [kind for kind in kinds if kind in STARTUP]
    if startup:
        rec.doubt_failures(f"the VEN gave up waiting for the suite's answer to {', '.join(startup)} at "
                           f"{run.clock.speed:g}× speed; run again on a quieter machine, with a lower --speed or "
                           "--clock wall")


def judge(rec: Recorder, run: Run, *, reports_due_until: datetime) -> None:
    for note in run.notes:
        rec.evidence("VEN-LIM-01", note)
    try:
        _judge(rec, run, reports_due_until=reports_due_until)
    finally:
        judge_fairness(rec, run)


def _judge(rec: Recorder, run: Run, *, reports_due_until: datetime) -> None:
    if not judge_registration(rec, run):
        return
    answered = answers_to(run)
    judge_report_offer(rec, run)
    judge_answers(rec, run, answered)
    gap = telemetry_diagnosis(rec, run)
    if gap is None:
        judge_limits(rec, run, conforming_changes(run, answered))
        judge_tou(rec, run)
    else:
        for rule_id in TELEMETRY_RULES:
            rec.not_judged(rule_id, gap)
    judge_return(rec, run)
    judge_refusals(rec, run)
    judge_cancellation(rec, run)
    judge_telemetry_delivery(rec, run, reports_due_until)
    judge_report_reading_types(rec, run)
    judge_plans(rec, run)
    judge_needs(rec, run)
    judge_verdicts(rec, run)
    judge_privacy(rec, run)
    judge_clock(rec, run)
