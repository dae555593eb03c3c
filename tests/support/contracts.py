"""The contracts-file entry most tests give their households."""

from __future__ import annotations


def household_toml(ean: str) -> str:
    """One ``[[household]]`` of a contracts file: 17 kW import and 10 kW export contracted, a failsafe of 4.2 kW
    each way for two hours."""
    return f"""
[[household]]
connection_point_id = "{ean}"
contracted_max_import_kw = 17.0
contracted_max_export_kw = 10.0
failsafe_import_kw = 4.2
failsafe_export_kw = 4.2
failsafe_duration_s = 7200
"""
