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


def test_in_memory_stack_has_a_stable_identity(item) -> None:
    from rasterlearn._util import file_identity

    path, _ = item
    a, b = stac_stack(path, ["B04", "B03"]), stac_stack(path, ["B04", "B03"])
    assert file_identity(a.path) == file_identity(b.path)  # a resumed job recognises its input
    assert file_identity(a.path) != file_identity(stac_stack(path, ["B03", "B04"]).path)


def _stack_as_tiff(st_path: str, dst: Path) -> Path:
    with RasterReader(st_path) as r:
        block = r.read(r.grid.window)
        g = r.grid
    with rasterio.open(
        dst,
        "w",
        driver="GTiff",
        width=g.width,
        height=g.height,
        count=block.data.shape[0],
        dtype=block.data.dtype,
        crs=g.crs,
        transform=g.transform,
        nodata=0,
    ) as ds:
        ds.write(block.data)
    return dst


def test_cli_predict_stac_item_equals_the_stacked_file_and_records_the_item(item, tmp_path, capsys) -> None:
    from rasterlearn.cli import main
    from tests.test_predict import _package

    path, _ = item
    pkg = _package(tmp_path)
    common = ["--allow-dtype-mismatch", "--progress", "none"]
    ref = _stack_as_tiff(stac_stack(path, ["B04", "B03", "B11"]).path, tmp_path / "stack.tif")
    assert main(["predict", str(pkg), str(ref), "-o", str(tmp_path / "ref.tif"), *common]) == 0
    out = tmp_path / "stac_map.tif"
    args = ["predict", str(pkg), "--stac", str(path), "--assets", "B04,B03,B11", "-o", str(out), *common]
    assert main(args) == 0
    with rasterio.open(out) as a, rasterio.open(tmp_path / "ref.tif") as b:
        assert a.transform == b.transform and a.crs == b.crs
        np.testing.assert_array_equal(a.read(), b.read())
        tags = a.tags()
    assert tags["stac_item_id"] == "S2_T33_20240601"
    assert json.loads(tags["stac_assets"]) == ["B04", "B03", "B11"]
    hrefs = json.loads(tags["stac_hrefs"])
    assert Path(hrefs["B11"]) == path.parent / "B11.tif"
    capsys.readouterr()
    assert main([*args, "--overwrite"]) == 0  # runs again from the same item
    assert main(["predict", str(pkg), str(ref), "--stac", str(path), "-o", str(out)]) == 2
    assert "not both" in capsys.readouterr().err


def test_cli_predict_several_stac_items_into_out_dir(item, tmp_path) -> None:
    from rasterlearn.cli import main
    from tests.test_predict import _package

    path, _ = item
    second = tmp_path / "second"
    second.mkdir()
    d = json.loads(path.read_text())
    d["id"] = "S2_T33_20240611"
    for a in d["assets"].values():  # the same files, referenced from another folder
        a["href"] = str(path.parent / Path(a["href"]).name)
    (second / "item.json").write_text(json.dumps(d))
    pkg = _package(tmp_path)
    out = tmp_path / "maps"
    args = ["predict", str(pkg), "--stac", str(path), "--stac", str(second / "item.json")]
    assert main([*args, "--assets", "B04,B03,B11", "--out-dir", str(out), "--allow-dtype-mismatch"]) == 0
    summary = json.loads((out / "scenes.json").read_text())
    assert summary["done"] == 2
    assert sorted(p.name for p in (out / "stac").iterdir()) == ["S2_T33_20240601.vrt", "S2_T33_20240611.vrt"]
    for name in ("S2_T33_20240601", "S2_T33_20240611"):
        with rasterio.open(out / f"{name}.tif") as ds:
            assert ds.shape == (40, 40) and ds.tags()["stac_item_id"] == name
    with rasterio.open(out / "S2_T33_20240601.tif") as a, rasterio.open(out / "S2_T33_20240611.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())  # same pixels, two items


def test_cli_embed_stac_item_equals_the_stacked_file_and_records_the_item(item, tmp_path) -> None:
    from rasterlearn.cli import main

    path, _ = item
    ref = _stack_as_tiff(stac_stack(path, ["B04", "B03", "B11"]).path, tmp_path / "stack.tif")
    common = ["--model", "resnet18", "--no-pretrained", "--seed", "3", "--size", "32", "--device", "cpu"]
    common += ["--progress", "none"]
    assert main(["embed", str(ref), *common, "-o", str(tmp_path / "ref.tif")]) == 0
    out = tmp_path / "stac_feat.tif"
    assert main(["embed", "--stac", str(path), "--assets", "B04,B03,B11", *common, "-o", str(out)]) == 0
    with rasterio.open(out) as a, rasterio.open(tmp_path / "ref.tif") as b:
        assert a.transform == b.transform and a.count == b.count
        np.testing.assert_array_equal(a.read(), b.read())
        tags = a.tags()
    assert tags["stac_item_id"] == "S2_T33_20240601"
    assert json.loads(tags["stac_assets"]) == ["B04", "B03", "B11"]
