"""The DSO's households from a TOML file, with errors that name the file, the household and the field.

Format: one ``[[household]]`` table per connection point, holding the ``HouseholdContract`` fields, an
optional ``group`` (the feeder or transformer it hangs under) and the comfort terms as a sub-table::

    [[household]]
    connection_point_id = "871687120000000011"
    group = "feeder-1"
    contracted_max_import_kw = 17.0
    contracted_max_export_kw = 10.0
    failsafe_import_kw = 4.2
    failsafe_export_kw = 4.2
    failsafe_duration_s = 7200

    raw_data_consent = false        # raw comfort readings only with the household's consent (PROFILE §14)

    [household.comfort]
    indoor_setpoint_c = 20.0
    ev_departure_local = 06:30:00

    [household.performance]         # a performance contract (PROFILE §11); leave out for none
    monthly_discount_eur = 10.0
    need_deadline_local = 13:00:00
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dso_server.records import Household
from protocol import HouseholdContract


class ContractsFileError(ValueError):
    """One problem in a contracts file. ``index`` is the 0-based household table, ``field`` a dotted path."""

    def __init__(self, path: Path, reason: str, *, index: int | None = None, field: str | None = None) -> None:
        self.path = path
        self.index = index
        self.field = field
        self.reason = reason
        where = str(path)
        if index is not None:
            where += f": household[{index}]"
        if field:
            where += f".{field}"
        super().__init__(f"{where}: {reason}")


def _group(raw: dict[str, Any], path: Path, index: int) -> str | None:
    group = raw.pop("group", None)
    if group is not None and (not isinstance(group, str) or not group.strip()):
        raise ContractsFileError(path, f"must be a non-empty string, not {group!r}", index=index, field="group")
    return group


def parse_contracts(text: str, *, path: Path) -> list[Household]:
    """The households of a contracts file's ``text``; ``path`` only names the file in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ContractsFileError(path, f"is not valid TOML: {error}") from None
    unknown = sorted(set(data) - {"household"})
    if unknown:
        raise ContractsFileError(path, f"unknown top-level key(s) {unknown}; households go in [[household]] tables")
    tables = data.get("household", [])
    if not isinstance(tables, list):
        raise ContractsFileError(path, "'household' must be an array of tables: write [[household]], not [household]")
    households: list[Household] = []
    seen: dict[str, int] = {}
    for index, table in enumerate(tables):
        raw = dict(table)
        group = _group(raw, path, index)
        try:
            contract = HouseholdContract.model_validate(raw)
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or None
            reason = first["msg"].removeprefix("Value error, ")
            if first["type"] == "missing":
                reason = "is required"
            elif first["type"] == "extra_forbidden":
                reason = "is not a contract field"
            more = len(error.errors()) - 1
            if more:
                reason += f" (and {more} more problem{'s' if more > 1 else ''} in this household)"
            raise ContractsFileError(path, reason, index=index, field=field) from None
        if contract.connection_point_id in seen:
            raise ContractsFileError(
                path, f"{contract.connection_point_id} is already household[{seen[contract.connection_point_id]}]",
                index=index, field="connection_point_id")
        seen[contract.connection_point_id] = index
        households.append(Household(contract=contract, group=group))
    return households


def load_contracts(path: Path) -> list[Household]:
    """Read and validate a contracts file; raise ContractsFileError naming the file, household and field."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ContractsFileError(path, f"cannot be read: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ContractsFileError(path, "is not UTF-8 text") from None
    return parse_contracts(text, path=path)
