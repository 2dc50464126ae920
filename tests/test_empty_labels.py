"""Empty and whitespace-only label values are NULL: skipped, counted and reported, never a class ""."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

from rasterlearn.errors import InputError
from rasterlearn.features.classify import classify_raster
from rasterlearn.labels import ClassSchema, VectorLabels, is_null_label
from tests.logcapture import rasterlearn_logs  # noqa: F401
from tests.test_features import pixel_point as feature_point
from tests.test_features import two_regions
from tests.test_labels import GRID, frame, px_box


@pytest.mark.parametrize("value", [None, float("nan"), pd.NA, np.float32("nan"), "", "   ", "\t\n"])
def test_null_like_label_values(value):
    assert is_null_label(value)


@pytest.mark.parametrize("value", ["water", " water ", 0, 0.0, 3, "0"])
def test_real_label_values_are_not_null(value):
    assert not is_null_label(value)


def test_schema_inference_skips_empty_and_blank_values():
    s = ClassSchema.infer(["water", "", "  ", None, "forest"])
    assert s.names == ["background", "forest", "water"] and "" not in s.names
    with pytest.raises(InputError, match="blank"):
        ClassSchema.infer(["", " "])


def test_chip_labels_skip_and_count_empty_values(caplog):
    gdf = frame(
        [px_box(0, 0, 5, 5), px_box(10, 10, 15, 15), px_box(20, 20, 25, 25), px_box(30, 30, 35, 35)],
        cls=["water", "", "  ", "forest"],
    )
    vl = VectorLabels(gdf, GRID, attribute="cls")
    assert sorted(vl.values()) == ["forest", "water"] and len(vl) == 2
    assert vl.describe()["null_values"] == 2
    assert "2 features have no value" in caplog.text
    schema = ClassSchema.infer(vl.values())
    mask = vl.bind(schema).mask(GRID.window)
    assert (mask[10:15, 10:15] == 0).all() and (mask[0:5, 0:5] == schema.code_of("water")).all()


def test_classify_skips_empty_labels_and_reports_them(make_raster, tmp_path):
    raster = make_raster(two_regions(), nodata=-9999.0)
    rng = np.random.default_rng(5)
    geoms, labs = [], []
    for i in range(40):
        r, c = int(rng.integers(4, 48)), int(rng.integers(0, 64))
        geoms.append(feature_point(r, c))
        labs.append(" " if i % 10 == 0 else ("" if i % 10 == 1 else ("water" if c < 32 else "forest")))
    path = tmp_path / "pts.gpkg"
    gpd.GeoDataFrame({"cls": labs}, geometry=geoms, crs="EPSG:32633").to_file(path)
    res = classify_raster(
        raster, path, tmp_path / "c.tif", attribute="cls", cv="random", folds=3, params={"n_estimators": 5}
    )
    m = json.loads(res.metrics_path.read_text())
    assert m["classes"] == ["forest", "water"] and m["features_without_label"] == 8
    assert m["samples"] == 32


def test_evaluate_skips_blank_truth_values_and_notes_them(tmp_path):
    from tests.test_evaluate import GRID as EGRID
    from tests.test_evaluate import _pix_box

    m = np.zeros((30, 40), dtype="uint8")
    m[5:15, 5:20] = 1
    from rasterlearn.evaluate import evaluate_map
    from rasterlearn.io.writer import write_array

    cmap = write_array(
        tmp_path / "map.tif", m[None], EGRID, nodata=255, category_names={0: "background", 1: "building"}
    )
    truth = gpd.GeoDataFrame(
        {"kind": ["building", "", "  "]},
        geometry=[_pix_box(5, 10, 15, 20), _pix_box(20, 0, 25, 5), _pix_box(25, 30, 30, 35)],
        crs="EPSG:32633",
    )
    truth.to_file(tmp_path / "t.gpkg")
    res = evaluate_map(cmap, tmp_path / "t.gpkg", attribute="kind", unlabelled="ignore")
    assert np.array(res["confusion_matrix"]).tolist() == [[0, 0], [0, 100]]
    assert any("2 truth features without a value" in n for n in res["evaluation"]["notes"])
