"""Tests of rasterlearn.features: sampling, reduce, cluster, similarity, classify (tiny synthetic rasters)."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from shapely.geometry import Point, box

from rasterlearn.errors import ConfigError, EmptyInputError, InputError, ModelError
from rasterlearn.features.classify import classify_raster, label_schema
from rasterlearn.features.cluster import cluster_raster
from rasterlearn.features.reduce import FittedReducer, reduce_raster
from rasterlearn.features.sampling import sample_pixels, sample_vector
from rasterlearn.features.similarity import similarity_raster
from rasterlearn.io.raster import RasterReader

X0, Y0, RES = 500_000.0, 4_000_000.0, 10.0


def two_regions(h: int = 48, w: int = 64, bands: int = 6, nodata_rows: int = 4) -> np.ndarray:
    """Left half one spectrum, right half another (+ noise); top rows nodata (-9999)."""
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, bands)
    b = rng.normal(3, 1, bands)
    data = np.empty((bands, h, w), "float32")
    data[:, :, : w // 2] = a[:, None, None]
    data[:, :, w // 2 :] = b[:, None, None]
    data += rng.normal(0, 0.05, data.shape).astype("float32")
    data[:, :nodata_rows] = -9999
    return data


def pixel_point(row: int, col: int) -> Point:
    return Point(X0 + (col + 0.5) * RES, Y0 - (row + 0.5) * RES)


@pytest.fixture
def regions(make_raster) -> Path:
    return make_raster(two_regions(), nodata=-9999.0)


def test_sample_pixels_bounded_and_valid(regions):
    with RasterReader(regions) as r:
        s = sample_pixels(r, 500, seed=1)
        assert len(s) == 500 and s.values.shape == (500, 6)
        assert (s.values != -9999).all() and (s.rows >= 4).all()
        s2 = sample_pixels(r, 500, seed=1)
        np.testing.assert_array_equal(s.values, s2.values)


def test_sample_pixels_empty_raises(make_raster):
    path = make_raster(np.full((1, 8, 8), -1, "int16"), nodata=-1)
    with RasterReader(path) as r, pytest.raises(EmptyInputError):
        sample_pixels(r, 10)


def test_sample_vector_reprojects_points_and_polygons(regions, tmp_path):
    pts = gpd.GeoDataFrame(
        {"v": [1, 2, 3]},
        geometry=[pixel_point(10, 5), pixel_point(20, 60), pixel_point(1, 1)],
        crs="EPSG:32633",
    ).to_crs("EPSG:4326")
    poly = gpd.GeoDataFrame(
        {"v": [7]}, geometry=[box(X0 + 20, Y0 - 200, X0 + 60, Y0 - 160)], crs="EPSG:32633"
    )
    both = gpd.GeoDataFrame(pd_concat([pts.to_crs("EPSG:32633"), poly]), crs="EPSG:32633").to_crs("EPSG:4326")
    path = tmp_path / "labels.gpkg"
    both.to_file(path)
    with RasterReader(regions) as r:
        s = sample_vector(r, path, attribute="v")
    # point 3 sits on a nodata row and is dropped; the polygon covers 4x4 pixel centres
    assert s.n_invalid == 1
    assert sorted(s.labels.tolist()) == [1, 2] + [7] * 16
    k = list(s.labels).index(2)
    assert (s.rows[k], s.cols[k]) == (20, 60)
    with rasterio.open(regions) as ds:
        np.testing.assert_allclose(s.values[k], ds.read()[:, 20, 60])


def pd_concat(frames):
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


def test_reduce_pca_window_by_window_and_reuse(regions, tmp_path, make_raster):
    out = tmp_path / "pca.tif"
    res = reduce_raster(regions, out, components=2, blocksize=16)
    with rasterio.open(out) as ds:
        arr = ds.read()
        assert ds.count == 2 and ds.dtypes[0] == "float32" and np.isnan(ds.nodata)
        assert ds.descriptions == ("pc_1", "pc_2")
        assert json.loads(ds.tags()["rasterlearn_explained_variance_ratio"])[0] > 0.9
    assert np.isnan(arr[:, :4]).all() and np.isfinite(arr[:, 4:]).all()
    # the two regions separate on PC1
    left, right = arr[0, 4:, :32].mean(), arr[0, 4:, 32:].mean()
    assert abs(left - right) > 1.5
    assert res.explained_variance_ratio[0] > 0.9
    # the saved model holds arrays only (no pickle) and reproduces the map on another raster
    assert not (res.model_path / "estimator.pkl").exists()
    red = FittedReducer.load(res.model_path)
    other = make_raster(two_regions(nodata_rows=0), nodata=-9999.0)
    out2 = tmp_path / "pca2.tif"
    reduce_raster(other, out2, model=res.model_path, blocksize=16)
    with rasterio.open(out2) as ds:
        np.testing.assert_allclose(ds.read()[:, 4:], arr[:, 4:], rtol=1e-4, atol=1e-4)
    assert red.components == 2
    # a fitted model applied to a raster with another band count is a clear error naming the fix
    with pytest.raises(InputError, match=r"reducer .* expects \d+ bands .*--bands"):
        reduce_raster(other, tmp_path / "pca3.tif", model=res.model_path, bands=[1])


def test_reduce_nonlinear_uses_hash_checked_pickle(regions, tmp_path):
    res = reduce_raster(
        regions,
        tmp_path / "iso.tif",
        method="isomap",
        components=2,
        sample_size=300,
        params='{"n_neighbors": 8}',
        blocksize=32,
    )
    pkl = res.model_path / "estimator.pkl"
    assert pkl.exists()
    with pytest.raises(ModelError, match="--trust-model"):  # a pickle runs code: never loaded by default
        FittedReducer.load(res.model_path)
    FittedReducer.load(res.model_path, trust=True)
    pkl.write_bytes(pkl.read_bytes() + b"x")
    with pytest.raises(ModelError, match="SHA-256"):
        FittedReducer.load(res.model_path, trust=True)


def test_reduce_rejects_unknown_and_transformless(regions, tmp_path):
    with pytest.raises(ConfigError, match="Unknown method"):
        reduce_raster(regions, tmp_path / "x.tif", method="nope")
    with pytest.raises(ConfigError, match="transform"):
        reduce_raster(regions, tmp_path / "x.tif", method="TSNE", sample_size=200)


@pytest.mark.parametrize("method", ["kmeans", "minibatch_kmeans", "hdbscan"])
def test_cluster_map(regions, tmp_path, method):
    out = tmp_path / f"{method}.tif"
    params = '{"min_cluster_size": 20}' if method == "hdbscan" else None
    res = cluster_raster(
        regions, out, method=method, clusters=2, params=params, sample_size=800, blocksize=16
    )
    with rasterio.open(out) as ds:
        arr = ds.read(1)
        assert ds.dtypes[0] == "uint8" and ds.nodata == 0
        assert ds.colormap(1)[1][:3] != (0, 0, 0)
    assert (arr[:4] == 0).all()
    body = arr[4:]
    assert len(np.unique(body)) == 2 and (body > 0).all()
    assert len(np.unique(body[:, :32])) == 1 and body[0, 0] != body[0, -1]
    assert sum(res.sizes.values()) == 44 * 64
    report = json.loads(res.report_path.read_text())
    assert report["k"] == 2 and sum(report["pixels_per_cluster"].values()) == 44 * 64
    assert (out.parent / f"{out.name}.aux.xml").exists()


def test_similarity_mean_and_max(regions, tmp_path):
    refs = gpd.GeoDataFrame(geometry=[pixel_point(10, 5), pixel_point(30, 10)], crs="EPSG:32633").to_crs(4326)
    out = tmp_path / "sim.tif"
    res = similarity_raster(regions, refs, out)
    with rasterio.open(out) as ds:
        s = ds.read(1)
    assert np.isnan(s[:4]).all()
    assert s[4:, :32].min() > 0.9 and s[4:, 32:].max() < s[4:, :32].min()
    assert res.references.shape == (1, 6)
    # max over references: one reference in each region -> high everywhere
    refs2 = gpd.GeoDataFrame(
        geometry=[pixel_point(10, 5), box(X0 + 500, Y0 - 400, X0 + 560, Y0 - 340)], crs="EPSG:32633"
    )
    res2 = similarity_raster(regions, refs2, tmp_path / "sim2.tif", mode="max", standardize=True)
    with rasterio.open(res2.path) as ds:
        s2 = ds.read(1)
    assert res2.references.shape == (2, 6) and np.nanmin(s2) > 0.9


def _labels(tmp_path: Path, text: bool = True) -> Path:
    rng = np.random.default_rng(2)
    geoms, labs, folds = [], [], []
    for _ in range(60):
        r, c = int(rng.integers(4, 48)), int(rng.integers(0, 64))
        geoms.append(pixel_point(r, c))
        left = c < 32
        labs.append(("water" if left else "forest") if text else (1.5 * left + 0.25))
        folds.append("a" if r < 26 else "b")
    gdf = gpd.GeoDataFrame({"cls": labs, "fold": folds}, geometry=geoms, crs="EPSG:32633").to_crs("EPSG:4326")
    path = tmp_path / f"labels_{text}.gpkg"
    gdf.to_file(path)
    return path


@pytest.mark.parametrize("cv", ["spatial", "random", "fold"])
def test_classify_text_labels(regions, tmp_path, cv):
    out = tmp_path / f"cls_{cv}.tif"
    res = classify_raster(
        regions,
        _labels(tmp_path),
        out,
        attribute="cls",
        cv=cv,
        folds=3,
        fold_column="fold" if cv == "fold" else None,
        params={"n_estimators": 20},
    )
    assert res.metrics_path == tmp_path / f"cls_{cv}.metrics.json"
    m = json.loads(res.metrics_path.read_text())
    assert m["validation"]["type"] == cv and m["classes"] == ["forest", "water"]
    assert m["overall_accuracy"] == 1.0 and m["kappa"] == 1.0
    assert np.array(m["confusion_matrix"]).sum() == m["samples"]
    with rasterio.open(out) as ds:
        arr = ds.read(1)
        assert ds.nodata == 0 and ds.dtypes[0] == "uint8"
    assert (arr[:4] == 0).all() and (arr[4:, :32] == 2).all() and (arr[4:, 32:] == 1).all()
    aux = (tmp_path / f"cls_{cv}.tif.aux.xml").read_text()
    assert "water" in aux and "forest" in aux
    saved = json.loads((res.model_path / "model.json").read_text())
    assert saved["schema"]["source_values"] == {"forest": 1, "water": 2}


def test_classify_regression_and_reuse(regions, tmp_path, make_raster):
    out = tmp_path / "reg.tif"
    res = classify_raster(
        regions,
        _labels(tmp_path, text=False),
        out,
        attribute="cls",
        method="knn",
        params={"n_neighbors": 3},
        cv="random",
        folds=3,
    )
    assert res.metrics["task"] == "regression" and res.metrics["rmse"] < 0.05
    with rasterio.open(out) as ds:
        arr = ds.read(1)
    np.testing.assert_allclose(arr[4:, :32], 1.75, atol=1e-6)
    np.testing.assert_allclose(arr[4:, 32:], 0.25, atol=1e-6)
    out2 = tmp_path / "reg2.tif"
    classify_raster(regions, None, out2, model=res.model_path, trust_model=True)
    with rasterio.open(out2) as ds:
        np.testing.assert_array_equal(ds.read(1)[4:], arr[4:])


def test_classify_test_layer_and_numeric_classes(regions, tmp_path):
    gdf = gpd.read_file(_labels(tmp_path))
    gdf["code"] = np.where(gdf["cls"] == "water", 3, 7)
    path = tmp_path / "num.gpkg"
    gdf.to_file(path)
    res = classify_raster(
        regions,
        path,
        tmp_path / "num.tif",
        attribute="code",
        test_labels=path,
        method="extra_trees",
        params={"n_estimators": 10},
    )
    assert res.metrics["validation"]["type"] == "test_layer" and res.metrics["codes"] == [3, 7]
    assert res.model.schema.names == ["class_3", "class_7"]


def test_label_schema_rules():
    task, schema, y = label_schema(np.array(["b", "a", "b"], dtype=object))
    assert task == "classification" and schema.names == ["a", "b"] and y.tolist() == [2, 1, 2]
    task, schema, y = label_schema(np.array([0.5, 1.25], dtype=object))
    assert task == "regression" and schema is None
    task, schema, y = label_schema(np.array([0, 4, 4], dtype=object))
    assert task == "classification" and schema.codes == [0, 4]


def test_a_replaced_input_is_not_resumed_into_a_stale_map(regions, tmp_path, make_raster):
    """An interrupted apply step resumes only on the same input: a raster replaced at the same path (other
    values, same grid) restarts the map instead of keeping blocks computed from the old file."""
    import os
    import shutil

    from rasterlearn.errors import JobCancelledError

    model = cluster_raster(regions, tmp_path / "fit.tif", clusters=2, blocksize=16).model_path
    src = tmp_path / "scene.tif"
    shutil.copy(regions, src)
    out = tmp_path / "applied.tif"
    calls = [0]

    def stop_after_three(n: int) -> None:
        calls[0] += 1
        if calls[0] == 3:
            raise JobCancelledError("test cancel")

    with pytest.raises(JobCancelledError):
        cluster_raster(src, out, model=model, blocksize=16, progress=stop_after_three)
    assert not out.exists() and list(tmp_path.glob(".applied*"))  # a partial map is kept for resuming
    other = make_raster(two_regions()[:, :, ::-1].copy(), nodata=-9999.0)  # the two regions swapped
    shutil.copy(other, src)
    os.utime(src, ns=(os.stat(src).st_atime_ns, os.stat(src).st_mtime_ns + 1_000_000))
    cluster_raster(src, out, model=model, blocksize=16)
    cluster_raster(other, tmp_path / "ref.tif", model=model, blocksize=16)
    with rasterio.open(out) as a, rasterio.open(tmp_path / "ref.tif") as b:
        got, want = a.read(1), b.read(1)
    np.testing.assert_array_equal(got, want)
    assert got[10, 0] != got[10, -1]  # the regions still map to two clusters
