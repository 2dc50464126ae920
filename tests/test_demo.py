"""The demo end to end in a reduced size: synthetic scene -> map, report and features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from rasterlearn.demo import demo_config, pretrained_available


def test_demo_config_is_valid_and_offline(tmp_path: Path) -> None:
    cfg = demo_config(tmp_path, raster="a.tif", labels="b.gpkg", attribute="class", quick=True)
    assert cfg.chips.size == 64 and cfg.chips.split_method == "blocks" and cfg.chips.test > 0
    assert cfg.train.pretrained is None and cfg.train.weights is None  # nothing downloads
    assert cfg.features.enabled and cfg.features.pretrained == pretrained_available(cfg.features.model)
    assert cfg.predict.blend == "hann" and cfg.predict.overlap > 0


def test_demo_needs_raster_and_labels_together(tmp_path: Path) -> None:
    from rasterlearn.demo import run_demo
    from rasterlearn.errors import InputError

    with pytest.raises(InputError, match="both --raster and --labels"):
        run_demo(tmp_path, raster=tmp_path / "a.tif")


@pytest.mark.slow
def test_demo_reduced(tmp_path: Path) -> None:
    from rasterlearn.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quick", "--size", "256"]) == 0
    report = out / "report.html"
    assert report.exists() and "data:image/png;base64," in report.read_text()
    assert "synthetic" in report.read_text()
    run = json.loads((out / "run.json").read_text())
    assert run["ran"] == ["chips", "train", "predict", "evaluate", "features"]
    m = run["metrics"]
    # evaluated on held-out test blocks; chance (majority class 'field') gives a mean IoU near 0.14
    assert m["scene_region"].startswith("tst chips")
    assert m["scene_mean_iou"] > 0.4, m
    per_class = json.loads((out / "evaluate" / "scene.json").read_text())["per_class"]
    assert per_class["field"]["iou"] > 0.5 and per_class["building"]["iou"] > 0.3
    # the map: same grid as the synthetic scene, nodata corner kept, classes of the schema
    with (
        rasterio.open(out / "predict" / "scene.tif") as m_ds,
        rasterio.open(out / "data" / "synthetic_scene.tif") as img,
    ):
        assert m_ds.transform == img.transform and m_ds.crs == img.crs
        classes = m_ds.read(1)
        valid = img.read_masks(1) > 0
    assert (classes[~valid] == 255).all() and set(np.unique(classes[valid])) <= {1, 2, 3, 4, 5}
    for name in ("features", "pca", "clusters", "similarity"):
        assert (out / "features" / f"scene_{name}.tif").exists()
    # the feature stage records the backbone's weight digest; random weights are seeded and say so
    with rasterio.open(out / "features" / "scene_features.tif") as f_ds:
        tags = f_ds.tags()
    assert len(tags["rasterlearn_weights_sha256"]) == 16
    if tags["rasterlearn_random_weights"] == "true":
        assert tags["rasterlearn_seed"].isdigit()
    assert (out / "predict" / "scene.gpkg").exists()
    # running it again is instant: every stage is up to date
    assert main(["demo", "--out", str(out), "--quick", "--size", "256"]) == 0
    assert json.loads((out / "run.json").read_text())["ran"] == []
