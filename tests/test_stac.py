"""STAC items as scenes: assets stacked as bands of one virtual raster on one grid."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from rasterio.transform import from_origin

from rasterlearn.errors import InputError, InputNotFoundError
from rasterlearn.io.raster import RasterReader
from rasterlearn.io.stac import stac_stack
from tests.logcapture import rasterlearn_logs  # noqa: F401


def _band(path: Path, data: np.ndarray, res: float, crs: str = "EPSG:32633") -> None:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[1],
        height=data.shape[0],
        count=1,
        dtype=data.dtype,
        crs=crs,
        transform=from_origin(600000, 5000000, res, res),
        nodata=0,
    ) as dst:
        dst.write(data, 1)


@pytest.fixture()
def item(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    arrays = {
        "B04": rng.integers(1, 4000, (40, 40), dtype=np.uint16),
        "B03": rng.integers(1, 4000, (40, 40), dtype=np.uint16),
        "B11": rng.integers(1, 4000, (20, 20), dtype=np.uint16),  # 20 m band
        "SCL": rng.integers(1, 11, (20, 20), dtype=np.uint8),
    }
    folder = tmp_path / "S2_T33_20240601"
    folder.mkdir()
    for name, a in arrays.items():
        _band(folder / f"{name}.tif", a, 10.0 if a.shape[0] == 40 else 20.0)
    it = pystac.Item(
        id="S2_T33_20240601",
        geometry=None,
        bbox=None,
        datetime=datetime(2024, 6, 1, tzinfo=UTC),
        properties={},
    )
    for name in arrays:
        it.add_asset(
            name, pystac.Asset(href=f"./{name}.tif", media_type=pystac.MediaType.GEOTIFF, roles=["data"])
        )
    it.add_asset(
        "thumbnail", pystac.Asset(href="./thumb.png", media_type=pystac.MediaType.PNG, roles=["thumbnail"])
    )
    path = folder / "item.json"
    d = it.to_dict(include_self_link=False)
    path.write_text(json.dumps(d))
    return path, arrays


def test_stack_orders_assets_and_resamples_onto_the_finest_grid(item, caplog) -> None:
    path, arrays = item
    caplog.set_level("INFO")
    st = stac_stack(path, ["B04", "B03", "B11"], resampling="nearest")
    assert st.item_id == "S2_T33_20240601" and st.bands == ("B04", "B03", "B11")
    assert st.resampled == ("B11",) and "B11" in caplog.text and "resampled" in caplog.text
    assert Path(st.hrefs["B04"]) == path.parent / "B04.tif"  # relative hrefs resolved against the item
    with RasterReader(st.path) as r:
        assert (r.grid.height, r.grid.width) == (40, 40)
        assert r.grid.transform == from_origin(600000, 5000000, 10, 10)
        assert [b.description for b in r.bands] == ["B04", "B03", "B11"]
        block = r.read()
    np.testing.assert_array_equal(block.data[0], arrays["B04"])
    np.testing.assert_array_equal(block.data[1], arrays["B03"])
    np.testing.assert_array_equal(block.data[2], np.repeat(np.repeat(arrays["B11"], 2, 0), 2, 1))
    prov = st.provenance()
    assert prov["stac_item_id"] == "S2_T33_20240601" and prov["stac_assets"] == ["B04", "B03", "B11"]


def test_mixed_dtypes_are_promoted_without_changing_values(item) -> None:
    path, arrays = item
    st = stac_stack(path, ["SCL", "B04"], resampling="nearest")
    with RasterReader(st.path) as r:
        assert {b.dtype for b in r.bands} == {"uint16"}
        data = r.read().data
    np.testing.assert_array_equal(data[0], np.repeat(np.repeat(arrays["SCL"], 2, 0), 2, 1))


def test_unknown_asset_lists_the_raster_assets(item) -> None:
    path, _ = item
    with pytest.raises(InputError, match=r"no asset 'B08'.*B04, B03, B11, SCL") as exc:
        stac_stack(path, ["B04", "B08"])
    assert "thumbnail" not in str(exc.value)


def test_assets_in_two_crs_are_refused(item) -> None:
    path, arrays = item
    _band(path.parent / "B03.tif", arrays["B03"], 10.0, crs="EPSG:32632")
    with pytest.raises(InputError, match=r"'B03' is in EPSG:32632.*one CRS"):
        stac_stack(path, ["B04", "B03"])


def test_not_an_item_and_missing_file(tmp_path: Path) -> None:
    cat = pystac.Catalog(id="c", description="d")
    p = tmp_path / "catalog.json"
    p.write_text(json.dumps(cat.to_dict(include_self_link=False)))
    with pytest.raises(InputError, match="not an Item"):
        stac_stack(p, ["B04"])
    with pytest.raises(InputNotFoundError, match="STAC item not found"):
        stac_stack(tmp_path / "nope.json", ["B04"])


def test_cli_info_stac(item, capsys) -> None:
    from rasterlearn.cli import main

    path, _ = item
    assert main(["info", "--stac", str(path), "--assets", "B04,B11", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["width"], d["count"], d["stac_item_id"]) == (40, 2, "S2_T33_20240601")
    assert [b["description"] for b in d["bands"]] == ["B04", "B11"]
    assert main(["info", "--stac", str(path), "--assets", "B99"]) == 2
    assert "no asset 'B99'" in capsys.readouterr().err
    assert main(["info", "x.tif", "--stac", str(path), "--assets", "B04"]) == 2
