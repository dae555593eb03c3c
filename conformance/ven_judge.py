"""Verdicts on a VEN from what the scripted VTN recorded. Pure: the run is data, the checks go into a Recorder.

Telemetry is judged per 15-minute interval, labelled by the VEN's own clock, for the rule the scenario's
``JUDGED`` table names. The suite runs its scenario on the VEN's clock (read at report registration), but a
residual lag remains, so each interval is judged against the highest limit a conforming VEN may have kept at any
moment from ``LEAD`` before the interval to its end, shifted by the lag measured from the createdDateTime of the
VEN's telemetry reports.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from conformance.scripted_vtn import POLL_FREQ, Distribution, Message, Received
from conformance.ven_scenario import CHEAP, CONTRACT, EXPENSIVE, JUDGED, RESUMED, Snapshot, tariff
from conformance.verdicts import Recorder
from protocol import INTERVAL, floor_to_interval, make_ean18
from protocol.oadr20b.names import RAW_COMFORT_RIDS, REPORT_COMFORT, REPORT_NEED, REPORT_PERFORMANCE, REPORT_TELEMETRY
from protocol.reports import TelemetryInterval
from protocol.timebase import local_day_bounds

TOLERANCE_KW = 0.1
TOLERANCE_FRACTION = 0.02
LEAD = timedelta(minutes=5)
"""A change that reaches the VEN less than this before an interval may still miss it."""
DEFAULT_LAG = (timedelta(0), timedelta(minutes=5))
MAX_LAG = timedelta(minutes=15)
ANSWER_WINDOW_S = 5.0
"""Wall seconds within which a distribution must be answered."""
REREGISTER_WINDOW_S = 5.0
TOU_MIN_SHIFT_KW = 0.5
SEND_WITHIN = timedelta(minutes=1)
"""A finished interval's telemetry is due within 60 s (PROFILE.md §9.3.1)."""


def tolerance_kw(limit_kw: float) -> float:
    return max(TOLERANCE_KW, TOLERANCE_FRACTION * limit_kw)


@dataclass(frozen=True)
class Run:
    """What one run of the scenario recorded."""

    start: datetime
    speed: float
    wall0: float
    """time.monotonic() at which the suite's simulated clock read ``start``."""
    end: datetime
    log: tuple[Message, ...]
    distributions: tuple[Distribution, ...]
    received: Received
    snapshots: tuple[Snapshot, ...]
    reregister_wall: float | None = None
    down_wall: float | None = None
    up_wall: float | None = None
    raw: tuple[tuple[float, str], ...] = ()
    """(wall time, XML) of every message the VEN sent, as it arrived."""

    def sim(self, wall: float) -> datetime:
        return self.start + timedelta(seconds=(wall - self.wall0) * self.speed)

    def messages(self, kind: str, after: float = float("-inf")) -> list[Message]:
        return [m for m in self.log if m.kind == kind and m.wall >= after]

    def telemetry(self) -> dict[datetime, TelemetryInterval]:
        return {i.start: i for _, _, t in self.received.telemetry for i in t.intervals}


# ------------------------------------------------------------------------------------------- registration


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
    polls = [m.wall for m in run.messages("oadrPoll", after=first.wall)]
    gaps = [b - a for a, b in itertools.pairwise(polls) if not _spans_outage(run, a, b)]
    allowed = 1.5 * POLL_FREQ.total_seconds()
    if len(gaps) < 2:
        rec.check("VEN-REG-03", False, f"{len(polls)} oadrPoll after registration (poll frequency "
                  f"{POLL_FREQ.total_seconds():g} s)")
    else:
        median = statistics.median(gaps)
        rec.check("VEN-REG-03", median <= allowed, f"{len(polls)} oadrPoll, median gap {median:.2f} s, largest "
                  f"{max(gaps):.2f} s (requested {POLL_FREQ.total_seconds():g} s, allowed median {allowed:g} s)")
    if run.reregister_wall is not None:
        asked = run.reregister_wall
        again = [m for m in registrations if asked < m.wall <= asked + REREGISTER_WINDOW_S]
        rec.check("VEN-REG-04", bool(again), f"{len(again)} oadrCreatePartyRegistration within "
                  f"{REREGISTER_WINDOW_S:g} s of oadrRequestReregistration")
        if again:
            after = run.messages("oadrRequestEvent", after=again[0].wall)
            rec.check("VEN-REG-04", bool(after), "oadrRequestEvent after registering again" if after
                      else "no oadrRequestEvent after registering again")
    return True


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


def judge_answers(rec: Recorder, run: Run) -> None:
    """Every distributed event answered within ANSWER_WINDOW_S with the owed opt type, eventID and
    modificationNumber; each check goes to the rule of the event version it answers."""
    created = run.messages("oadrCreatedEvent")
    for distribution in run.distributions:
        answers = [r for m in created if distribution.wall <= m.wall <= distribution.wall + ANSWER_WINDOW_S
                   for r in m.payload.get("event_responses") or []]
        for owed in distribution.expected:
            got = [a for a in answers if str(a.get("event_id")) == owed.event_id
                   and _int(a.get("modification_number")) == owed.modification_number]
            what = f"{distribution.request_id}: {owed.event_id}#{owed.modification_number}"
            if owed.opt_type == "none":
                if got:
                    rec.check(owed.rule, False, f"{what} has oadrResponseRequired never but was answered "
                              f"{got[-1].get('opt_type')}", answer=got[-1])
                elif answers:
                    rec.check(owed.rule, True, f"{what} (oadrResponseRequired never) not answered; the other "
                              "events of the distribution were")
                continue
            if not got:
                rec.check(owed.rule, False, f"{what} not answered within {ANSWER_WINDOW_S:g} s (owed "
                          f"{owed.opt_type})", answers=answers)
                continue
            answer = got[-1]
            code = _int(answer.get("response_code"))
            ok = answer.get("opt_type") == owed.opt_type and (
                code == 200 if owed.opt_type == "optIn" else code is not None and code >= 400)
            rec.check(owed.rule, ok, f"{what} answered {answer.get('opt_type')} {code} "
                      f"{answer.get('response_description')!r} (owed {owed.opt_type})", answer=answer)


def _int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


# ------------------------------------------------------------------------------------------------- limits


def lag(run: Run) -> tuple[timedelta, timedelta]:
    """How far the VEN's clock lags the suite's (smallest, largest), from its telemetry createdDateTimes."""
    samples = [arrival - created for arrival, created, _ in run.received.telemetry if created is not None]
    samples = [s for s in samples if -MAX_LAG <= s <= MAX_LAG]
    if not samples:
        return DEFAULT_LAG
    return min(samples), max(samples)


def limit_owed_kw(snapshots: Iterable[Snapshot], interval_start: datetime,
                  lag_range: tuple[timedelta, timedelta]) -> tuple[float, bool]:
    """The highest import limit a conforming VEN may have kept in the interval, and whether it is the failsafe's
    in every moment of the window."""
    snaps = list(snapshots)
    low = interval_start + lag_range[0] - LEAD
    high = interval_start + INTERVAL + lag_range[1]
    in_force = [s for s in snaps if s.at <= low][-1:] + [s for s in snaps if low < s.at <= high]
    return max(s.import_limit_kw(interval_start) for s in in_force), all(s.failsafe for s in in_force)


def judge_limits(rec: Recorder, run: Run) -> None:
    """Telemetry of each interval of ``JUDGED`` against the limit owed; VEN-FS-02's return from ``RESUMED``."""
    rows = run.telemetry()
    lag_range = lag(run)
    rec.evidence("VEN-LIM-01", f"VEN clock lag from its telemetry createdDateTimes: {lag_range[0]} .. {lag_range[1]}")
    failsafe_kw = CONTRACT.failsafe_import_kw
    above_failsafe_kw = failsafe_kw + tolerance_kw(failsafe_kw)
    had_load_above_failsafe = False
    for k, rule in sorted(JUDGED.items()):
        start = run.start + k * INTERVAL
        row = rows.get(start)
        if row is None:
            continue
        limit_kw, failsafe = limit_owed_kw(run.snapshots, start, lag_range)
        allowed = limit_kw + tolerance_kw(limit_kw)
        rec.check(rule, row.import_kw <= allowed,
                  f"interval {k} ({start.isoformat()}): import {row.import_kw:.3f} kW, limit {limit_kw:g} kW"
                  f"{' (failsafe)' if failsafe else ''} + tolerance {tolerance_kw(limit_kw):g} kW",
                  interval_start=start, import_kw=row.import_kw, limit_kw=limit_kw)
        if k < RESUMED and limit_kw > above_failsafe_kw and row.import_kw > above_failsafe_kw:
            had_load_above_failsafe = True
    resumed = rows.get(run.start + RESUMED * INTERVAL)
    if resumed is None:
        return
    if resumed.import_kw > above_failsafe_kw:
        rec.check("VEN-FS-02", True, f"interval {RESUMED}: after the fresh limits the VEN imported "
                  f"{resumed.import_kw:.3f} kW, above the failsafe limit {failsafe_kw:g} kW")
    elif had_load_above_failsafe:
        rec.check("VEN-FS-02", False, f"interval {RESUMED}: after the fresh limits the VEN still imported only "
                  f"{resumed.import_kw:.3f} kW, within the failsafe limit {failsafe_kw:g} kW, though it imported "
                  "more under such limits before: it did not leave the failsafe")
    else:
        rec.evidence("VEN-FS-02", "cannot tell whether the VEN left the failsafe: its load never exceeded the "
                     "failsafe limit where it was allowed to")


def judge_polls_after_return(rec: Recorder, run: Run) -> None:
    if run.up_wall is None:
        return
    back = run.messages("oadrPoll", after=run.up_wall)
    first = back[0].wall - run.up_wall if back else None
    rec.check("VEN-FS-02", first is not None and first <= 5 * POLL_FREQ.total_seconds() + 60 / run.speed,
              f"first oadrPoll {first:.2f} s after the VTN came back" if first is not None
              else "no oadrPoll after the VTN came back")


# ---------------------------------------------------------------------------------------------- reports


def judge_telemetry_delivery(rec: Recorder, run: Run) -> None:
    """VEN-RPT-02: an interval for every finished interval; VEN-RPT-03: those due while the VTN was away."""
    rows = run.telemetry()
    lag_low, lag_high = lag(run)

    def due(start: datetime) -> tuple[datetime, datetime]:
        """When, on the suite's clock, the report of the interval at ``start`` is due: earliest, latest."""
        return start + INTERVAL + lag_low, start + INTERVAL + lag_high + SEND_WITHIN

    expected: list[datetime] = []
    moment = run.start + INTERVAL
    while due(moment)[1] <= run.end:
        expected.append(moment)
        moment += INTERVAL
    down = run.sim(run.down_wall) if run.down_wall is not None else None
    up = run.sim(run.up_wall) if run.up_wall is not None else None
    if down is None or up is None:
        missed, regular = [], list(expected)
    else:  # reports due near an edge of the outage may go either way and are judged by neither rule
        missed = [s for s in expected if due(s)[0] > down and due(s)[1] < up]
        regular = [s for s in expected if due(s)[1] < down or due(s)[0] > up]
    absent = [s.isoformat() for s in regular if s not in rows]
    rec.check("VEN-RPT-02", bool(regular) and not absent,
              f"{len(regular) - len(absent)} of {len(regular)} finished intervals reported"
              + (f"; missing {absent}" if absent else ""), received=len(rows))
    if missed:
        lost = [s.isoformat() for s in missed if s not in rows]
        rec.check("VEN-RPT-03", not lost, f"{len(missed) - len(lost)} of {len(missed)} intervals due while the "
                  "VTN was unreachable were sent after it returned" + (f"; never sent {lost}" if lost else ""))
    for name, why in run.received.bad_reports:
        rule = {REPORT_TELEMETRY: "VEN-RPT-02", REPORT_NEED: "VEN-NEED-01",
                REPORT_PERFORMANCE: "VEN-PERF-01"}.get(name, "VEN-RPT-04")
        rec.check(rule, False, f"a {name} report broke the profile: {why}")


def judge_plans(rec: Recorder, run: Run) -> None:
    plans = run.received.plans
    if not plans:
        rec.check("VEN-RPT-04", False, "no x-HEMS_PLAN report arrived")
        return
    for _, plan in plans:
        first = plan.intervals[0].start
        rec.check("VEN-RPT-04", len(plan.intervals) == 96 and first == floor_to_interval(plan.created_at),
                  f"plan made {plan.created_at.isoformat()}: {len(plan.intervals)} intervals from "
                  f"{first.isoformat()}")


NEED_WITHIN = timedelta(minutes=15)
"""The capacity need is owed within 15 simulated minutes of the VEN's registration (PROFILE §9.5)."""
VERDICT_WITHIN = timedelta(minutes=30)
"""A day's performance report is owed within 30 simulated minutes of the day's end (PROFILE §9.6)."""


def judge_needs(rec: Recorder, run: Run) -> None:
    """VEN-NEED-01 on the scenario's performance contract: what the needs received soon after registration cover."""
    terms, zone = CONTRACT.performance, CONTRACT.comfort.timezone
    registrations = run.messages("oadrCreatePartyRegistration")
    if terms is None or not registrations:
        return
    registered = run.sim(registrations[0].wall)
    needs = run.received.needs
    if not needs:
        rec.check("VEN-NEED-01", False, "no x-CAPACITY_NEED report arrived under a performance contract")
        return
    local = registered.astimezone(ZoneInfo(zone))
    end = local_day_bounds(local.date(), zone)[1]
    if local >= datetime.combine(local.date(), terms.need_deadline_local, tzinfo=local.tzinfo) - timedelta(hours=1):
        end = local_day_bounds(local.date() + timedelta(days=1), zone)[1]
    first = floor_to_interval(registered) + 2 * INTERVAL
    early = [need for arrived, need in needs if arrived <= registered + NEED_WITHIN]
    covered = {i.start for need in early for i in need.intervals}
    owed = [first + k * INTERVAL for k in range(int((end - first) / INTERVAL))]
    missing = [s for s in owed if s not in covered]
    rec.check("VEN-NEED-01", not missing, f"{len(early)} need report(s) within {NEED_WITHIN} of registering at "
              f"{registered.isoformat()} cover {len(owed) - len(missing)} of the {len(owed)} intervals owed up to "
              f"{end.isoformat()}" + (f"; missing from {missing[0].isoformat()}" if missing else ""))
    above = [(i.start, i.import_kw) for _, need in needs for i in need.intervals
             if i.import_kw > CONTRACT.contracted_max_import_kw]
    rec.check("VEN-NEED-01", not above, f"{sum(len(n.intervals) for _, n in needs)} need interval(s) within the "
              f"contracted maximum {CONTRACT.contracted_max_import_kw} kW" + (f"; above it: {above[:3]}" if above
                                                                               else ""))


def judge_verdicts(rec: Recorder, run: Run) -> None:
    """VEN-PERF-01: a report for every local day that ended while the VEN ran, in time and consistent."""
    zone = CONTRACT.comfort.timezone
    registrations = run.messages("oadrCreatePartyRegistration")
    if CONTRACT.performance is None or not registrations:
        return
    registered = run.sim(registrations[0].wall)
    day = registered.astimezone(ZoneInfo(zone)).date()
    ended = []
    while (bounds := local_day_bounds(day, zone))[1] + VERDICT_WITHIN <= run.end:
        ended.append(bounds)
        day += timedelta(days=1)
    if not ended:
        return
    received = run.received.performance
    for start, end in ended:
        found = [(arrived, r) for arrived, r in received if r.start == start and r.end == end]
        rec.check("VEN-PERF-01", bool(found) and found[0][0] <= end + VERDICT_WITHIN,
                  f"local day {start.isoformat()} .. {end.isoformat()}: " + (
                      f"report arrived at {found[0][0].isoformat()}" if found else "no x-PERFORMANCE report"))
        for arrived, report in found[:1]:
            # Each listed interval names the need the VEN had reported for it (the latest that arrived before).
            for loss in report.comfort_losses:
                reported = [need.by_start()[loss.start] for when, need in run.received.needs
                            if when <= arrived and loss.start in need.by_start()]
                owed = reported[-1] if reported else None
                rec.check("VEN-PERF-01", loss.need_kw == owed or (
                    loss.need_kw is not None and owed is not None and abs(loss.need_kw - owed) < 1e-3),
                    f"interval {loss.start.isoformat()}: need_kw {loss.need_kw}, the VEN had reported {owed}")
    stray = [r for _, r in received if (r.start, r.end) not in ended and r.end > run.end]
    rec.check("VEN-PERF-01", not stray, "no report for a day that had not ended" + (
        f"; got one for {stray[0].start.isoformat()}" if stray else ""))


def judge_privacy(rec: Recorder, run: Run) -> None:
    """VEN-PRIV-01: without consent, no raw comfort reading in any message, read off the XML as it arrived."""
    if CONTRACT.raw_data_consent or not run.raw:
        return
    leaks = []
    for wall, xml in run.raw:
        named = [rid for rid in RAW_COMFORT_RIDS if f">{rid}<" in xml] + ([REPORT_COMFORT] if REPORT_COMFORT in xml
                                                                           else [])
        if named:
            leaks.append((run.sim(wall), named))
    rec.check("VEN-PRIV-01", not leaks, f"{len(run.raw)} message(s) read" + (
        f"; {len(leaks)} carry raw comfort readings, the first at {leaks[0][0].isoformat()}: {leaks[0][1]}"
        if leaks else ", none carries an indoor temperature or an EV range"))


def judge_tou(rec: Recorder, run: Run) -> None:
    """VEN-TOU-01: less import in the expensive intervals than on average in the cheap ones that follow."""
    rows = run.telemetry()
    prices = {i.start: i.import_price_eur_per_kwh for i in tariff(run.start).intervals}
    dear = [rows[s] for s in (run.start + k * INTERVAL for k in EXPENSIVE) if s in rows]
    cheap = [rows[s] for s in (run.start + k * INTERVAL for k in CHEAP) if s in rows]
    if not dear or not cheap:
        return
    dear_kw, cheap_kw = statistics.mean(r.import_kw for r in dear), statistics.mean(r.import_kw for r in cheap)
    rec.check("VEN-TOU-01", cheap_kw - dear_kw >= TOU_MIN_SHIFT_KW,
              f"mean import {dear_kw:.2f} kW at {[prices[r.start] for r in dear]} EUR/kWh, {cheap_kw:.2f} kW at "
              f"{[prices[r.start] for r in cheap]} EUR/kWh (shift {cheap_kw - dear_kw:.2f} kW, at least "
              f"{TOU_MIN_SHIFT_KW} kW expected)")


def judge(rec: Recorder, run: Run) -> None:
    if not judge_registration(rec, run):
        return
    judge_report_offer(rec, run)
    judge_answers(rec, run)
    judge_limits(rec, run)
    judge_polls_after_return(rec, run)
    judge_telemetry_delivery(rec, run)
    judge_plans(rec, run)
    judge_needs(rec, run)
    judge_verdicts(rec, run)
    judge_privacy(rec, run)
    judge_tou(rec, run)
