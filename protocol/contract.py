"""The household's contract with the DSO: connection point, capacity, failsafe and comfort terms.

The contract is agreed out of band (at enrolment) and configured at both ends; it is not sent over OpenADR.
"""

from __future__ import annotations

from datetime import time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from protocol.limits import check_power_kw

MIN_FAILSAFE_DURATION_S = 2 * 3600
MAX_FAILSAFE_DURATION_S = 24 * 3600
"""EEBus LPC: FailsafeDurationMinimum lies between 2 h and 24 h."""


def ean18_check_digit(first_17_digits: str) -> str:
    """GS1 mod-10 check digit of an 18-digit EAN (GSRN), as used for European connection points."""
    if len(first_17_digits) != 17 or not first_17_digits.isdigit():
        raise ValueError(f"need exactly 17 digits to compute an EAN-18 check digit, got {first_17_digits!r}")
    # GS1: weights 3,1,3,... from the rightmost data digit.
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(first_17_digits)))
    return str((10 - total % 10) % 10)


def make_ean18(first_17_digits: str) -> str:
    return first_17_digits + ean18_check_digit(first_17_digits)


class ComfortTerms(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    indoor_setpoint_c: float = Field(default=20.0, ge=5.0, le=30.0)
    temperature_band_k: float = Field(default=1.0, gt=0.0, le=5.0)
    """Indoor temperature must stay within setpoint +- band."""
    ev_departure_local: time = time(6, 0)
    ev_required_range_km: float = Field(default=150.0, ge=0.0, le=1000.0)
    timezone: str = "Europe/Amsterdam"
    """IANA zone in which ev_departure_local is meant."""

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown IANA time zone {value!r}") from error
        return value

    @property
    def comfort_min_c(self) -> float:
        return self.indoor_setpoint_c - self.temperature_band_k

    @property
    def comfort_max_c(self) -> float:
        return self.indoor_setpoint_c + self.temperature_band_k


class PerformanceTerms(BaseModel):
    """A performance contract (PROFILE §11): every 15 minutes the DSO guarantees at least the import the HEMS
    reported it needs to keep the comfort terms (its capacity need, §9.5), for a fixed discount on the grid tariff;
    where a limit below that need cost comfort, the DSO compensates the household (settlement, §9.6)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    monthly_discount_eur: float = Field(default=10.0, ge=0.0, le=1000.0)
    """Discount on the grid tariff per calendar month under the contract."""
    compensation_eur_per_degree_hour: float = Field(default=1.0, ge=0.0, le=100.0)
    """Paid per K·h outside the comfort band in intervals where the DSO's limit was below the reported need."""
    compensation_eur_per_missed_departure: float = Field(default=5.0, ge=0.0, le=1000.0)
    """Paid per EV departure short of the contracted range after a charging session in which the DSO's limit was
    below the reported need."""
    need_deadline_local: time = time(13, 0)
    """The HEMS reports the next local day's capacity need by this local time (``comfort.timezone``); the DSO
    allocates that day's firm capacity after it (the reference DSO at 14:00 Europe/Amsterdam)."""


class HouseholdContract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    connection_point_id: str
    """18-digit EAN of the connection point, with a valid GS1 check digit."""
    contracted_max_import_kw: float
    contracted_max_export_kw: float
    failsafe_import_kw: float
    failsafe_export_kw: float
    failsafe_duration_s: int = Field(ge=MIN_FAILSAFE_DURATION_S, le=MAX_FAILSAFE_DURATION_S)
    non_flexible_import_kw: float = 0.0
    """Import the household declared at enrolment that it cannot shed (PROFILE.md §5.2.1, §11): a limit below it
    binds only down to it. 0 (the default): every limit binds."""
    non_flexible_export_kw: float = 0.0
    """Likewise for export (e.g. PV that cannot be curtailed)."""
    comfort: ComfortTerms = ComfortTerms()
    performance: PerformanceTerms | None = None
    """A performance contract: the HEMS reports its capacity need and a daily performance verdict (§9.5, §9.6),
    and the DSO allocates firm capacity for that need. None: the household gets the DSO's fair rule only."""
    raw_data_consent: bool = False
    """The household consents that its HEMS sends raw comfort readings (indoor temperature, EV range: the
    15-minute comfort status of §9.7 and the range at departure). Off by default: they reveal when people are
    home, asleep or away (PROFILE §14, data minimisation)."""

    @field_validator("connection_point_id")
    @classmethod
    def _ean(cls, value: str) -> str:
        if len(value) != 18 or not value.isdigit():
            raise ValueError(f"{value!r} is not an 18-digit EAN")
        if ean18_check_digit(value[:17]) != value[17]:
            raise ValueError(f"{value!r} has check digit {value[17]}, expected {ean18_check_digit(value[:17])}")
        return value

    @field_validator("contracted_max_import_kw", "contracted_max_export_kw", "failsafe_import_kw",
                     "failsafe_export_kw", "non_flexible_import_kw", "non_flexible_export_kw")
    @classmethod
    def _power(cls, value: float) -> float:
        return check_power_kw(value)

    @model_validator(mode="after")
    def _failsafe_within_contract(self) -> HouseholdContract:
        if self.failsafe_import_kw > self.contracted_max_import_kw:
            raise ValueError(
                f"failsafe_import_kw {self.failsafe_import_kw} exceeds contracted_max_import_kw "
                f"{self.contracted_max_import_kw}"
            )
        if self.failsafe_export_kw > self.contracted_max_export_kw:
            raise ValueError(
                f"failsafe_export_kw {self.failsafe_export_kw} exceeds contracted_max_export_kw "
                f"{self.contracted_max_export_kw}"
            )
        # The household must be able to meet its own failsafe limits (PROFILE.md §11).
        if self.non_flexible_import_kw > self.failsafe_import_kw:
            raise ValueError(
                f"non_flexible_import_kw {self.non_flexible_import_kw} exceeds failsafe_import_kw "
                f"{self.failsafe_import_kw}: the household could not meet its own failsafe limit"
            )
        if self.non_flexible_export_kw > self.failsafe_export_kw:
            raise ValueError(
                f"non_flexible_export_kw {self.non_flexible_export_kw} exceeds failsafe_export_kw "
                f"{self.failsafe_export_kw}: the household could not meet its own failsafe limit"
            )
        return self
