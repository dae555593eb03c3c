"""Real LV benchmark grids for labs: pandapower's published networks converted into our ``Grid``.

pandapower (``pip install -e '.[lab]'``) ships, offline, the German reference LV networks of Kerber (2011,
"Aufnahmefähigkeit von Niederspannungsverteilnetzen für die Einspeisung aus Photovoltaikkleinanlagen") and of
Dickert et al. (2013). Conversion (``grid_from_pandapower``):

* the transformer: rating ``sn_mva``, voltages, ``vk_percent`` as uk, copper losses ``vkr_percent x Sn``;
  its LV bus is the busbar node;
* every in-service LV bus a node, every in-service line a line (impedance = per-km values x length / parallel,
  ampacity ``max_i_ka x df x parallel``);
* a feeder per line leaving the busbar (``F1``, ``F2``... in the order pandapower lists them), holding every
  bus behind that line;
* a connection point per load, on the load's bus, with a made-up but valid EAN (``871690`` + lab number +
  load index + check digit) and the lab contract: 17 kW import (3 x 25 A), 10 kW export, 3,500 kWh a year, and
  one section 14a controllable device (4.2 kW guaranteed) at every second household.

The benchmark's own load values (a flat 2 kW per house) are not copied: the load comes from the households.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dso_server.capacity.grid import ConnectionPoint, Feeder, Grid, Line, Node, Transformer
from protocol.contract import make_ean18


@dataclass(frozen=True)
class LabGrid:
    name: str
    number: int
    """Two digits in the EANs, so lab grids never share connection points."""
    build: Callable[[], Any]
    description: str


def _kerber(function: str) -> Callable[[], Any]:
    def build() -> Any:
        import pandapower.networks as pn

        return getattr(pn, function)()

    return build


def _dickert(feeders_range: str) -> Callable[[], Any]:
    def build() -> Any:
        import pandapower.networks as pn

        return pn.create_dickert_lv_network(feeders_range=feeders_range, linetype="cable", customer="multiple",
                                            case="good")

    return build


LAB_GRIDS: dict[str, LabGrid] = {g.name: g for g in (
    LabGrid("kerber-landnetz-kabel-1", 11, _kerber("create_kerber_landnetz_kabel_1"),
            "rural cable grid, 100 kVA, 8 households"),
    LabGrid("kerber-landnetz-kabel-2", 12, _kerber("create_kerber_landnetz_kabel_2"),
            "rural cable grid, 160 kVA, 14 households"),
    LabGrid("kerber-dorfnetz", 13, _kerber("create_kerber_dorfnetz"), "village grid, 400 kVA, 57 households"),
    LabGrid("kerber-vorstadtnetz-kabel-1", 14, _kerber("create_kerber_vorstadtnetz_kabel_1"),
            "suburban cable grid, 630 kVA, 146 households"),
    LabGrid("kerber-vorstadtnetz-kabel-2", 15, _kerber("create_kerber_vorstadtnetz_kabel_2"),
            "suburban cable grid, 630 kVA, 144 households"),
    LabGrid("dickert-middle-cable", 16, _dickert("middle"),
            "Dickert LV cable grid, middle feeders, 400 kVA, 45 households"),
    LabGrid("dickert-long-cable", 17, _dickert("long"), "Dickert LV cable grid, long feeders, 400 kVA, 90 households"),
)}


def lab_grid(name: str) -> Grid:
    """The lab grid ``name`` (one of ``LAB_GRIDS``); ValueError for another name, RuntimeError without pandapower."""
    if name not in LAB_GRIDS:
        raise ValueError(f"unknown lab grid {name!r}; choose one of {', '.join(LAB_GRIDS)}")
    lab = LAB_GRIDS[name]
    try:
        net = lab.build()
    except ImportError as error:
        raise RuntimeError("lab grids need pandapower: pip install -e '.[lab]'") from error
    return grid_from_pandapower(net, number=lab.number)


def grid_from_pandapower(net: Any, *, number: int, transformer_id: str = "T1") -> Grid:
    """Convert a pandapower LV network with one transformer (see the module docstring)."""
    trafos = net.trafo[net.trafo.in_service]
    if len(trafos) != 1:
        raise ValueError(f"need exactly one in-service transformer, the network has {len(trafos)}")
    tr = trafos.iloc[0]
    sn_kva = float(tr.sn_mva) * 1000.0
    busbar = int(tr.lv_bus)
    lv = net.bus[(net.bus.in_service) & (abs(net.bus.vn_kv - float(tr.vn_lv_kv)) < 1e-6)]
    node_id = {int(b): f"n{int(b)}" for b in lv.index}
    lines = net.line[net.line.in_service & net.line.from_bus.isin(lv.index) & net.line.to_bus.isin(lv.index)]
    adjacency: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for index, row in lines.iterrows():
        adjacency[int(row.from_bus)].append((int(row.to_bus), int(index)))
        adjacency[int(row.to_bus)].append((int(row.from_bus), int(index)))
    feeder_of: dict[int, str] = {}
    for k, (first, _) in enumerate(adjacency[busbar], start=1):
        name = f"{transformer_id}-F{k}"
        todo = [first]
        feeder_of.setdefault(first, name)
        while todo:
            bus = todo.pop()
            for other, _ in adjacency[bus]:
                if other != busbar and other not in feeder_of:
                    feeder_of[other] = name
                    todo.append(other)
    reached = {busbar, *feeder_of}
    feeders = sorted(set(feeder_of.values()), key=lambda f: int(f.rsplit("F", 1)[1]))
    points = []
    loads = net.load[net.load.in_service & net.load.bus.isin(list(reached))]
    for position, (_, load) in enumerate(loads.iterrows()):
        bus = int(load.bus)
        points.append(ConnectionPoint(
            ean=make_ean18(f"871690{number:02d}{position:09d}"),
            feeder_id=feeder_of.get(bus, feeders[0] if feeders else f"{transformer_id}-F1"),
            contracted_max_import_kw=17.0, contracted_max_export_kw=10.0,
            controllable_devices=1 if position % 2 == 0 else 0, annual_kwh=3500.0, node_id=node_id[bus],
        ))
    return Grid(
        transformers=(Transformer(
            id=transformer_id, rating_kva=sn_kva, busbar_node=node_id[busbar], u1_kv=float(tr.vn_hv_kv),
            u2_kv=float(tr.vn_lv_kv), uk_percent=float(tr.vk_percent), pk_kw=float(tr.vkr_percent) / 100 * sn_kva,
        ),),
        feeders=tuple(Feeder(id=f, transformer_id=transformer_id) for f in (feeders or [f"{transformer_id}-F1"])),
        connection_points=tuple(points),
        nodes=tuple(Node(id=node_id[b], transformer_id=transformer_id, u_rated_kv=float(tr.vn_lv_kv))
                    for b in sorted(reached)),
        lines=tuple(
            Line(id=f"l{int(i)}", from_node=node_id[int(r.from_bus)], to_node=node_id[int(r.to_bus)],
                 r_ohm=float(r.r_ohm_per_km * r.length_km / r.parallel),
                 x_ohm=float(r.x_ohm_per_km * r.length_km / r.parallel),
                 c_nf=float(r.c_nf_per_km * r.length_km * r.parallel),
                 i_max_a=float(r.max_i_ka * 1000 * r.df * r.parallel))
            for i, r in lines.iterrows() if int(r.from_bus) in reached and int(r.to_bus) in reached
        ),
    )
