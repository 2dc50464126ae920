"""Inference windows decoupled from the chip size: planning from a memory budget, exactness at the new
window sizes, provenance, the resume fingerprint, and what predict imports."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from rasterlearn.errors import InputError, JobCancelledError
from rasterlearn.labels import ClassInfo, ClassSchema
from rasterlearn.models import ModelMetadata
from rasterlearn.normalize import Normalization
from rasterlearn.predict import predict_raster
from rasterlearn.predict_plan import (
    ACTIVATION_SAFETY,
    activation_bytes_per_px,
    output_stride,
    plan_inference,
)


class FCN(nn.Module):
    """Two 3x3 convolutions with zero padding: receptive radius 2, fully convolutional."""

    def __init__(self, bands: int, classes: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(bands, 8, 3, padding=1)
        self.b = nn.Conv2d(8, classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 3.0 * self.b(torch.tanh(self.a(x)))


def _meta(bands: int, classes: int, chip: int = 32, norm: Normalization | None = None) -> ModelMetadata:
    schema = ClassSchema(tuple(ClassInfo(c, f"c{c}", "#102030") for c in range(classes)))
    return ModelMetadata(
        arch="unet",
        encoder="resnet18",
        in_channels=bands,
        num_classes=classes,
        bands=[f"b{i}" for i in range(bands)],
        normalization=(norm or Normalization.identity(bands)).to_dict(),
        schema=schema.to_dict(),
        chip_size=chip,
    )


def _read(path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


# -- planning (pure) ------------------------------------------------------------------------------


@pytest.mark.parametrize("stride", [16, 32, 64])
@pytest.mark.parametrize("memory_mb", [100.0, 300.0, 640.0, 2000.0])
@pytest.mark.parametrize("extent", [(2000, 2000), (16000, 16000), (300, 9000), (50, 70)])
def test_window_respects_stride_and_budget(stride, memory_mb, extent):
    plan = plan_inference(
        extent_shape=extent,
        chip_size=256,
        overlap=0.25,
        bands=4,
        n_out=2,
        act_bytes_per_px=382.0,
        out_stride=stride,
        memory_mb=memory_mb,
    )
    assert plan.window[0] % stride == 0 and plan.window[1] % stride == 0
    assert min(plan.window) >= 256  # never smaller than the training chip
    ov = max(64, 2 * stride)  # 0.25 x chip 256, at least two output strides
    assert plan.overlap_px == ov and plan.stride == (plan.window[0] - ov, plan.window[1] - ov)
    assert plan.window_source == "budget" and plan.batch_size >= 1
    assert plan.stripe_width % 512 == 0 or plan.stripe_width == extent[1]
    fwd_px = 382.0 * ACTIVATION_SAFETY
    if min(plan.window) > 256:  # above the chip-size floor the plan fits the budget
        assert plan.estimated_mb <= memory_mb
        assert plan.window[0] * plan.window[1] * fwd_px <= memory_mb * 2**20
    # the window never grows much past the extent (padding would be wasted work)
    assert (
        plan.window[0] < max(256, extent[0]) + stride + 1
        and plan.window[1] < max(256, extent[1]) + stride + 1
    )


def test_budget_windows_tile_evenly_and_grow_with_the_budget():
    kw = {"chip_size": 256, "overlap": 0.25, "bands": 4, "n_out": 2, "act_bytes_per_px": 382.0}
    plan = plan_inference(extent_shape=(2000, 2000), memory_mb=768, **kw)
    # two windows per axis of (2000 + 64) / 2 = 1032 -> 1056 px, not three of 1024 px
    assert plan.window == (1056, 1056) and plan.stripe_width == 2000 and plan.batch_size == 1
    # a little less memory: three rows of windows (736 px) but still two columns
    assert plan_inference(extent_shape=(2000, 2000), memory_mb=600, **kw).window == (736, 1056)
    small = plan_inference(extent_shape=(2000, 2000), memory_mb=200, **kw)
    assert small.window[0] < plan.window[0] and small.window[0] % 32 == 0
    whole = plan_inference(extent_shape=(500, 700), memory_mb=640, **kw)
    assert whole.window == (512, 704)  # one window: the untiled single pass
    # 16000 px wide: smaller windows rather than column stripes (which would recompute windows at seams)
    huge = plan_inference(extent_shape=(16000, 16000), memory_mb=640, **kw)
    assert huge.stripe_width == 16000 and huge.estimated_mb <= 640 and min(huge.window) >= 512
    # 100000 px wide: the accumulator alone exceeds the budget, so stripes it is
    wide = plan_inference(extent_shape=(4000, 100000), memory_mb=640, **kw)
    assert wide.stripe_width < 100000 and wide.stripe_width % 512 == 0 and wide.estimated_mb <= 640


def test_explicit_window_and_batch_are_checked():
    kw = {"extent_shape": (1000, 1000), "chip_size": 128, "overlap": 0.5, "bands": 3, "n_out": 4}
    plan = plan_inference(act_bytes_per_px=100.0, window=512, batch_size=3, **kw)
    assert plan.window == (512, 512) and plan.batch_size == 3 and plan.window_source == "option"
    assert plan.stride == (448, 448)
    with pytest.raises(InputError, match=r"output stride 32.*use 416"):
        plan_inference(act_bytes_per_px=100.0, window=400, **kw)
    with pytest.raises(InputError, match="larger than the overlap"):
        plan_inference(act_bytes_per_px=100.0, window=64, **kw)
    with pytest.raises(InputError, match="batch_size"):
        plan_inference(act_bytes_per_px=100.0, window=512, batch_size=0, **kw)


def test_output_stride_and_measured_activation_memory():
    assert output_stride(FCN(2, 2), chip_size=16) == 16
    assert output_stride(FCN(2, 2), chip_size=96) == 32
    assert output_stride(FCN(2, 2)) == 32
    # FCN: conv a (8 channels x 4 B) and its tanh are alive together, the 2-channel head is smaller
    bpp = activation_bytes_per_px(FCN(2, 2), 2, stride=16)
    assert 64.0 <= bpp <= 96.0


@pytest.mark.slow
def test_unet_output_stride_and_activation_memory():
    from rasterlearn.models import create_model

    unet = create_model("unet", "resnet18", in_channels=3, classes=2).eval()
    assert output_stride(unet) == 32
    # the U-Net keeps its encoder features for the skip connections: hundreds of bytes per pixel
    assert 300.0 < activation_bytes_per_px(unet, 3) < 500.0


# -- exactness at the new window sizes -----------------------------------------------------------


def _reference(model: nn.Module, norm: Normalization, data: np.ndarray) -> np.ndarray:
    """One untiled pass; bottom/right padded with the nodata fill, as the padded edge windows see it."""
    h, w = data.shape[1:]
    x = np.full((data.shape[0], h + 8, w + 8), norm.fill, dtype="float32")
    x[:, :h, :w] = norm.apply(data, np.ones((h, w), bool))
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(x)[None]), dim=1)[0, :, :h, :w].numpy()


@pytest.mark.parametrize(
    # overlap_px: the chip fraction, raised to two output strides (64 px), capped below an explicit window
    ("window", "overlap", "memory_mb", "overlap_px"),
    [(64, 0.25, None, 32), (96, 0.5, None, 64), (None, 0.25, 0.3, 64)],
)
def test_tiled_equals_whole_image_at_new_window_sizes(
    make_raster, tmp_path, window, overlap, memory_mb, overlap_px
):
    rng = np.random.default_rng(4)
    data = rng.integers(0, 1000, (3, 150, 131)).astype("uint16")
    src = make_raster(data, nodata=None)
    norm = Normalization("zscore", (500.0, 400.0, 600.0), (300.0, 250.0, 280.0))
    model = FCN(3, 4).eval()
    prob = tmp_path / "p.tif"
    kw = {} if memory_mb is None else {"memory_mb": memory_mb}
    res = predict_raster(
        model,
        _meta(3, 4, chip=32, norm=norm),
        src,
        tmp_path / "m.tif",
        probabilities=prob,
        prob_dtype="float32",
        overlap=overlap,
        window=window,
        blocksize=32,
        **kw,
    )
    params = res.parameters
    assert res.windows_total > 1  # several windows, so seams exist
    assert params["window"][0] % 32 == 0 and params["window"][0] > 32
    if window is not None:
        assert params["window"] == [window, window]
    ref = _reference(model, norm, data)
    got = _read(prob)
    np.testing.assert_allclose(got, ref, atol=2e-6)  # exact everywhere: no seam, no border effect
    assert (_read(tmp_path / "m.tif")[0] == ref.argmax(0)).all()
    with rasterio.open(tmp_path / "m.tif") as ds:
        tags = json.loads(ds.tags()["parameters"])
        inference = json.loads(ds.tags()["inference"])
    assert tags["window"] == params["window"] and tags["overlap_px"] == overlap_px
    assert (
        inference["window_source"] == ("option" if window else "budget") and inference["output_stride"] == 32
    )


# -- resume fingerprint ----------------------------------------------------------------------------


def _interrupted(src, out, meta, model, **kw):
    calls = {"n": 0}

    def stop_after_two(_px: int) -> None:
        calls["n"] += 1
        if calls["n"] > 2:
            raise JobCancelledError("stop")

    with pytest.raises(JobCancelledError):
        predict_raster(
            model, meta, src, out, blocksize=16, window=32, overlap=0.5, progress=stop_after_two, **kw
        )


def test_resume_fingerprint_has_the_window_not_output_neutral_options(make_raster, tmp_path):
    rng = np.random.default_rng(5)
    src = make_raster(rng.integers(0, 255, (2, 96, 64)).astype("uint8"), nodata=None)
    meta = _meta(2, 3, chip=32, norm=Normalization("zscore", (128.0, 128.0), (60.0, 60.0)))
    model = FCN(2, 3).eval()
    clean = tmp_path / "clean.tif"
    predict_raster(model, meta, src, clean, blocksize=16, window=32, overlap=0.5, batch_size=1)
    out = tmp_path / "out.tif"
    _interrupted(src, out, meta, model, batch_size=1)
    # batch size, memory budget and reader threads do not change the map: the job resumes
    res = predict_raster(
        model, meta, src, out, blocksize=16, window=32, overlap=0.5, batch_size=5, memory_mb=50, io_threads=1
    )
    assert res.blocks_resumed > 0
    assert out.read_bytes() == clean.read_bytes()
    # another window changes the map: the partial run is not reused
    out2 = tmp_path / "out2.tif"
    _interrupted(src, out2, meta, model, batch_size=1)
    res2 = predict_raster(model, meta, src, out2, blocksize=16, window=64, overlap=0.5)
    assert res2.blocks_resumed == 0


# -- imports ------------------------------------------------------------------------------------------


def test_predict_does_not_import_lightning_matplotlib_or_pandas(make_raster, tmp_path):
    src = make_raster(np.random.default_rng(0).integers(1, 255, (2, 64, 64)).astype("uint8"), nodata=None)
    code = textwrap.dedent(
        f"""
        import json, sys
        import torch
        from torch import nn
        from rasterlearn.labels import ClassInfo, ClassSchema
        from rasterlearn.models import ModelMetadata
        from rasterlearn.normalize import Normalization
        from rasterlearn.predict import predict_raster

        meta = ModelMetadata(arch="x", encoder="x", in_channels=2, num_classes=2, bands=["a", "b"],
                             normalization=Normalization.identity(2).to_dict(),
                             schema=ClassSchema((ClassInfo(0, "a", "#000000"), ClassInfo(1, "b", "#ffffff"))).to_dict(),
                             chip_size=32)
        model = nn.Conv2d(2, 2, 3, padding=1)
        predict_raster(model, meta, {str(src)!r}, {str(tmp_path / "m.tif")!r}, threads=1)
        print(json.dumps(sorted(m for m in ("lightning", "pytorch_lightning", "matplotlib", "pandas",
                                            "geopandas", "torchmetrics", "sklearn") if m in sys.modules)))
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []
    with rasterio.open(tmp_path / "m.tif") as ds:
        assert ds.shape == (64, 64) and set(np.unique(ds.read(1)).tolist()) <= {0, 1}


# -- the CPU path: channels-last and checked bf16 ----------------------------------------------------


def test_channels_last_runner_matches_plain_fp32():
    from rasterlearn.predict_runtime import ModelRunner

    x = torch.randn(2, 3, 48, 64)
    plain = ModelRunner(FCN(3, 4), n_out=4, task="multiclass", channels_last=False)
    cl = ModelRunner(FCN(3, 4), n_out=4, task="multiclass", channels_last=True)
    a, b = plain(x), cl(x)
    assert a.shape == (2, 4, 48, 64) and a.flags["C_CONTIGUOUS"] and b.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(a.sum(1), 1.0, atol=1e-5)


def _bf16_run(make_raster, tmp_path, name):
    rng = np.random.default_rng(6)
    src = make_raster(rng.integers(0, 1000, (3, 70, 83)).astype("uint16"), nodata=None, name=f"{name}.tif")
    norm = Normalization("zscore", (500.0,) * 3, (300.0,) * 3)
    prob = tmp_path / f"{name}_p.tif"
    res = predict_raster(
        FCN(3, 4).eval(),
        _meta(3, 4, norm=norm),
        src,
        tmp_path / f"{name}_map.tif",
        probabilities=prob,
        prob_dtype="float32",
        precision="bf16",
    )
    ref = _reference(FCN(3, 4).eval(), norm, _read(src))
    return res.parameters["precision"], _read(prob), ref


def test_bf16_falls_back_to_fp32_without_native_support(make_raster, tmp_path, monkeypatch, caplog):
    import rasterlearn.predict_runtime as rt

    monkeypatch.setattr(rt, "bf16_supported", lambda: False)
    with caplog.at_level("WARNING", logger="rasterlearn"):
        precision, got, ref = _bf16_run(make_raster, tmp_path, "nobf16")
    assert precision == "fp32" and "no native bf16" in caplog.text
    np.testing.assert_allclose(got, ref, atol=2e-6)


def test_bf16_falls_back_when_classes_disagree(make_raster, tmp_path, monkeypatch, caplog):
    import rasterlearn.predict_runtime as rt

    monkeypatch.setattr(rt, "bf16_supported", lambda: True)
    monkeypatch.setattr(rt, "BF16_MIN_AGREEMENT", 1.01)  # no result can pass: must fall back
    with caplog.at_level("WARNING", logger="rasterlearn"):
        precision, got, ref = _bf16_run(make_raster, tmp_path, "strict")
    assert precision == "fp32" and "changed the class" in caplog.text
    np.testing.assert_allclose(got, ref, atol=2e-6)


def test_bf16_when_kept_agrees_with_fp32(make_raster, tmp_path, caplog):
    from rasterlearn.predict_runtime import bf16_supported

    if not bf16_supported():
        pytest.skip("this CPU has no native bf16")
    with caplog.at_level("INFO", logger="rasterlearn"):
        precision, got, ref = _bf16_run(make_raster, tmp_path, "bf16")
    if precision == "fp32":  # not faster here: kept fp32, with the reason logged
        assert "not faster" in caplog.text or "changed the class" in caplog.text
        np.testing.assert_allclose(got, ref, atol=2e-6)
    else:
        assert precision == "bf16"
        assert np.abs(got - ref).max() <= 0.05
        assert (got.argmax(0) == ref.argmax(0)).mean() >= 0.99


def test_onnx_runtime_matches_torch_within_1e4(make_raster, tmp_path):
    pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(8)
    src = make_raster(rng.integers(0, 1000, (3, 70, 83)).astype("uint16"), nodata=None, name="onnx_in.tif")
    norm = Normalization("zscore", (500.0,) * 3, (300.0,) * 3)
    kw = {"probabilities": None, "prob_dtype": "float32", "tta": "rot90", "window": (64, 96), "blocksize": 32}
    probs = {}
    for runtime in ("torch", "onnx"):
        kw["probabilities"] = tmp_path / f"{runtime}_p.tif"
        res = predict_raster(
            FCN(3, 4).eval(), _meta(3, 4, norm=norm), src, tmp_path / f"{runtime}.tif", runtime=runtime, **kw
        )
        assert res.parameters["runtime"] == runtime and res.windows_total > 1
        probs[runtime] = _read(tmp_path / f"{runtime}_p.tif")
    assert np.abs(probs["onnx"] - probs["torch"]).max() <= 1e-4
    assert (probs["onnx"].argmax(0) == probs["torch"].argmax(0)).mean() >= 0.999
    with pytest.raises(InputError, match="fp32"):
        predict_raster(FCN(3, 4), _meta(3, 4), src, tmp_path / "x.tif", runtime="onnx", precision="bf16")


# -- conv-BN folding ------------------------------------------------------------------------------------


class _ConvBN(nn.Module):
    """conv -> batch norm -> relu -> conv head, batch norm with non-trivial running statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, 4, 1)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1.0, 1.0)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.conv(x))))


class _Untraceable(_ConvBN):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            x = x * 1.0
        return super().forward(x)


def test_conv_bn_folding_on_cpu_matches_the_network():
    from rasterlearn.predict_runtime import ModelRunner

    net = _ConvBN().eval()
    x = torch.from_numpy(np.random.default_rng(5).normal(0, 1, (2, 3, 40, 56)).astype("float32"))
    fused = ModelRunner(net, n_out=4, task="multiclass")  # CPU default: folded
    plain = ModelRunner(_ConvBN().eval(), n_out=4, task="multiclass", fuse=False)
    plain.model.load_state_dict(net.state_dict())
    assert fused.fuse_note.startswith("folded")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.net.modules())  # really folded
    assert any(isinstance(m, nn.BatchNorm2d) for m in fused.model.modules())  # the original is kept
    assert plain.net is plain.model and plain.fuse_note == ""
    got, ref = fused(x), plain(x)
    assert got.shape == ref.shape == (2, 4, 40, 56)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_conv_bn_folding_falls_back_when_the_network_cannot_be_traced():
    from rasterlearn.predict_runtime import ModelRunner

    runner = ModelRunner(_Untraceable().eval(), n_out=4, task="multiclass")
    assert runner.net is runner.model
    assert "cannot be traced" in runner.fuse_note
    x = torch.ones((1, 3, 16, 16))
    assert runner(x).shape == (1, 4, 16, 16)
