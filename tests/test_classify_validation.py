"""classify: spatial cross-validation that cannot validate a class reports no metric as valid."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

from rasterlearn.features.classify import classify_raster
from tests.logcapture import rasterlearn_logs  # noqa: F401
from tests.test_features import RES, X0, Y0, two_regions


@pytest.fixture
def regions(make_raster):
    return make_raster(two_regions(), nodata=-9999.0)


def _one_polygon_per_class(tmp_path):
    def px_box(r0, c0, r1, c1):
        return box(X0 + c0 * RES, Y0 - r1 * RES, X0 + c1 * RES, Y0 - r0 * RES)

    gdf = gpd.GeoDataFrame(
        {"cls": ["water", "forest"], "fold": ["a", "b"]},
        geometry=[px_box(10, 4, 20, 14), px_box(30, 44, 40, 54)],
        crs="EPSG:32633",
    )
    path = tmp_path / "one_each.gpkg"
    gdf.to_file(path)
    return path


def test_spatial_cv_with_one_polygon_per_class_reports_no_metric(regions, tmp_path, caplog):
    labels = _one_polygon_per_class(tmp_path)
    res = classify_raster(
        regions, labels, tmp_path / "c.tif", attribute="cls", folds=3, params={"n_estimators": 5}
    )
    m = json.loads(res.metrics_path.read_text())
    v = m["validation"]
    assert v["type"] == "spatial" and v["valid"] is False
    assert sorted(v["unvalidated_classes"]) == ["forest", "water"]
    assert v["groups_per_class"] == {"1": 1, "2": 1}
    assert "--fold-column" in v["remedy"] and "--cv random" in v["remedy"]
    assert "overall_accuracy" not in m and "kappa" not in m and "confusion_matrix" not in m
    assert all(f["accuracy"] is None and f["untrained_test_classes"] for f in m["folds"])
    assert "Validation impossible" in caplog.text and "nan" not in caplog.text
    assert res.path.exists()  # the map is still made from the model fitted on every sample


def test_fold_column_with_classes_in_one_fold_each_is_also_flagged(regions, tmp_path):
    labels = _one_polygon_per_class(tmp_path)
    res = classify_raster(
        regions, labels, tmp_path / "c.tif", attribute="cls", fold_column="fold", params={"n_estimators": 5}
    )
    assert res.metrics["validation"]["type"] == "fold" and res.metrics["validation"]["valid"] is False


def test_cv_random_on_the_same_labels_is_valid(regions, tmp_path):
    labels = _one_polygon_per_class(tmp_path)
    res = classify_raster(
        regions, labels, tmp_path / "c.tif", attribute="cls", cv="random", folds=3, params={"n_estimators": 5}
    )
    assert "valid" not in res.metrics["validation"] and res.metrics["overall_accuracy"] == 1.0


def test_cli_classify_says_validation_impossible(regions, tmp_path, capsys):
    from rasterlearn.cli import main

    labels = _one_polygon_per_class(tmp_path)
    out = tmp_path / "c.tif"
    rc = main(["classify", str(regions), "-o", str(out), "-l", str(labels), "-a", "cls", "--folds", "3"])
    text = capsys.readouterr().err
    assert rc == 0 and "Validation impossible" in " ".join(text.split())
    assert "overall accuracy" not in text
    assert np.isfinite(json.loads(out.with_suffix(".metrics.json").read_text())["samples"])
