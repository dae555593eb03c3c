"""The HEMS's settings: one frozen, validated object, from which ``hems-client run`` makes its options.

:class:`ControllerSettings` is what the control loop needs (``Controller``, ``HemsApp``); :class:`HemsSettings`
adds what the ``hems-client run`` program needs around it (the VTN, the contract and store files, the
simulated household, the clock). Each field's description is its ``--help`` text; ``protocol.settings`` makes
the command line, the ``HEMS_*`` environment variables and the ``--config`` TOML file from them, in that order
of precedence, and refuses a bad value naming where it came from.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hems_client.control.failsafe import DEFAULT_FAILSAFE_AFTER_S
from hems_client.control.signal_book import DefaultPrices
from protocol.limits import check_price_eur_per_kwh
from protocol.timebase import INTERVALS_PER_DAY

ENV_PREFIX = "HEMS_"
"""Environment variables: HEMS_ + the setting's name in upper case (``HEMS_SUBSTEP_S``)."""


def check_poll_against_failsafe(*, poll_interval_s: float, speed: float, failsafe_after_s: float) -> None:
    """Refuse a wall-time poll period that is not shorter than ``failsafe_after_s`` in clock time."""
    poll_clock_s = poll_interval_s * speed
    if poll_clock_s >= failsafe_after_s:
        raise ValueError(
            f"poll interval {poll_interval_s:g} s (wall) is {poll_clock_s:g} s of clock time at speed {speed:g}; "
            f"failsafe_after_s {failsafe_after_s:g} must exceed it, or the failsafe engages between two polls "
            f"(poll faster, e.g. {failsafe_after_s / (3 * speed):.3g} s, or raise failsafe_after_s)")


class ControllerSettings(BaseModel):
    """How the control loop runs (``hems_client.control.controller.Controller``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    substep_s: float = Field(10.0, gt=0, le=900, description=(
        "simulated seconds per physics and guard step: the local guard checks measured power this often"))
    failsafe_after_s: float | None = Field(DEFAULT_FAILSAFE_AFTER_S, ge=0, description=(
        "simulated seconds without contact to the VTN before the contract's failsafe limits apply (EEBus LPC: "
        "120; 0 disables the failsafe); must exceed the poll interval in simulated time"))
    horizon_intervals: int = Field(INTERVALS_PER_DAY, ge=4, le=2 * INTERVALS_PER_DAY, description=(
        "15-minute intervals each plan looks ahead"))
    default_import_price_eur_per_kwh: float = Field(0.30, description=(
        "import price assumed where no ToU tariff is in force, EUR/kWh"))
    default_export_price_eur_per_kwh: float = Field(0.05, description=(
        "export price assumed where no ToU tariff is in force, EUR/kWh"))
    guard_margin_kw: float = Field(0.05, ge=0, le=1, description=(
        "least margin the local guard keeps inside a limit where an overshoot could not be taken back (it "
        "widens to the load's largest one-step rise of the last hour)"))
    plan_tolerance_kw: float = Field(0.1, ge=0, le=10, description=(
        "a new plan is reported to the DSO when one of its intervals moved by more than this"))
    plan_resend_s: float = Field(4 * 3600.0, gt=0, le=7 * 86400, description=(
        "the plan is reported at least this often, in simulated seconds, changed or not"))
    history_intervals: int = Field(7 * INTERVALS_PER_DAY, ge=1, le=366 * INTERVALS_PER_DAY, description=(
        "closed intervals of measured telemetry kept in memory"))

    @field_validator("failsafe_after_s")
    @classmethod
    def _zero_disables(cls, value: float | None) -> float | None:
        return None if value == 0 else value

    @field_validator("default_import_price_eur_per_kwh", "default_export_price_eur_per_kwh")
    @classmethod
    def _price(cls, value: float) -> float:
        return check_price_eur_per_kwh(value)

    @property
    def default_prices(self) -> DefaultPrices:
        return DefaultPrices(self.default_import_price_eur_per_kwh, self.default_export_price_eur_per_kwh)


class HemsSettings(ControllerSettings):
    """Everything ``hems-client run`` takes (but the TLS material, given as options of their own)."""

    vtn_url: str = Field(description=(
        "the VTN's OpenADR 2.0b base URL, e.g. https://dso.example.net:8080/OpenADR2/Simple/2.0b (with --cert, "
        "--key and --ca-file), or http://127.0.0.1:8080/... with --insecure"))
    contract: Path | None = Field(None, description=(
        "the household contract (TOML): HouseholdContract fields at top level, comfort terms in a [comfort] table "
        "(see hems_client/config.py); may be left out when --db holds one"))
    db: Path | None = Field(None, description=(
        "local SQLite store of the contract, the active DSO signals and the failsafe state; a restart with the "
        "same file resumes with them (none: nothing survives a restart)"))
    planner: Literal["optimiser", "rule"] = Field("optimiser", description=(
        "optimiser: the convex receding-horizon optimiser; rule: the rule-based planner"))
    speed: float = Field(1.0, gt=0, le=100_000, description=(
        "simulated seconds per wall-clock second (1: real time; 600 runs a day in 2.4 minutes)"))
    start: datetime | None = Field(None, description=(
        "simulated start time with time zone, e.g. 2025-01-15T00:00+00:00 (none: now)"))
    duration_h: float = Field(24.0, ge=0, le=366 * 24, description=(
        "simulated hours to run before printing the KPIs and exiting; 0 runs until Ctrl-C"))
    seed: int = Field(0, description="seed of the household's devices, load noise and weather")
    outdoor_mean_c: float = Field(5.0, ge=-40, le=40, description=(
        "daily mean outdoor temperature of the synthetic weather in °C"))
    cloudiness: float = Field(0.4, ge=0, le=1, description=(
        "mean cloudiness of the synthetic weather, 0 clear to 1 overcast"))
    pv_kw: float | None = Field(None, ge=0, le=100, description=(
        "PV peak power in kWp; 0 for none (none: 4-8 kWp by the seed)"))
    annual_kwh: float | None = Field(None, gt=0, le=100_000, description=(
        "annual base-load consumption in kWh (none: 2500-4500 by the seed)"))
    heat_pump: bool = Field(True, description="with a heat pump (--no-heat-pump leaves it out)")
    ev: bool = Field(True, description="with an EV (--no-ev leaves it out)")
    battery: bool = Field(True, description="with a home battery (--no-battery leaves it out)")
    poll_interval_s: float | None = Field(None, gt=0, le=3600, description=(
        "wall seconds between polls of the VTN (none: the VTN's requested poll frequency, at most a third of "
        "--failsafe-after-s in simulated time)"))
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("WARNING", description="log level")

    @field_validator("vtn_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("start")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("has no time zone; write e.g. 2025-01-15T00:00+00:00")
        return None if value is None else value.astimezone(UTC)

    @model_validator(mode="after")
    def _poll_inside_failsafe(self) -> Self:
        if self.poll_interval_s is not None and self.failsafe_after_s is not None:
            check_poll_against_failsafe(poll_interval_s=self.poll_interval_s, speed=self.speed,
                                        failsafe_after_s=self.failsafe_after_s)
        return self

