"""Acceptance on the real sample data in ../shared/data (skipped when absent)."""

from __future__ import annotations

import logging
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio import features

from rasterlearn.chips import Scene, make_chips
from rasterlearn.cli import main

pytestmark = pytest.mark.realdata


def _independent_mask(
    vector: Path, chip: Path, attribute: str | None, codes: dict | None = None
) -> np.ndarray:
    """Rasterize the polygons onto a chip's own grid with plain geopandas + rasterio (no rasterlearn code)."""
    with rasterio.open(chip) as ds:
        transform, shape, crs = ds.transform, ds.shape, ds.crs
    gdf = gpd.read_file(vector).to_crs(crs)
    values = [1] * len(gdf) if attribute is None else [(codes or {}).get(v, v) for v in gdf[attribute]]
    return features.rasterize(
        zip(gdf.geometry, values, strict=True), out_shape=shape, transform=transform, fill=0, dtype="uint8"
    )


def test_buildings_two_scenes_masks_match_and_no_trn_val_overlap(shared_data: Path, tmp_path: Path) -> None:
    d = shared_data / "buildings_ma"
    out = tmp_path / "bld"
    rc = main(
        [
            "-q",
            "chips",
            "--raster",
            str(d / "scene_22978945.tif"),
            "--labels",
            str(d / "buildings.gpkg"),
            "--raster",
            str(d / "scene_23429155_uint16.tif"),
            "--labels",
            str(d / "buildings.gpkg"),
            "--attribute",
            "class",
            "--size",
            "256",
            "--stride",
            "128",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    import pandas as pd

    man = pd.read_csv(out / "manifest.csv")
    assert set(man["scene"]) == {"scene_22978945", "scene_23429155_uint16"}
    assert {"trn", "val"} <= set(man["split"])
    # edge chips are kept (padded), e.g. the last column of scene 1 (1182 px wide: offsets up to 1024)
    assert man[man["scene"] == "scene_22978945"]["col_off"].max() == 1024
    for row in man.sample(6, random_state=0).itertuples():
        with rasterio.open(out / row.mask) as ds:
            mask = ds.read(1)
        with rasterio.open(out / row.image) as ds:
            valid = ds.read_masks(1) > 0
            dtype = ds.dtypes[0]
        assert dtype == ("uint16" if "uint16" in row.scene else "uint8")
        expected = _independent_mask(d / "buildings.gpkg", out / row.mask, "class")
        np.testing.assert_array_equal(mask[valid], expected[valid])
        assert (mask[~valid] == 255).all()
    for scene in set(man["scene"]):
        sub = man[man["scene"] == scene]
        trn, val = sub[sub["split"] == "trn"], sub[sub["split"] == "val"]
        for t in trn.itertuples():
            ox = np.minimum(t.maxx, val["maxx"]) - np.maximum(t.minx, val["minx"])
            oy = np.minimum(t.maxy, val["maxy"]) - np.maximum(t.miny, val["miny"])
            assert not ((ox > 0) & (oy > 0)).any()


def test_landcover_text_labels_and_label_raster(shared_data: Path, tmp_path: Path, caplog) -> None:
    d = shared_data / "landcover_nc"
    caplog.set_level(logging.INFO, logger="rasterlearn")
    res = make_chips(
        [Scene(d / "landsat7_5band.tif", d / "training_polygons.shp")],
        tmp_path / "poly",
        size=32,
        stride=16,
        attribute="label",
        label_areas="features",
        val=0.25,
        block_size=64,
    )
    schema = res.dataset["schema"]
    names = sorted(["developed", "agriculture", "herbaceous", "shrubland", "forest", "water", "sediment"])
    assert [c["name"] for c in schema["classes"]] == names and len(schema["classes"]) == 7
    assert (
        res.dataset["dtype"] == "float32"
        and res.dataset["nodata"] == -99999.0
        and len(res.dataset["bands"]) == 5
    )
    assert "Reprojecting" in caplog.text  # EPSG:3358 polygons onto the image's (unnamed) EPSG:32119-like CRS
    man = res.manifest
    assert (man["labelled_fraction"] > 0).all()  # sparse labels: chips without any labelled pixel are dropped
    by_name = {c["name"]: c["code"] for c in schema["classes"]}
    row = man.sort_values("labelled_fraction").iloc[-1]
    with rasterio.open(res.out / row["mask"]) as ds:
        mask = ds.read(1)
    polys = gpd.read_file(d / "training_polygons.shp")
    expected = _independent_mask(d / "training_polygons.shp", res.out / row["mask"], "label", by_name)
    covered = _independent_mask(d / "training_polygons.shp", res.out / row["mask"], None) > 0
    agree = (mask[covered] == expected[covered]).mean()
    assert agree > 0.97 and (mask[~covered] == 255).mean() > 0.97 and len(polys) == 34
    # the dense land-class raster: same grid, CRS described as EPSG:3358 instead of the image's unnamed CRS
    caplog.clear()
    dense = make_chips(
        [Scene(d / "landsat7_5band.tif", label_raster=d / "landclass_7.tif")],
        tmp_path / "dense",
        size=64,
        stride=64,
        block_size=128,
    )
    assert "described differently" in caplog.text
    assert dense.dataset["scenes"][0]["label_alignment"] == "same_grid_crs_described_differently"
    assert [c["code"] for c in dense.dataset["schema"]["classes"]] == [1, 2, 3, 4, 5, 6, 7]
    r = dense.manifest.iloc[len(dense.manifest) // 2]
    with rasterio.open(res.out.parent / "dense" / r["mask"]) as ds:
        m = ds.read(1)
    with rasterio.open(d / "landclass_7.tif") as src:
        ref = src.read(
            1,
            window=rasterio.windows.Window(r["col_off"], r["row_off"], 64, 64),
            boundless=True,
            fill_value=-99999,
        )
    with rasterio.open(d / "landsat7_5band.tif") as src:
        img_valid = (
            src.read_masks(
                1, window=rasterio.windows.Window(r["col_off"], r["row_off"], 64, 64), boundless=True
            )
            > 0
        )
    ok = (ref != -99999) & img_valid
    np.testing.assert_array_equal(m[ok], ref[ok].astype("uint8"))
    assert (m[~ok] == 255).all()


def test_cameroon_polygons_in_4326_reprojected(shared_data: Path, tmp_path: Path, caplog) -> None:
    d = shared_data / "cameroon_s2"
    caplog.set_level(logging.INFO, logger="rasterlearn")
    res = make_chips(
        [Scene(d / "s2_11band.tif", d / "labelled_polygons.shp")],
        tmp_path / "cm",
        size=64,
        stride=64,
        attribute="Type",
        val=0.0,
    )
    assert "EPSG:4326" in caplog.text and "Reprojecting" in caplog.text
    schema = res.dataset["schema"]
    by_name = {c["name"]: c["code"] for c in schema["classes"]}
    assert set(by_name) == {"background", "dense_forest", "open", "river"}
    assert res.dataset["epsg"] == 32633 and len(res.dataset["bands"]) == 11
    man = res.manifest
    assert man[[f"px_{by_name[n]}" for n in ("dense_forest", "open", "river")]].sum().min() > 0
    for row in man[man["annotated_fraction"] > 0].head(4).itertuples():
        with rasterio.open(res.out / row.mask) as ds:
            mask = ds.read(1)
        expected = _independent_mask(d / "labelled_polygons.shp", res.out / row.mask, "Type", by_name)
        valid = mask != 255
        np.testing.assert_array_equal(mask[valid], expected[valid])
