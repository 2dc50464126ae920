"""From→to transition labels from two dates' label polygons."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import box

from rasterlearn.change_labels import transition_labels
from rasterlearn.errors import EmptyInputError
from tests.logcapture import rasterlearn_logs  # noqa: F401


def _layer(path: Path, rows: list[tuple[str | None, tuple[float, float, float, float]]], crs: str) -> Path:
    gdf = gpd.GeoDataFrame(
        {"cls": [r[0] for r in rows]}, geometry=[box(*r[1]) for r in rows], crs="EPSG:32633"
    )
    gdf.to_crs(crs).to_file(path)
    return path


@pytest.fixture()
def layers(tmp_path: Path) -> tuple[Path, Path]:
    x, y = 500000.0, 4000000.0
    a = _layer(
        tmp_path / "a.gpkg",
        [("forest", (x, y, x + 100, y + 100)), ("field", (x + 100, y, x + 200, y + 100))],
        "EPSG:32633",
    )
    # B (stored in WGS84): the east half of the forest was cleared, the field is unchanged, plus a label
    # outside A (unknown there: not a transition) and an empty label (skipped)
    b = _layer(
        tmp_path / "b.gpkg",
        [
            ("forest", (x, y, x + 50, y + 100)),
            ("bare", (x + 50, y, x + 100, y + 100)),
            ("field", (x + 100, y, x + 200, y + 100)),
            ("water", (x + 300, y, x + 400, y + 100)),
            ("  ", (x, y + 200, x + 50, y + 250)),
        ],
        "EPSG:4326",
    )
    return a, b


def test_transitions_name_what_changed_by_area(layers, tmp_path: Path, caplog) -> None:
    caplog.set_level("INFO")
    res = transition_labels(*layers, tmp_path / "t.gpkg", attribute="cls")
    assert set(res.areas) == {"forest→bare", "no change"}
    assert res.areas["forest→bare"] == pytest.approx(5000, rel=1e-3)  # B was reprojected back to A's CRS
    assert res.areas["no change"] == pytest.approx(15000, rel=1e-3)
    gdf = gpd.read_file(tmp_path / "t.gpkg")
    assert gdf.crs.to_epsg() == 32633
    cleared = gdf[gdf.transition == "forest→bare"]
    assert cleared.changed.tolist() == [1] and cleared.class_from.tolist() == ["forest"]
    assert set(gdf[gdf.changed == 0].class_from) == {"forest", "field"}
    assert "1 feature(s) with an empty 'cls' skipped" in caplog.text


def test_drop_unchanged_and_no_shared_ground(layers, tmp_path: Path) -> None:
    res = transition_labels(*layers, tmp_path / "t.gpkg", attribute="cls", keep_unchanged=False)
    assert set(gpd.read_file(res.path).transition) == {"forest→bare"}
    far = _layer(tmp_path / "far.gpkg", [("x", (0, 0, 10, 10))], "EPSG:32633")
    with pytest.raises(EmptyInputError, match="share no labelled ground"):
        transition_labels(layers[0], far, tmp_path / "none.gpkg", attribute="cls")


def test_cli_transitions(layers, tmp_path: Path, capsys) -> None:
    from rasterlearn.cli import main

    out = tmp_path / "t.gpkg"
    assert main(["transitions", str(layers[0]), str(layers[1]), "--attribute", "cls", "-o", str(out)]) == 0
    assert "forest→bare" in capsys.readouterr().err  # the console prints on stderr
    assert main(["transitions", str(layers[0]), str(layers[1]), "--attribute", "cls", "-o", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
