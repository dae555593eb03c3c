"""The HEMS–DSO profile: message models and their OpenADR codecs. Pure: no sockets, no clock, no asyncio."""

from protocol.contract import ComfortTerms, HouseholdContract, PerformanceTerms, make_ean18
from protocol.effective import EffectiveLimit, effective_limits
from protocol.errors import ProfileError
from protocol.performance import CapacityNeed, ComfortLoss, EvVerdict, NeedInterval, PerformanceReport
from protocol.reports import ComfortStatus, Plan, PlanInterval, Telemetry, TelemetryInterval
from protocol.signals import BandwidthInterval, CapacityBandwidth, Firmness, TariffInterval, TouTariff
from protocol.timebase import INTERVAL, INTERVAL_S, INTERVALS_PER_DAY, floor_to_interval
from protocol.version import PROFILE_VERSION

__all__ = [
    "INTERVAL",
    "INTERVALS_PER_DAY",
    "INTERVAL_S",
    "PROFILE_VERSION",
    "BandwidthInterval",
    "CapacityBandwidth",
    "CapacityNeed",
    "ComfortLoss",
    "ComfortStatus",
    "ComfortTerms",
    "EffectiveLimit",
    "EvVerdict",
    "Firmness",
    "HouseholdContract",
    "NeedInterval",
    "PerformanceReport",
    "PerformanceTerms",
    "Plan",
    "PlanInterval",
    "ProfileError",
    "TariffInterval",
    "Telemetry",
    "TelemetryInterval",
    "TouTariff",
    "effective_limits",
    "floor_to_interval",
    "make_ean18",
]
