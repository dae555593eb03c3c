"""Errors of the grid and the allocation, as power-grid-model gives them: the component, the field and the ids.

Validation comes in pairs: ``validate_*`` returns a list of :class:`CapacityError` (empty when valid) and
``assert_*`` raises :class:`InvalidGridError` carrying that list. An allocation that breaks an invariant it
promises (a bug, never the input's fault) raises a :class:`CapacityInvariantError` subclass with the error
naming the transformer id or the connection point's EAN and the interval - never an array row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CapacityError:
    """One problem: which component (``transformer``, ``feeder``, ``connection_point``, ``node``, ``line``,
    ``branch``), which field, the ids of the components concerned, and the rule broken, in words."""

    component: str
    field: str
    ids: tuple[str, ...]
    message: str
    interval: int | None = None
    """Index of the interval in the allocation run, where the problem is one interval's."""

    def __str__(self) -> str:
        ids = ", ".join(repr(i) for i in self.ids)
        where = "" if self.interval is None else f" interval {self.interval}"
        return f"{self.component} {ids}{where}: {self.field}: {self.message}"


class InvalidGridError(ValueError):
    """A grid that breaks rules of ``Grid.validate_grid``; ``errors`` lists every one."""

    def __init__(self, errors: Sequence[CapacityError]) -> None:
        self.errors = tuple(errors)
        super().__init__("invalid grid:\n" + "\n".join(map(str, self.errors)))


class CapacityInvariantError(RuntimeError):
    """An allocation broke an invariant it promises: a bug, reported with the component, field and ids."""

    def __init__(self, error: CapacityError) -> None:
        self.error = error
        super().__init__(str(error))

    @property
    def component(self) -> str:
        return self.error.component

    @property
    def field(self) -> str:
        return self.error.field

    @property
    def ids(self) -> tuple[str, ...]:
        return self.error.ids


def labels(ids: Sequence[str] | None, count: int, what: str) -> list[str]:
    """The ids of ``count`` array rows, or - for callers with no ids - the row numbers spelled as such."""
    if ids is None:
        return [f"{what} row {i}" for i in range(count)]
    if len(ids) != count:
        raise ValueError(f"{len(ids)} {what} ids for {count} rows")
    return [str(i) for i in ids]
