"""Multi-date scenes through chips and augmentation; the synthetic two-date change scene."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from shapely.geometry import box

from rasterlearn.chips import Scene, make_chips
from rasterlearn.data import AugmentConfig, ChipDataset, JointAugment
from rasterlearn.synthetic_change import CHANGE_KINDS, change_polygons, make_change_arrays
from tests.test_cli import run_cli
from tests.test_io_stack import T0, date_image


@pytest.fixture
def coord_pair(make_raster, tmp_path):
    """Date 0 (40 x 48 px) and date 1 on a larger, pixel-aligned grid (resampled onto date 0's)."""
    a = make_raster(date_image(40, 48, 0), name="a.tif", nodata=-1, descriptions=["r", "c", "d"])
    tb = T0 @ Affine.translation(-4, -3)  # date 1 starts 3 rows / 4 cols before date 0
    b = make_raster(
        date_image(50, 60, 1, row0=-3, col0=-4),
        name="b.tif",
        nodata=-1,
        transform=tb,
        descriptions=["r", "c", "d"],
    )
    x0, y0 = T0.c, T0.f
    labels = gpd.GeoDataFrame(
        {"change": [1]}, geometry=[box(x0 + 100, y0 - 250, x0 + 300, y0 - 100)], crs="EPSG:32633"
    )
    vec = tmp_path / "change.gpkg"
    labels.to_file(vec, layer="change")
    return a, b, vec


def test_chips_of_a_stack_keep_dates_aligned(coord_pair, tmp_path) -> None:
    a, b, vec = coord_pair
    scene = Scene(image=a, labels=vec, later_images=[b])
    res = make_chips(
        [scene], tmp_path / "chips", size=16, stride=16, attribute="change", split_method="random"
    )
    ds = res.dataset
    assert ds["timesteps"] == 2
    assert ds["bands"] == ["r@t0", "c@t0", "d@t0", "r@t1", "c@t1", "d@t1"]
    assert ds["scenes"][0]["later_images"] == [str(b)]
    assert len(ds["statistics"]) == 6
    assert len(res.manifest) == 9  # 40 x 48 px -> 3 x 3 chips of 16 px (padded)
    for row in res.manifest.itertuples():
        with rasterio.open(tmp_path / "chips" / row.image) as src:
            img = src.read()
            assert src.count == 6 and list(src.descriptions) == ds["bands"]
            assert src.transform == T0 @ Affine.translation(row.col_off, row.row_off)
        rows, cols = np.mgrid[row.row_off : row.row_off + 16, row.col_off : row.col_off + 16]
        inside = (rows < 40) & (cols < 48)
        for t in range(2):
            np.testing.assert_array_equal(img[3 * t][inside], rows[inside])
            np.testing.assert_array_equal(img[3 * t + 1][inside], cols[inside])
            assert (img[3 * t + 2][inside] == t + 1).all()
        with rasterio.open(tmp_path / "chips" / row.mask) as src:
            m = src.read(1)
        # the label box covers rows 10..24, cols 10..29 of date 0's grid
        expect = (rows >= 10) & (rows < 25) & (cols >= 10) & (cols < 30)
        np.testing.assert_array_equal(m[inside] == 1, expect[inside])


def test_augmentation_moves_every_date_identically(coord_pair, tmp_path) -> None:
    a, b, vec = coord_pair
    make_chips(
        [Scene(image=a, labels=vec, later_images=[b])],
        tmp_path / "chips",
        size=16,
        stride=16,
        attribute="change",
        split_method="random",
        val=0.0,
        test=0.0,
    )
    cfg = AugmentConfig(p_hflip=1.0, p_vflip=0.5, p_rot90=1.0, p_rotate=1.0, p_brightness=1.0, brightness=0.5)
    dset = ChipDataset(tmp_path / "chips", "trn", augment=cfg, cache_mb=0)
    norm = dset.normalization
    for seed in range(4):
        item = dset[(0, seed)]
        img = item["image"].numpy()
        raw = img * np.asarray(norm.scale)[:, None, None] + np.asarray(norm.offset)[:, None, None]
        # identical geometry: row/col bands of the two dates agree up to one per-band brightness offset
        for k in range(2):
            diff = raw[k] - raw[3 + k]
            interior = np.abs(diff - np.median(diff)) < 1e-3
            assert interior.mean() > 0.6, f"date 1 band {k} moved differently (seed {seed})"
    # radiometric jitter is drawn per band, i.e. independently per date
    plain = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(2, 4, 4)
    aug = JointAugment(AugmentConfig(p_hflip=0, p_vflip=0, p_rot90=0, p_brightness=1.0, brightness=0.5))
    out, _ = aug(plain.clone(), torch.zeros(4, 4, dtype=torch.long), torch.Generator().manual_seed(3))
    off = (out - plain)[:, 0, 0]
    assert float(off[0]) != pytest.approx(float(off[1]))


def test_synthetic_change_scene_plants_every_kind() -> None:
    arr = make_change_arrays(size=128, seed=0)
    again = make_change_arrays(size=128, seed=0)
    np.testing.assert_array_equal(arr.image_b, again.image_b)
    assert arr.image_a.shape == arr.image_b.shape == (4, 128, 128)
    shares = arr.change_fraction()
    assert set(shares) == set(CHANGE_KINDS.values()) and all(v > 0.01 for v in shares.values())
    assert set(np.unique(arr.change)) == {0, 1}
    # land cover differs only where a change is planted (crops change within the field class)
    assert not ((arr.labels_a != arr.labels_b) & (arr.change == 0)).any()
    assert (arr.labels_b[arr.kind == 1] == 5).all() and (arr.labels_a[arr.kind == 2] == 2).all()
    diff = np.abs(arr.image_a.astype(float) - arr.image_b.astype(float)).sum(axis=0)
    assert diff[arr.change == 1].mean() > 2 * diff[arr.change == 0].mean()  # season + atmosphere in B
    calm = make_change_arrays(size=128, seed=0, nuisance=0.0)
    d0 = np.abs(calm.image_a.astype(float) - calm.image_b.astype(float)).sum(axis=0)
    assert d0[calm.change == 1].mean() > 6 * d0[calm.change == 0].mean()
    gdf = change_polygons(arr)
    assert set(gdf["kind"]) == set(CHANGE_KINDS.values()) and (gdf["change"] == 1).all()
    area_px = gdf.area.sum() / 4.0  # 2 m pixels
    assert area_px == pytest.approx(float((arr.change == 1).sum()))


def test_cli_chips_with_image_per_date(tmp_path, capsys) -> None:
    from rasterlearn.synthetic_change import make_change_scene

    sc = make_change_scene(tmp_path / "scene", size=96, seed=2)
    code, _, err = run_cli(
        capsys,
        "chips",
        "--image",
        str(sc.image_a),
        "--image",
        str(sc.image_b),
        "--labels",
        str(sc.labels),
        "--attribute",
        "change",
        "--size",
        "32",
        "--stride",
        "32",
        "--out",
        str(tmp_path / "chips"),
    )
    assert code == 0, err
    ds = json.loads((tmp_path / "chips" / "dataset.json").read_text())
    assert ds["timesteps"] == 2 and len(ds["bands"]) == 8 and ds["bands"][4] == "blue@t1"
    code, _, err = run_cli(
        capsys, "chips", "--image", str(sc.image_a), "--labels", str(sc.labels), "--out", str(tmp_path / "x")
    )
    assert code == 2 and "at least two" in err


def test_scenes_csv_columns_per_date(coord_pair, tmp_path) -> None:
    from rasterlearn.chips import read_scenes_csv
    from rasterlearn.errors import ConfigError

    a, b, vec = coord_pair
    csv = tmp_path / "scenes.csv"
    csv.write_text(
        f"image,image_2,labels,attribute,nodata_policy\n{a.name},{b.name},{vec.name},change,any-valid\n"
    )
    (scene,) = read_scenes_csv(csv)
    assert scene.image == a and scene.later_images == [b] and scene.timesteps == 2
    assert scene.nodata_policy == "any-valid"
    res = make_chips(read_scenes_csv(csv), tmp_path / "chips", size=16, stride=16, split_method="random")
    assert res.dataset["timesteps"] == 2
    csv.write_text(f"image,image_2,nodata_policy\n{a.name},{b.name},some\n")
    with pytest.raises(ConfigError, match="nodata_policy 'some'"):
        read_scenes_csv(csv)
