"""Reading a household contract from TOML, with errors that name the file and the field.

The file holds the ``HouseholdContract`` fields at top level and the comfort terms as a ``[comfort]`` table::

    connection_point_id = "871687120000000011"
    contracted_max_import_kw = 17.0
    contracted_max_export_kw = 10.0
    failsafe_import_kw = 4.2
    failsafe_export_kw = 4.2
    failsafe_duration_s = 7200

    raw_data_consent = false   # the comfort status (indoor temperature, EV range) only with consent

    [comfort]
    indoor_setpoint_c = 20.0
    temperature_band_k = 1.0
    ev_departure_local = 06:00:00
    ev_required_range_km = 150.0
    timezone = "Europe/Amsterdam"

    [performance]              # a performance contract: needs and daily verdicts (PROFILE §9.5, §9.6)
    monthly_discount_eur = 10.0
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import ValidationError

from protocol.contract import HouseholdContract


class ConfigError(ValueError):
    def __init__(self, path: Path, field: str, reason: str) -> None:
        self.path = path
        self.field = field
        self.reason = reason
        super().__init__(f"{path}: {field}: {reason}" if field else f"{path}: {reason}")


def validate_contract_file(path: Path) -> list[ConfigError]:
    """Every problem with the contract file (empty when it is valid)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        return [ConfigError(path, "", f"cannot read the file: {error.strerror or error}")]
    except UnicodeDecodeError:
        return [ConfigError(path, "", "is not UTF-8 text")]
    except tomllib.TOMLDecodeError as error:
        return [ConfigError(path, "", f"is not valid TOML: {error}")]
    try:
        HouseholdContract.model_validate(data)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            field = ".".join(str(part) for part in item["loc"]) or "(file)"
            reason = item["msg"].removeprefix("Value error, ")
            if item["type"] == "extra_forbidden":
                reason = "is not a contract field"
            elif item["type"] == "missing":
                reason = "is required"
            problems.append(ConfigError(path, field, reason))
        return problems
    return []


def load_contract(path: Path) -> HouseholdContract:
    """The contract in ``path``, or ConfigError naming the file and the first bad field."""
    problems = validate_contract_file(path)
    if problems:
        raise problems[0]
    return HouseholdContract.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
