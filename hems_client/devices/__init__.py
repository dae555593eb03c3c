"""Household devices behind one driver interface (:class:`Device`), simulated here, real ones later.

Sign convention: consumption-positive kW (see ``hems_client.devices.base``).
"""

from hems_client.devices.base import Conditions, Device, DeviceKind
from hems_client.devices.base_load import BaseLoad, h25_kw
from hems_client.devices.battery import HomeBattery
from hems_client.devices.ev import ElectricVehicle, EvDeparture
from hems_client.devices.heat_pump import HeatPump, cop_air_source
from hems_client.devices.household import Household, StepResult, make_household
from hems_client.devices.pv import PvSystem
from hems_client.devices.weather import Location, Weather, clear_sky_ghi_w_per_m2, solar_elevation_deg

__all__ = [
    "BaseLoad",
    "Conditions",
    "Device",
    "DeviceKind",
    "ElectricVehicle",
    "EvDeparture",
    "HeatPump",
    "HomeBattery",
    "Household",
    "Location",
    "PvSystem",
    "StepResult",
    "Weather",
    "clear_sky_ghi_w_per_m2",
    "cop_air_source",
    "h25_kw",
    "make_household",
    "solar_elevation_deg",
]
