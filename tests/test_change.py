"""Unsupervised change maps: distances, Otsu threshold, streaming, provenance refusals, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from rasterlearn.change import change_distance, change_map, check_feature_provenance, otsu_threshold
from rasterlearn.errors import InputError
from rasterlearn.synthetic_change import make_change_arrays
from tests.test_cli import run_cli


def test_distances_and_otsu() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [3.0, 4.0]])
    b = np.array([[0.0, 2.0], [2.0, 2.0], [0.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(change_distance(a, b, "cosine"), [1.0, 0.0, 0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(change_distance(a, b, "cva"), [np.sqrt(5), np.sqrt(2), 0.0, 5.0])
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(0.1, 0.02, 5000), rng.normal(0.6, 0.05, 1000)])
    t = otsu_threshold(v)
    assert 0.2 < t < 0.5
    assert otsu_threshold(np.full(10, 0.3)) == 0.3
    with pytest.raises(InputError, match="method must be one of"):
        change_distance(a, b, "euclid")  # type: ignore[arg-type]


@pytest.fixture
def pair(make_raster):
    arr = make_change_arrays(size=96, seed=3, nodata_corner=True)
    kw = {"nodata": arr.nodata, "transform": arr.grid.transform, "crs": arr.grid.crs.to_wkt()}
    a = make_raster(arr.image_a, name="a.tif", **kw)
    b = make_raster(arr.image_b, name="b.tif", **kw)
    return arr, a, b


def test_cva_change_map_streams_blocks_and_finds_planted_changes(pair, tmp_path) -> None:
    arr, a, b = pair
    out, dist, poly = tmp_path / "change.tif", tmp_path / "dist.tif", tmp_path / "change.gpkg"
    res = change_map(a, b, out, method="cva", distance=dist, polygons=poly, blocksize=16)
    with rasterio.open(out) as ds:
        m = ds.read(1)
        tags = ds.tags()
        assert ds.nodata == 255 and ds.transform == arr.grid.transform and ds.dtypes[0] == "uint8"
    with rasterio.open(dist) as ds:
        d = ds.read(1)
    valid = arr.valid
    assert (m[~valid] == 255).all() and np.isnan(d[~valid]).all()
    # the distance is the CVA magnitude of every valid pixel, whatever block it was computed in
    ref = change_distance(arr.image_a[:, valid].T.astype(float), arr.image_b[:, valid].T.astype(float), "cva")
    np.testing.assert_allclose(d[valid], ref, rtol=1e-5)
    np.testing.assert_array_equal(m[valid], (d[valid] > res.threshold).astype("uint8"))
    truth = arr.change[valid] == 1
    pred = m[valid] == 1
    iou = (truth & pred).sum() / (truth | pred).sum()
    assert iou > 0.5, f"change IoU {iou:.2f}"
    assert res.threshold_method == "otsu" and json.loads(tags["rasterlearn_change"])["method"] == "cva"
    assert res.polygons and res.polygons > 0 and poly.exists()
    assert res.changed_fraction == pytest.approx(pred.mean(), abs=1e-9)
    # a given threshold is used as is
    res2 = change_map(a, b, tmp_path / "c2.tif", method="cva", threshold=float(np.median(ref)))
    assert res2.threshold_method == "given"
    assert res2.changed_fraction == pytest.approx(0.5, abs=0.01)


def _feature(make_raster, name: str, **tags: object):
    rng = np.random.default_rng(len(name))
    path = make_raster(rng.normal(size=(4, 16, 16)).astype("float32"), name=name)
    base = {
        "rasterlearn_stage": "embed",
        "rasterlearn_model": "resnet18",
        "rasterlearn_weights_sha256": "aaaa",
        "rasterlearn_layer": 2,
        "rasterlearn_input_bands": json.dumps(["blue", "green", "red", "nir"]),
        "rasterlearn_normalization": json.dumps({"mode": "image", "method": "zscore", "offset": [1.0]}),
        "rasterlearn_tile_size": 64,
    }
    base.update({k: v for k, v in tags.items()})
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(**base)
    return path


def test_refuses_feature_rasters_of_different_provenance(make_raster, tmp_path) -> None:
    a = _feature(make_raster, "fa.tif")
    same = _feature(
        make_raster,
        "fb.tif",
        rasterlearn_normalization=json.dumps({"mode": "image", "method": "zscore", "offset": [9.0]}),
    )
    shared = check_feature_provenance(a, same)  # per-image statistics may differ
    assert shared["weights_sha256"] == "aaaa"
    res = change_map(a, same, tmp_path / "ok.tif")
    assert res.method == "cosine" and res.valid_pixels == 256
    other = _feature(make_raster, "fc.tif", rasterlearn_weights_sha256="bbbb")
    with pytest.raises(
        InputError, match=r"fa\.tif and .*fc\.tif were not produced the same way: their weights_sha256"
    ):
        change_map(a, other, tmp_path / "x.tif")
    bands = _feature(
        make_raster, "fd.tif", rasterlearn_input_bands=json.dumps(["red", "green", "blue", "nir"])
    )
    with pytest.raises(InputError, match="input_bands differs"):
        check_feature_provenance(a, bands)
    norm = _feature(make_raster, "fe.tif", rasterlearn_normalization=json.dumps({"mode": "none"}))
    with pytest.raises(InputError, match="normalization differs"):
        check_feature_provenance(a, norm)
    raw = make_raster(np.ones((4, 16, 16), dtype="float32"), name="raw.tif")
    with pytest.raises(InputError, match="is a feature raster written by 'rasterlearn embed' but"):
        check_feature_provenance(a, raw)
    assert not (tmp_path / "x.tif").exists()


def test_cli_change(pair, tmp_path, capsys) -> None:
    _, a, b = pair
    out = tmp_path / "c.tif"
    code, outtxt, err = run_cli(
        capsys,
        "change",
        str(a),
        str(b),
        "-o",
        str(out),
        "--method",
        "cva",
        "--polygons",
        str(tmp_path / "c.gpkg"),
    )
    assert code == 0, err
    assert out.exists() and "otsu threshold" in outtxt + err
    code, _, err = run_cli(capsys, "change", str(a), str(b), "-o", str(a), "--method", "cva")
    assert code == 2 and "a.tif" in err


def test_sample_and_assess_work_on_a_change_map(pair, tmp_path, capsys) -> None:
    """The accuracy-assessment workflow runs unchanged on a change map (classes from its tags)."""
    import geopandas as gpd

    arr, a, b = pair
    out = tmp_path / "change.tif"
    change_map(a, b, out, method="cva", blocksize=32)
    samples = tmp_path / "samples.gpkg"
    code, _, err = run_cli(
        capsys,
        "sample",
        str(out),
        "-o",
        str(samples),
        "--design",
        "stratified",
        "--n",
        "60",
        "--min-per-class",
        "20",
    )
    assert code == 0, err
    pts = gpd.read_file(samples)
    with rasterio.open(out) as ds:
        rows_cols = [ds.index(p.x, p.y) for p in pts.geometry]
    pts["reference"] = [
        int(arr.change[r, c]) for r, c in rows_cols
    ]  # the planted truth as the interpreter's label
    pts.to_file(samples, layer="samples")
    code, _, err = run_cli(
        capsys,
        "assess",
        str(out),
        "--samples",
        str(samples),
        "--reference-field",
        "reference",
        "-o",
        str(tmp_path / "a.json"),
    )
    assert code == 0, err
    res = json.loads((tmp_path / "a.json").read_text())
    assert 0.6 < res["overall_accuracy"]["estimate"] <= 1.0
    assert len(res["classes"]) == 2
