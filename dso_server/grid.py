"""Grid topology: transformers, feeders, connection points; validation pairs and a TOML loader.

TOML format (see examples/grid.toml):
    [[transformer]]        id, rating_kva, power_factor (0.95), safety_margin (0.1)
    [[feeder]]             id, transformer_id
    [[connection_point]]   ean, feeder_id, contracted_max_import_kw, contracted_max_export_kw,
                           controllable_devices (0), guaranteed_kw_per_device (4.2, section 14a EnWG)
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protocol.contract import ean18_check_digit


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Transformer(_Frozen):
    id: str
    rating_kva: float = Field(gt=0)
    power_factor: float = Field(default=0.95, gt=0, le=1)
    safety_margin: float = Field(default=0.1, ge=0, lt=1)

    @property
    def capacity_kw(self) -> float:
        return self.rating_kva * self.power_factor


class Feeder(_Frozen):
    id: str
    transformer_id: str


class ConnectionPoint(_Frozen):
    ean: str
    feeder_id: str
    contracted_max_import_kw: float = Field(ge=0)
    contracted_max_export_kw: float = Field(ge=0)
    controllable_devices: int = Field(default=0, ge=0)
    guaranteed_kw_per_device: float = Field(default=4.2, ge=0)

    @property
    def guaranteed_min_import_kw(self) -> float:
        # Never above the contract max: the guarantee cannot exceed what the connection may take.
        return min(self.controllable_devices * self.guaranteed_kw_per_device, self.contracted_max_import_kw)


class Grid(_Frozen):
    transformers: tuple[Transformer, ...] = ()
    feeders: tuple[Feeder, ...] = ()
    connection_points: tuple[ConnectionPoint, ...] = ()

    def validate_grid(self) -> list[str]:
        """Every problem found, each naming the component, the id and the rule broken."""
        errors: list[str] = []
        for kind, ids in (
            ("transformer", [t.id for t in self.transformers]),
            ("feeder", [f.id for f in self.feeders]),
            ("connection_point", [c.ean for c in self.connection_points]),
        ):
            seen: set[str] = set()
            for i in ids:
                if i in seen:
                    errors.append(f"{kind} {i!r}: duplicate id")
                seen.add(i)
        t_ids = {t.id for t in self.transformers}
        f_ids = {f.id for f in self.feeders}
        errors += [
            f"feeder {f.id!r}: unknown transformer_id {f.transformer_id!r}"
            for f in self.feeders
            if f.transformer_id not in t_ids
        ]
        for c in self.connection_points:
            if c.feeder_id not in f_ids:
                errors.append(f"connection_point {c.ean!r}: unknown feeder_id {c.feeder_id!r}")
            if len(c.ean) != 18 or not c.ean.isdigit() or ean18_check_digit(c.ean[:17]) != c.ean[17]:
                errors.append(f"connection_point {c.ean!r}: not an 18-digit EAN with a valid check digit")
        return errors

    def assert_valid(self) -> None:
        errors = self.validate_grid()
        if errors:
            raise ValueError("invalid grid:\n" + "\n".join(errors))

    def transformer_of(self, cp: ConnectionPoint) -> str:
        return {f.id: f.transformer_id for f in self.feeders}[cp.feeder_id]


def load_grid(path: Path) -> Grid:
    """Load and validate a grid TOML file; errors name the file, the table, its index and the field."""
    data = tomllib.loads(Path(path).read_text())
    parts: dict[str, list[BaseModel]] = {"transformer": [], "feeder": [], "connection_point": []}
    models: dict[str, type[BaseModel]] = {
        "transformer": Transformer,
        "feeder": Feeder,
        "connection_point": ConnectionPoint,
    }
    errors: list[str] = [f"{path}: unknown table [[{k}]]" for k in data if k not in models]
    for key, model in models.items():
        for index, row in enumerate(data.get(key, [])):
            try:
                parts[key].append(model.model_validate(row))
            except ValidationError as exc:
                errors += [
                    f"{path}: [[{key}]] #{index} field {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
                ]
    if errors:
        raise ValueError("\n".join(errors))
    grid = Grid(
        transformers=tuple(parts["transformer"]),  # type: ignore[arg-type]
        feeders=tuple(parts["feeder"]),  # type: ignore[arg-type]
        connection_points=tuple(parts["connection_point"]),  # type: ignore[arg-type]
    )
    problems = grid.validate_grid()
    if problems:
        raise ValueError("\n".join(f"{path}: {p}" for p in problems))
    return grid
