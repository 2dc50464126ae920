"""Chip datasets: planning, masks, georeference, filters, splits, resume, bad input, CLI (tiny rasters)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from shapely.geometry import Polygon, box

from rasterlearn.chips import (
    LabelRaster,
    Scene,
    block_split,
    make_chips,
    parse_class_proportion,
    random_split,
    read_scenes_csv,
    stratified_split,
)
from rasterlearn.cli import main
from rasterlearn.errors import (
    AttributeNotFoundError,
    ConfigError,
    EmptyInputError,
    InputError,
    NoOverlapError,
    OutputError,
)
from rasterlearn.grid import Grid
from tests.conftest import coord_image, write_tif

X0, Y0 = 500_000.0, 4_000_000.0
T = Affine(10.0, 0.0, X0, 0.0, -10.0, Y0)
H, W = 72, 88  # not multiples of the chip size: edge chips are padded


def pbox(r0: float, c0: float, r1: float, c1: float) -> Polygon:
    return box(X0 + 10 * c0, Y0 - 10 * r1, X0 + 10 * c1, Y0 - 10 * r0)


@pytest.fixture
def scene(tmp_path: Path) -> tuple[Path, Path]:
    img = coord_image(H, W, "uint16")
    img[:, 60:66, 80:] = 65535  # a nodata patch
    raster = write_tif(tmp_path / "scene_a.tif", img, nodata=65535, descriptions=["row", "col"])
    gdf = gpd.GeoDataFrame(
        {"cls": ["water", "forest", "forest", "field"]},
        geometry=[pbox(2, 2, 20, 30), pbox(30, 40, 60, 85), pbox(5, 50, 15, 70), pbox(40, 5, 70, 20)],
        crs="EPSG:32633",
    )
    vec = tmp_path / "labels.gpkg"
    gdf.to_file(vec)
    return raster, vec


def read(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as ds:
        cmap = None
        if ds.count == 1 and ds.dtypes[0] in ("uint8", "uint16") and ds.descriptions[0] == "class":
            cmap = ds.colormap(1)
        return ds.read(), {
            "transform": ds.transform,
            "crs": ds.crs,
            "nodata": ds.nodata,
            "dtype": ds.dtypes[0],
            "descriptions": ds.descriptions,
            "colormap": cmap,
        }


def test_chips_layout_georeference_and_masks(scene: tuple[Path, Path], tmp_path: Path) -> None:
    raster, vec = scene
    res = make_chips(
        [Scene(raster, vec)], tmp_path / "ds", size=32, stride=32, attribute="cls", val=0.25, block_size=32
    )
    out = res.out
    man = pd.read_csv(out / "manifest.csv")
    for col in (
        "chip_id",
        "image",
        "mask",
        "scene",
        "split",
        "row_off",
        "col_off",
        "height",
        "width",
        "minx",
        "miny",
        "maxx",
        "maxy",
        "nodata_fraction",
        "annotated_fraction",
        "px_0",
        "px_1",
        "px_2",
        "px_3",
    ):
        assert col in man.columns
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["format"] == "rasterlearn-chips/1" and meta["chip_size"] == 32 and meta["stride"] == 32
    assert meta["bands"] == ["row", "col"] and meta["band_indexes"] == [1, 2] and meta["dtype"] == "uint16"
    assert meta["nodata"] == 65535 and meta["epsg"] == 32633 and meta["resolution"] == [10.0, 10.0]
    assert meta["crs_units"] == "metre" and meta["split_method"] == "blocks"
    assert [c["name"] for c in meta["schema"]["classes"]] == ["background", "field", "forest", "water"]
    assert sum(meta["splits"].values()) == len(man) and meta["normalization"]["method"] == "zscore"
    assert len(meta["statistics"]) == 2 and set(man["split"]) <= {"trn", "val", "tst"}
    assert len(man) == 9  # 3 x 3 windows of 32 over 72 x 88, none dropped (blocks == chips: no straddling)
    grid = Grid(H, W, T, "EPSG:32633")
    for row in man.itertuples():
        assert row.chip_id == f"scene_a_r{row.row_off:06d}_c{row.col_off:06d}"
        img, ip = read(out / row.image)
        mask, mp = read(out / row.mask)
        assert img.shape == (2, 32, 32) and mask.shape == (1, 32, 32)
        assert ip["transform"] == grid.window_transform(_win(row)) == mp["transform"]
        assert ip["crs"].to_epsg() == 32633 and ip["dtype"] == "uint16" and ip["nodata"] == 65535
        assert ip["descriptions"] == ("row", "col") and mp["dtype"] == "uint8" and mp["nodata"] == 255
        assert mp["colormap"][1][:3] == (31, 119, 180)
        # image values are the source pixels (coordinates), padding is nodata
        r = np.arange(row.row_off, row.row_off + 32)[:, None]
        c = np.arange(row.col_off, row.col_off + 32)[None, :]
        inside = (r < H) & (c < W)
        src_nodata = inside & (r >= 60) & (r < 66) & (c >= 80)
        good = inside & ~src_nodata
        np.testing.assert_array_equal(img[0][good], np.broadcast_to(r, (32, 32))[good])
        np.testing.assert_array_equal(img[1][good], np.broadcast_to(c, (32, 32))[good])
        assert (img[:, ~inside] == 65535).all()
        assert (mask[0][~good] == 255).all() and (mask[0][good] != 255).all()
    # the mask of the chip at (0, 0): water (code 3) rows 2..19, cols 2..29
    m00, _ = read(out / "masks" / "scene_a_r000000_c000000.tif")
    assert (m00[0, 2:20, 2:30] == 3).all() and m00[0, 0, 0] == 0 and m00[0, 25, 25] == 0


def _win(row):
    from rasterlearn.grid import Window

    return Window(int(row.row_off), int(row.col_off), int(row.height), int(row.width))


def test_block_split_never_overlaps_and_is_reproducible(scene: tuple[Path, Path], tmp_path: Path) -> None:
    raster, vec = scene
    a = make_chips(
        [Scene(raster, vec)], tmp_path / "a", size=16, stride=8, attribute="cls", block_size=24, seed=3
    )
    b = make_chips(
        [Scene(raster, vec)], tmp_path / "b", size=16, stride=8, attribute="cls", block_size=24, seed=3
    )
    pd.testing.assert_series_equal(a.manifest["split"], b.manifest["split"])
    man = a.manifest
    assert a.dataset["dropped"]["straddle"] > 0 and not a.dataset["leaky"]
    # chips dropped by the split (written during the scan) are removed: the folder matches the manifest
    assert sorted(p.name for p in (a.out / "images").glob("*.tif")) == sorted(
        f"{c}.tif" for c in man["chip_id"]
    )
    assert len(list((a.out / "masks").glob("*.tif"))) == len(man) and not list(a.out.glob("images/.*"))
    trn, val = man[man["split"] == "trn"], man[man["split"] == "val"]
    assert len(trn) and len(val)
    for t in trn.itertuples():
        ov_x = np.minimum(t.maxx, val["maxx"]) - np.maximum(t.minx, val["minx"])
        ov_y = np.minimum(t.maxy, val["maxy"]) - np.maximum(t.miny, val["miny"])
        assert not ((ov_x > 0) & (ov_y > 0)).any()


def test_block_split_kernel() -> None:
    bounds = np.array([[x, 0, x + 10, 10] for x in range(0, 200, 5)], dtype=float)
    splits, blocks = block_split(bounds, (40.0, 40.0), {"trn": 0.7, "val": 0.3}, seed=0)
    assert set(blocks.values()) == {"trn", "val"}
    for (bx0, _, bx1, _), s in zip(bounds, splits, strict=True):
        if s != "straddle":
            assert {blocks[(int(bx0 // 40), 0)], blocks[(int((bx1 - 1e-6) // 40), 0)]} == {s}


def test_random_and_stratified_splits(scene: tuple[Path, Path], tmp_path: Path, caplog) -> None:
    s = random_split(100, {"trn": 0.7, "val": 0.2, "tst": 0.1}, seed=1)
    assert (s == "trn").sum() == 70 and (s == "val").sum() == 20 and (s == "tst").sum() == 10
    assert (s == random_split(100, {"trn": 0.7, "val": 0.2, "tst": 0.1}, seed=1)).all()
    keys = ["a"] * 50 + ["b"] * 10
    st = stratified_split(keys, {"trn": 0.8, "val": 0.2}, seed=0)
    assert (st[:50] == "val").sum() == 10 and (st[50:] == "val").sum() == 2
    raster, vec = scene
    caplog.set_level(logging.WARNING, logger="rasterlearn")
    res = make_chips(
        [Scene(raster, vec)], tmp_path / "r", size=16, stride=8, attribute="cls", split_method="random"
    )
    assert res.dataset["leaky"] and "LEAKY SPLIT" in caplog.text and res.dataset["dropped"]["straddle"] == 0
    res = make_chips(
        [Scene(raster, vec)], tmp_path / "s", size=16, stride=16, attribute="cls", split_method="stratified"
    )
    assert not res.dataset["leaky"] and res.dataset["split_method"] == "stratified"


def test_filters(scene: tuple[Path, Path], tmp_path: Path) -> None:
    raster, vec = scene
    res = make_chips(
        [Scene(raster, vec)],
        tmp_path / "f",
        size=16,
        stride=16,
        attribute="cls",
        min_annotated=50,
        max_nodata=10,
        class_proportion="3:20",
        split_method="random",
    )
    cand = pd.read_csv(res.out / "candidates.csv")
    assert len(cand) == 5 * 6
    man = res.manifest
    assert (man["annotated_fraction"] >= 0.5).all() and (man["nodata_fraction"] <= 0.1).all()
    labelled = man["labelled_fraction"] * 256
    assert (man["px_3"] / labelled >= 0.2).all()
    d = res.dataset["dropped"]
    assert d["nodata"] >= 1 and d["annotated"] >= 1 and sum(d.values()) + len(man) == len(cand)
    assert parse_class_proportion({1: 5}) == {1: 5.0}
    with pytest.raises(ConfigError):
        parse_class_proportion("1=5")
    with pytest.raises(EmptyInputError, match="No chip passed the filters"):
        make_chips(
            [Scene(raster, vec)], tmp_path / "none", size=16, attribute="cls", class_proportion="1:60,3:60"
        )


def test_resume_idempotent_and_new_folder_on_changed_params(scene: tuple[Path, Path], tmp_path: Path) -> None:
    raster, vec = scene
    out = tmp_path / "ds"
    first = make_chips([Scene(raster, vec)], out, size=32, attribute="cls")
    assert first.written == 9 and first.skipped == 0
    victim = out / first.manifest["image"][4]
    mtime = (out / first.manifest["image"][0]).stat().st_mtime_ns
    victim.unlink()
    again = make_chips([Scene(raster, vec)], out, size=32, attribute="cls")
    assert again.out == out and again.written == 1 and again.skipped == 8 and victim.exists()
    assert (out / first.manifest["image"][0]).stat().st_mtime_ns == mtime
    pd.testing.assert_frame_equal(first.manifest, again.manifest)
    changed = make_chips([Scene(raster, vec)], out, size=16, attribute="cls")
    assert changed.out != out and changed.out.name.startswith("ds-") and changed.dataset["chip_size"] == 16
    assert json.loads((out / "dataset.json").read_text())["chip_size"] == 32  # the first dataset is untouched
    replaced = make_chips([Scene(raster, vec)], out, size=16, attribute="cls", overwrite=True)
    assert replaced.out == out and len(list((out / "images").glob("*.tif"))) == len(replaced.manifest)
    other = tmp_path / "not_a_dataset"
    other.mkdir()
    (other / "x.txt").write_text("x")
    with pytest.raises(OutputError, match="not a rasterlearn chip dataset"):
        make_chips([Scene(raster, vec)], other, size=16, attribute="cls")


def test_scenes_csv_gdl_layout_and_scene_split(scene: tuple[Path, Path], tmp_path: Path) -> None:
    raster, vec = scene
    img2 = np.full((2, 40, 40), 1000, dtype="uint16")
    r2 = write_tif(
        tmp_path / "scene_b.tif", img2, nodata=65535, transform=Affine(10, 0, X0 + 2000, 0, -10, Y0)
    )
    gpd.GeoDataFrame(
        {"cls": ["water"]}, geometry=[box(X0 + 2000, Y0 - 200, X0 + 2200, Y0)], crs="EPSG:32633"
    ).to_file(tmp_path / "b.gpkg")
    csv = tmp_path / "scenes.csv"
    csv.write_text(f"{raster.name},,labels.gpkg,cls,trn\nscene_b.tif,meta.yaml,b.gpkg,cls,val\n")
    scenes = read_scenes_csv(csv)
    assert scenes[0].image == raster and scenes[1].split == "val" and scenes[1].metadata == "meta.yaml"
    res = make_chips(scenes, tmp_path / "ds", size=32, stride=32)
    assert res.dataset["split_method"] == "scene"
    assert set(res.manifest[res.manifest["scene"] == "scene_b"]["split"]) == {"val"}
    # statistics come from the trn scene only (scene_b's constant 1000 would move the mean)
    rows = res.manifest[res.manifest["split"] == "trn"]
    assert res.dataset["statistics"][0]["max"] < 100 and len(rows) == 9
    hdr = tmp_path / "scenes_hdr.csv"
    hdr.write_text(f"image,labels,attribute,split\n{r2},b.gpkg,cls,test\n")
    assert read_scenes_csv(hdr)[0].split == "tst"
    bad = tmp_path / "bad.csv"
    bad.write_text("image,labels,oops\nx.tif,b.gpkg,1\n")
    with pytest.raises(ConfigError, match="unknown columns"):
        read_scenes_csv(bad)
    with pytest.raises(InputError, match="Unknown split"):
        Scene(raster, vec, split="holdout")


def test_label_raster_aligned_and_warped(tmp_path: Path) -> None:
    img = np.arange(64 * 64, dtype="float32").reshape(1, 64, 64)
    raster = write_tif(tmp_path / "img.tif", img, nodata=-1.0)
    lab = np.zeros((64, 64), dtype="uint8")
    lab[:, 32:] = 2
    lab[10:20, 10:20] = 1
    lab[0, 0] = 9  # nodata
    aligned = write_tif(tmp_path / "lab.tif", lab, nodata=9)
    res = make_chips([Scene(raster, label_raster=aligned)], tmp_path / "a", size=32, val=0.0)
    m, _ = read(res.out / "masks" / "img_r000000_c000000.tif")
    assert m[0, 0, 0] == 255 and (m[0, 10:20, 10:20] == 1).all() and m[0, 5, 5] == 0
    assert [c["code"] for c in res.dataset["schema"]["classes"]] == [0, 1, 2]
    img_chip, meta = read(res.out / "images" / "img_r000000_c000000.tif")
    assert meta["dtype"] == "float32" and img_chip[0, 1, 1] == 65.0
    # the same labels at 20 m on a shifted grid: resampled with nearest neighbour, logged
    coarse = lab[::2, ::2]
    warped = write_tif(tmp_path / "coarse.tif", coarse, nodata=9, transform=Affine(20, 0, X0, 0, -20, Y0))
    lr = LabelRaster(warped, Grid(64, 64, T, "EPSG:32633"))
    assert lr.alignment == "warped_nearest" and lr.values() == [0, 1, 2]
    from rasterlearn.labels import ClassSchema

    lr.bind(ClassSchema.infer([0, 1, 2]))
    from rasterlearn.grid import Window

    mm = lr.mask(Window(0, 0, 64, 64))
    assert (mm[10:20, 10:20] == 1).all() and (mm[:, 33:] == 2).all()
    lr.close()


# ---------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------


def test_vector_in_other_crs_is_reprojected_and_logged(
    scene: tuple[Path, Path], tmp_path: Path, caplog
) -> None:
    raster, vec = scene
    wgs = tmp_path / "labels_4326.gpkg"
    gpd.read_file(vec).to_crs("EPSG:4326").to_file(wgs)
    caplog.set_level(logging.INFO, logger="rasterlearn")
    a = make_chips([Scene(raster, vec)], tmp_path / "a", size=32, attribute="cls")
    b = make_chips([Scene(raster, wgs)], tmp_path / "b", size=32, attribute="cls")
    assert "Reprojecting" in caplog.text and "EPSG:4326" in caplog.text
    for name in a.manifest["mask"]:
        ma, _ = read(a.out / name)
        mb, _ = read(b.out / name)
        assert (ma != mb).mean() < 0.01  # identical up to boundary pixels of the round trip


def test_bad_inputs(scene: tuple[Path, Path], tmp_path: Path, caplog) -> None:
    raster, vec = scene
    far = tmp_path / "far.gpkg"
    gpd.GeoDataFrame({"cls": ["x"]}, geometry=[box(0, 0, 10, 10)], crs="EPSG:32633").to_file(far)
    with pytest.raises(NoOverlapError, match="do not overlap"):
        make_chips([Scene(raster, far)], tmp_path / "o1", size=32, attribute="cls")
    with pytest.raises(AttributeNotFoundError, match="Available attributes: cls"):
        make_chips([Scene(raster, vec)], tmp_path / "o2", size=32, attribute="klass")
    empty = tmp_path / "empty.gpkg"
    gpd.GeoDataFrame({"cls": []}, geometry=[], crs="EPSG:32633").to_file(empty)
    with pytest.raises(EmptyInputError, match="has no features"):
        make_chips([Scene(raster, empty)], tmp_path / "o3", size=32, attribute="cls")
    schema = tmp_path / "schema.csv"
    schema.write_text("value,name,color\n0,background,#000000\n1,water,#0000ff\n")
    with pytest.raises(InputError, match="not in the class schema"):
        make_chips([Scene(raster, vec)], tmp_path / "o4", size=32, attribute="cls", schema=schema)
    res = make_chips(
        [Scene(raster, vec)], tmp_path / "o5", size=32, attribute="cls", schema=schema, unknown="ignore"
    )
    assert [c["name"] for c in res.dataset["schema"]["classes"]] == ["background", "water"]
    with pytest.raises(ConfigError, match="stride"):
        make_chips([Scene(raster, vec)], tmp_path / "o6", size=16, stride=32, attribute="cls")
    # invalid geometry (a bow-tie) is repaired, logged, and burned
    bow = tmp_path / "bow.gpkg"
    gpd.GeoDataFrame(
        {"cls": [1]},
        geometry=[Polygon([(X0, Y0), (X0 + 300, Y0 - 300), (X0 + 300, Y0), (X0, Y0 - 300)])],
        crs="EPSG:32633",
    ).to_file(bow)
    caplog.set_level(logging.WARNING, logger="rasterlearn")
    res = make_chips([Scene(raster, bow)], tmp_path / "o7", size=32, attribute="cls")
    assert "repaired 1 invalid" in caplog.text
    m, _ = read(res.out / "masks" / "scene_a_r000000_c000000.tif")
    assert m[0, 15, 1] == 1 and m[0, 15, 28] == 1 and m[0, 1, 15] == 0  # both lobes of the bow-tie


def test_small_raster_geographic_and_dtypes(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="rasterlearn")
    geo_t = Affine(0.001, 0, 12.0, 0, -0.001, 4.0)
    gpd.GeoDataFrame({"c": [1]}, geometry=[box(12.002, 3.99, 12.008, 3.998)], crs="EPSG:4326").to_file(
        tmp_path / "g.gpkg"
    )
    for dtype, nodata in (("int16", -32768), ("float32", np.nan), ("uint16", 0)):
        data = (np.arange(3 * 12 * 20).reshape(3, 12, 20) + 1).astype(dtype)
        r = write_tif(tmp_path / f"small_{dtype}.tif", data, crs="EPSG:4326", transform=geo_t, nodata=nodata)
        res = make_chips(
            [Scene(r, tmp_path / "g.gpkg")], tmp_path / f"ds_{dtype}", size=32, attribute="c", val=0
        )
        assert len(res.manifest) == 1 and res.dataset["crs_units"] == "degree"
        img, meta = read(res.out / res.manifest["image"][0])
        assert meta["dtype"] == dtype and img.shape == (3, 32, 32)
        np.testing.assert_array_equal(img[:, :12, :20], data)
        mask, _ = read(res.out / res.manifest["mask"][0])
        assert (
            (mask[0, 12:, :] == 255).all()
            and (mask[0, :, 20:] == 255).all()
            and (mask[0, 2:10, 2:8] == 1).all()
        )
    assert "smaller than one 32 px chip" in caplog.text and "geographic CRS" in caplog.text


def test_more_than_255_classes_give_uint16_masks(tmp_path: Path) -> None:
    r = write_tif(tmp_path / "r.tif", np.ones((1, 40, 40), "uint8"), nodata=0)
    geoms = [pbox(i // 20 * 2, i % 20 * 2, i // 20 * 2 + 2, i % 20 * 2 + 2) for i in range(300)]
    gpd.GeoDataFrame({"c": list(range(1, 301))}, geometry=geoms, crs="EPSG:32633").to_file(
        tmp_path / "v.gpkg"
    )
    res = make_chips([Scene(r, tmp_path / "v.gpkg")], tmp_path / "ds", size=40, attribute="c", val=0)
    mask, meta = read(res.out / res.manifest["mask"][0])
    assert meta["dtype"] == "uint16" and meta["nodata"] == 65535 and mask[0, 29, 39] == 300
    assert res.dataset["mask_dtype"] == "uint16" and res.dataset["schema"]["ignore_index"] == 65535


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------


def test_cli_contract_and_config(scene: tuple[Path, Path], tmp_path: Path) -> None:
    raster, vec = scene
    out = tmp_path / "cli"
    rc = main(
        [
            "-q",
            "chips",
            "--raster",
            str(raster),
            "--labels",
            str(vec),
            "--attribute",
            "cls",
            "--size",
            "32",
            "--stride",
            "16",
            "--out",
            str(out),
            "--block-size",
            "48",
        ]
    )
    assert rc == 0
    man = pd.read_csv(out / "manifest.csv")
    assert {"image", "mask", "split"} <= set(man.columns)
    assert sorted(p.name for p in (out / "images").glob("*.tif")) == sorted(
        p.name for p in (out / "masks").glob("*.tif")
    )
    assert json.loads((out / "dataset.json").read_text())["stride"] == 16
    assert main(["-q", "analyze", str(out)]) == 0
    assert (out / "analysis" / "class_proportions.png").stat().st_size > 0
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"raster: [{raster}]\nlabels: [{vec}]\nattribute: cls\nsize: 32\nout: {tmp_path / 'cfg'}\n"
        f"split_method: random\n"
    )
    assert main(["-q", "chips", "--config", str(cfg), "--val", "0.5"]) == 0
    meta = json.loads((tmp_path / "cfg" / "dataset.json").read_text())
    assert meta["split_method"] == "random" and meta["splits"]["val"] in (4, 5)
    cfg.write_text("raster: [a.tif]\nsizee: 3\n")
    assert main(["-q", "chips", "--config", str(cfg)]) == 2
    assert main(["-q", "chips", "--raster", str(raster), "--out", str(tmp_path / "x")]) == 2
