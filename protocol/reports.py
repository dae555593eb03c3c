"""What the HEMS sends back: measured telemetry, its plan and its comfort status.

Sign conventions: telemetry carries the meter's import and export registers as mean kW over each
15-minute interval, both >= 0. A plan carries the signed net import (import positive, export negative).
"""

from __future__ import annotations

import math
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from protocol.limits import check_power_kw
from protocol.series import check_contiguous, check_sorted_disjoint
from protocol.timebase import INTERVAL, IntervalStart, UtcDatetime

MAX_REPORT_INTERVALS = 2 * 96


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TelemetryInterval(_Frozen):
    start: IntervalStart
    import_kw: float
    """Mean import over the interval."""
    export_kw: float
    """Mean export over the interval."""

    @field_validator("import_kw")
    @classmethod
    def _import(cls, value: float) -> float:
        return check_power_kw(value, what="import_kw")

    @field_validator("export_kw")
    @classmethod
    def _export(cls, value: float) -> float:
        return check_power_kw(value, what="export_kw")

    @property
    def net_import_kw(self) -> float:
        return self.import_kw - self.export_kw

    @property
    def end(self) -> datetime:
        return self.start + INTERVAL


class Telemetry(_Frozen):
    """Measured intervals, sorted; gaps are allowed (a batch sent after a lost link)."""

    intervals: tuple[TelemetryInterval, ...] = Field(min_length=1, max_length=MAX_REPORT_INTERVALS)

    @model_validator(mode="after")
    def _ordered(self) -> Telemetry:
        check_sorted_disjoint(self.intervals)
        return self


class PlanInterval(_Frozen):
    start: IntervalStart
    net_import_kw: float

    @field_validator("net_import_kw")
    @classmethod
    def _net(cls, value: float) -> float:
        return check_power_kw(value, allow_negative=True, what="net_import_kw")


class Plan(_Frozen):
    """The HEMS's planned net import for the coming intervals (normally 24 h)."""

    created_at: UtcDatetime
    intervals: tuple[PlanInterval, ...] = Field(min_length=1, max_length=MAX_REPORT_INTERVALS)

    @model_validator(mode="after")
    def _contiguous(self) -> Plan:
        check_contiguous(self.intervals)
        return self


class ComfortStatus(_Frozen):
    """How the household fares against its comfort terms at one moment."""

    measured_at: UtcDatetime
    indoor_temperature_c: float = Field(ge=-30.0, le=60.0)
    comfort_min_c: float = Field(ge=-30.0, le=60.0)
    comfort_max_c: float = Field(ge=-30.0, le=60.0)
    ev_range_km: float | None = Field(default=None, ge=0.0, le=2000.0)
    """Range the EV's battery holds now; None when no EV is plugged in."""
    ev_required_range_km: float | None = Field(default=None, ge=0.0, le=2000.0)

    @field_validator("indoor_temperature_c", "comfort_min_c", "comfort_max_c", "ev_range_km",
                     "ev_required_range_km")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError(f"must be finite, not {value!r}")
        return value

    @model_validator(mode="after")
    def _band(self) -> ComfortStatus:
        if self.comfort_min_c > self.comfort_max_c:
            raise ValueError(f"comfort_min_c {self.comfort_min_c} is above comfort_max_c {self.comfort_max_c}")
        return self

    @property
    def temperature_in_band(self) -> bool:
        return self.comfort_min_c <= self.indoor_temperature_c <= self.comfort_max_c
