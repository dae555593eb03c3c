"""Weather for the simulated households: sun position, clear-sky irradiance, outdoor temperature and clouds.

The sun position follows the usual textbook approximations (Cooper's declination, Spencer's equation of time);
clear-sky global horizontal irradiance uses the Haurwitz model, GHI = 1098 cos(z) exp(-0.057 / cos(z)) W/m².
Errors of a few percent against a full solar model do not matter for a household simulation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from hems_client.devices.base import Conditions, clip


@dataclass(frozen=True)
class Location:
    latitude_deg: float = 52.1
    longitude_deg: float = 5.1
    """Default: Utrecht, the Netherlands."""


DEFAULT_LOCATION = Location()


def _solar_hour_and_declination(moment: datetime, location: Location) -> tuple[float, float]:
    moment = moment.astimezone(UTC)
    day_of_year = moment.timetuple().tm_yday
    gamma = 2 * math.pi * (day_of_year - 1) / 365
    # Spencer (1971): equation of time in minutes.
    equation_of_time_min = 229.18 * (0.000075 + 0.001868 * math.cos(gamma) - 0.032077 * math.sin(gamma)
                                     - 0.014615 * math.cos(2 * gamma) - 0.040849 * math.sin(2 * gamma))
    utc_hours = moment.hour + moment.minute / 60 + moment.second / 3600
    solar_hour = utc_hours + location.longitude_deg / 15 + equation_of_time_min / 60
    declination = math.radians(23.45) * math.sin(2 * math.pi * (284 + day_of_year) / 365)
    return solar_hour, declination


def solar_elevation_deg(moment: datetime, location: Location = DEFAULT_LOCATION) -> float:
    """Elevation of the sun's centre above the horizon, in degrees (negative at night)."""
    solar_hour, declination = _solar_hour_and_declination(moment, location)
    hour_angle = math.radians(15 * (solar_hour - 12))
    latitude = math.radians(location.latitude_deg)
    sin_elevation = (math.sin(latitude) * math.sin(declination)
                     + math.cos(latitude) * math.cos(declination) * math.cos(hour_angle))
    return math.degrees(math.asin(clip(sin_elevation, -1.0, 1.0)))


def clear_sky_ghi_w_per_m2(moment: datetime, location: Location = DEFAULT_LOCATION) -> float:
    """Haurwitz clear-sky global horizontal irradiance."""
    cos_zenith = math.sin(math.radians(solar_elevation_deg(moment, location)))
    if cos_zenith <= 0.01:
        return 0.0
    return 1098.0 * cos_zenith * math.exp(-0.057 / cos_zenith)


def local_solar_hour(moment: datetime, location: Location = DEFAULT_LOCATION) -> float:
    return _solar_hour_and_declination(moment, location)[0] % 24


class Weather:
    """Outdoor temperature and clear-sky index as series on a fixed step, interpolated linearly in time.

    Outside the series the first or last value holds. Forecasts are what a HEMS could know: the temperature
    series itself (weather forecasts of temperature are good a day ahead) and only the daily mean of the
    clear-sky index (clouds are not forecast to the hour).
    """

    def __init__(
        self,
        *,
        start: datetime,
        outdoor_temp_c: Sequence[float],
        clear_sky_index: Sequence[float],
        step_s: float = 3600.0,
        location: Location = DEFAULT_LOCATION,
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if len(outdoor_temp_c) == 0 or len(outdoor_temp_c) != len(clear_sky_index):
            raise ValueError("outdoor_temp_c and clear_sky_index must be non-empty and of equal length, not "
                             f"{len(outdoor_temp_c)} and {len(clear_sky_index)}")
        if not step_s > 0:
            raise ValueError(f"step_s must be > 0, not {step_s}")
        self.start = start.astimezone(UTC)
        self.step_s = float(step_s)
        self.location = location
        self._temp = np.asarray(outdoor_temp_c, dtype=float)
        self._index = np.clip(np.asarray(clear_sky_index, dtype=float), 0.0, 1.0)
        per_day = max(1, round(86400 / self.step_s))
        days = -(-len(self._index) // per_day)
        padded = np.resize(self._index, days * per_day) if len(self._index) % per_day else self._index
        self._daily_index = padded.reshape(days, per_day).mean(axis=1)
        self._per_day = per_day

    def _position(self, moment: datetime) -> float:
        return (moment - self.start).total_seconds() / self.step_s

    def _interpolate(self, series: np.ndarray, moment: datetime) -> float:
        position = clip(self._position(moment), 0.0, len(series) - 1.0)
        low = int(position)
        high = min(low + 1, len(series) - 1)
        weight = position - low
        return float(series[low] * (1 - weight) + series[high] * weight)

    def outdoor_temp_c(self, moment: datetime) -> float:
        return self._interpolate(self._temp, moment)

    def clear_sky_index(self, moment: datetime) -> float:
        return self._interpolate(self._index, moment)

    def forecast_clear_sky_index(self, moment: datetime) -> float:
        day = int(clip(self._position(moment) // self._per_day, 0, len(self._daily_index) - 1))
        return float(self._daily_index[day])

    def conditions(self, moment: datetime) -> Conditions:
        return Conditions(now=moment, outdoor_temp_c=self.outdoor_temp_c(moment),
                          clear_sky_index=self.clear_sky_index(moment))

    @classmethod
    def constant(cls, *, start: datetime, outdoor_temp_c: float, clear_sky_index: float = 1.0,
                 location: Location = DEFAULT_LOCATION) -> Weather:
        return cls(start=start, outdoor_temp_c=[outdoor_temp_c], clear_sky_index=[clear_sky_index],
                   location=location)

    @classmethod
    def synthetic(
        cls,
        *,
        start: datetime,
        days: int,
        seed: int,
        mean_temp_c: float = 5.0,
        daily_amplitude_k: float = 4.0,
        cloudiness: float = 0.4,
        location: Location = DEFAULT_LOCATION,
    ) -> Weather:
        """Hourly weather: a daily temperature cycle (coldest near 04:00, warmest near 15:00 solar time) with
        AR(1) noise of about 1 K, and clouds as an AR(1) process around a daily cloudiness drawn near
        ``cloudiness`` (0 clear, 1 overcast). Same seed, same weather."""
        if days < 1:
            raise ValueError(f"days must be >= 1, not {days}")
        if not 0.0 <= cloudiness <= 1.0:
            raise ValueError(f"cloudiness must be in [0, 1], not {cloudiness}")
        rng = np.random.default_rng(seed)
        hours = days * 24 + 1
        start = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        temps, indices = [], []
        temp_noise, cloud_noise = 0.0, 0.0
        for hour in range(hours):
            moment = start + timedelta(hours=hour)
            if hour % 24 == 0:
                daily_cloud = float(np.clip(rng.normal(cloudiness, 0.2), 0.0, 1.0))
            temp_noise = 0.9 * temp_noise + math.sqrt(1 - 0.81) * float(rng.normal(0.0, 1.0))
            cloud_noise = 0.7 * cloud_noise + math.sqrt(1 - 0.49) * float(rng.normal(0.0, 0.25))
            solar_hour = local_solar_hour(moment, location)
            temps.append(mean_temp_c + daily_amplitude_k * math.cos(2 * math.pi * (solar_hour - 15) / 24)
                         + temp_noise)
            indices.append(clip(1.0 - 0.75 * daily_cloud - cloud_noise, 0.1, 1.0))
        return cls(start=start, outdoor_temp_c=temps, clear_sky_index=indices, location=location)
