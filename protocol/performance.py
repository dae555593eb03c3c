"""What a HEMS under a performance contract tells the DSO instead of raw comfort data (PROFILE §9.5, §9.6).

* :class:`CapacityNeed` (day-ahead, before the DSO allocates): the *least* mean import per 15-minute interval with
  which the HEMS can still keep the contracted comfort band and EV range. The DSO allocates firm capacity for it.
* :class:`PerformanceReport` (once per local day, after it ended): a verdict instead of a sensor feed: the
  degree-hours outside the comfort band, for every interval where comfort was lost the DSO's limit against the
  need the HEMS had reported, and the EV's shortfall at departure against the contract. The EV's range itself
  (``EvVerdict.range_km``) is present only when the contract records the household's consent.

Pure models; the OpenADR 2.0b codecs are in ``protocol.oadr20b.performance``.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from protocol.limits import check_power_kw
from protocol.series import check_contiguous, check_sorted_disjoint
from protocol.timebase import INTERVAL, IntervalStart, UtcDatetime

MAX_NEED_INTERVALS = 2 * 96
"""A need covers at most two days (a day-ahead need sent with the rest of the current day)."""
LOCAL_DAY_HOURS = (23, 24, 25)
"""A local day lasts 23, 24 or 25 hours (daylight saving time changes)."""
NEED_TOLERANCE_KW = 0.001
"""A limit counts as below the need when it is lower by more than 1 W (the resolution limits are published in)."""
MAX_DEGREE_HOURS_PER_INTERVAL = 90.0 * 0.25
"""Temperatures lie within -30 .. 60 °C (PROFILE §4.6): at most 90 K outside any band for a quarter-hour."""
MAX_EV_RANGE_KM = 2000.0
DEGREE_HOURS_TOLERANCE = 0.001
"""Per listed interval: how far the day's total may differ from the sum of its intervals (rounding)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, not {value!r}")
    return value


# ------------------------------------------------------------------------------------------------- the need


class NeedInterval(_Frozen):
    start: IntervalStart
    import_kw: float
    """The least mean import over the interval with which the HEMS keeps the contracted comfort."""

    @field_validator("import_kw")
    @classmethod
    def _power(cls, value: float) -> float:
        return check_power_kw(value, what="import_kw")

    @property
    def end(self) -> datetime:
        return self.start + INTERVAL


class CapacityNeed(_Frozen):
    """The HEMS's capacity need for the intervals it covers, made at ``created_at`` (which identifies it: a later
    need replaces an earlier one for the intervals both cover)."""

    created_at: UtcDatetime
    intervals: tuple[NeedInterval, ...] = Field(min_length=1, max_length=MAX_NEED_INTERVALS)

    @model_validator(mode="after")
    def _contiguous(self) -> CapacityNeed:
        check_contiguous(self.intervals)
        return self

    @property
    def start(self) -> datetime:
        return self.intervals[0].start

    @property
    def end(self) -> datetime:
        return self.intervals[-1].end

    def by_start(self) -> dict[datetime, float]:
        return {interval.start: interval.import_kw for interval in self.intervals}


# ------------------------------------------------------------------------------------------ the daily verdict


class ComfortLoss(_Frozen):
    """One interval in which the indoor temperature left the contracted band."""

    start: IntervalStart
    degree_hours: float = Field(gt=0.0, le=MAX_DEGREE_HOURS_PER_INTERVAL)
    """K·h outside the band in this interval (the integral of the distance to the band over time)."""
    limit_kw: float
    """The import limit the DSO's signals set for the interval (PROFILE §6), as the HEMS held it."""
    need_kw: float | None = None
    """The capacity need the HEMS had reported for the interval; None when it had reported none."""
    failsafe: bool = False
    """The HEMS applied the contract's failsafe limit instead (no contact with the DSO, §10)."""

    @field_validator("limit_kw")
    @classmethod
    def _limit(cls, value: float) -> float:
        return check_power_kw(value, what="limit_kw")

    @field_validator("need_kw")
    @classmethod
    def _need(cls, value: float | None) -> float | None:
        return None if value is None else check_power_kw(value, what="need_kw")

    @property
    def limit_below_need(self) -> bool:
        """The DSO's limit was below the need the HEMS had reported for this interval."""
        return self.need_kw is not None and self.limit_kw < self.need_kw - NEED_TOLERANCE_KW


class EvVerdict(_Frozen):
    """The EV at the contracted departure time of the day, against the contracted range."""

    shortfall_km: float = Field(ge=0.0, le=MAX_EV_RANGE_KM)
    """Contracted range minus the range at departure; 0 when the car left with at least the contracted range."""
    limit_below_need: bool
    """In some interval of the charging session before the departure the DSO's limit was below the need the HEMS
    had reported (the HEMS alone knows the session: when the car was home stays in the home)."""
    range_km: float | None = Field(default=None, ge=0.0, le=MAX_EV_RANGE_KM)
    """The range at departure; only under ``HouseholdContract.raw_data_consent``."""

    @field_validator("shortfall_km", "range_km")
    @classmethod
    def _finite_km(cls, value: float | None) -> float | None:
        return None if value is None else _finite(value, "a distance")

    @property
    def ready(self) -> bool:
        return self.shortfall_km <= 0.0


class PerformanceReport(_Frozen):
    """The verdict on one local day [``start``, ``end``) of the contract's time zone."""

    start: IntervalStart
    end: IntervalStart
    created_at: UtcDatetime
    degree_hours_outside_band: float = Field(ge=0.0, le=25 * 90.0)
    """K·h outside the comfort band over the day: the sum over ``comfort_losses``."""
    comfort_losses: tuple[ComfortLoss, ...] = Field(default=(), max_length=100)
    ev: EvVerdict | None = None
    """None when no EV left at a contracted departure time this day."""

    @field_validator("degree_hours_outside_band")
    @classmethod
    def _total(cls, value: float) -> float:
        return _finite(value, "degree_hours_outside_band")

    @model_validator(mode="after")
    def _consistent(self) -> PerformanceReport:
        length = self.end - self.start
        if length not in {timedelta(hours=h) for h in LOCAL_DAY_HOURS}:
            raise ValueError(f"covers {length}; a report covers one local day of 23, 24 or 25 hours")
        check_sorted_disjoint(self.comfort_losses)
        for index, loss in enumerate(self.comfort_losses):
            if not self.start <= loss.start < self.end:
                raise ValueError(f"comfort_losses[{index}] starts {loss.start.isoformat()}, outside the day "
                                 f"{self.start.isoformat()} .. {self.end.isoformat()}")
        listed = sum(loss.degree_hours for loss in self.comfort_losses)
        if abs(listed - self.degree_hours_outside_band) > DEGREE_HOURS_TOLERANCE * max(1, len(self.comfort_losses)):
            raise ValueError(f"degree_hours_outside_band {self.degree_hours_outside_band:g} is not the sum of the "
                             f"comfort_losses ({listed:g} K·h)")
        return self

    @property
    def intervals(self) -> int:
        return int((self.end - self.start) / INTERVAL)

    @property
    def degree_hours_limit_below_need(self) -> float:
        """K·h lost in intervals where the DSO's limit was below the reported need (and no failsafe applied)."""
        return sum(loss.degree_hours for loss in self.comfort_losses if loss.limit_below_need and not loss.failsafe)
