"""The synthetic demo scene: determinism, georeference, class content, label agreement, spectra, nodata."""

from __future__ import annotations

import json
import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.features import rasterize

from rasterlearn.errors import CRSError, InputError
from rasterlearn.io.raster import RasterReader
from rasterlearn.labels import ClassSchema
from rasterlearn.synthetic import (
    BAND_ORDER,
    SYNTHETIC_CLASSES,
    SyntheticScene,
    make_synthetic_array,
    make_synthetic_scene,
    synthetic_polygons,
)

CODES = {name: code for code, name, _ in SYNTHETIC_CLASSES}
SIZE = (200, 232)  # small, non-square: rows and cols cannot be swapped unnoticed


@pytest.fixture(scope="module")
def arrays():
    return make_synthetic_array(size=SIZE, seed=3)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> SyntheticScene:
    return make_synthetic_scene(tmp_path_factory.mktemp("synthetic"), size=SIZE, seed=3)


# -- determinism ----------------------------------------------------------------------------------------
def test_same_seed_gives_identical_arrays(arrays) -> None:
    again = make_synthetic_array(size=SIZE, seed=3)
    assert again.image.tobytes() == arrays.image.tobytes()
    assert again.labels.tobytes() == arrays.labels.tobytes()
    assert again.objects.tobytes() == arrays.objects.tobytes()
    assert np.array_equal(again.reference_pixels, arrays.reference_pixels)
    assert again.grid == arrays.grid


def test_different_seed_gives_a_different_scene(arrays) -> None:
    other = make_synthetic_array(size=SIZE, seed=4)
    assert (other.labels != arrays.labels).mean() > 0.05
    assert not np.array_equal(other.image, arrays.image)


def test_geometry_does_not_depend_on_bands_or_dtype(arrays) -> None:
    wide = make_synthetic_array(size=SIZE, seed=3, bands=13, dtype="float32")
    assert np.array_equal(wide.labels, arrays.labels)
    assert wide.band_names[:4] == arrays.band_names == ("blue", "green", "red", "nir")


def test_nodata_corner_switch_changes_nothing_else(arrays) -> None:
    full = make_synthetic_array(size=SIZE, seed=3, nodata_corner=False)
    assert full.valid.all() and (full.labels != 255).all()
    assert np.array_equal(full.labels[arrays.valid], arrays.labels[arrays.valid])


# -- georeference ---------------------------------------------------------------------------------------
def test_files_are_georeferenced(scene: SyntheticScene) -> None:
    with rasterio.open(scene.image) as img, rasterio.open(scene.label_raster) as lab:
        for ds in (img, lab):
            assert ds.crs.to_epsg() == 32633
            assert (ds.height, ds.width) == SIZE
            assert ds.transform.a == 2.0 and ds.transform.e == -2.0 and ds.transform.b == ds.transform.d == 0
            assert ds.transform == img.transform
        t = img.transform
        assert t.c % 2 == 0 and t.f % 2 == 0  # whole-pixel origin
        # a rural spot in UTM 33N (about 14.6 E, 52.3 N), not the false origin
        assert 400_000 < t.c < 600_000 and 5_700_000 < t.f < 5_900_000
        assert img.count == 4 and img.dtypes == ("uint16",) * 4
        assert img.nodata == 0
        assert img.descriptions == ("blue", "green", "red", "nir")
        assert img.profile["tiled"] and img.block_shapes[0] == (512, 512)
        tags = img.tags()
        assert tags["SYNTHETIC"] == "yes" and "SYNTHETIC" in tags["DESCRIPTION"]
        assert json.loads(tags["SYNTHETIC_PARAMETERS"])["seed"] == 3
        assert img.tags(4)["CENTRAL_WAVELENGTH_NM"] == "842"
        assert lab.dtypes == ("uint8",) and lab.nodata == 255
        assert lab.colormap(1)[CODES["water"]][:3] == (0x1F, 0x78, 0xB4)
    assert scene.grid.shape == SIZE and scene.grid.crs.to_epsg() == 32633
    labels = gpd.read_file(scene.labels, layer=scene.layer)
    assert labels.crs.to_epsg() == 32633
    assert {"class", "code", "object_id"} <= set(labels.columns)
    assert set(labels["class"]) == {name for _, name, _ in SYNTHETIC_CLASSES}
    assert all(CODES[n] == c for n, c in zip(labels["class"], labels["code"], strict=True))


def test_reader_sees_nodata_and_bands(scene: SyntheticScene, arrays) -> None:
    with RasterReader(scene.image) as reader:
        block = reader.read()
        assert reader.band_names == ["blue", "green", "red", "nir"]
    assert np.array_equal(block.valid, arrays.valid)
    assert np.array_equal(block.data, arrays.image)


def test_dtypes_bands_and_resolution() -> None:
    a8 = make_synthetic_array(size=96, seed=1, dtype="uint8", bands=3)
    assert a8.image.dtype == np.uint8 and a8.image.shape == (3, 96, 96) and a8.nodata == 0
    assert a8.image[:, a8.valid].min() >= 1  # no valid pixel equals nodata
    a32 = make_synthetic_array(size=96, seed=1, dtype="float32", bands=13)
    assert a32.band_names == BAND_ORDER and math.isnan(a32.nodata)
    assert np.isnan(a32.image[:, ~a32.valid]).all() and np.isfinite(a32.image[:, a32.valid]).all()
    assert 0 < a32.image[:, a32.valid].max() <= 1.0
    a16 = make_synthetic_array(size=96, seed=1)
    assert a16.image[:, a16.valid].min() >= 1
    # the same reflectance, stored three ways
    assert abs(float(a16.image[3][a16.valid].mean()) * 1e-4 - float(a32.image[3][a32.valid].mean())) < 0.01
    coarse = make_synthetic_array(size=96, seed=1, resolution=10.0, crs="EPSG:3035")
    assert coarse.transform.a == 10.0 and coarse.crs.to_epsg() == 3035


def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(CRSError, match="projected"):
        make_synthetic_array(size=64, crs="EPSG:4326")
    with pytest.raises(CRSError, match="metres"):
        make_synthetic_array(size=64, crs="EPSG:2263")  # US survey feet
    with pytest.raises(InputError, match="bands"):
        make_synthetic_array(size=64, bands=14)
    with pytest.raises(InputError, match="at least 64"):
        make_synthetic_array(size=(32, 128))
    with pytest.raises(InputError, match="dtype"):
        make_synthetic_array(size=64, dtype="int8")  # type: ignore[arg-type]


# -- content --------------------------------------------------------------------------------------------
def test_every_class_present_with_plausible_proportions() -> None:
    for seed in (0, 1):
        frac = make_synthetic_array(size=(384, 384), seed=seed).class_fractions()
        assert 0.01 < frac["water"] < 0.25, frac
        assert 0.08 < frac["forest"] < 0.45, frac
        assert 0.30 < frac["field"] < 0.85, frac
        assert 0.005 < frac["road"] < 0.12, frac
        assert 0.002 < frac["building"] < 0.10, frac
        assert abs(sum(frac.values()) - 1.0) < 1e-9  # every valid pixel has one of the five classes


def test_small_scenes_still_hold_every_class() -> None:
    for seed in range(3):
        a = make_synthetic_array(size=64, seed=seed)
        assert min(a.class_fractions().values()) > 0


def test_polygons_rasterize_back_to_the_label_raster(scene: SyntheticScene) -> None:
    labels = gpd.read_file(scene.labels, layer=scene.layer)
    with rasterio.open(scene.label_raster) as ds:
        truth = ds.read(1)
        transform = ds.transform
    back = rasterize(
        zip(labels.geometry, labels["code"], strict=True),
        out_shape=truth.shape,
        transform=transform,
        fill=255,
        dtype="uint8",
    )
    assert np.array_equal(back, truth)
    assert labels.geometry.is_valid.all()
    # polygons are per object: more features than classes, and buildings are small
    buildings = labels[labels["class"] == "building"]
    assert len(buildings) >= 3 and buildings.area.median() < 1000


def test_polygons_kernel_matches_arrays(arrays) -> None:
    gdf = synthetic_polygons(arrays)
    back = rasterize(
        zip(gdf.geometry, gdf["code"], strict=True),
        out_shape=arrays.labels.shape,
        transform=arrays.transform,
        fill=255,
        dtype="uint8",
    )
    assert np.array_equal(back, arrays.labels)
    assert np.array_equal(arrays.object_codes[arrays.objects][arrays.valid], arrays.labels[arrays.valid])


def test_spectral_signatures_are_separable() -> None:
    a = make_synthetic_array(size=(256, 256), seed=2, bands=6, dtype="float32")
    band = {n: a.image[i] for i, n in enumerate(a.band_names)}

    def mean(name: str, cls: str) -> float:
        return float(band[name][a.labels == CODES[cls]].mean())

    ndvi = (band["nir"] - band["red"]) / (band["nir"] + band["red"])
    mean_ndvi = {c: float(ndvi[a.labels == CODES[c]].mean()) for c in CODES}
    assert mean("nir", "water") < 0.05 < 0.2 < mean("nir", "forest")
    assert mean("nir", "field") > mean("nir", "water") * 4
    assert mean_ndvi["forest"] > 0.6 and mean_ndvi["water"] < 0.0 and mean_ndvi["road"] < 0.2
    visible = ("blue", "green", "red")
    bright = {c: np.mean([mean(b, c) for b in visible]) for c in CODES}
    assert min(bright["road"], bright["building"]) > 2 * max(bright["water"], bright["forest"])
    assert mean("swir16", "water") < 0.02
    # texture and noise: no class is flat
    for c in CODES:
        assert float(band["nir"][a.labels == CODES[c]].std()) > 0.003


def test_nodata_corner_is_masked_in_image_and_labels(arrays) -> None:
    invalid = ~arrays.valid
    assert 0.01 < invalid.mean() < 0.10
    assert (arrays.image[:, invalid] == 0).all() and (arrays.image[:, arrays.valid] > 0).all()
    assert (arrays.labels[invalid] == 255).all() and (arrays.labels[arrays.valid] != 255).all()
    assert (arrays.objects[invalid] == 0).all()
    # a triangle at one corner: exactly one corner pixel is invalid and it is a convex, straight-edged cut
    corners = [invalid[0, 0], invalid[0, -1], invalid[-1, 0], invalid[-1, -1]]
    assert sum(corners) == 1
    rows_invalid = invalid.sum(axis=1)
    nonzero = rows_invalid[rows_invalid > 0]
    assert np.all(np.diff(nonzero) <= 0) or np.all(np.diff(nonzero) >= 0)


def test_reference_points_are_on_water(scene: SyntheticScene, arrays) -> None:
    pts = gpd.read_file(scene.reference_points)
    assert 1 <= len(pts) <= 5 and pts.crs.to_epsg() == 32633
    assert (pts["class"] == "water").all()
    inv: Affine = ~arrays.transform
    for x, y in zip(pts.geometry.x, pts.geometry.y, strict=True):
        col, row = inv @ (x, y)
        assert arrays.labels[int(row), int(col)] == CODES["water"]


# -- files ----------------------------------------------------------------------------------------------
def test_schema_file_round_trips(scene: SyntheticScene) -> None:
    loaded = ClassSchema.load(scene.schema_path)
    assert loaded == scene.schema
    assert loaded.names == ["water", "forest", "field", "road", "building"]
    assert loaded.codes == [1, 2, 3, 4, 5] and loaded.ignore_index == 255 and loaded.background is None
    assert len(set(loaded.colors)) == 5
    assert "SYNTHETIC" in scene.schema_path.read_text()


def test_names_say_synthetic(scene: SyntheticScene) -> None:
    for p in (
        scene.image,
        scene.labels,
        scene.label_raster,
        scene.schema_path,
        scene.reference_points,
        scene.metadata,
    ):
        assert "synthetic" in p.name and p.exists()
    record = json.loads(scene.metadata.read_text())
    assert record["synthetic"] is True and record["parameters"]["size"] == list(SIZE)
    assert not list(scene.image.parent.glob(".*"))  # no temporary or partial files left behind


def test_reuse_keeps_files_and_new_parameters_rewrite(tmp_path: Path) -> None:
    first = make_synthetic_scene(tmp_path, size=64, seed=1)
    stamp = first.image.stat().st_mtime_ns
    again = make_synthetic_scene(tmp_path, size=64, seed=1)
    assert again == first and first.image.stat().st_mtime_ns == stamp
    other = make_synthetic_scene(tmp_path, size=64, seed=2)
    with rasterio.open(other.image) as ds:
        assert ds.tags()["SYNTHETIC_SEED"] == "2"
    first.metadata.unlink()  # an incomplete earlier run (no completion record) is regenerated
    redo = make_synthetic_scene(tmp_path, size=64, seed=2)
    assert redo.metadata.exists()


def test_output_folder_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "not_a_folder"
    target.write_text("x")
    with pytest.raises(OSError, match="not a folder"):
        make_synthetic_scene(target, size=64)


@pytest.mark.slow
def test_default_scene_end_to_end(tmp_path: Path) -> None:
    scene = make_synthetic_scene(tmp_path)
    assert scene.grid.shape == (768, 768) and scene.band_names == ("blue", "green", "red", "nir")
    labels = gpd.read_file(scene.labels)
    with rasterio.open(scene.label_raster) as ds:
        truth = ds.read(1)
        back = rasterize(
            zip(labels.geometry, labels["code"], strict=True),
            out_shape=truth.shape,
            transform=ds.transform,
            fill=255,
            dtype="uint8",
        )
    assert np.array_equal(back, truth)
    frac = json.loads(scene.metadata.read_text())["class_fractions"]
    assert min(frac.values()) > 0.005
