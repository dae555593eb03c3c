"""The OpenADR 2.0b names the profile uses (PROFILE.md, 'Signals' and 'Reports')."""

from __future__ import annotations

from protocol import version as _version

# marketContext: which program an event belongs to, and in which version of the profile (PROFILE.md §1.6, §5.1).
# Firmness is a property of the program, as in 3.x.
PROGRAM_PREFIX = "urn:hems-dso:program:"
PROGRAM_NAME_CAPACITY_FIRM = "capacity:firm"
PROGRAM_NAME_CAPACITY_NON_FIRM = "capacity:non-firm"
PROGRAM_NAME_TOU_TARIFF = "tou-tariff"
PROGRAM_CAPACITY_FIRM = f"{PROGRAM_PREFIX}{PROGRAM_NAME_CAPACITY_FIRM}:{_version.PROFILE_VERSION}"
PROGRAM_CAPACITY_NON_FIRM = f"{PROGRAM_PREFIX}{PROGRAM_NAME_CAPACITY_NON_FIRM}:{_version.PROFILE_VERSION}"
PROGRAM_TOU_TARIFF = f"{PROGRAM_PREFIX}{PROGRAM_NAME_TOU_TARIFF}:{_version.PROFILE_VERSION}"

# 2.0b has no absolute kW limit (x-loadControlCapacity is a fraction): x- names aligned with OpenADR 3.
SIGNAL_IMPORT_LIMIT = "x-IMPORT_CAPACITY_LIMIT"
SIGNAL_EXPORT_LIMIT = "x-EXPORT_CAPACITY_LIMIT"
SIGNAL_TYPE_LIMIT = "setpoint"
SIGNAL_ID_IMPORT_LIMIT = "import-limit"
SIGNAL_ID_EXPORT_LIMIT = "export-limit"

# The standard 2.0b price signal means exactly the import price; export has no standard name.
SIGNAL_IMPORT_PRICE = "ELECTRICITY_PRICE"
SIGNAL_EXPORT_PRICE = "x-EXPORT_PRICE"
SIGNAL_TYPE_PRICE = "price"
SIGNAL_ID_IMPORT_PRICE = "import-price"
SIGNAL_ID_EXPORT_PRICE = "export-price"

ITEM_POWER_KW = {
    "name": "powerReal",
    "description": "RealPower",
    "unit": "W",
    "scale": "k",
    "power_attributes": {"hertz": 50, "voltage": 230, "ac": True},
}
ITEM_PRICE_EUR_PER_KWH = {
    "name": "currencyPerKWh",
    "description": "currencyPerKWh",
    "unit": "EUR",
    "scale": "none",
}

ITEM_TEMPERATURE_C = {
    "name": "temperature",
    "description": "temperature",
    "unit": "celsius",
    "scale": "none",
}
READING_MEAN = "Mean"
READING_DIRECT = "Direct Read"
READING_PROJECTED = "Projected"

# Reports the HEMS offers (oadrRegisterReport) and sends (oadrUpdateReport).
REPORT_TELEMETRY = "TELEMETRY_USAGE"
REPORT_PLAN = "x-HEMS_PLAN"
REPORT_COMFORT = "x-COMFORT_STATUS"
SPECIFIER_TELEMETRY = "HEMS_TELEMETRY"
SPECIFIER_PLAN = "HEMS_PLAN"
SPECIFIER_COMFORT = "HEMS_COMFORT"
RID_IMPORT_KW = "import_kw"
RID_EXPORT_KW = "export_kw"
RID_NET_IMPORT_KW = "net_import_kw"
RID_INDOOR_TEMPERATURE_C = "indoor_temperature_c"
RID_COMFORT_MIN_C = "comfort_min_c"
RID_COMFORT_MAX_C = "comfort_max_c"
RID_EV_RANGE_KM = "ev_range_km"
RID_EV_REQUIRED_RANGE_KM = "ev_required_range_km"

# Reports of a performance contract (PROFILE §9.5, §9.6).
REPORT_NEED = "x-CAPACITY_NEED"
REPORT_PERFORMANCE = "x-PERFORMANCE"
SPECIFIER_NEED = "HEMS_NEED"
SPECIFIER_PERFORMANCE = "HEMS_PERFORMANCE"
RID_NEED_IMPORT_KW = "need_import_kw"
# x-PERFORMANCE: day values (dtstart = the day's start, duration = the day) ...
RID_DEGREE_HOURS = "degree_hours_outside_band"
RID_EV_SHORTFALL_KM = "ev_shortfall_km"
RID_EV_LIMIT_BELOW_NEED = "ev_limit_below_need"
RID_EV_RANGE_AT_DEPARTURE_KM = "ev_range_at_departure_km"
"""Only under the household's consent (raw_data_consent)."""
# ... and one entry per interval in which comfort was lost (PT15M).
RID_COMFORT_LOST_KH = "comfort_lost_kh"
RID_LIMIT_KW = "limit_kw"
RID_NEED_KW = "need_kw"
RID_FAILSAFE = "failsafe"

RAW_COMFORT_RIDS = (RID_INDOOR_TEMPERATURE_C, RID_EV_RANGE_KM, RID_EV_RANGE_AT_DEPARTURE_KM)
"""rIDs that carry raw comfort readings: a HEMS sends them only under the household's consent (PROFILE §14)."""
