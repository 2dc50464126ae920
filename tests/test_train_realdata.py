"""Acceptance: a short CPU training run on real buildings_ma chips beats the all-background model."""

from __future__ import annotations

import json

import pytest

from rasterlearn.train import TrainConfig, evaluate_model, train


@pytest.mark.slow
@pytest.mark.realdata
def test_buildings_training_beats_all_background(shared_data, tmp_path):
    from rasterlearn.chips import Scene, make_chips

    scene = Scene(
        image=shared_data / "buildings_ma" / "scene_22978945.tif",
        labels=shared_data / "buildings_ma" / "buildings.gpkg",
    )
    res = make_chips(
        [scene], tmp_path / "chips", size=64, attribute="class", split_method="blocks", val=0.25, seed=0
    )
    root = res.out
    cfg = TrainConfig(
        arch="unet",
        encoder="tu-mobilenetv3_small_050",
        epochs=6,
        batch_size=16,
        lr=3e-3,
        num_workers=0,
        loss="ce+dice",
        class_weights="inverse_sqrt",
        sample_chips=4,
        seed=0,
    )
    result = train(root, tmp_path / "model", cfg)
    m = evaluate_model(tmp_path / "model", root, split="val", out=tmp_path / "val.json")
    building = next(v for k, v in m["per_class"].items() if v["code"] == 1)
    # the all-background model has building IoU 0 and mIoU = background share / 2
    background_share = (
        m["per_class"][next(k for k, v in m["per_class"].items() if v["code"] == 0)]["support"] / m["pixels"]
    )
    assert building["iou"] > 0.2, json.dumps(building)  # all-background: 0
    assert m["mean_iou"] > background_share / 2 + 0.05
    assert result.metrics["per_class"]
