"""Fast re-solve path: cvxpy's compiled DPP tensors applied in numpy, one persistent HiGHS instance.

``problem.solve`` spends most of a re-solve outside the solver: it validates every Parameter value, re-walks
the reduction chain, rebuilds the sparse matrices through scipy, builds a fresh ``highspy.Highs`` model,
warm-starts it from a primal point only (no basis) and unpacks the solution and every dual. Here the
problem is compiled once (``problem.get_problem_data``); its ``ParamConeProg`` holds the affine maps from
the parameter vector to the objective, the constraint matrix with its right-hand side and the column
bounds. They are condensed once to the entries that exist, so a solve is a few sparse mat-vecs; then only
what changed is pushed into the same HiGHS object (costs, row and column bounds, the parameter-dependent
coefficients) and dual simplex restarts from the previous optimal basis. Same LP, same solver: answers
agree with ``problem.solve`` to solver tolerance (tests/test_optimiser.py checks it).

It reads ``ParamConeProg`` attributes (``A``, ``q``, ``lb_tensor``, ``param_id_to_col`` …), which are cvxpy
internals, and HiGHS's incremental calls (``changeRowsBounds`` …). pyproject.toml bounds both to the versions
this was checked with (:data:`TESTED_CVXPY`, highspy >= 1.13). The constructor raises
:class:`IncompatibleCvxpy` when the compiled form or the HiGHS object is not what it reads, so the caller
(``HouseholdOptimiser``) can fall back to ``problem.solve``; :func:`cvxpy_tested` says whether the installed
cvxpy is one of the checked versions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cvxpy as cp
import highspy
import numpy as np
import scipy.sparse as sp
from cvxpy import settings as cvxpy_settings

from ._data import FloatArray, OptimiserError

TESTED_CVXPY = ((1, 9), (1, 10))
"""cvxpy versions (major, minor) whose internals this module was checked against: from the first, below the
second (pyproject.toml pins the same range). 1.8 and older lack Parameter-valued variable bounds."""

_HIGHS_CALLS = ("passModel", "changeColsCost", "changeColsBounds", "changeRowsBounds", "changeCoeff", "run",
                "getRunTime", "getModelStatus", "getSolution", "modelStatusToString", "setOptionValue")

try:  # internals: a cvxpy that moved them is detected here, not by an ImportError of the whole optimiser
    from cvxpy.lin_ops.lin_op import CONSTANT_ID

    _PARAM_PROB: str | None = cvxpy_settings.PARAM_PROB
    _IMPORT_PROBLEM: str | None = None
except (ImportError, AttributeError) as _error:
    CONSTANT_ID, _PARAM_PROB = -1, None
    _IMPORT_PROBLEM = f"{type(_error).__name__}: {_error}"


class IncompatibleCvxpy(OptimiserError):
    """The installed cvxpy (or highspy) is not what the direct path reads; ``problem.solve`` still works."""


def cvxpy_version() -> tuple[int, int]:
    major, minor = (int("".join(ch for ch in part if ch.isdigit()) or 0) for part in cp.__version__.split(".")[:2])
    return major, minor


def cvxpy_tested() -> bool:
    """True when the installed cvxpy is in :data:`TESTED_CVXPY`."""
    low, high = TESTED_CVXPY
    return low <= cvxpy_version() < high


def _incompatible(what: str) -> IncompatibleCvxpy:
    low, high = TESTED_CVXPY
    return IncompatibleCvxpy(
        f"cvxpy {cp.__version__} / highspy {getattr(highspy, '__version__', '?')}: {what}; the direct HiGHS path "
        f"was checked with cvxpy {low[0]}.{low[1]}.x to below {high[0]}.{high[1]} and highspy >= 1.13")

_STATUS = {  # HiGHS model status → cvxpy status names, so both paths report alike
    highspy.HighsModelStatus.kOptimal: cvxpy_settings.OPTIMAL,
    highspy.HighsModelStatus.kInfeasible: cvxpy_settings.INFEASIBLE,
    highspy.HighsModelStatus.kUnbounded: cvxpy_settings.UNBOUNDED,
    highspy.HighsModelStatus.kUnboundedOrInfeasible: cvxpy_settings.INFEASIBLE_OR_UNBOUNDED,
}


@dataclass(frozen=True)
class DirectSolution:
    status: str
    objective: float
    solve_time_s: float  # HiGHS run time of this solve
    x: FloatArray
    columns: Mapping[int, tuple[int, int]]  # variable id → (first column, size)

    def value(self, variable: cp.Variable) -> FloatArray:
        start, size = self.columns[variable.id]
        return self.x[start : start + size].reshape(variable.shape, order="F")


class DirectHighs:
    """Solves a DPP LP ``cp.Problem`` by applying its compiled tensors and re-running one HiGHS instance."""

    def __init__(self, problem: cp.Problem) -> None:
        if _IMPORT_PROBLEM is not None:
            raise _incompatible(f"cannot import what the direct path reads ({_IMPORT_PROBLEM})")
        missing = [name for name in _HIGHS_CALLS if not hasattr(highspy.Highs, name)]
        if missing:
            raise _incompatible(f"highspy.Highs lacks {', '.join(missing)}")
        try:
            self._compile(problem)
        except (AttributeError, KeyError, TypeError, IndexError, ValueError) as error:
            raise _incompatible(f"its compiled problem is not what the direct path reads "
                                f"({type(error).__name__}: {error})") from error

    def _compile(self, problem: cp.Problem) -> None:
        data, _, _ = problem.get_problem_data(cp.HIGHS, enforce_dpp=True)
        prog = data[_PARAM_PROB]
        dims = prog.cone_dims
        if prog.P is not None or prog.is_mixed_integer() or dims.soc or dims.exp or dims.psd or dims.p3d:
            raise OptimiserError("the direct HiGHS path handles continuous LPs only")
        own = {param.id for param in problem.parameters()}
        if set(prog.param_id_to_col) - own - {CONSTANT_ID}:
            raise OptimiserError(
                "cvxpy replaced a Parameter during compilation; give Parameters no attributes"
            )
        n_cols, n_rows = int(prog.x.size), int(prog.constr_size)
        self._n_cols, self._n_rows, self._n_eq = n_cols, n_rows, int(dims.zero)
        self._columns = {var.id: (int(prog.var_id_to_col[var.id]), int(var.size)) for var in prog.variables}
        self._param_slices = [
            (pid, int(col), int(prog.param_id_to_size[pid]))
            for pid, col in prog.param_id_to_col.items()
            if pid != CONSTANT_ID
        ]
        self._const_col = int(prog.param_id_to_col[CONSTANT_ID])
        self._param_len = int(prog.total_param_size) + 1

        # Objective: rows 0…n−1 are c, row n the constant offset.
        self._objective_map = sp.csr_array(prog.q)
        # Constraints: the tensor has one row per entry (i, j) of the m × (n+1) matrix [A | b], column-major
        # (row index j·m + i). Keep the rows that can be non-zero: a fixed sparsity pattern, in CSC order.
        tensor = sp.csr_array(prog.A)
        present = np.flatnonzero(np.diff(tensor.indptr))
        self._entry_map = tensor[present]
        entry_row, entry_col = present % n_rows, present // n_rows
        in_a = entry_col < n_cols
        self._a_entries = np.flatnonzero(in_a)
        self._b_entries = np.flatnonzero(~in_a)
        self._b_rows = entry_row[~in_a]
        self._a_index = entry_row[in_a].astype(np.int32)
        self._a_start = np.searchsorted(entry_col[in_a], np.arange(n_cols + 1)).astype(np.int32)
        # Entries of A that depend on a Parameter: the only coefficients to update between solves.
        parameter_cols = np.delete(np.arange(self._param_len), self._const_col)
        varying = np.diff(sp.csr_array(self._entry_map[:, parameter_cols]).indptr) > 0
        dynamic = np.flatnonzero(varying[self._a_entries])
        self._dyn_entries = dynamic
        self._dyn_rows = entry_row[in_a][dynamic].tolist()
        self._dyn_cols = entry_col[in_a][dynamic].tolist()

        self._lb_map = None if prog.lb_tensor is None else sp.csr_array(prog.lb_tensor)
        self._ub_map = None if prog.ub_tensor is None else sp.csr_array(prog.ub_tensor)
        inf = highspy.kHighsInf
        self._lower = (
            np.full(n_cols, -inf) if prog.lower_bounds is None else np.asarray(prog.lower_bounds, float)
        )
        self._upper = (
            np.full(n_cols, inf) if prog.upper_bounds is None else np.asarray(prog.upper_bounds, float)
        )
        self._all_cols = np.arange(n_cols, dtype=np.int32)
        self._all_rows = np.arange(n_rows, dtype=np.int32)
        self._row_upper_ineq = np.full(n_rows - self._n_eq, inf)

        self._highs = highspy.Highs()
        self._highs.setOptionValue("output_flag", False)
        self._loaded = False
        self._dyn_values = np.empty(0)

    def _parameter_vector(self, values: Mapping[int, object]) -> FloatArray:
        vector = np.zeros(self._param_len)
        vector[self._const_col] = 1.0
        for pid, col, size in self._param_slices:
            value = np.ravel(np.asarray(values[pid], dtype=float), order="F")
            if value.size != size:  # numpy would broadcast a scalar silently; cvxpy's .value would refuse
                raise ValueError(f"Parameter {pid} needs {size} values, got {value.size}")
            vector[col : col + size] = value
        return vector

    def solve(self, values: Mapping[int, object]) -> DirectSolution:
        """Solve with the given Parameter values (Parameter id → value); the Parameters are not modified."""
        vector = self._parameter_vector(values)
        objective = self._objective_map @ vector
        cost, offset = objective[: self._n_cols], float(objective[self._n_cols])
        entries = self._entry_map @ vector
        b = np.zeros(self._n_rows)
        b[self._b_rows] = entries[self._b_entries]
        # cvxpy's cone form is A·x + b ∈ K: the first n_eq rows are "= 0", the others "≥ 0".
        row_lower = -b
        row_upper = np.concatenate([row_lower[: self._n_eq], self._row_upper_ineq])
        lower = self._lower if self._lb_map is None else self._lb_map @ vector
        upper = self._upper if self._ub_map is None else self._ub_map @ vector
        highs = self._highs
        if not self._loaded:
            lp = highspy.HighsLp()
            lp.num_col_, lp.num_row_ = self._n_cols, self._n_rows
            lp.col_cost_, lp.col_lower_, lp.col_upper_ = cost, lower, upper
            lp.row_lower_, lp.row_upper_ = row_lower, row_upper
            lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
            lp.a_matrix_.start_ = self._a_start
            lp.a_matrix_.index_ = self._a_index
            lp.a_matrix_.value_ = entries[self._a_entries]
            highs.passModel(lp)
            self._dyn_values = entries[self._a_entries[self._dyn_entries]]
            self._loaded = True
        else:
            # Incremental changes keep HiGHS's basis and factorisation: a hot start, no model rebuild.
            highs.changeColsCost(self._n_cols, self._all_cols, cost)
            highs.changeColsBounds(self._n_cols, self._all_cols, lower, upper)
            highs.changeRowsBounds(self._n_rows, self._all_rows, row_lower, row_upper)
            dyn_values = entries[self._a_entries[self._dyn_entries]]
            for i in np.flatnonzero(dyn_values != self._dyn_values).tolist():  # only what changed
                highs.changeCoeff(self._dyn_rows[i], self._dyn_cols[i], float(dyn_values[i]))
            self._dyn_values = dyn_values
        started = highs.getRunTime()
        highs.run()
        run_time_s = highs.getRunTime() - started
        model_status = highs.getModelStatus()
        status = _STATUS.get(model_status, highs.modelStatusToString(model_status))
        if status != cvxpy_settings.OPTIMAL:
            self._loaded = False  # start the next solve from a fresh model rather than a failed basis
            return DirectSolution(status, float("nan"), run_time_s, np.empty(0), self._columns)
        x = np.asarray(highs.getSolution().col_value, dtype=float)
        return DirectSolution(status, float(cost @ x + offset), run_time_s, x, self._columns)
