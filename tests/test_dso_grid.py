from __future__ import annotations

from pathlib import Path

import pytest

from dso_server.capacity.errors import InvalidGridError
from dso_server.capacity.grid import ConnectionPoint, Feeder, Grid, Transformer, load_grid

EXAMPLE = Path(__file__).parent.parent / "examples" / "grid.toml"


def test_example_loads() -> None:
    grid = load_grid(EXAMPLE)
    assert grid.transformers[0].capacity_kw == pytest.approx(598.5)
    assert len(grid.connection_points) == 5
    assert grid.connection_points[0].guaranteed_min_import_kw == pytest.approx(8.4)
    assert grid.transformer_of(grid.connection_points[4]) == "T1"


def test_validation_lists_every_problem() -> None:
    grid = Grid(
        transformers=(Transformer(id="T", rating_kva=100),),
        feeders=(Feeder(id="F", transformer_id="X"), Feeder(id="F", transformer_id="T")),
        connection_points=(
            ConnectionPoint(
                ean="871234567890000012", feeder_id="G", contracted_max_import_kw=1, contracted_max_export_kw=1
            ),
        ),
    )
    errors = grid.validate_grid()
    # Each error carries the component, the field and the id, as power-grid-model's do.
    assert {(e.component, e.field, e.ids) for e in errors} == {
        ("feeder", "id", ("F",)),
        ("feeder", "transformer_id", ("F",)),
        ("connection_point", "feeder_id", ("871234567890000012",)),
        ("connection_point", "ean", ("871234567890000012",)),
    }
    by_field = {e.field: str(e) for e in errors if e.component == "connection_point"}
    assert by_field["feeder_id"] == "connection_point '871234567890000012': feeder_id: unknown feeder_id 'G'"
    assert "check digit" in by_field["ean"]
    assert any("unknown transformer_id 'X'" in str(e) for e in errors)
    with pytest.raises(InvalidGridError, match="invalid grid") as raised:
        grid.assert_valid()
    assert raised.value.errors == tuple(errors) and isinstance(raised.value, ValueError)


def test_loader_error_names_file_table_index_field(tmp_path: Path) -> None:
    p = tmp_path / "g.toml"
    p.write_text('[[transformer]]\nid="T"\nrating_kva=1\n[[transformer]]\nid="U"\nrating_kva=-5\n')
    with pytest.raises(ValueError, match=r"g.toml: \[\[transformer\]\] #1 field rating_kva"):
        load_grid(p)


# ------------------------------------------------------------------------ CSV, SQLite, lab grids, the CLI

from datetime import UTC, datetime  # noqa: E402

from dso_server.capacity.grid import GridFileError  # noqa: E402
from dso_server.capacity.lab_grids import LAB_GRIDS, lab_grid  # noqa: E402
from dso_server.cli import main  # noqa: E402
from dso_server.records import Household  # noqa: E402
from dso_server.store.grid_store import GridConflict, GridStore  # noqa: E402
from dso_server.store.sqlite import DsoStore  # noqa: E402
from protocol import HouseholdContract  # noqa: E402

NOW = datetime(2030, 1, 1, tzinfo=UTC)
CSV = EXAMPLE.with_suffix(".csv")


def test_csv_and_toml_hold_the_same_grid() -> None:
    a, b = load_grid(EXAMPLE), load_grid(CSV)
    assert [t.capacity_kw for t in a.transformers] == [t.capacity_kw for t in b.transformers]
    assert [(c.ean, c.feeder_id, c.guaranteed_min_import_kw) for c in a.connection_points] == [
        (c.ean, c.feeder_id, c.guaranteed_min_import_kw) for c in b.connection_points]


def test_csv_errors_name_the_row_and_field(tmp_path: Path) -> None:
    text = CSV.read_text().splitlines()
    bad = tmp_path / "g.csv"
    bad.write_text("\n".join([text[0], text[1], text[2].replace("T1,630", "T1,400"), text[3].replace(",17,", ",x,")]))
    with pytest.raises(GridFileError) as error:
        load_grid(bad)
    assert "row 3: transformer 'T1' differs from row 2" in str(error.value)
    bad.write_text(text[0] + ",colour\n")
    with pytest.raises(GridFileError, match=r"unknown column\(s\) \['colour'\]"):
        load_grid(bad)
    bad.write_text("\n".join([text[0], text[1].replace(",17,", ",-3,")]))
    with pytest.raises(GridFileError, match=r"g.csv: row 2 field contracted_max_import_kw"):
        load_grid(bad)


def test_grid_round_trips_through_the_store_and_creates_households(db_location: str) -> None:
    path = db_location
    grid = lab_grid("kerber-landnetz-kabel-1")
    with DsoStore(path) as store:
        saved = GridStore(store).save_grid(grid, now=NOW, source="lab")
        assert len(saved.created_households) == 8
    with DsoStore(path) as store:
        assert GridStore(store).grid() == grid
        household = store.household(grid.connection_points[0].ean)
        assert household.group == grid.connection_points[0].feeder_id
        assert household.contract.contracted_max_import_kw == 17.0


def test_a_grid_that_contradicts_a_contract_is_refused_and_nothing_stored() -> None:
    store = DsoStore()
    grid = load_grid(EXAMPLE)
    ean = grid.connection_points[0].ean
    store.put_household(HouseholdContract(connection_point_id=ean, contracted_max_import_kw=11.0,
                                          contracted_max_export_kw=10.0, failsafe_import_kw=4.2,
                                          failsafe_export_kw=4.2, failsafe_duration_s=7200), group=None, now=NOW)
    with pytest.raises(GridConflict, match=r"contracted_max_import_kw 17 differs from the household's contract \(11\)"):
        GridStore(store).save_grid(grid, now=NOW, source="x")
    assert GridStore(store).grid() is None and [h.connection_point_id for h in store.households()] == [ean]
    assert isinstance(store.households()[0], Household)


def test_every_lab_grid_converts_to_a_valid_grid_model() -> None:
    for name in LAB_GRIDS:
        grid = lab_grid(name)
        assert grid.validate_grid() == [], name
        assert grid.has_model("T1") and len(grid.feeders) >= 2
    with pytest.raises(ValueError, match="unknown lab grid"):
        lab_grid("simbench")


def test_cli_check_and_load_keep_the_store_intact_on_bad_input(tmp_path: Path, db_location: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    db = db_location  # --db takes a SQLite file or a PostgreSQL URL
    assert main(["grid", "check", str(CSV)]) == 0
    assert "valid: 1 transformer(s)" in capsys.readouterr().out
    assert main(["grid", "load", "--lab", "kerber-landnetz-kabel-1", "--db", db]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('[[transformer]]\nid = "T"\nrating_kva = 0\n')
    nul = tmp_path / "nul.toml"  # PostgreSQL's text cannot hold U+0000: refused by the file's check on both backends
    nul.write_text(EXAMPLE.read_text().replace('"T1"', '"T1\\u0000"'))
    for argv in (["grid", "check", str(bad)], ["grid", "load", str(bad), "--db", db],
                 ["grid", "load", "--lab", "nope", "--db", db], ["grid", "load", str(nul), "--db", db]):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "bad.toml: [[transformer]] #0 field rating_kva" in err
    assert "nul.toml: [[transformer]] #0 field id: the id holds the control character U+0000" in err
    with DsoStore(db) as store:
        assert len(GridStore(store).grid().connection_points) == 8  # type: ignore[union-attr]
    assert main(["grid", "show", "--db", db]) == 0
    assert "lab:kerber-landnetz-kabel-1" in capsys.readouterr().out
