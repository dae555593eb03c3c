"""Household base load: the BDEW H25 standard load profile (demandlib), scaled to an annual consumption.

H25 is the 2025 revision of the German household standard load profile (BDEW; 15-minute values per month and
day type, with the dynamisation factor over the year), shipped offline in ``demandlib``. A standard profile is
the mean of many households and so is smooth; one household is not, so the simulated load multiplies the
profile with seeded log-normal AR(1) noise. The planner sees only the profile (the plant is not the model).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np

from hems_client.devices.base import Conditions, DeviceKind

_PROFILE_ANNUAL_KWH = 1_000_000.0
"""demandlib scales its BDEW 2025 profiles to kW for 1 GWh per year."""


@lru_cache(maxsize=4)
def _h25_year_kw(year: int) -> np.ndarray:
    """One year of H25 in local (wall-clock) time, 15-minute kW values for 1 GWh/a, index 0 = 1 Jan 00:00."""
    try:
        import pandas as pd
        from demandlib.bdew import H25
    except ImportError as error:  # pragma: no cover - a packaging error, not a runtime condition
        raise RuntimeError("the base-load profile needs demandlib (BDEW H25); install the project's "
                           "dependencies") from error
    days = 366 if (year % 4 == 0 and year % 100 != 0) or year % 400 == 0 else 365
    index = pd.date_range(datetime(year, 1, 1), periods=days * 96, freq="15min")
    return np.asarray(H25(index), dtype=float)


def h25_kw(moment: datetime, *, annual_kwh: float, timezone: str = "Europe/Amsterdam") -> float:
    """Mean power of a household consuming ``annual_kwh`` per year, in the quarter-hour holding ``moment``."""
    local = moment.astimezone(ZoneInfo(timezone)).replace(tzinfo=None)
    profile = _h25_year_kw(local.year)
    slot = int((local - datetime(local.year, 1, 1)) / timedelta(minutes=15))
    return float(profile[min(slot, len(profile) - 1)]) * annual_kwh / _PROFILE_ANNUAL_KWH


class BaseLoad:
    """Lights, cooking, appliances: inflexible, measured, never shed."""

    kind = DeviceKind.BASE_LOAD
    flexible = False
    priority = 1000

    def __init__(
        self,
        name: str = "base_load",
        *,
        annual_kwh: float = 3500.0,
        timezone: str = "Europe/Amsterdam",
        seed: int = 0,
        noise_sigma: float = 0.3,
        noise_correlation_s: float = 600.0,
    ) -> None:
        if not annual_kwh > 0:
            raise ValueError(f"annual_kwh must be > 0, not {annual_kwh}")
        if noise_sigma < 0 or noise_correlation_s <= 0:
            raise ValueError("noise_sigma must be >= 0 and noise_correlation_s > 0")
        self.name = name
        self.annual_kwh = annual_kwh
        self.timezone = timezone
        self.noise_sigma = noise_sigma
        self.noise_correlation_s = noise_correlation_s
        self._rng = np.random.default_rng(seed)
        self._noise = 0.0
        self.last_kw: float | None = None

    def expected_kw(self, moment: datetime) -> float:
        """The profile value: what a forecast of this household's base load would say."""
        return h25_kw(moment.astimezone(UTC), annual_kwh=self.annual_kwh, timezone=self.timezone)

    def power_range_kw(self, conditions: Conditions, dt_s: float) -> tuple[float, float]:
        value = self.last_kw if self.last_kw is not None else self.expected_kw(conditions.now)
        return value, value

    def step(self, setpoint_kw: float | None, dt_s: float, conditions: Conditions) -> float:
        rho = math.exp(-dt_s / self.noise_correlation_s)
        self._noise = rho * self._noise + math.sqrt(1 - rho * rho) * float(self._rng.normal(0.0, self.noise_sigma))
        factor = math.exp(self._noise - self.noise_sigma**2 / 2)  # mean 1
        self.last_kw = self.expected_kw(conditions.now) * factor
        return self.last_kw
