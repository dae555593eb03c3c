"""Physics sanity of the simulated devices and the household."""

from __future__ import annotations

import math
from datetime import UTC, datetime, time, timedelta

import pytest

from hems_client.devices import (
    BaseLoad,
    Conditions,
    Device,
    ElectricVehicle,
    HeatPump,
    HomeBattery,
    Household,
    PvSystem,
    Weather,
    cop_air_source,
    h25_kw,
    make_household,
    solar_elevation_deg,
)
from protocol import HouseholdContract, make_ean18

T0 = datetime(2025, 1, 15, 0, 0, tzinfo=UTC)
CONTRACT = HouseholdContract(
    connection_point_id=make_ean18("87168712000000001"), contracted_max_import_kw=17.0, contracted_max_export_kw=10.0,
    failsafe_import_kw=4.2, failsafe_export_kw=4.2, failsafe_duration_s=7200,
)


def conditions(moment: datetime = T0, outdoor_c: float = 0.0, clear: float = 1.0) -> Conditions:
    return Conditions(now=moment, outdoor_temp_c=outdoor_c, clear_sky_index=clear)


def run(device: Device, setpoint: float | None, hours: float, step_s: float = 60.0, **kwargs: float) -> float:
    """Step ``device`` for ``hours``; return the energy drawn in kWh (consumption-positive)."""
    energy = 0.0
    for index in range(round(hours * 3600 / step_s)):
        moment = T0 + timedelta(seconds=index * step_s)
        energy += device.step(setpoint, step_s, conditions(moment, **kwargs)) * step_s / 3600
    return energy


def test_every_simulated_device_implements_the_driver_interface() -> None:
    for device in (BaseLoad(), PvSystem(), HeatPump(), ElectricVehicle(), HomeBattery()):
        assert isinstance(device, Device)
    assert [d.priority for d in (PvSystem(), HomeBattery(), ElectricVehicle(), HeatPump())] == [0, 10, 20, 30]
    assert not BaseLoad().flexible


def test_cop_follows_the_air_source_fit() -> None:
    assert cop_air_source(35.0, -5.0) == pytest.approx(6.81 - 0.121 * 40 + 0.00063 * 40**2)
    assert cop_air_source(35.0, 10.0) > cop_air_source(35.0, 0.0) > cop_air_source(35.0, -10.0)


def test_heat_pump_warms_the_house_and_the_house_cools_without_it() -> None:
    warm, cold = HeatPump(indoor_temp_c=19.0), HeatPump(indoor_temp_c=19.0)
    assert run(warm, 3.0, hours=2, outdoor_c=0.0) == pytest.approx(6.0)
    run(cold, None, hours=2, outdoor_c=0.0)
    assert warm.indoor_temp_c > 19.5 and cold.indoor_temp_c < 19.0
    # 1R1C: at steady state the heat in equals the loss (T - T_out) / R.
    steady = HeatPump(indoor_temp_c=20.0)
    run(steady, 1.0, hours=400, step_s=3600, outdoor_c=0.0)
    heat_kw = 1.0 * cop_air_source(35.0, 0.0) + steady.internal_gains_kw
    assert steady.indoor_temp_c == pytest.approx(0.0 + 5.0 * heat_kw, abs=0.01)


def test_heat_pump_power_is_clipped_to_its_range() -> None:
    pump = HeatPump()
    assert pump.step(20.0, 60, conditions()) == 8.0 and pump.step(-3.0, 60, conditions()) == 0.0


def test_battery_efficiency_and_limits() -> None:
    battery = HomeBattery(soc_kwh=0.0)
    assert run(battery, 4.0, hours=1) == pytest.approx(4.0)
    assert battery.soc_kwh == pytest.approx(4.0 * 0.95)
    delivered = -run(battery, -4.0, hours=2)  # asks for more than is stored
    assert delivered == pytest.approx(4.0 * 0.95 * 0.95)  # round trip 0.9025
    assert battery.soc_kwh == pytest.approx(0.0, abs=1e-9)
    assert battery.power_range_kw(conditions(), 60) == (0.0, 5.0)
    full = HomeBattery(soc_kwh=10.0)
    assert full.step(5.0, 60, conditions()) == 0.0 and full.step(-9.0, 60, conditions()) == -5.0


def test_ev_charges_to_the_needed_energy_and_leaves_and_returns() -> None:
    car = ElectricVehicle(soc_kwh=10.0, plugged_in=True, departure_local=time(6, 0), arrival_local=time(18, 0),
                          timezone="UTC", seed=3)
    needed_kwh = 150 * 0.18
    assert needed_kwh == pytest.approx(27.0)
    run(car, 11.0, hours=2)
    assert car.soc_kwh == pytest.approx(10.0 + 22.0 * 0.92) and car.range_km > 150
    assert car.next_departure(T0 + timedelta(hours=2)) == T0 + timedelta(hours=6)
    # Departure at 06:00 records the range and unplugs; it does not charge while away.
    assert car.step(11.0, 60, conditions(T0 + timedelta(hours=6))) == 0.0
    assert not car.plugged_in and car.departures[0].range_km == pytest.approx(car.range_km)
    before = car.soc_kwh
    car.step(11.0, 60, conditions(T0 + timedelta(hours=18)))
    assert car.plugged_in and car.soc_kwh < before  # the day's trip was driven


def test_ev_infers_whether_it_is_home_from_the_time_of_day() -> None:
    away = ElectricVehicle(timezone="UTC", departure_local=time(6, 0), arrival_local=time(18, 0))
    assert away.power_range_kw(conditions(T0 + timedelta(hours=12)), 60) == (0.0, 0.0) and not away.plugged_in
    home = ElectricVehicle(timezone="UTC", departure_local=time(6, 0), arrival_local=time(18, 0))
    assert home.power_range_kw(conditions(T0 + timedelta(hours=20)), 60) == (0.0, 11.0)


def test_pv_follows_the_sun_and_can_be_curtailed() -> None:
    summer_noon = datetime(2025, 6, 21, 11, 40, tzinfo=UTC)
    assert solar_elevation_deg(summer_noon) == pytest.approx(90 - 52.1 + 23.45, abs=0.5)
    pv = PvSystem(peak_kw=6.0)
    assert pv.available_kw(T0, 1.0) == 0.0  # midnight
    winter = pv.available_kw(T0 + timedelta(hours=11, minutes=40), 1.0)
    summer = pv.available_kw(summer_noon, 1.0)
    assert 0 < winter < summer <= 6.0
    assert pv.available_kw(summer_noon, 0.3) == pytest.approx(0.3 * summer)
    assert pv.step(None, 60, conditions(summer_noon)) == pytest.approx(-summer)
    assert pv.step(-2.0, 60, conditions(summer_noon)) == pytest.approx(-2.0)
    assert pv.curtailed_kwh == pytest.approx((summer - 2.0) / 60)


def test_base_load_follows_bdew_h25_and_its_noise_averages_out() -> None:
    year = [h25_kw(datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=15 * i), annual_kwh=3500.0)
            for i in range(0, 365 * 96, 7)]
    assert sum(year) / len(year) * 8760 == pytest.approx(3500.0, rel=0.03)
    evening = h25_kw(datetime(2025, 1, 15, 18, 0, tzinfo=UTC), annual_kwh=3500.0)
    night = h25_kw(datetime(2025, 1, 15, 2, 0, tzinfo=UTC), annual_kwh=3500.0)
    assert evening > 2 * night
    load = BaseLoad(annual_kwh=3500.0, seed=1)
    simulated = run(load, None, hours=48)
    expected = sum(load.expected_kw(T0 + timedelta(minutes=i)) for i in range(48 * 60)) / 60
    assert simulated == pytest.approx(expected, rel=0.2)
    again = BaseLoad(annual_kwh=3500.0, seed=1)
    assert run(again, None, hours=48) == pytest.approx(simulated)  # seeded


def test_weather_is_seeded_and_interpolated() -> None:
    first = Weather.synthetic(start=T0, days=2, seed=4, mean_temp_c=-5.0)
    second = Weather.synthetic(start=T0, days=2, seed=4, mean_temp_c=-5.0)
    moments = [T0 + timedelta(minutes=37 * i) for i in range(60)]
    assert [first.outdoor_temp_c(m) for m in moments] == [second.outdoor_temp_c(m) for m in moments]
    assert -12 < min(first.outdoor_temp_c(m) for m in moments) < max(first.outdoor_temp_c(m) for m in moments) < 2
    assert all(0.1 <= first.clear_sky_index(m) <= 1.0 for m in moments)
    constant = Weather.constant(start=T0, outdoor_temp_c=3.0)
    assert constant.outdoor_temp_c(T0 + timedelta(days=30)) == 3.0


def test_household_net_power_is_the_sum_of_its_devices() -> None:
    weather = Weather.constant(start=T0, outdoor_temp_c=0.0)
    household = Household(weather=weather, base_load=BaseLoad(seed=2), pv=PvSystem(peak_kw=5.0),
                          heat_pump=HeatPump(), battery=HomeBattery(soc_kwh=5.0))
    result = household.step(T0, 60.0, {"heat_pump": 2.0, "battery": -1.0})
    assert result.net_import_kw == pytest.approx(sum(result.power_kw.values()))
    assert result.power_kw["heat_pump"] == 2.0 and result.power_kw["battery"] == -1.0
    assert result.import_kw == pytest.approx(max(result.net_import_kw, 0.0))
    with pytest.raises(ValueError, match="unique"):
        Household(weather=weather, base_load=BaseLoad(), heat_pump=HeatPump(name="base_load"))


def test_make_household_state_and_forecast_cover_the_horizon() -> None:
    weather = Weather.synthetic(start=T0, days=2, seed=1)
    household = make_household(CONTRACT, weather=weather, seed=9)
    state = household.state(T0 + timedelta(minutes=7))
    assert len(state.forecast) == 96 and state.forecast.start == T0
    assert state.heat_pump is not None and state.battery is not None and state.ev is not None
    assert all(value >= 0 for value in state.forecast.pv_available_kw)
    assert not math.isnan(sum(state.forecast.base_load_kw))
    bare = make_household(CONTRACT, weather=weather, seed=9, heat_pump=False, ev=False, battery=False, pv_kw=0.0)
    assert [device.name for device in bare.devices] == ["base_load"]
