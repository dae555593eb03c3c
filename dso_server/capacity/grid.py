"""Grid topology: transformers, feeders, connection points, optionally nodes and lines; validation and loaders.

Two file formats hold the same grid (examples: ``examples/grid.toml``, ``examples/grid.csv``).

TOML, one array of tables per component::

    [[transformer]]        id, rating_kva, power_factor (0.95), safety_margin (0.1),
                           and for a grid model: busbar_node, u1_kv (10), u2_kv (0.4), uk_percent (4), pk_kw (0)
    [[feeder]]             id, transformer_id
    [[connection_point]]   ean, feeder_id, contracted_max_import_kw, contracted_max_export_kw,
                           controllable_devices (0), guaranteed_kw_per_device (4.2, section 14a EnWG),
                           annual_kwh (3500, the standard-load-profile cold start), node_id (grid model only)
    [[node]]               id, transformer_id, u_rated_kv (0.4)                         -- grid model only
    [[line]]               id, from_node, to_node, r_ohm, x_ohm, c_nf (0), i_max_a       -- grid model only

CSV, one row per connection point with its feeder and transformer repeated on every row (what a spreadsheet or
GIS export gives); the header names the columns, in any order::

    transformer_id,rating_kva,power_factor,safety_margin,feeder_id,ean,contracted_max_import_kw,
    contracted_max_export_kw,controllable_devices,guaranteed_kw_per_device,annual_kwh

``power_factor``, ``safety_margin``, ``controllable_devices``, ``guaranteed_kw_per_device`` and ``annual_kwh``
may be left out or empty (defaults as above). Rows of one transformer must agree on its fields. The CSV format
has no lines: a grid model with impedances (for the voltage check) needs TOML.

A transformer has a *grid model* when it names its ``busbar_node``: then every node and line under it is
part of one connected network fed from that busbar, and each of its connection points names the ``node_id`` it
hangs on. The allocation then checks voltages and line currents with a power flow (``dso_server.capacity.powerflow``).
"""

from __future__ import annotations

import csv
import tomllib
from collections import defaultdict
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from dso_server.capacity.errors import CapacityError, InvalidGridError
from protocol.contract import ean18_check_digit
from protocol.limits import check_name


class GridFileError(ValueError):
    """A grid file cannot be used; the message names the file, the table or row, and the field."""


def _printable(text: str) -> str:
    return check_name(text, what="the id")


GridId = Annotated[str, Field(min_length=1), AfterValidator(_printable)]
"""A transformer's, feeder's, node's or line's id."""
GridRef = Annotated[str, AfterValidator(_printable)]
"""An id named by another table (checked to exist when the grid is built)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Transformer(_Frozen):
    id: GridId
    rating_kva: float = Field(gt=0, le=100_000)
    power_factor: float = Field(default=0.95, gt=0, le=1)
    safety_margin: float = Field(default=0.1, ge=0, lt=1)
    busbar_node: GridRef | None = None
    """The LV busbar node of its grid model; None when only the rating is known."""
    u1_kv: float = Field(default=10.0, gt=0)
    u2_kv: float = Field(default=0.4, gt=0)
    uk_percent: float = Field(default=4.0, gt=0, lt=100)
    pk_kw: float = Field(default=0.0, ge=0)
    """Copper losses at rated load (sets the transformer's resistance)."""

    @property
    def capacity_kw(self) -> float:
        return self.rating_kva * self.power_factor

    @property
    def limit_kw(self) -> float:
        """What may be allocated: capacity with the safety margin taken off."""
        return self.capacity_kw * (1.0 - self.safety_margin)


class Feeder(_Frozen):
    id: GridId
    transformer_id: GridRef


class ConnectionPoint(_Frozen):
    ean: str
    feeder_id: GridRef
    contracted_max_import_kw: float = Field(ge=0, le=1000)
    contracted_max_export_kw: float = Field(ge=0, le=1000)
    controllable_devices: int = Field(default=0, ge=0, le=100)
    guaranteed_kw_per_device: float = Field(default=4.2, ge=0, le=100)
    annual_kwh: float = Field(default=3500.0, gt=0, le=1_000_000)
    node_id: GridRef | None = None

    @property
    def guaranteed_min_import_kw(self) -> float:
        # Never above the contract max: the guarantee cannot exceed what the connection may take.
        return min(self.controllable_devices * self.guaranteed_kw_per_device, self.contracted_max_import_kw)


class Node(_Frozen):
    id: GridId
    transformer_id: GridRef
    u_rated_kv: float = Field(default=0.4, gt=0)


class Line(_Frozen):
    id: GridId
    from_node: GridRef
    to_node: GridRef
    r_ohm: float = Field(gt=0)
    x_ohm: float = Field(ge=0)
    c_nf: float = Field(default=0.0, ge=0)
    i_max_a: float = Field(gt=0)


class Grid(_Frozen):
    transformers: tuple[Transformer, ...] = ()
    feeders: tuple[Feeder, ...] = ()
    connection_points: tuple[ConnectionPoint, ...] = ()
    nodes: tuple[Node, ...] = ()
    lines: tuple[Line, ...] = ()

    def validate_grid(self) -> list[CapacityError]:
        """Every problem found, each naming the component, the field, the id(s) and the rule broken."""
        errors: list[CapacityError] = []
        for kind, field, ids in (
            ("transformer", "id", [t.id for t in self.transformers]),
            ("feeder", "id", [f.id for f in self.feeders]),
            ("connection_point", "ean", [c.ean for c in self.connection_points]),
            ("node", "id", [n.id for n in self.nodes]),
            ("line", "id", [li.id for li in self.lines]),
        ):
            seen: set[str] = set()
            for i in ids:
                if i in seen:
                    errors.append(CapacityError(kind, field, (i,), "duplicate id"))
                seen.add(i)
        t_ids = {t.id for t in self.transformers}
        f_of = {f.id: f.transformer_id for f in self.feeders}
        n_of = {n.id: n.transformer_id for n in self.nodes}
        errors += [CapacityError("feeder", "transformer_id", (f.id,), f"unknown transformer_id {f.transformer_id!r}")
                   for f in self.feeders if f.transformer_id not in t_ids]
        errors += [CapacityError("node", "transformer_id", (n.id,), f"unknown transformer_id {n.transformer_id!r}")
                   for n in self.nodes if n.transformer_id not in t_ids]
        for li in self.lines:
            for end in ("from_node", "to_node"):
                if getattr(li, end) not in n_of:
                    errors.append(CapacityError("line", end, (li.id,), f"unknown {end} {getattr(li, end)!r}"))
            if li.from_node == li.to_node:
                errors.append(CapacityError("line", "to_node", (li.id,),
                                            f"from_node and to_node are the same node {li.from_node!r}"))
            elif li.from_node in n_of and li.to_node in n_of and n_of[li.from_node] != n_of[li.to_node]:
                errors.append(CapacityError("line", "to_node", (li.id,), f"joins nodes of two transformers "
                                            f"({n_of[li.from_node]!r}, {n_of[li.to_node]!r})"))
        modelled = {t.id for t in self.transformers if t.busbar_node is not None}
        for t in self.transformers:
            if t.busbar_node is not None and n_of.get(t.busbar_node) != t.id:
                errors.append(CapacityError("transformer", "busbar_node", (t.id,),
                                            f"busbar_node {t.busbar_node!r} is not a node of this transformer"))
        for c in self.connection_points:
            if c.feeder_id not in f_of:
                errors.append(CapacityError("connection_point", "feeder_id", (c.ean,),
                                            f"unknown feeder_id {c.feeder_id!r}"))
            if len(c.ean) != 18 or not c.ean.isdigit() or ean18_check_digit(c.ean[:17]) != c.ean[17]:
                errors.append(CapacityError("connection_point", "ean", (c.ean,),
                                            "not an 18-digit EAN with a valid check digit"))
            tid = f_of.get(c.feeder_id)
            if tid in modelled and c.node_id is None:
                errors.append(CapacityError("connection_point", "node_id", (c.ean,),
                                            f"transformer {tid!r} has a grid model, so node_id is required"))
            if c.node_id is not None and tid is not None and n_of.get(c.node_id) != tid:
                errors.append(CapacityError("connection_point", "node_id", (c.ean,),
                                            f"node_id {c.node_id!r} is not a node of transformer {tid!r}"))
        if not errors:
            errors += self._connectivity_errors()
        return errors

    def _connectivity_errors(self) -> list[CapacityError]:
        adjacency: dict[str, set[str]] = defaultdict(set)
        for li in self.lines:
            adjacency[li.from_node].add(li.to_node)
            adjacency[li.to_node].add(li.from_node)
        errors = []
        for t in self.transformers:
            if t.busbar_node is None:
                continue
            reached, todo = {t.busbar_node}, [t.busbar_node]
            while todo:
                for other in adjacency[todo.pop()] - reached:
                    reached.add(other)
                    todo.append(other)
            lost = sorted(n.id for n in self.nodes if n.transformer_id == t.id and n.id not in reached)
            if lost:
                errors.append(CapacityError("node", "transformer_id", tuple(lost[:5]),
                                            f"not connected to busbar {t.busbar_node!r} of transformer {t.id!r} "
                                            f"by lines" + (f" ({len(lost)} nodes in all)" if len(lost) > 5 else "")))
        return errors

    def assert_valid(self) -> None:
        """Raise InvalidGridError (a ValueError) listing every problem ``validate_grid`` finds."""
        errors = self.validate_grid()
        if errors:
            raise InvalidGridError(errors)

    @cached_property
    def _feeder_transformer(self) -> dict[str, str]:
        return {f.id: f.transformer_id for f in self.feeders}

    def transformer_of(self, cp: ConnectionPoint) -> str:
        return self._feeder_transformer[cp.feeder_id]

    def transformer(self, transformer_id: str) -> Transformer:
        for t in self.transformers:
            if t.id == transformer_id:
                return t
        raise KeyError(transformer_id)

    def connection_points_of(self, transformer_id: str) -> list[ConnectionPoint]:
        return [c for c in self.connection_points if self.transformer_of(c) == transformer_id]

    def has_model(self, transformer_id: str) -> bool:
        return self.transformer(transformer_id).busbar_node is not None

    def summary(self) -> str:
        modelled = sum(t.busbar_node is not None for t in self.transformers)
        return (f"{len(self.transformers)} transformer(s) ({modelled} with a grid model), {len(self.feeders)} "
                f"feeder(s), {len(self.connection_points)} connection point(s), {len(self.nodes)} node(s), "
                f"{len(self.lines)} line(s)")


_MODELS: dict[str, type[BaseModel]] = {
    "transformer": Transformer,
    "feeder": Feeder,
    "connection_point": ConnectionPoint,
    "node": Node,
    "line": Line,
}
_PLURAL = {"transformer": "transformers", "feeder": "feeders", "connection_point": "connection_points",
           "node": "nodes", "line": "lines"}


def _field_errors(where: str, exc: ValidationError) -> list[str]:
    out = []
    for e in exc.errors():
        field = ".".join(map(str, e["loc"])) or "(row)"
        message = "is required" if e["type"] == "missing" else (
            "is not a field of this table" if e["type"] == "extra_forbidden"
            else str(e["msg"]).removeprefix("Value error, "))
        out.append(f"{where} field {field}: {message}")
    return out


def _build(path: Path, rows: dict[str, Iterable[tuple[str, dict[str, Any]]]]) -> Grid:
    """Validate rows (``where`` text, raw dict) per component; raise GridFileError listing every problem."""
    errors: list[str] = []
    parts: dict[str, list[BaseModel]] = {key: [] for key in _MODELS}
    for key, items in rows.items():
        for where, row in items:
            try:
                parts[key].append(_MODELS[key].model_validate(row))
            except ValidationError as exc:
                errors += _field_errors(f"{path}: {where}", exc)
    if errors:
        raise GridFileError("\n".join(errors))
    grid = Grid(**{_PLURAL[key]: tuple(values) for key, values in parts.items()})
    problems = grid.validate_grid()
    if problems:
        raise GridFileError("\n".join(f"{path}: {p}" for p in problems))
    if not grid.transformers:
        raise GridFileError(f"{path}: the grid has no transformer")
    return grid


def parse_grid_toml(text: str, *, path: Path) -> Grid:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise GridFileError(f"{path}: is not valid TOML: {error}") from None
    unknown = [f"{path}: unknown table [[{k}]] (known: {', '.join(_MODELS)})" for k in data if k not in _MODELS]
    if unknown:
        raise GridFileError("\n".join(unknown))
    for key in _MODELS:
        if key in data and not isinstance(data[key], list):
            raise GridFileError(f"{path}: '{key}' must be an array of tables: write [[{key}]], not [{key}]")
    return _build(path, {key: [(f"[[{key}]] #{i}", dict(row)) for i, row in enumerate(data.get(key, []))]
                         for key in _MODELS})


_CSV_TRANSFORMER = ("rating_kva", "power_factor", "safety_margin")
_CSV_POINT = ("ean", "contracted_max_import_kw", "contracted_max_export_kw", "controllable_devices",
              "guaranteed_kw_per_device", "annual_kwh")
CSV_COLUMNS = ("transformer_id", *_CSV_TRANSFORMER, "feeder_id", *_CSV_POINT)


def parse_grid_csv(text: str, *, path: Path) -> Grid:
    reader = csv.DictReader(text.splitlines())
    header = reader.fieldnames or []
    unknown = [c for c in header if c not in CSV_COLUMNS]
    missing = [c for c in ("transformer_id", "rating_kva", "feeder_id", "ean", "contracted_max_import_kw",
                           "contracted_max_export_kw") if c not in header]
    if unknown or missing:
        parts = ([f"unknown column(s) {unknown}"] if unknown else []) + (
            [f"missing column(s) {missing}"] if missing else [])
        raise GridFileError(f"{path}: header: {'; '.join(parts)} (columns: {', '.join(CSV_COLUMNS)})")
    transformers: dict[str, tuple[int, dict[str, Any]]] = {}
    feeders: dict[str, tuple[int, dict[str, Any]]] = {}
    points: list[tuple[str, dict[str, Any]]] = []
    errors: list[str] = []
    for line_no, raw in enumerate(reader, start=2):
        if None in raw:
            errors.append(f"{path}: row {line_no}: more values than columns")
            continue
        row = {k: v.strip() for k, v in raw.items() if v is not None and v.strip() != ""}
        tid, fid = row.get("transformer_id", ""), row.get("feeder_id", "")
        t_row = {"id": tid, **{k: row[k] for k in _CSV_TRANSFORMER if k in row}}
        if tid in transformers and transformers[tid][1] != t_row:
            errors.append(f"{path}: row {line_no}: transformer {tid!r} differs from row {transformers[tid][0]} "
                          f"({transformers[tid][1]} vs {t_row})")
        transformers.setdefault(tid, (line_no, t_row))
        f_row = {"id": fid, "transformer_id": tid}
        if fid in feeders and feeders[fid][1] != f_row:
            errors.append(f"{path}: row {line_no}: feeder {fid!r} is under transformer "
                          f"{feeders[fid][1]['transformer_id']!r} in row {feeders[fid][0]}, here under {tid!r}")
        feeders.setdefault(fid, (line_no, f_row))
        points.append((f"row {line_no}", {"feeder_id": fid, **{k: row[k] for k in _CSV_POINT if k in row}}))
    if errors:
        raise GridFileError("\n".join(errors))
    return _build(path, {
        "transformer": [(f"row {n}", r) for n, r in transformers.values()],
        "feeder": [(f"row {n}", r) for n, r in feeders.values()],
        "connection_point": points,
    })


def load_grid(path: Path) -> Grid:
    """Load and validate a grid file (.toml or .csv); GridFileError names the file, table or row, and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise GridFileError(f"{path}: cannot be read: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise GridFileError(f"{path}: is not UTF-8 text") from None
    suffix = path.suffix.lower()
    if suffix == ".toml":
        return parse_grid_toml(text, path=path)
    if suffix == ".csv":
        return parse_grid_csv(text, path=path)
    raise GridFileError(f"{path}: unknown grid file type {suffix!r}; use .toml or .csv")
