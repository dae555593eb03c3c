"""What the study simulates: the households on a feeder (who owns what, and how they live), the electrification
scenario, the weather weeks and the tariffs. Pure data and seeded draws; nothing here runs a simulation.

Diversity (``household_specs``): every household draws, from its own seed, its size (persons, CBS-like shares),
its annual base load (by size, log-normal spread), its dwelling (floor area by size, an insulation factor, so
heat loss and thermal mass differ), its comfort (setpoint 19–21.5 °C, band ±1 K as in the performance contract),
and, where it has them, its heat pump (sized for -10 °C, floor heating or radiators), its EV (battery, charger
7.4 or 11 kW, consumption, daily distance, arrival time, departure time and the range it needs), its PV and its
home battery. Devices are assigned by the scenario's shares through one uniform draw per household and device,
so the households that own a heat pump at a share of 30 % own one at 70 % too: scenarios and the hosting-capacity
search are nested, and a larger share only ever adds devices.

Shares per scenario are this study's assumptions for a Dutch residential street (heat pump, EV, PV, home
battery); ``--hp-share`` and friends override them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from dso_server.capacity.forecast import day_intervals
from dso_server.capacity.grid import Grid
from dso_server.store.grid_store import contract_for
from hems_client.devices.heat_pump import cop_air_source
from hems_client.devices.weather import Weather
from protocol.contract import ComfortTerms, HouseholdContract
from protocol.signals import TariffInterval, TouTariff

TIMEZONE = "Europe/Amsterdam"
ZONE = ZoneInfo(TIMEZONE)


# ------------------------------------------------------------------------------------------- electrification


@dataclass(frozen=True)
class Shares:
    """Share of households (0..1) owning each device."""

    heat_pump: float
    ev: float
    pv: float
    battery: float

    def __post_init__(self) -> None:
        for name in ("heat_pump", "ev", "pv", "battery"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"share {name} must be between 0 and 1, not {value}")


SCENARIOS: dict[str, Shares] = {
    "today": Shares(heat_pump=0.05, ev=0.10, pv=0.35, battery=0.02),
    "2030": Shares(heat_pump=0.25, ev=0.35, pv=0.55, battery=0.10),
    "2040": Shares(heat_pump=0.70, ev=0.70, pv=0.70, battery=0.30),
}
"""Assumed shares (this study's, in the range of the Dutch grid operators' outlooks; not one published scenario)."""


# ------------------------------------------------------------------------------------------- weather


@dataclass(frozen=True)
class WeatherWeek:
    """A week of synthetic weather (``hems_client.devices.weather.Weather.synthetic``) from a Monday."""

    name: str
    monday: date
    mean_temp_c: float
    daily_amplitude_k: float
    cloudiness: float
    seed: int
    description: str

    def weather(self, start: datetime, end: datetime) -> Weather:
        """Hourly weather covering [start, end) and the day after ``end`` (the HEMS plans 24 h ahead)."""
        days = math.ceil((end - start).total_seconds() / 86400) + 2
        return Weather.synthetic(start=start - timedelta(hours=1), days=days, seed=self.seed,
                                 mean_temp_c=self.mean_temp_c, daily_amplitude_k=self.daily_amplitude_k,
                                 cloudiness=self.cloudiness)


WEEKS: dict[str, WeatherWeek] = {
    "winter": WeatherWeek("winter", date(2027, 1, 11), mean_temp_c=-3.0, daily_amplitude_k=3.5, cloudiness=0.6,
                          seed=11, description="a cold January week (mean -3 °C, overcast): the heat-pump design case"),
    "summer": WeatherWeek("summer", date(2027, 7, 12), mean_temp_c=19.0, daily_amplitude_k=5.0, cloudiness=0.3,
                          seed=12, description="a sunny July week (mean 19 °C, few clouds): PV feed-in, no heating"),
}


@dataclass(frozen=True)
class Period:
    """The simulated period: ``days`` local days from the week's Monday, after ``warmup_h`` hours of warm-up
    (simulated, not counted in the KPIs) so that indoor temperatures, EV batteries and plans are settled."""

    week: WeatherWeek
    days: int
    warmup_h: float = 12.0

    def __post_init__(self) -> None:
        if not 1 <= self.days <= 7:
            raise ValueError(f"days must be between 1 and 7, not {self.days}")
        if not 0 <= self.warmup_h <= 48 or (self.warmup_h * 4) % 1:
            raise ValueError(f"warmup_h must be between 0 and 48 in quarter-hours, not {self.warmup_h}")

    @property
    def kpi_start(self) -> datetime:
        return datetime.combine(self.week.monday, time(0), tzinfo=ZONE).astimezone(UTC)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.week.monday + timedelta(days=self.days), time(0), tzinfo=ZONE).astimezone(UTC)

    @property
    def start(self) -> datetime:
        return self.kpi_start - timedelta(hours=self.warmup_h)

    def local_days(self) -> list[date]:
        """Every local day the simulation touches, warm-up included, plus the day after (the plans' horizon)."""
        first = self.start.astimezone(ZONE).date()
        last = self.end.astimezone(ZONE).date()
        return [first + timedelta(days=i) for i in range((last - first).days + 1)]


# ------------------------------------------------------------------------------------------- tariffs

FLAT_IMPORT_EUR_PER_KWH = 0.26
"""The flat price of the uncontrolled baseline: the time average of the ToU below."""
EXPORT_EUR_PER_KWH = 0.05


def tou_import_eur_per_kwh(local: datetime) -> float:
    """Four levels: evening peak 17–21 h, day 7–17 h, late evening 21–23 h, night 23–7 h (the cheap window)."""
    hour = local.hour
    if 17 <= hour < 21:
        return 0.40
    if 7 <= hour < 17:
        return 0.28
    if 21 <= hour < 23:
        return 0.22
    return 0.16


def day_tariff(day: date, *, kind: str, shift_intervals: int = 0) -> TouTariff:
    """The tariff of local ``day``: ``flat``, or ``tou`` read ``shift_intervals`` quarter-hours later (a household
    with shift +4 sees the cheap window open at 00:00 instead of 23:00: the randomised tariff)."""
    starts = day_intervals(day, TIMEZONE)
    intervals = []
    for start in starts:
        if kind == "flat":
            price = FLAT_IMPORT_EUR_PER_KWH
        elif kind == "tou":
            price = tou_import_eur_per_kwh((start - shift_intervals * timedelta(minutes=15)).astimezone(ZONE))
        else:
            raise ValueError(f"tariff kind must be 'flat' or 'tou', not {kind!r}")
        intervals.append(TariffInterval(start=start, import_price_eur_per_kwh=price,
                                        export_price_eur_per_kwh=EXPORT_EUR_PER_KWH))
    return TouTariff(intervals=tuple(intervals))


# ------------------------------------------------------------------------------------------- households


@dataclass(frozen=True)
class HeatPumpSpec:
    max_electric_kw: float
    thermal_capacity_kwh_per_k: float
    thermal_resistance_k_per_kw: float
    supply_temp_c: float
    internal_gains_kw: float


@dataclass(frozen=True)
class EvSpec:
    capacity_kwh: float
    charger_kw: float
    kwh_per_km: float
    arrival_local: time
    daily_km_mean: float
    daily_km_sd: float
    soc_kwh: float


@dataclass(frozen=True)
class BatterySpec:
    capacity_kwh: float
    max_kw: float
    soc_kwh: float


@dataclass(frozen=True)
class HouseholdSpec:
    """One household of the feeder, everything the simulation needs to build it (picklable for workers)."""

    index: int
    ean: str
    node_id: str | None
    persons: int
    floor_area_m2: float
    annual_kwh: float
    contract: HouseholdContract
    seed: int
    pv_kwp: float = 0.0
    heat_pump: HeatPumpSpec | None = None
    ev: EvSpec | None = None
    battery: BatterySpec | None = None
    indoor_temp_c: float = 20.0
    """Indoor temperature at the start of the simulation (the setpoint)."""

    @property
    def electrified(self) -> bool:
        return self.heat_pump is not None or self.ev is not None

    @property
    def flexible(self) -> bool:
        """Has a device the HEMS steers (heat pump, EV, battery); PV alone is curtailed only by the guard."""
        return self.heat_pump is not None or self.ev is not None or self.battery is not None

    def describe(self) -> str:
        parts = [f"{self.persons}p", f"{self.annual_kwh:.0f} kWh/a"]
        if self.heat_pump:
            parts.append(f"HP {self.heat_pump.max_electric_kw:.1f} kWe")
        if self.ev:
            parts.append(f"EV {self.ev.capacity_kwh:.0f} kWh @ {self.ev.charger_kw:g} kW")
        if self.pv_kwp:
            parts.append(f"PV {self.pv_kwp:.1f} kWp")
        if self.battery:
            parts.append(f"battery {self.battery.capacity_kwh:.0f} kWh")
        return ", ".join(parts)


_PERSONS = np.array([1, 2, 3, 4, 5])
_PERSONS_SHARE = np.array([0.38, 0.33, 0.12, 0.12, 0.05])
"""Dutch household sizes (CBS, rounded)."""
_ANNUAL_KWH_BY_PERSONS = {1: 1800.0, 2: 2900.0, 3: 3400.0, 4: 3900.0, 5: 4300.0}
"""Typical Dutch household consumption without heat pump or EV, by household size."""
_DESIGN_OUTDOOR_C = -10.0


@dataclass(frozen=True)
class _Draws:
    """One household's uniform draws that decide device ownership (kept apart so that shares nest)."""

    heat_pump: float
    ev: float
    pv: float
    battery: float


def _draws(seed: int, index: int) -> _Draws:
    rng = np.random.default_rng([seed, index, 1])
    u = rng.uniform(size=4)
    return _Draws(*map(float, u))


def household_specs(grid: Grid, shares: Shares, *, seed: int) -> list[HouseholdSpec]:
    """One household per connection point of ``grid``, diverse as the module docstring says."""
    specs = []
    for index, cp in enumerate(grid.connection_points):
        own = _draws(seed, index)
        rng = np.random.default_rng([seed, index, 2])
        persons = int(rng.choice(_PERSONS, p=_PERSONS_SHARE))
        annual = _ANNUAL_KWH_BY_PERSONS[persons] * float(rng.lognormal(0.0, 0.2))
        area = float(np.clip(rng.normal(55.0 + 20.0 * persons, 15.0), 45.0, 220.0))
        insulation = float(rng.uniform(0.7, 1.4))  # heat loss relative to a typical 1990s dwelling
        setpoint = float(rng.choice([19.0, 19.5, 20.0, 20.5, 21.0, 21.5]))
        departure = time(int(rng.integers(6, 9)), int(rng.choice([0, 15, 30, 45])))
        required_km = float(rng.choice([80.0, 100.0, 120.0, 150.0, 200.0]))
        comfort = ComfortTerms(indoor_setpoint_c=setpoint, temperature_band_k=1.0, ev_departure_local=departure,
                               ev_required_range_km=required_km, timezone=TIMEZONE)
        contract = contract_for(cp).model_copy(update={"comfort": comfort})

        # Every parameter is drawn whether or not the device is owned, so that ownership never shifts the
        # random stream: the same household keeps the same car and roof in every scenario.
        loss_kw_per_k = 0.0018 * area * insulation  # H ≈ 1.8 W/(m²·K) for a typical dwelling
        supply = 35.0 if insulation < 1.05 else 45.0  # floor heating in the better insulated homes
        gains = 0.15 + 0.1 * persons
        design_heat = loss_kw_per_k * (setpoint - _DESIGN_OUTDOOR_C) - gains
        hp_kw = float(np.clip(math.ceil(2 * 1.2 * design_heat / cop_air_source(supply, _DESIGN_OUTDOOR_C)) / 2,
                              2.0, 8.0))
        heat_pump = HeatPumpSpec(max_electric_kw=hp_kw, thermal_capacity_kwh_per_k=0.09 * area,
                                 thermal_resistance_k_per_kw=1.0 / loss_kw_per_k, supply_temp_c=supply,
                                 internal_gains_kw=gains)
        ev_capacity = float(rng.choice([40.0, 60.0, 77.0]))
        km = float(np.clip(rng.lognormal(math.log(38.0), 0.45), 10.0, 150.0))
        ev = EvSpec(capacity_kwh=ev_capacity, charger_kw=11.0 if rng.uniform() < 0.7 else 7.4,
                    kwh_per_km=float(rng.uniform(0.15, 0.20)),
                    arrival_local=time(int(rng.integers(16, 20)), int(rng.choice([0, 15, 30, 45]))),
                    daily_km_mean=km, daily_km_sd=0.4 * km, soc_kwh=float(rng.uniform(0.3, 0.8)) * ev_capacity)
        pv = float(rng.uniform(3.0, 7.0))
        size = float(rng.choice([5.0, 10.0, 13.5]))
        battery = BatterySpec(capacity_kwh=size, max_kw=min(5.0, size / 2), soc_kwh=float(rng.uniform(0.2, 0.6)) * size)
        if not own.heat_pump < shares.heat_pump:
            heat_pump = None
        if not own.ev < shares.ev:
            ev = None
        if not own.pv < shares.pv:
            pv = 0.0
        if not own.battery < shares.battery:
            battery = None
        specs.append(HouseholdSpec(index=index, ean=cp.ean, node_id=cp.node_id, persons=persons, floor_area_m2=area,
                                   annual_kwh=annual, contract=contract, seed=seed * 1000 + index * 7, pv_kwp=pv,
                                   heat_pump=heat_pump, ev=ev, battery=battery, indoor_temp_c=setpoint))
    return specs


GUARANTEED_KW = 4.2
"""Section 14a EnWG: the import a controllable connection keeps whatever the DSO allocates."""


def study_grid(grid: Grid, specs: list[HouseholdSpec], *, guaranteed_kw: float = GUARANTEED_KW) -> Grid:
    """The grid as the DSO knows it for this scenario: each connection point's annual consumption, and one
    controllable device with ``guaranteed_kw`` guaranteed (section 14a: 4.2 kW; 0: no guarantee) where the
    household has a heat pump, an EV or a battery."""
    if not 0 <= guaranteed_kw <= 17:
        raise ValueError(f"guaranteed_kw must be between 0 and 17, not {guaranteed_kw}")
    by_ean = {spec.ean: spec for spec in specs}
    points = tuple(cp.model_copy(update={"annual_kwh": by_ean[cp.ean].annual_kwh,
                                         "controllable_devices": 1 if by_ean[cp.ean].flexible else 0,
                                         "guaranteed_kw_per_device": guaranteed_kw})
                   for cp in grid.connection_points)
    return grid.model_copy(update={"connection_points": points})


def with_shares(shares: Shares, **overrides: float | None) -> Shares:
    return replace(shares, **{key: value for key, value in overrides.items() if value is not None})
