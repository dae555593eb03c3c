"""Why an interval's mean import went over the limit: every over-limit interval gets one reason. Pure.

The controller keeps an :class:`IntervalLog` per 15-minute interval while it runs (what the guard could not
shed, the load it cannot control against the forecast the plan used, what the plans in force said about the
interval, whether the limit changed inside it) and asks :func:`attribute` for the reason when the interval
closes over its limit. The first row that applies wins:

| reason                       | the interval                                                                 |
| ---------------------------- | ---------------------------------------------------------------------------- |
| ``below_meter_resolution``   | over by less than 1 Wh in the interval (``METER_RESOLUTION_KW``): what no     |
|                              | meter register shows                                                          |
| ``limit_tightened``          | its limit fell inside it (failsafe, a new signal): import drawn under the    |
|                              | looser limit counts against the new one                                      |
| ``comfort_rule``             | a plan in force broke the limit to keep a comfort or EV term                  |
| ``base_load_under_forecast`` | the base load ran above the forecast - in the interval, or over the hours    |
|                              | before it by at least the energy over the limit (the battery that would have |
|                              | covered it was spent on it) - and either a plan broke the limit or the guard |
|                              | ran out of flexible room                                                      |
| ``unsheddable_load_planned`` | a plan in force broke the limit: by the forecast, the load it cannot shed     |
|                              | exceeded the limit with the battery at its maximum or empty (or none)         |
| ``physically_unavoidable``   | no plan broke it, the guard ran out of flexible room, the base load was as    |
|                              | forecast (the devices could not follow the plan: a battery at its floor, …)  |
| ``guard_lag``                | the devices had room throughout: the guard, seeing the load a sub-step late,  |
|                              | let a measurable amount through - a defect, never expected                    |
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

METER_RESOLUTION_KW = 0.004
"""1 Wh in a 15-minute interval: the resolution of a meter's import register."""
UNDER_FORECAST_SHARE = 0.05
"""Measured base load more than this share (and 0.01 kW) above the forecast counts as under-forecast."""
ROOM_KWS = 1e-6
"""Import (kW·s) the guard could not shed below which it counts as having had room."""


class OverLimitReason(StrEnum):
    BELOW_METER_RESOLUTION = "below_meter_resolution"
    LIMIT_TIGHTENED = "limit_tightened"
    COMFORT_RULE = "comfort_rule"
    UNSHEDDABLE_LOAD_PLANNED = "unsheddable_load_planned"
    BASE_LOAD_UNDER_FORECAST = "base_load_under_forecast"
    PHYSICALLY_UNAVOIDABLE = "physically_unavoidable"
    GUARD_LAG = "guard_lag"
    UNATTRIBUTED = "unattributed"
    """Recorded by a caller that gave no reason (never by the controller)."""

    @property
    def avoidable(self) -> bool:
        """True for the reasons that mean the devices had room: a defect of the HEMS, not of the situation."""
        return self in (OverLimitReason.GUARD_LAG, OverLimitReason.UNATTRIBUTED)


@dataclass
class IntervalLog:
    """What the controller saw during one interval (kW·s are sums of power × seconds over its sub-steps)."""

    seconds: float = 0.0
    uncontrolled_kws: float = 0.0
    """The load the HEMS cannot control (base load), measured."""
    unshed_kws: float = 0.0
    """Import above the guard's aim that no flexible device had room left to take away."""
    forecast_base_kw: float | None = None
    """The base load the first plan made for this interval expected (its forecast, before any margin)."""
    planned_over_kw: float = 0.0
    """The most a plan in force during the interval planned above its import limit."""
    planned_note: str | None = None
    """That plan's own note on the import limit (the reason it gave)."""
    comfort_forced: bool = False
    limit_changes: int = 0
    """How often the import limit in force fell inside the interval."""
    import_limit_kw: float | None = None
    """The import limit in force at the last sub-step."""

    def add_step(self, *, dt_s: float, import_limit_kw: float, uncontrolled_kw: float, unshed_kw: float) -> None:
        if self.import_limit_kw is not None and import_limit_kw < self.import_limit_kw - 1e-9:
            self.limit_changes += 1
        self.import_limit_kw = import_limit_kw
        self.seconds += dt_s
        self.uncontrolled_kws += uncontrolled_kw * dt_s
        self.unshed_kws += max(unshed_kw, 0.0) * dt_s

    def add_plan(self, *, over_kw: float, note: str | None, comfort_forced: bool) -> None:
        if over_kw > self.planned_over_kw:
            self.planned_over_kw, self.planned_note, self.comfort_forced = over_kw, note, comfort_forced


    @property
    def base_load_excess_kwh(self) -> float:
        """Base load measured above the forecast over the interval (negative: below), kWh."""
        if self.forecast_base_kw is None:
            return 0.0
        return (self.uncontrolled_kws - self.forecast_base_kw * self.seconds) / 3600


def attribute(log: IntervalLog, *, import_kw: float, limit_kw: float, earlier_excess_kwh: float = 0.0,
              earlier_h: float = 0.0, planned_tolerance_kw: float = 1e-3) -> tuple[OverLimitReason, str]:
    """The reason an interval with mean import ``import_kw`` went over ``limit_kw``, and a sentence with the
    figures behind it. ``earlier_excess_kwh``: how much the base load ran above its forecast over the
    ``earlier_h`` hours before the interval (energy a battery spent that no plan had counted on)."""
    over_kw = import_kw - limit_kw
    over = f"{import_kw:.3f} kW against {limit_kw:.2f} kW"
    if over_kw < METER_RESOLUTION_KW:
        return OverLimitReason.BELOW_METER_RESOLUTION, (
            f"{over}: {over_kw * 250:.2f} Wh over in the interval, below a meter register's 1 Wh")
    if log.limit_changes:
        return OverLimitReason.LIMIT_TIGHTENED, (
            f"{over}: the limit fell {log.limit_changes} time(s) inside the interval; import drawn under the "
            "looser limit counts against the tighter one")
    said = f" (the plan: {log.planned_note})" if log.planned_note else ""
    planned = log.planned_over_kw > planned_tolerance_kw
    if planned and log.comfort_forced:
        return OverLimitReason.COMFORT_RULE, (
            f"{over}: the plan went {log.planned_over_kw:.2f} kW over to keep a comfort or EV term{said}")
    measured = log.uncontrolled_kws / log.seconds if log.seconds > 0 else 0.0
    forecast = log.forecast_base_kw
    expected = "-" if forecast is None else f"{forecast:.2f}"
    unshed = log.unshed_kws / log.seconds if log.seconds > 0 else 0.0
    if planned or log.unshed_kws > ROOM_KWS:
        if forecast is not None and measured > forecast * (1 + UNDER_FORECAST_SHARE) + 0.01:
            return OverLimitReason.BASE_LOAD_UNDER_FORECAST, (
                f"{over}: the base load was {measured:.2f} kW against {expected} kW forecast, and no flexible "
                f"device had room left for it")
        if earlier_excess_kwh >= over_kw * 0.25:
            return OverLimitReason.BASE_LOAD_UNDER_FORECAST, (
                f"{over}: over the {earlier_h:g} h before, the base load ran {earlier_excess_kwh:.2f} kWh above "
                f"its forecast, more than the {over_kw * 0.25:.3f} kWh over the limit here: the battery energy "
                f"that would have covered it was spent on it{said}")
    if planned:
        return OverLimitReason.UNSHEDDABLE_LOAD_PLANNED, (
            f"{over}: the plan went {log.planned_over_kw:.2f} kW over: by the forecast, the load that cannot be "
            f"shed exceeded the limit{said}")
    if log.unshed_kws > ROOM_KWS:
        return OverLimitReason.PHYSICALLY_UNAVOIDABLE, (
            f"{over}: no flexible device had room left for {unshed:.3f} kW (base load {measured:.2f} kW, "
            f"{expected} kW forecast)")
    return OverLimitReason.GUARD_LAG, (
        f"{over}: the devices had room throughout; the guard let a rising load through a sub-step late")
