"""The contract file of PROFILE.md §11: TOML with one ``[[household]]`` table per connection point.

The DSO reads all of a file's households (``dso-server serve --contracts``), a HEMS reads its own
(``hems-client run --contract``), and the conformance suite writes its ``{contract}`` file in the same form::

    [[household]]
    connection_point_id = "871687120000000011"
    group = "feeder-1"                 # optional: the feeder or transformer it hangs under (the DSO's business)
    contracted_max_import_kw = 17.0
    contracted_max_export_kw = 10.0
    failsafe_import_kw = 4.2
    failsafe_export_kw = 4.2
    failsafe_duration_s = 7200
    raw_data_consent = false           # raw comfort readings only with the household's consent (PROFILE §14)

    [household.comfort]
    indoor_setpoint_c = 20.0
    ev_departure_local = 06:30:00

    [household.performance]            # a performance contract (PROFILE §11); leave out for none
    monthly_discount_eur = 10.0
    need_deadline_local = 13:00:00

Pure: text in, households and problems out. Every problem names the household (its 0-based table) and the field.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from protocol.contract import HouseholdContract
from protocol.limits import check_name

FLAT_HINT = ("a contract file holds [[household]] tables (PROFILE.md §11): write [[household]] above the contract "
             "fields and [household.comfort] instead of [comfort]")


@dataclass(frozen=True)
class ContractFileProblem:
    reason: str
    index: int | None = None
    """The 0-based [[household]] table, or None for the file as a whole."""
    field: str | None = None
    """A dotted path inside that table."""

    @property
    def where(self) -> str:
        """``household[1].comfort.timezone``, ``household[1]`` or '' (the whole file)."""
        if self.index is None:
            return self.field or ""
        return f"household[{self.index}]" + (f".{self.field}" if self.field else "")


@dataclass(frozen=True)
class ContractEntry:
    contract: HouseholdContract
    group: str | None = None


def _problems(error: ValidationError, index: int) -> list[ContractFileProblem]:
    problems = []
    for item in error.errors():
        reason = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            reason = "is required"
        elif item["type"] == "extra_forbidden":
            reason = "is not a contract field"
        problems.append(ContractFileProblem(reason, index, ".".join(str(p) for p in item["loc"]) or None))
    return problems


def read_contract_file(text: str) -> tuple[list[ContractEntry], list[ContractFileProblem]]:
    """The households of a contract file's ``text`` and every problem found (households with a problem are left
    out of the first list)."""
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        return [], [ContractFileProblem(f"is not valid TOML: {error}")]
    if "connection_point_id" in data:
        return [], [ContractFileProblem(FLAT_HINT)]
    unknown = sorted(set(data) - {"household"})
    problems = [ContractFileProblem(f"unknown top-level key(s) {unknown}; households go in [[household]] tables")
                ] if unknown else []
    tables = data.get("household", [])
    if not isinstance(tables, list):
        return [], [*problems, ContractFileProblem("'household' must be an array of tables: write [[household]], "
                                                   "not [household]")]
    entries: list[ContractEntry] = []
    seen: dict[str, int] = {}
    for index, table in enumerate(tables):
        raw = dict(table)
        group = raw.pop("group", None)
        if group is not None and (not isinstance(group, str) or not group.strip()):
            problems.append(ContractFileProblem(f"must be a non-empty string, not {group!r}", index, "group"))
            continue
        try:
            check_name(group or "", what="the group")
        except ValueError as error:
            problems.append(ContractFileProblem(str(error), index, "group"))
            continue
        try:
            contract = HouseholdContract.model_validate(raw)
        except ValidationError as error:
            problems.extend(_problems(error, index))
            continue
        ean = contract.connection_point_id
        if ean in seen:
            problems.append(ContractFileProblem(f"{ean} is already household[{seen[ean]}]", index,
                                                "connection_point_id"))
            continue
        seen[ean] = index
        entries.append(ContractEntry(contract, group))
    return entries, problems
