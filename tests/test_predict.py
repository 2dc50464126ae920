"""Streaming sliding-window inference: seam exactness, borders, nodata, bands, outputs, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from rasterlearn.errors import InputError, ModelError, OutputError
from rasterlearn.io.raster import RasterReader
from rasterlearn.labels import ClassInfo, ClassSchema
from rasterlearn.models import ModelMetadata, save_package
from rasterlearn.normalize import Normalization
from rasterlearn.predict import axis_weights, parse_tta, predict_raster, resolve_bands

torch.manual_seed(0)


def _meta(
    bands: list[str],
    classes: int,
    *,
    chip: int = 32,
    task: str = "multiclass",
    norm: Normalization | None = None,
    schema: ClassSchema | None = None,
    **kw,
) -> ModelMetadata:
    if schema is None:
        schema = (
            ClassSchema.binary()
            if task == "binary"
            else ClassSchema(tuple(ClassInfo(c, f"c{c}", "#102030") for c in range(classes)))
        )
    norm = norm or Normalization.identity(len(bands))
    return ModelMetadata(
        arch="unet",
        encoder="resnet18",
        in_channels=len(bands),
        num_classes=1 if task == "binary" else classes,
        task=task,
        bands=bands,
        normalization=norm.to_dict(),
        schema=schema.to_dict(),
        chip_size=chip,
        **kw,
    )


class FCN(nn.Module):
    """Two 3x3 convolutions with zero padding: receptive radius 2, fully convolutional."""

    def __init__(self, bands: int, classes: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(bands, 8, 3, padding=1)
        self.b = nn.Conv2d(8, classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 3.0 * self.b(torch.tanh(self.a(x)))


class Logit(nn.Module):
    """Sigmoid of the output is the (single) input band: an identity for binary probabilities."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logit(x[:, :1].clamp(1e-6, 1 - 1e-6))


class Constant(nn.Module):
    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.register_buffer("v", torch.tensor(logits).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.v.expand(x.shape[0], -1, x.shape[2], x.shape[3]).clone()


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


# -- kernels ------------------------------------------------------------------------------------


@pytest.mark.parametrize("blend", ["hann", "center-crop", "none"])
@pytest.mark.parametrize(
    ("length", "size", "stride"), [(37, 16, 12), (100, 32, 16), (10, 32, 24), (64, 32, 32)]
)
def test_axis_weights_partition_of_unity(blend, length, size, stride):
    from rasterlearn.grid import tile_offsets

    offs = tile_offsets(length, size, stride, "pad")
    ws = axis_weights(offs, size, stride, 0, length, blend)
    total = np.zeros(length)
    for off, w in zip(offs, ws, strict=True):
        part = w[: max(0, min(size, length - off))]
        total[off : off + part.size] += part
        assert (w[max(0, length - off) :] == 0).all()  # no weight outside the extent
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    if blend == "hann" and len(offs) > 1 and stride < size:
        assert ws[0][0] == pytest.approx(1.0) and ws[-1][length - 1 - offs[-1]] == pytest.approx(1.0)
        assert ws[1][0] == 0.0  # dead margin at an inner window edge


def test_parse_tta():
    assert parse_tta("flips,rot90") == ("hflip", "vflip", "rot90")
    assert parse_tta(None) == ()
    assert parse_tta(["all"]) == ("hflip", "vflip", "rot90", "rot180", "rot270")
    with pytest.raises(InputError, match="rot45"):
        parse_tta("rot45")


# -- seam exactness ------------------------------------------------------------------------------


def _whole_image(
    model: nn.Module,
    norm: Normalization,
    data: np.ndarray,
    valid: np.ndarray,
    chip: int = 32,
    stride: int = 16,
) -> np.ndarray:
    """The model run once on the whole raster, padded (nodata fill) to the window lattice's extent.

    Padding matters for multi-layer nets: zero padding inside the network (per layer) is not the same as a
    nodata-filled border, so the reference sees the same border the padded edge windows see.
    """
    h, w = data.shape[1:]
    ph = max(chip, chip + -(-(h - chip) // stride) * stride) if h > chip else chip
    pw = max(chip, chip + -(-(w - chip) // stride) * stride) if w > chip else chip
    x = np.full((data.shape[0], ph, pw), norm.fill, dtype="float32")
    x[:, :h, :w] = norm.apply(data, valid)
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(x)[None]), dim=1)[0, :, :h, :w].numpy()


@pytest.mark.parametrize("shape", [(37, 53), (61, 45), (13, 20)])
@pytest.mark.parametrize(("blend", "overlap"), [("hann", 0.5), ("hann", 0.25), ("center-crop", 0.5)])
def test_tiled_equals_whole_image(make_raster, tmp_path, shape, blend, overlap):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 1000, (3, *shape)).astype("uint16")
    src = make_raster(data, nodata=None)
    norm = Normalization("zscore", (500.0, 400.0, 600.0), (300.0, 250.0, 280.0))
    model = FCN(3, 4).eval()
    meta = _meta(["r", "g", "b"], 4, chip=32, norm=norm)
    out, prob = tmp_path / "map.tif", tmp_path / "prob.tif"
    res = predict_raster(
        model,
        meta,
        src,
        out,
        probabilities=prob,
        prob_dtype="float32",
        overlap=overlap,
        window=32,
        blend=blend,
        batch_size=3,
        blocksize=16,
    )
    stride = 32 - round(overlap * 32)
    ref = _whole_image(model, norm, data, np.ones(shape, bool), 32, stride)
    got = _read(prob)
    assert got.shape == ref.shape and got.dtype == np.float32
    assert np.abs(got - ref).max() < 1e-3
    agree = (_read(out)[0] == ref.argmax(0)).mean()
    assert agree >= 0.999
    assert res.windows_predicted == res.windows_total
    with rasterio.open(out) as a, rasterio.open(src) as b:
        assert a.transform == b.transform and a.crs == b.crs and a.dtypes[0] == "uint8" and a.nodata == 255
        assert a.colormap(1)[1][:3] == (16, 32, 48)


def test_naive_tiling_would_show_seams(make_raster, tmp_path):
    """The exactness test has teeth: flat averaging of edge-distorted windows differs from the reference."""
    rng = np.random.default_rng(1)
    data = rng.integers(0, 1000, (3, 37, 53)).astype("uint16")
    src = make_raster(data)
    norm = Normalization("zscore", (500.0,) * 3, (300.0,) * 3)
    model = FCN(3, 4).eval()
    prob = tmp_path / "p.tif"
    predict_raster(
        model,
        _meta(["r", "g", "b"], 4, norm=norm),
        src,
        tmp_path / "m.tif",
        probabilities=prob,
        prob_dtype="float32",
        overlap=0.5,
        window=32,
        blend="none",
        blocksize=16,
    )
    ref = _whole_image(model, norm, data, np.ones((37, 53), bool), 32, 16)
    assert np.abs(_read(prob) - ref).max() > 1e-3


def test_identity_model_reproduces_input(make_raster, tmp_path):
    rows, cols = np.mgrid[0:45, 0:71]
    data = (((rows * 71 + cols) % 97 + 1) / 100.0).astype("float32")[None]
    src = make_raster(data)
    meta = _meta(["x"], 2, task="binary", chip=32)
    prob = tmp_path / "p.tif"
    predict_raster(
        Logit(),
        meta,
        src,
        tmp_path / "m.tif",
        probabilities=prob,
        prob_dtype="float32",
        overlap=0.3,
        tta="all",
        blocksize=16,
    )
    np.testing.assert_allclose(_read(prob)[0], data[0], atol=1e-5)
    # the binary threshold splits exactly at the probability
    m = _read(tmp_path / "m.tif")[0]
    assert ((m == 1) == (data[0] >= 0.5)).all()
    predict_raster(Logit(), meta, src, tmp_path / "m2.tif", threshold=0.805, blocksize=16)
    assert ((_read(tmp_path / "m2.tif")[0] == 1) == (data[0] >= 0.805)).all()


@pytest.mark.parametrize("blend", ["hann", "center-crop", "none"])
def test_constant_model_fills_every_pixel(make_raster, tmp_path, blend):
    src = make_raster(np.ones((2, 41, 29), dtype="uint8"))
    logits = [0.1, 2.0, -1.0]
    meta = _meta(["a", "b"], 3, chip=16)
    prob = tmp_path / "p.tif"
    predict_raster(
        Constant(logits),
        meta,
        src,
        tmp_path / "m.tif",
        probabilities=prob,
        prob_dtype="float32",
        overlap=0.25,
        blend=blend,
        blocksize=16,
    )
    expect = torch.softmax(torch.tensor(logits), 0).numpy()
    got = _read(prob)
    for k in range(3):
        np.testing.assert_allclose(got[k], expect[k], atol=1e-6)  # incl. outermost rows and columns
    assert (_read(tmp_path / "m.tif") == 1).all()


def test_uint8_probabilities_and_descriptions(make_raster, tmp_path):
    src = make_raster(np.ones((2, 20, 20), dtype="uint8"))
    schema = ClassSchema(
        (ClassInfo(0, "bg", "#000000"), ClassInfo(3, "water", "#0000ff"), ClassInfo(7, "forest", "#00ff00"))
    )
    meta = _meta(["a", "b"], 3, chip=16, schema=schema)
    prob = tmp_path / "p.tif"
    predict_raster(Constant([0.0, 0.0, 5.0]), meta, src, tmp_path / "m.tif", probabilities=prob, blocksize=16)
    with rasterio.open(prob) as ds:
        assert ds.descriptions == ("p(bg)", "p(water)", "p(forest)")
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255
        p = ds.read()
        assert ds.scales[0] == pytest.approx(1 / 254)
    expect = torch.softmax(torch.tensor([0.0, 0.0, 5.0]), 0).numpy()
    np.testing.assert_array_equal(p[:, 0, 0], np.rint(expect * 254))
    with rasterio.open(tmp_path / "m.tif") as ds:
        assert (ds.read(1) == 7).all()  # class codes, not channel indexes
        tags = ds.tags()
        assert json.loads(tags["parameters"])["blend"] == "hann"
        assert "rasterlearn_version" in tags and tags["model"].startswith("sha256:")


def test_uint16_map_for_large_codes(make_raster, tmp_path):
    src = make_raster(np.ones((1, 20, 20), dtype="uint8"))
    schema = ClassSchema((ClassInfo(0, "bg", "#000000"), ClassInfo(300, "x", "#ff0000")), ignore_index=65000)
    predict_raster(
        Constant([0.0, 1.0]), _meta(["a"], 2, chip=16, schema=schema), src, tmp_path / "m.tif", blocksize=16
    )
    with rasterio.open(tmp_path / "m.tif") as ds:
        assert ds.dtypes[0] == "uint16" and ds.nodata == 65535 and (ds.read(1) == 300).all()


# -- nodata, AOI, bands --------------------------------------------------------------------------------


def test_nodata_propagates_and_empty_windows_are_skipped(make_raster, tmp_path):
    data = np.full((2, 64, 64), 7, dtype="uint8")
    data[:, :, 40:] = 0  # a nodata strip wider than a window
    data[1, 5, 5] = 0  # one band missing at one pixel
    src = make_raster(data, nodata=0)
    prob = tmp_path / "p.tif"
    res = predict_raster(
        Constant([1.0, 0.0]),
        _meta(["a", "b"], 2, chip=16),
        src,
        tmp_path / "m.tif",
        probabilities=prob,
        prob_dtype="float32",
        overlap=0.0,
        window=16,
        blocksize=16,
    )
    m = _read(tmp_path / "m.tif")[0]
    assert (m[:, 40:] == 255).all() and m[5, 5] == 255
    assert (m[:, :40][np.arange(64) != 5] == 0).all()
    assert np.isnan(_read(prob)[:, :, 40:]).all()
    assert res.windows_skipped == 4 * 1  # the last column of 16-px windows (cols 48..63) is all nodata
    assert res.windows_predicted + res.windows_skipped == res.windows_total


def test_aoi_polygon_masks_output(make_raster, tmp_path):
    from shapely.geometry import box

    src = make_raster(np.ones((1, 40, 40), dtype="uint8"))
    # default grid: x0=500000, y0=4000000, 10 m pixels
    aoi = box(500_100, 4_000_000 - 300, 500_250, 4_000_000 - 50)
    res = predict_raster(
        Constant([0.0, 1.0]), _meta(["a"], 2, chip=16), src, tmp_path / "m.tif", aoi=aoi, blocksize=16
    )
    m = _read(tmp_path / "m.tif")[0]
    inside = np.zeros_like(m, bool)
    inside[5:30, 10:25] = True
    assert (m[inside] == 1).all() and (m[~inside] == 255).all()
    assert res.pixels == 25 * 15


def test_band_matching_by_description(make_raster):
    src = make_raster(np.zeros((3, 8, 8), dtype="uint8"), descriptions=["nir", "red", "green"])
    with RasterReader(src) as r:
        assert resolve_bands(r, ["red", "green", "NIR"], None) == [2, 3, 1]
        with pytest.raises(InputError, match="blue"):
            resolve_bands(r, ["red", "green", "blue"], [1, 2, 3])
        assert resolve_bands(r, ["b1", "b2"], [3, 1]) == [3, 1]
        with pytest.raises(InputError, match="expects 4"):
            resolve_bands(r, ["w", "x", "y", "z"], None)


def test_band_order_reaches_the_model(make_raster, tmp_path):
    data = np.stack([np.full((20, 20), v, dtype="uint8") for v in (30, 10, 20)])
    src = make_raster(data, descriptions=["nir", "red", "green"])

    class Ident(nn.Module):
        def forward(self, x):
            return x.clone()

    meta = _meta(["red", "green", "nir"], 3, chip=16)
    predict_raster(Ident(), meta, src, tmp_path / "m.tif", blocksize=16)
    assert (_read(tmp_path / "m.tif") == 2).all()  # 'nir' (30) is the model's third input -> class 2


def test_errors(make_raster, tmp_path):
    src = make_raster(np.zeros((2, 8, 8), dtype="uint8"))
    with pytest.raises(InputError, match="expects 3"):
        predict_raster(Constant([0, 1]), _meta(["a", "b", "c"], 2, chip=16), src, tmp_path / "m.tif")
    with pytest.raises(ModelError, match="output channel"):
        predict_raster(Constant([0, 1, 2]), _meta(["a", "b"], 2, chip=16), src, tmp_path / "m.tif")
    with pytest.raises(InputError, match="overlap"):
        predict_raster(Constant([0, 1]), _meta(["a", "b"], 2, chip=16), src, tmp_path / "m.tif", overlap=1.0)
    (tmp_path / "exists.tif").write_bytes(b"x")
    with pytest.raises(OutputError, match="overwrite"):
        predict_raster(Constant([0, 1]), _meta(["a", "b"], 2, chip=16), src, tmp_path / "exists.tif")


def test_column_stripes_give_identical_maps(make_raster, tmp_path):
    rng = np.random.default_rng(3)
    data = rng.integers(0, 255, (2, 40, 150)).astype("uint8")
    src = make_raster(data)
    model = FCN(2, 3).eval()
    meta = _meta(["a", "b"], 3, chip=32, norm=Normalization("zscore", (128.0, 128.0), (60.0, 60.0)))
    predict_raster(
        model,
        meta,
        src,
        tmp_path / "one.tif",
        probabilities=tmp_path / "p1.tif",
        prob_dtype="float32",
        blocksize=16,
        window=32,
    )
    predict_raster(
        model,
        meta,
        src,
        tmp_path / "striped.tif",
        probabilities=tmp_path / "p2.tif",
        prob_dtype="float32",
        blocksize=16,
        memory_mb=0.01,
        window=32,
    )
    np.testing.assert_array_equal(_read(tmp_path / "one.tif"), _read(tmp_path / "striped.tif"))
    np.testing.assert_allclose(_read(tmp_path / "p1.tif"), _read(tmp_path / "p2.tif"), atol=1e-6)


# -- resume --------------------------------------------------------------------------------------------


def _package(tmp_path: Path, bands: int = 3) -> Path:
    from rasterlearn.models import create_model

    torch.manual_seed(0)
    model = create_model("unet", "resnet18", in_channels=bands, classes=2)
    meta = _meta(
        [f"b{i}" for i in range(bands)],
        2,
        chip=64,
        norm=Normalization("zscore", (120.0,) * bands, (50.0,) * bands),
    )
    meta = meta.model_copy(update={"arch": "unet", "encoder": "resnet18"})
    return save_package(model, meta, tmp_path / "pkg")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from rasterlearn.cli import main; sys.exit(main())", *args]


_JOB = """
import sys, time
import torch
from torch import nn
from rasterlearn.labels import ClassSchema
from rasterlearn.models import ModelMetadata
from rasterlearn.normalize import Normalization
from rasterlearn.predict import predict_raster

DELAY = 0.0

class Slow(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(2, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        time.sleep(DELAY)
        return self.b(torch.tanh(self.a(x)))


def run(src, out, prob, delay=0.0):
    schema = ClassSchema.infer([1, 2])
    meta = ModelMetadata(arch="x", encoder="x", in_channels=2, num_classes=3, bands=["a", "b"],
                         normalization=Normalization("zscore", (100.0, 100.0), (50.0, 50.0)).to_dict(),
                         schema=schema.to_dict(), chip_size=32)
    return predict_raster(Slow(), meta, src, out, probabilities=prob, overlap=0.5, batch_size=2, blocksize=16,
                          window=32, threads=1, io_threads=2)


if __name__ == "__main__":
    DELAY = float(sys.argv[4])
    run(*sys.argv[1:4])
"""


def test_resume_after_sigkill_is_identical(make_raster, tmp_path, caplog):
    """A job killed with SIGKILL mid-run and started again yields the same bytes as a clean run."""
    import importlib.util

    rng = np.random.default_rng(7)
    src = make_raster(rng.integers(0, 200, (2, 150, 90)).astype("uint8"), nodata=255, name="s.tif")
    job = tmp_path / "job.py"
    job.write_text(_JOB)
    spec = importlib.util.spec_from_file_location("rl_job", job)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    clean, cprob = tmp_path / "clean.tif", tmp_path / "cp.tif"
    mod.run(src, clean, cprob)
    out, prob = tmp_path / "out.tif", tmp_path / "op.tif"
    progress = tmp_path / ".out.tif.progress.json"
    cmd = [sys.executable, str(job), str(src), str(out), str(prob), "0.05"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (
            progress.exists()
            and len(json.loads(progress.read_text() or '{"done": []}').get("done", [])) >= 12
        ):
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not out.exists() and (tmp_path / ".out.tif.partial.tif").exists()
    done_before = len(json.loads(progress.read_text())["done"])
    assert 0 < done_before < 60  # 10 row blocks x 6 column blocks
    with caplog.at_level("INFO", logger="rasterlearn"):
        res = mod.run(src, out, prob)  # the same job again (in this process)
    assert "Resuming" in caplog.text and res.blocks_resumed >= 12
    assert out.read_bytes() == clean.read_bytes()
    assert prob.read_bytes() == cprob.read_bytes()
    assert not progress.exists() and not (tmp_path / ".out.tif.partial.tif").exists()


@pytest.mark.slow
def test_cli_resume_after_sigkill_is_identical(make_raster, tmp_path):
    rng = np.random.default_rng(5)
    src = make_raster(rng.integers(0, 255, (3, 160, 128)).astype("uint8"), name="scene.tif")
    pkg = _package(tmp_path)
    common = [
        str(pkg),
        str(src),
        "--overlap",
        "0.5",
        "--batch-size",
        "1",
        "--blocksize",
        "32",
        "--threads",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    clean = tmp_path / "clean.tif"
    r = subprocess.run(
        _cli("predict", *common, "-o", str(clean), "--probabilities", str(tmp_path / "cp.tif")),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    out, prob = tmp_path / "resumed.tif", tmp_path / "rp.tif"
    cmd = _cli("predict", *common, "-o", str(out), "--probabilities", str(prob))
    progress = tmp_path / ".resumed.tif.progress.json"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if progress.exists() and len(json.loads(progress.read_text() or '{"done": []}').get("done", [])) >= 4:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not out.exists() and progress.exists()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Resuming" in r.stderr
    assert out.read_bytes() == clean.read_bytes()
    np.testing.assert_array_equal(_read(prob), _read(tmp_path / "cp.tif"))
    assert not progress.exists()


def test_cli_predict_with_probabilities_and_polygons(make_raster, tmp_path):
    from rasterlearn.cli import main

    rng = np.random.default_rng(2)
    src = make_raster(rng.integers(0, 255, (3, 70, 50)).astype("uint8"), name="scene.tif", nodata=None)
    pkg = _package(tmp_path)
    out, prob, poly = tmp_path / "map.tif", tmp_path / "prob.tif", tmp_path / "poly.gpkg"
    rc = main(
        [
            "-q",
            "predict",
            str(pkg),
            str(src),
            "-o",
            str(out),
            "--overlap",
            "0.25",
            "--probabilities",
            str(prob),
            "--vectorize",
            str(poly),
            "--tta",
            "hflip",
            "--blocksize",
            "32",
            "--threads",
            "1",
        ]
    )
    assert rc == 0
    with rasterio.open(out) as ds, rasterio.open(prob) as dp:
        assert ds.shape == (70, 50) and ds.count == 1 and dp.count == 2
        tags = ds.tags()
        assert tags["model"].startswith("pkg@sha256:") and json.loads(tags["parameters"])["tta"] == ["hflip"]
        m = ds.read(1)
    import pyogrio

    gdf = pyogrio.read_dataframe(poly)
    assert set(gdf.class_code) == set(np.unique(m).tolist()) - {0}  # background left out
    assert gdf.pixels.sum() == (m != 0).sum()
    assert main(["-q", "predict", str(pkg), str(src), "-o", str(out)]) == 2  # exists without --overwrite


@pytest.mark.slow
@pytest.mark.realdata
def test_buildings_scene_b_with_model_trained_on_scene_a(shared_data, tmp_path):
    """Train briefly on scene A, map scene B (uint16 RGB, nodata 255), evaluate against buildings.gpkg."""
    from rasterlearn.chips import Scene, make_chips
    from rasterlearn.evaluate import evaluate_map
    from rasterlearn.models import model_spec
    from rasterlearn.predict import predict_package
    from rasterlearn.train import TrainConfig, train

    d = shared_data / "buildings_ma"
    chips = make_chips(
        [Scene(d / "scene_22978945.tif", d / "buildings.gpkg")],
        tmp_path / "chips",
        size=128,
        stride=96,
        attribute="class",
        val=0.2,
    )
    cfg = TrainConfig(
        arch="unet",
        encoder="tu-mobilenetv3_small_050",
        model_kwargs=model_spec("unet").tiny_kwargs,
        epochs=8,
        batch_size=8,
        num_workers=0,
        lr=3e-3,
        sample_chips=0,
        loss="ce+dice",
        class_weights="median",
        accelerator="cpu",
    )
    train(chips.out, tmp_path / "model", cfg)
    scene_b = d / "scene_23429155_uint16.tif"
    res = predict_package(
        tmp_path / "model", scene_b, tmp_path / "map.tif", overlap=0.25, probabilities=tmp_path / "prob.tif"
    )
    with rasterio.open(tmp_path / "map.tif") as m, rasterio.open(scene_b) as s:
        assert m.transform == s.transform and m.crs == s.crs and m.shape == s.shape
        cls = m.read(1)
        nodata_in = (s.read() == 255).any(axis=0)  # a pixel is nodata when any band is
    assert (cls[nodata_in] == 255).all() and set(np.unique(cls[~nodata_in]).tolist()) <= {0, 1}
    assert res.windows_predicted > 0
    metrics = evaluate_map(
        tmp_path / "map.tif", d / "buildings.gpkg", attribute="class", output=tmp_path / "metrics.json"
    )
    b = metrics["per_class"][metrics["classes"][1]]
    print(json.dumps({k: metrics[k] for k in ("overall_accuracy", "kappa", "mean_iou", "per_class")}))
    # an 8-epoch tiny model trained on one small scene is weak but clearly above chance on the other scene
    # (chance: kappa 0, building IoU ~0.1 for the ~11 % building pixels of scene B)
    assert b["iou"] is not None and b["iou"] > 0.12 and metrics["kappa"] > 0.1, metrics
    assert (tmp_path / "metrics.png").exists() and (tmp_path / "metrics.csv").exists()
