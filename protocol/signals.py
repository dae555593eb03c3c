"""What the DSO sends: the capacity bandwidth and the time-of-use tariff.

Sign conventions: import is power taken from the grid, export power fed into it. Limits are magnitudes
(>= 0) in kW in separate import and export fields; prices are EUR/kWh and may be negative.
All intervals are 15 minutes long, start on the UTC quarter-hour grid and follow each other without gaps.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from protocol.limits import check_power_kw, check_price_eur_per_kwh
from protocol.series import check_contiguous
from protocol.timebase import INTERVAL, IntervalStart

MAX_SIGNAL_INTERVALS = 7 * 96
"""A week of quarter-hours: the longest series one signal may carry."""


class Firmness(StrEnum):
    FIRM = "firm"
    """Released day-ahead; the DSO guarantees it."""
    NON_FIRM = "non_firm"
    """Released near real time from measured headroom; added on top of the firm part."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BandwidthInterval(_Frozen):
    start: IntervalStart
    import_limit_kw: float
    export_limit_kw: float

    @field_validator("import_limit_kw")
    @classmethod
    def _import(cls, value: float) -> float:
        return check_power_kw(value, what="import_limit_kw")

    @field_validator("export_limit_kw")
    @classmethod
    def _export(cls, value: float) -> float:
        return check_power_kw(value, what="export_limit_kw")

    @property
    def end(self) -> datetime:
        return self.start + INTERVAL


class TariffInterval(_Frozen):
    start: IntervalStart
    import_price_eur_per_kwh: float
    export_price_eur_per_kwh: float

    @field_validator("import_price_eur_per_kwh", "export_price_eur_per_kwh")
    @classmethod
    def _price(cls, value: float) -> float:
        return check_price_eur_per_kwh(value)

    @property
    def end(self) -> datetime:
        return self.start + INTERVAL


class _ContiguousSeries(_Frozen):
    """A series of 15-minute intervals without gaps; subclasses declare ``intervals``."""

    intervals: tuple[BandwidthInterval, ...] | tuple[TariffInterval, ...]

    @model_validator(mode="after")
    def _contiguous(self) -> _ContiguousSeries:
        check_contiguous(self.intervals)
        return self

    @property
    def start(self) -> datetime:
        return self.intervals[0].start

    @property
    def end(self) -> datetime:
        return self.intervals[-1].end


class CapacityBandwidth(_ContiguousSeries):
    """Import and export limits at one connection point, one value pair per 15 minutes."""

    firmness: Firmness
    intervals: tuple[BandwidthInterval, ...] = Field(min_length=1, max_length=MAX_SIGNAL_INTERVALS)


class TouTariff(_ContiguousSeries):
    """Time-of-use prices in EUR/kWh per 15 minutes: what import costs and what export earns."""

    intervals: tuple[TariffInterval, ...] = Field(min_length=1, max_length=MAX_SIGNAL_INTERVALS)
