"""Tests of rasterlearn.embed: backbones, feature-grid geometry, merging, nodata, sessions and resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from torch import nn

from rasterlearn.embed import (
    RECOMMENDED_MODELS,
    Backbone,
    embed,
    feature_layout,
    list_sessions,
    load_backbone,
    session_hash,
)
from rasterlearn.engine.accumulate import WeightedAccumulator
from rasterlearn.errors import ConfigError, ModelError


class PoolNet(nn.Module):
    """A 'backbone' whose features are the mean of each stride x stride block: exact, tiling-invariant."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pretrained_cfg = {"mean": (0.5,), "std": (0.25,)}

    def forward_intermediates(self, x: torch.Tensor, indices=None, intermediates_only=True, **kw):
        return [nn.functional.avg_pool2d(x, self.stride)]


def pool_backbone(bands: int, stride: int = 4) -> Backbone:
    return Backbone(PoolNet(stride), "pool", "cnn", 0, stride, bands, None)


def expected_pool(data: np.ndarray, f: int) -> np.ndarray:
    b, h, w = data.shape
    H, W = -(-h // f), -(-w // f)
    pad = np.zeros((b, H * f, W * f), dtype="float64")
    pad[:, :h, :w] = data
    return pad.reshape(b, H, f, W, f).mean(axis=(2, 4))


def read(path: Path) -> tuple[np.ndarray, rasterio.Affine, object, float | None]:
    with rasterio.open(path) as ds:
        return ds.read(), ds.transform, ds.crs, ds.nodata


@pytest.mark.parametrize("merge", ["average", "first", "center"])
def test_feature_grid_exact_for_every_merge(make_raster, tmp_path, merge):
    rng = np.random.default_rng(1)
    data = rng.uniform(0, 100, (3, 40, 52)).astype("float32")
    path = make_raster(data, nodata=-1.0)
    res = embed(
        path,
        "pool",
        backbone=pool_backbone(3),
        size=16,
        stride=8,
        normalization="none",
        merge=merge,
        output=tmp_path / f"f_{merge}.tif",
        device="cpu",
        min_valid_fraction=0.0,
    )
    arr, transform, crs, nodata = read(res.path)
    assert arr.shape == (3, 10, 13)
    assert transform == Affine(40.0, 0.0, 500_000.0, 0.0, -40.0, 4_000_000.0)
    assert crs.to_epsg() == 32633
    assert np.isnan(nodata)
    # pooled values; edge feature pixels partly outside the raster average only the valid part
    exp = expected_pool(data, 4)
    np.testing.assert_allclose(arr, exp, rtol=1e-5, atol=1e-4)


def test_nodata_masked_and_filled(make_raster, tmp_path):
    data = np.full((2, 32, 32), 10, dtype="uint16")
    data[:, :8, :8] = 65535  # nodata corner: exactly feature pixels (0,0),(0,1),(1,0),(1,1)
    data[:, 20, 20] = 65535  # one bad pixel in a 4x4 footprint: still valid at min_valid_fraction 0.5
    path = make_raster(data, nodata=65535)
    res = embed(
        path,
        "pool",
        backbone=pool_backbone(2),
        size=16,
        normalization="none",
        output=tmp_path / "f.tif",
        device="cpu",
    )
    arr, *_ = read(res.path)
    assert np.isnan(arr[:, :2, :2]).all()
    assert not np.isnan(arr[:, 2:, :]).any() and not np.isnan(arr[:, :, 2:]).any()
    # invalid pixels are filled with the normalization fill (0) before the model, not with 65535
    assert arr[0, 5, 5] == pytest.approx(10 * 15 / 16)


def test_extent_and_offset_origin(make_raster, tmp_path):
    data = np.arange(64 * 64, dtype="float32").reshape(1, 64, 64)
    path = make_raster(data)
    res = embed(
        path,
        "pool",
        backbone=pool_backbone(1),
        size=16,
        normalization="none",
        output=tmp_path / "f.tif",
        device="cpu",
        extent=(500_000 + 80, 4_000_000 - 400, 500_000 + 400, 4_000_000 - 80),
    )
    arr, transform, *_ = read(res.path)
    # extent snapped to pixels 8..40 in both axes; feature origin is the extent's corner
    assert transform.c == 500_080 and transform.f == 4_000_000 - 80
    assert arr.shape == (1, 8, 8)
    np.testing.assert_allclose(arr[0], expected_pool(data[:, 8:40, 8:40], 4)[0], rtol=1e-6)


def test_average_is_a_true_mean():
    acc = WeightedAccumulator(1, 4, 8, merge="average")
    ones = np.ones((1, 2, 2), dtype="float32")
    valid = np.ones((2, 2), dtype=bool)
    for v in (1.0, 2.0, 6.0):  # a pairwise mean would give 4.25, zeros are genuine values
        acc.add(ones * v, valid, 0, 0, crop=(slice(0, 2), slice(0, 2)))
    acc.add(ones * 0.0, valid, 0, 2, crop=(slice(0, 2), slice(0, 2)))
    out, _ = acc.take(2)
    np.testing.assert_allclose(out[0, :, :2], 3.0)
    np.testing.assert_allclose(out[0, :, 2:], 0.0)


def test_feature_layout_rules():
    lay = feature_layout(32, 16, 16)
    assert (lay.feat_size, lay.feat_stride, lay.factor) == (2, 1, 16)
    lay = feature_layout(64, 32, 14, input_size=56)  # resized tiles: effective stride 16 px
    assert (lay.feat_size, lay.feat_stride, lay.factor) == (4, 2, 16.0)
    with pytest.raises(ConfigError, match="multiple"):
        feature_layout(30, 30, 16)
    with pytest.raises(ConfigError, match="stride"):
        feature_layout(32, 24, 16)


def test_session_hash_canonical():
    # the job journal's canonical fingerprint: key order, 2.0 == 2 and paths as text do not matter
    from rasterlearn.engine.journal import fingerprint

    a = session_hash({"b": 1, "a": [1.0, 2], "c": {"y": 0.3, "x": None}, "p": Path("/d/f.tif")})
    b = session_hash({"a": [1, 2], "c": {"x": None, "y": 0.3}, "b": 1.0, "p": "/d/f.tif"})
    assert a == b and len(a) == 16
    assert a == fingerprint(
        {"a": [1, 2], "b": 1, "c": {"x": None, "y": 0.3}, "p": "/d/f.tif"}, normalize=True
    )
    assert session_hash({"a": 1}) != session_hash({"a": 2})
    # floats are hashed as given (they come from the options as typed), no longer rounded to 10 digits
    assert session_hash({"y": 0.1 + 0.2}) != session_hash({"y": 0.3})


def test_recommended_models_are_timm_names():
    import timm

    for name, info in RECOMMENDED_MODELS.items():
        assert timm.is_model(name), name
        assert info.feature_dim > 0 and info.patch_size in (14, 16, 32)


def _save(model: nn.Module, path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "vit_small_patch14_reg4_dinov2"])
def test_vit_checkpoint_grid_and_registers(make_raster, tmp_path, name):
    import timm

    patch = 14 if "patch14" in name else 16
    size = 2 * patch * 2  # 4 patches per tile
    src = timm.create_model(name, pretrained=False, img_size=size, in_chans=3, num_classes=0, depth=2)
    ckpt = _save(src, tmp_path / "vit.safetensors")
    rng = np.random.default_rng(0)
    data = rng.integers(1, 250, (5, size + 10, size * 2), dtype="uint8")  # 5 bands: first layer adapted
    path = make_raster(data, nodata=0)
    bb = load_backbone(
        name, checkpoint=ckpt, in_chans=5, input_size=size, pretrained=False, model_kwargs={"depth": 2}
    )
    assert bb.family == "vit" and bb.stride == patch and bb.dim == src.num_features
    assert bb.model.num_prefix_tokens == (5 if "reg4" in name else 1)
    res = embed(path, name, backbone=bb, size=size, stride=size // 2, output=tmp_path / "f.tif", device="cpu")
    arr, transform, *_ = read(res.path)
    assert arr.shape == (src.num_features, -(-(size + 10) // patch), 2 * size // patch)
    assert transform.a == 10.0 * patch and transform.e == -10.0 * patch
    assert np.isfinite(arr[:, :-1]).all()


def test_checkpoint_mismatch_is_a_model_error(tmp_path):
    import timm

    other = timm.create_model("resnet18", pretrained=False, num_classes=0)
    ckpt = _save(other, tmp_path / "r18.safetensors")
    with pytest.raises(ModelError):
        load_backbone("vit_tiny_patch16_224", checkpoint=ckpt, input_size=32, pretrained=False)
    with pytest.raises(ModelError, match="Unknown timm model"):
        load_backbone("not_a_model_xyz", pretrained=False)


def test_cnn_stage_and_pth_checkpoint(make_raster, tmp_path):
    import timm

    src = timm.create_model("resnet18", pretrained=False, in_chans=4, num_classes=0)
    ckpt = tmp_path / "r18.pth"
    torch.save({"state_dict": src.state_dict()}, ckpt)
    bb = load_backbone("resnet18", checkpoint=ckpt, in_chans=4, layer=2, pretrained=False)
    assert (bb.family, bb.stride, bb.dim) == ("cnn", 8, 128)
    data = np.random.default_rng(0).integers(1, 200, (4, 48, 40)).astype("uint8")
    path = make_raster(data, photometric="minisblack", alpha="unspecified")  # 4 uint8 bands default to RGBA
    res = embed(
        path,
        "resnet18",
        backbone=bb,
        size=32,
        stride=16,
        output=tmp_path / "f.tif",
        device="cpu",
        merge="center",
        storage="uint16",
    )
    with rasterio.open(res.path) as ds:
        assert ds.dtypes[0] == "uint16" and ds.nodata == 0 and ds.count == 128
        assert (ds.height, ds.width) == (6, 5)
        assert ds.scales[0] > 0
        codes = ds.read(1)
    assert (codes > 0).all()  # no input nodata: every feature pixel valid
    assert not (res.session / "features_float32.tif").exists()  # the float32 intermediate is removed


def test_resume_after_interruption_gives_identical_output(make_raster, tmp_path):
    rng = np.random.default_rng(3)
    data = rng.uniform(0, 1, (2, 128, 48)).astype("float32")
    path = make_raster(data)
    kw = dict(
        backbone=pool_backbone(2, 2), size=16, stride=8, normalization="none", device="cpu", memory_mb=0.001
    )  # 16-row strips: 4 strips
    full = embed(path, "pool", output=tmp_path / "full.tif", cache_dir=tmp_path / "c1", **kw)

    calls = {"n": 0}

    def boom(n: int) -> None:
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt

    out = tmp_path / "part.tif"
    with pytest.raises(KeyboardInterrupt):
        embed(path, "pool", output=out, cache_dir=tmp_path / "c2", progress=boom, **kw)
    assert not out.exists()
    sessions = list_sessions(tmp_path / "c2")
    ((sid, entry),) = sessions.items()
    assert entry["status"] == "interrupted"
    params = json.loads((tmp_path / "c2" / sid / "parameters.json").read_text())
    assert params["size"] == 16 and params["session"] == sid
    again = embed(path, "pool", output=out, cache_dir=tmp_path / "c2", **kw)
    assert again.resumed and again.session_id == sid
    assert list_sessions(tmp_path / "c2")[sid]["status"] == "complete"
    np.testing.assert_array_equal(read(out)[0], read(full.path)[0])
    # a third call finds the finished session and does nothing
    third = embed(path, "pool", output=out, cache_dir=tmp_path / "c2", **kw)
    assert third.seconds == 0.0


def test_model_normalization_and_band_selection(make_raster, tmp_path):
    data = np.stack(
        [np.full((16, 16), 255, "uint8"), np.full((16, 16), 0, "uint8"), np.full((16, 16), 51, "uint8")]
    )
    path = make_raster(data, descriptions=["red", "green", "nir"])
    res = embed(
        path,
        "pool",
        backbone=pool_backbone(2),
        bands=["nir", 1],
        size=16,
        normalization="model",
        output=tmp_path / "f.tif",
        device="cpu",
    )
    arr, *_ = read(res.path)
    assert arr.shape[0] == 2
    np.testing.assert_allclose(arr[0], (0.2 - 0.5) / 0.25, rtol=1e-5)
    np.testing.assert_allclose(arr[1], (1.0 - 0.5) / 0.25, rtol=1e-5)
    with rasterio.open(res.path) as ds:
        meta = json.loads(ds.tags()["rasterlearn_normalization"])
        assert meta["mode"] == "model" and meta["value_scale"] == 255
        assert json.loads(ds.tags()["rasterlearn_input_bands"]) == ["nir", "red"]


@pytest.mark.parametrize("nodata", [-9999.0, None], ids=["declared-nodata", "no-nodata"])
def test_reprojected_reading(make_raster, tmp_path, nodata):
    """Read reprojected; outside the source's footprint is nodata, also for a source that declares none
    (the warper's alpha band), so no zeros from there are averaged into the edge features."""
    data = np.random.default_rng(0).uniform(1, 2, (1, 64, 64)).astype("float32")
    path = make_raster(data, nodata=nodata)
    res = embed(
        path,
        "pool",
        backbone=pool_backbone(1),
        size=16,
        normalization="none",
        output=tmp_path / "f.tif",
        device="cpu",
        target_crs="EPSG:32632",
        resolution=20.0,
        min_valid_fraction=1.0,
    )
    arr, transform, crs, _ = read(res.path)
    assert crs.to_epsg() == 32632
    assert transform.a == pytest.approx(80.0)
    assert np.isnan(arr).any()  # the rotated grid's corners lie outside the source
    assert np.nanmin(arr) >= 1.0 and np.nanmax(arr) <= 2.0


class CountingPool(PoolNet):
    """PoolNet that records the batch size of every forward pass."""

    def __init__(self, stride: int) -> None:
        super().__init__(stride)
        self.batches: list[int] = []

    def forward_intermediates(self, x: torch.Tensor, indices=None, intermediates_only=True, **kw):
        self.batches.append(int(x.shape[0]))
        return super().forward_intermediates(x, indices, intermediates_only, **kw)


@pytest.mark.parametrize("merge", ["average", "first", "center"])
def test_batches_span_tile_rows_with_identical_output(make_raster, tmp_path, merge):
    rng = np.random.default_rng(7)
    data = rng.uniform(1, 100, (2, 120, 40)).astype("float32")
    data[:, 40:72, :] = -1  # nodata band: whole tile rows are skipped
    path = make_raster(data, nodata=-1.0)
    outs, batches, calls = [], [], []
    for batch_size in (1, 8):
        net = CountingPool(4)
        res = embed(
            path,
            "pool",
            backbone=Backbone(net, "pool", "cnn", 0, 4, 2, None),
            size=16,
            stride=8,
            normalization="none",
            merge=merge,
            batch_size=batch_size,
            memory_mb=0.001,  # 16-row feature strips: strips are written while batches are in flight
            output=tmp_path / f"f_{merge}_{batch_size}.tif",
            cache_dir=tmp_path / f"s{batch_size}",
            device="cpu",
            progress=calls.append,
        )
        outs.append(read(res.path)[0])
        batches.append(net.batches)
        assert res.tiles == 14 * 4 and sum(calls) == res.tiles
        calls.clear()
    # 4 tiles per row, batch 8: full batches cross row ends (a row-bound loop would never exceed 4)
    assert max(batches[1]) == 8 and sum(batches[1]) == sum(batches[0]) == len(batches[0])
    np.testing.assert_array_equal(outs[0], outs[1])
    assert np.isnan(outs[1][:, 12:16]).all() and not np.isnan(outs[1][:, :8]).any()
    valid_rows = np.r_[0:10, 18:30]
    exp = expected_pool(data, 4)
    np.testing.assert_allclose(outs[1][:, valid_rows], exp[:, valid_rows], rtol=1e-5, atol=1e-4)


def test_load_state_reads_wrapped_torch_checkpoints_weights_only(tmp_path):
    """embed's checkpoints go through the one weight reader: a self-supervised ``teacher`` wrapper and a
    ``backbone.`` prefix are unwrapped; a file needing unpickling of code is refused with the fix."""
    from rasterlearn.embed import load_state
    from rasterlearn.errors import InputNotFoundError, ModelError

    w = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    torch.save({"teacher": {"backbone.blocks.0.weight": w}, "epoch": 3}, tmp_path / "dino.pth")
    state = load_state(tmp_path / "dino.pth")
    assert list(state) == ["blocks.0.weight"] and torch.equal(state["blocks.0.weight"], w)

    from argparse import Namespace  # an arbitrary class: unpickling it is refused with weights_only=True

    torch.save({"state_dict": {"w": w}, "hparams": Namespace(lr=0.1)}, tmp_path / "code.pth")
    with pytest.raises(
        ModelError, match=r"pickled argparse\.Namespace object\. Convert .* safetensors"
    ) as err:
        load_state(tmp_path / "code.pth")
    assert "\n" not in str(err.value) and "weights_only=False" not in str(err.value)
    with pytest.raises(InputNotFoundError, match=r"missing\.pth"):
        load_state(tmp_path / "missing.pth")
