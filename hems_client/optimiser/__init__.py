"""Pure convex receding-horizon optimiser for one household (heat pump, EV, home battery, PV).

Build a :class:`HouseholdOptimiser` once per household, then call ``solve(inputs)`` every interval.
"""

from ._data import (
    HouseholdParams,
    OptimiserError,
    OptimiserInputs,
    OptimiserResult,
    SlackKind,
    SlackUse,
    cop_air_source,
)
from ._model import HouseholdOptimiser

__all__ = [
    "HouseholdOptimiser",
    "HouseholdParams",
    "OptimiserError",
    "OptimiserInputs",
    "OptimiserResult",
    "SlackKind",
    "SlackUse",
    "cop_air_source",
]
