"""Pure convex receding-horizon optimiser for one household (heat pump, EV, home battery, PV).

Build a :class:`HouseholdOptimiser` once per household, then call ``solve(inputs)`` every interval. The
:class:`CapacityNeedOptimiser` is a second LP over the same model: the least import per interval with which the
household keeps its comfort and EV range (the capacity need a performance contract reports to the DSO).
"""

# The COP formula the plant uses; the caller feeds the optimiser COP per step computed with it.
from hems_client.devices.heat_pump import cop_air_source

from ._data import (
    HouseholdParams,
    OptimiserError,
    OptimiserInputs,
    OptimiserResult,
    SlackKind,
    SlackUse,
)
from ._explain import COMFORT_OR_EV_FORCED
from ._highs import TESTED_CVXPY, IncompatibleCvxpy, cvxpy_tested
from ._model import HouseholdOptimiser
from ._need import CapacityNeedOptimiser, NeedInputs, NeedResult

__all__ = [
    "COMFORT_OR_EV_FORCED",
    "TESTED_CVXPY",
    "CapacityNeedOptimiser",
    "HouseholdOptimiser",
    "HouseholdParams",
    "IncompatibleCvxpy",
    "NeedInputs",
    "NeedResult",
    "OptimiserError",
    "OptimiserInputs",
    "OptimiserResult",
    "SlackKind",
    "SlackUse",
    "cop_air_source",
    "cvxpy_tested",
]
