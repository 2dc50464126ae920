"""Imbalance-aware choices (class weights, loss, balanced sampler), collapse warnings and sparse labels."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import torch
from affine import Affine
from shapely.geometry import box

from rasterlearn.chips import Scene, make_chips
from rasterlearn.data import ChipDataset, read_manifest
from rasterlearn.diagnostics import collapse_warnings, headline
from rasterlearn.imbalance import (
    BalancedChipSampler,
    balanced_sampler,
    chip_sampling_weights,
    is_imbalanced,
    resolve_imbalance,
)
from rasterlearn.labels import ClassSchema
from rasterlearn.metrics import metrics_from_confusion
from rasterlearn.models import model_spec, tiny_model
from rasterlearn.train import TrainConfig, train
from tests.chipdata import write_chip_dataset
from tests.conftest import write_tif

SCHEMA2 = ClassSchema.binary("target")


def test_auto_loss_and_class_weights_follow_pixel_counts() -> None:
    rare = resolve_imbalance("auto", "auto", SCHEMA2, [9800, 200], task="binary")
    assert rare.imbalanced and rare.loss == "ce+dice"
    # inverse square-root frequency: sqrt(1 / (K f_c))
    assert rare.class_weights == pytest.approx([np.sqrt(1 / (2 * 0.98)), np.sqrt(1 / (2 * 0.02))])
    assert rare.frequencies == {"background": 0.98, "target": 0.02}
    capped = resolve_imbalance("auto", "auto", SCHEMA2, [999_990, 10])
    assert capped.class_weights is not None and capped.class_weights[1] == 10.0  # AUTO_WEIGHT_CAP
    even = resolve_imbalance("auto", "auto", SCHEMA2, [600, 400])
    assert not even.imbalanced and even.loss == "ce" and even.class_weights is None
    # explicit choices are kept
    kept = resolve_imbalance("focal+dice", "median", SCHEMA2, [9800, 200])
    assert kept.loss == "focal+dice" and kept.class_weights == pytest.approx([0.5 / 0.98, 0.5 / 0.02])
    # the threshold: rarest class below half of its fair share 1/K
    assert is_imbalanced([40, 35, 25]) is False  # 0.25 >= 0.5/3
    assert is_imbalanced([70, 20, 10]) is True  # 0.10 < 0.5/3


def test_class_weights_from_a_chip_folder(tmp_path: Path) -> None:
    root = write_chip_dataset(tmp_path / "c", n_per_split=(4, 1, 1), codes=(0, 1, 2))
    ds = ChipDataset(root, "trn")
    counts = ds.class_counts()
    choice = resolve_imbalance("auto", "inverse_sqrt", ds.schema, counts)
    freq = counts / counts.sum()
    assert choice.class_weights == pytest.approx(list(np.sqrt(1 / (3 * freq))))


def test_balanced_sampler_follows_rare_class_content(tmp_path: Path) -> None:
    # chip 0 holds the rare class; chips 1-3 are background only
    m = np.array([[50, 50], [100, 0], [100, 0], [100, 0]], dtype=float)
    w, rarity = chip_sampling_weights(m)
    f = m.sum(0) / m.sum()
    assert rarity == pytest.approx(1 / (2 * f))
    assert w[0] == pytest.approx(0.5 * rarity[0] + 0.5 * rarity[1]) and w[1] == pytest.approx(rarity[0])
    sampler = BalancedChipSampler(w, seed=1)
    draws = []
    for epoch in range(200):
        sampler.set_epoch(epoch)
        pairs = list(sampler)
        assert len(pairs) == 4 and all(isinstance(s, int) for _, s in pairs)
        draws += [i for i, _ in pairs]
    share = np.bincount(draws, minlength=4) / len(draws)
    assert share == pytest.approx(w / w.sum(), abs=0.03)
    assert share[0] > 2 * share[1]  # the rare-class chip is oversampled
    sampler.set_epoch(3)
    assert list(sampler) == list(sampler)  # reproducible per epoch
    # from a manifest
    root = write_chip_dataset(tmp_path / "c", n_per_split=(6, 1, 1), codes=(0, 1, 2))
    rows = read_manifest(root, "trn")
    s2, w2 = balanced_sampler(
        rows, ClassSchema.from_dict(json.loads((root / "dataset.json").read_text())["schema"])
    )
    assert len(s2) == 6 and w2.shape == (6,) and (w2 > 0).all()


def test_collapse_warning_on_a_one_class_prediction() -> None:
    # truth: 900 background, 100 target; the model predicts background everywhere
    m = metrics_from_confusion(np.array([[900, 0], [100, 0]]), ["background", "target"])
    msgs = collapse_warnings(m)
    assert len(msgs) == 1 and "'target'" in msgs[0] and "never predicted" in msgs[0]
    assert "--sampler balanced" in msgs[0] and "epochs" in msgs[0]
    text = headline(m)
    assert "kappa 0.000" in text and "lowest class IoU 0.000 (target)" in text and "WARNING" in text
    assert text.index("OA") > text.index("kappa")  # never OA alone, never first
    good = metrics_from_confusion(np.array([[880, 20], [10, 90]]), ["background", "target"])
    assert collapse_warnings(good) == [] and "WARNING" not in headline(good)


def _one_class_weights(path: Path, in_ch: int, classes: int) -> Path:
    from safetensors.torch import save_file

    net = tiny_model("unet", in_ch, classes)
    state = net.state_dict()
    head_w = [k for k in state if k.startswith("segmentation_head") and k.endswith("weight")][-1]
    head_b = head_w[: -len("weight")] + "bias"
    state[head_w] = torch.zeros_like(state[head_w])
    state[head_b] = torch.tensor([20.0] + [-20.0] * (classes - 1))
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def test_training_reports_collapse_at_the_top(tmp_path: Path) -> None:
    chips = write_chip_dataset(tmp_path / "c", n_per_split=(2, 2, 1), bands=3, codes=(0, 1, 2))
    weights = _one_class_weights(tmp_path / "one.safetensors", 3, 3)
    cfg = TrainConfig(
        arch="unet",
        encoder=model_spec("unet").tiny_encoder,
        model_kwargs=model_spec("unet").tiny_kwargs,
        weights=str(weights),
        epochs=0,
        batch_size=2,
        num_workers=0,
        sample_chips=0,
        baseline=False,
    )
    train(chips, tmp_path / "m", cfg)
    m = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert list(m)[:2] == ["warnings", "headline"]
    assert len(m["warnings"]) == 2 and all("collapsed" in w for w in m["warnings"])
    assert "WARNING" in m["headline"]
    html = (tmp_path / "m" / "report.html").read_text()
    assert html.index("Warnings") < html.index("Validation metrics")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["training"]["warnings"] == m["warnings"]
    assert meta["training"]["imbalance"]["loss"] == "ce" and "rule" in meta["training"]["imbalance"]


def test_sparse_polygons_are_ignore_outside(tmp_path: Path) -> None:
    from rasterlearn.demo import demo_config

    t = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_000_000.0)
    img = np.random.default_rng(0).integers(100, 2000, (3, 64, 64)).astype("uint16")
    raster = write_tif(tmp_path / "img.tif", img, transform=t, nodata=0)

    def pbox(r0: int, c0: int, r1: int, c1: int):
        return box(500_000 + 10 * c0, 4_000_000 - 10 * r1, 500_000 + 10 * c1, 4_000_000 - 10 * r0)

    gdf = gpd.GeoDataFrame(
        {"cls": ["water", "forest"]}, geometry=[pbox(4, 4, 20, 20), pbox(36, 36, 56, 60)], crs="EPSG:32633"
    )
    vec = tmp_path / "labels.gpkg"
    gdf.to_file(vec)
    sparse = demo_config(tmp_path / "o", raster=raster, labels=vec, attribute="cls")
    assert sparse.chips.label_areas == "features" and sparse.evaluate.unlabelled == "ignore"
    dense = demo_config(tmp_path / "o", raster=raster, labels=vec, attribute="cls", unlabelled="background")
    assert dense.chips.label_areas is None
    binary = demo_config(tmp_path / "o", raster=raster, labels=vec, attribute=None)
    assert binary.chips.label_areas is None  # one burnt class: outside is its only negative

    res = make_chips(
        [Scene(raster, vec)],
        tmp_path / "chips",
        size=32,
        attribute="cls",
        label_areas=sparse.chips.label_areas,
    )
    ds = ChipDataset(res.out, None)
    labelled = 0
    for i in range(len(ds)):
        _, _, codes = ds.read(i)
        labelled += int((codes != ds.schema.ignore_index).sum())
    inside = 16 * 16 + 20 * 24
    assert labelled == inside  # nothing outside the polygons is labelled (no background class either)
    assert "background" not in ds.schema.names
