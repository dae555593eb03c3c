"""Errors of the allocation and the power flow name transformer ids, EANs and lines - never array rows - and
carry the component, the field and the ids (power-grid-model style); none of them is an AssertionError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dso_server.capacity import grid_allocation
from dso_server.capacity.allocation import Allocation, AllocationInvariantError, check_invariants, invariant_errors
from dso_server.capacity.errors import CapacityInvariantError, InvalidGridError
from dso_server.capacity.grid import load_grid
from dso_server.capacity.grid_allocation import firm_for_grid
from dso_server.capacity.lab_grids import lab_grid
from dso_server.capacity.powerflow import FeederModel, LimitedAllocation, PowerFlowLimitError, check_powerflow

EXAMPLE = Path(__file__).parent.parent / "examples" / "grid.toml"


def test_no_capacity_error_is_an_assertion_error() -> None:
    for error in (AllocationInvariantError, PowerFlowLimitError, CapacityInvariantError):
        assert not issubclass(error, AssertionError)
    assert issubclass(InvalidGridError, ValueError)


def broken() -> tuple[Allocation, dict[str, object]]:
    """Two transformers, three households; household 2 (under transformer 1) is given more than its contract
    max and more than its transformer can carry."""
    allocation = Allocation(import_kw=np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 9.0]]),
                            minimums_forced=np.zeros((2, 2), dtype=bool))
    return allocation, {"available_kw": np.array([[5.0, 5.0], [5.0, 5.0]]), "group": np.array([0, 0, 1]),
                        "min_kw": np.zeros((3, 2)), "max_kw": np.full((3, 2), 6.0)}


def test_invariant_errors_name_the_transformer_id_and_the_ean_and_the_interval() -> None:
    allocation, arrays = broken()
    ids = {"household_ids": ["871687120000000011", "871687120000000028", "871687120000000035"],
           "group_ids": ["T-north", "T-south"]}
    errors = invariant_errors(allocation, **arrays, **ids)  # type: ignore[arg-type]
    assert [(e.component, e.field, e.ids, e.interval) for e in errors] == [
        ("transformer", "allocated_kw", ("T-south",), 1),
        ("connection_point", "allocated_kw", ("871687120000000035",), 1),
    ]
    assert str(errors[0]) == ("transformer 'T-south' interval 1: allocated_kw: 9.000 kW allocated in sum > "
                              "5.000 kW available")
    with pytest.raises(AllocationInvariantError) as raised:
        check_invariants(allocation, **arrays, **ids)  # type: ignore[arg-type]
    assert (raised.value.component, raised.value.ids) == ("transformer", ("T-south",))
    assert "row" not in str(raised.value)
    # A caller with no ids gets the row, said as such.
    assert invariant_errors(allocation, **arrays)[1].ids == ("household row 2",)  # type: ignore[arg-type]


def test_the_grid_allocation_names_its_transformers_and_connection_points(monkeypatch: pytest.MonkeyPatch) -> None:
    grid = load_grid(EXAMPLE)
    monkeypatch.setattr(grid_allocation, "_floor_w", lambda kw: np.maximum(kw, 0.0) + 500.0)  # a bug, injected
    with pytest.raises(AllocationInvariantError) as raised:
        firm_for_grid(grid, p90_kw=np.full((1, 4), 100.0), p10_kw=np.zeros((1, 4)))
    error = raised.value.error
    assert (error.component, error.field, error.ids, error.interval) == ("transformer", "firm_import_kw", ("T1",), 0)


def test_a_power_flow_violation_names_the_transformer_and_the_line_of_its_branch() -> None:
    grid = lab_grid("kerber-vorstadtnetz-kabel-1")
    model = FeederModel(grid, "T1")
    n = len(grid.connection_points)
    too_much = LimitedAllocation(kw=np.full((n, 2), 15.0), scale=np.ones((model.n_branches, 2)),
                                 forced=np.zeros((model.n_branches, 2), dtype=bool), power_flows=0)
    with pytest.raises(PowerFlowLimitError) as raised:
        check_powerflow(model, too_much)
    error = raised.value.error
    line_ids = {line.id for line in grid.lines}
    assert error.component == "branch" and error.ids[0] == "T1" and error.ids[1] in line_ids
    assert error.field in ("voltage_pu", "loading") and error.interval == 0
    assert f"line {error.ids[1]!r} of transformer 'T1'" in str(error)
