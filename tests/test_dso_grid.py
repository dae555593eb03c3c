from __future__ import annotations

from pathlib import Path

import pytest

from dso_server.grid import ConnectionPoint, Feeder, Grid, Transformer, load_grid

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
    assert any("duplicate" in e for e in errors)
    assert any("unknown transformer_id 'X'" in e for e in errors)
    assert any("unknown feeder_id 'G'" in e for e in errors)
    assert any("check digit" in e for e in errors)
    with pytest.raises(ValueError, match="invalid grid"):
        grid.assert_valid()


def test_loader_error_names_file_table_index_field(tmp_path: Path) -> None:
    p = tmp_path / "g.toml"
    p.write_text('[[transformer]]\nid="T"\nrating_kva=1\n[[transformer]]\nid="U"\nrating_kva=-5\n')
    with pytest.raises(ValueError, match=r"g.toml: \[\[transformer\]\] #1 field rating_kva"):
        load_grid(p)
