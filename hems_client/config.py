"""Reading the household's contract from a contract file, with errors that name the file and the field.

The file is PROFILE.md §11's (``protocol.contract_file``), the same the DSO reads: one ``[[household]]`` table
per connection point, the comfort terms in ``[household.comfort]``::

    [[household]]
    connection_point_id = "871687120000000011"
    contracted_max_import_kw = 17.0
    contracted_max_export_kw = 10.0
    failsafe_import_kw = 4.2
    failsafe_export_kw = 4.2
    failsafe_duration_s = 7200

    raw_data_consent = false   # the comfort status (indoor temperature, EV range) only with consent

    [household.comfort]
    indoor_setpoint_c = 20.0
    temperature_band_k = 1.0
    ev_departure_local = 06:00:00
    ev_required_range_km = 150.0
    timezone = "Europe/Amsterdam"

    [household.performance]    # a performance contract: needs and daily verdicts (PROFILE §9.5, §9.6)
    monthly_discount_eur = 10.0

A file with several households (the DSO's) needs ``connection_point_id`` to say which one is this HEMS's; a
``group`` is the DSO's business and is ignored here.
"""

from __future__ import annotations

from pathlib import Path

from protocol.contract import HouseholdContract
from protocol.contract_file import read_contract_file


class ConfigError(ValueError):
    def __init__(self, path: Path, field: str, reason: str) -> None:
        self.path = path
        self.field = field
        self.reason = reason
        super().__init__(f"{path}: {field}: {reason}" if field else f"{path}: {reason}")


def _read(path: Path, connection_point_id: str | None) -> tuple[HouseholdContract | None, list[ConfigError]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        return None, [ConfigError(path, "", f"cannot read the file: {error.strerror or error}")]
    except UnicodeDecodeError:
        return None, [ConfigError(path, "", "is not UTF-8 text")]
    entries, problems = read_contract_file(text)
    if problems:
        return None, [ConfigError(path, problem.where, problem.reason) for problem in problems]
    if connection_point_id is not None:
        mine = [e for e in entries if e.contract.connection_point_id == connection_point_id]
        if not mine:
            return None, [ConfigError(path, "", f"holds no household with connection_point_id "
                                                f"{connection_point_id}")]
        return mine[0].contract, []
    if len(entries) != 1:
        return None, [ConfigError(path, "", f"holds {len(entries)} households; a HEMS needs exactly one, or "
                                            "--connection-point to say which is its own")]
    return entries[0].contract, []


def validate_contract_file(path: Path, connection_point_id: str | None = None) -> list[ConfigError]:
    """Every problem with the contract file (empty when it is valid)."""
    return _read(path, connection_point_id)[1]


def load_contract(path: Path, connection_point_id: str | None = None) -> HouseholdContract:
    """The contract in ``path`` (the one of ``connection_point_id`` when the file holds several), or ConfigError
    naming the file and the first bad field."""
    contract, problems = _read(path, connection_point_id)
    if problems:
        raise problems[0]
    assert contract is not None
    return contract
