"""Change models over multi-date stacks: model contract, seamless and resumable streaming prediction."""

from __future__ import annotations

import importlib.util
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
from affine import Affine
from torch import nn

from rasterlearn.errors import ConfigError, InputError, ModelError
from rasterlearn.io.stack import StackReader
from rasterlearn.labels import ClassSchema
from rasterlearn.models import ModelMetadata, create_model, load_package, save_package
from rasterlearn.models_temporal import SiameseChangeModel, temporal_model_kwargs
from rasterlearn.normalize import Normalization
from rasterlearn.predict import predict_raster
from tests.test_io_stack import T0

torch.manual_seed(0)


class TinyNet(nn.Module):
    """An smp-shaped net (encoder -> list of features, decoder, segmentation_head), receptive radius 2."""

    def __init__(self, bands: int, classes: int) -> None:
        super().__init__()
        self.encoder = _Enc(bands)
        self.decoder = _Dec(bands)
        self.segmentation_head = nn.Conv2d(8, classes, 3, padding=1)


class _Enc(nn.Module):
    def __init__(self, bands: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(bands, 8, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x, torch.tanh(self.conv(x))]


class _Dec(nn.Module):
    def __init__(self, bands: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(bands + 8, 8, 3, padding=1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return torch.tanh(self.conv(torch.cat(feats, dim=1))) * 3.0


def _meta(bands: list[str], chip: int = 32, timesteps: int = 2, temporal: str = "siamese") -> ModelMetadata:
    return ModelMetadata(
        arch="unet",
        encoder="resnet18",
        model_kwargs={"temporal": temporal, "timesteps": timesteps},
        in_channels=len(bands),
        num_classes=2,
        bands=bands,
        normalization=Normalization("zscore", (100.0,) * len(bands), (40.0,) * len(bands)).to_dict(),
        schema=ClassSchema.infer([0, 1]).to_dict(),
        chip_size=chip,
    )


def _dates(make_raster, h: int = 45, w: int = 61) -> tuple[Path, Path]:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 200, (2, h, w)).astype("uint8")
    b = rng.integers(0, 200, (2, h + 6, w + 4)).astype("uint8")
    a[:, :3, :5] = 255  # nodata in date 0 only
    pa = make_raster(a, name="a.tif", nodata=255, descriptions=["x", "y"])
    # date 1: a larger, pixel-aligned grid starting 2 rows / 3 cols earlier -> resampled (nearest)
    pb = make_raster(
        b, name="b.tif", nodata=255, transform=T0 @ Affine.translation(-3, -2), descriptions=["x", "y"]
    )
    return pa, pb


def test_create_model_builds_early_and_siamese_and_packages_them(tmp_path) -> None:
    x = torch.randn(2, 8, 64, 64)
    early = create_model("unet", "tu-mobilenetv3_small_050", 8, 2, temporal="early", timesteps=2)
    siam = create_model("unet", "tu-mobilenetv3_small_050", 8, 2, temporal="siamese", timesteps=2)
    assert isinstance(siam, SiameseChangeModel) and not isinstance(early, SiameseChangeModel)
    assert early(x).shape == siam.eval()(x).shape == (2, 2, 64, 64)
    # the shared encoder takes one date's 4 bands; swapping the dates leaves |f_a - f_b| unchanged
    assert siam.encoder(x[:, :4])[0].shape[1] == 4
    swapped = torch.cat([x[:, 4:], x[:, :4]], dim=1)
    torch.testing.assert_close(siam(x), siam(swapped))
    t3 = create_model("fpn", "tu-mobilenetv3_small_050", 9, 3, temporal="siamese", timesteps=3)
    assert t3(torch.randn(1, 9, 64, 64)).shape == (1, 3, 64, 64)
    meta = _meta([f"b{i}@t{t}" for t in range(2) for i in range(4)]).model_copy(
        update={"encoder": "tu-mobilenetv3_small_050"}
    )
    pkg = save_package(siam, meta, tmp_path / "pkg")
    loaded = load_package(pkg)
    torch.testing.assert_close(loaded.model(x), siam(x))
    with pytest.raises(ModelError, match="cannot be split into 2 dates"):
        create_model("unet", "tu-mobilenetv3_small_050", 7, 2, temporal="siamese", timesteps=2)
    with pytest.raises(ConfigError, match="needs multi-date chips"):
        temporal_model_kwargs({}, "siamese", 1)
    assert temporal_model_kwargs({}, None, 2) == {"temporal": "early", "timesteps": 2}


def _whole(
    model: nn.Module, norm: Normalization, data: np.ndarray, valid: np.ndarray, chip: int, stride: int
):
    h, w = data.shape[1:]
    ph = chip + -(-(h - chip) // stride) * stride if h > chip else chip
    pw = chip + -(-(w - chip) // stride) * stride if w > chip else chip
    x = np.full((data.shape[0], ph, pw), norm.fill, dtype="float32")
    x[:, :h, :w] = norm.apply(data, valid)
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(x)[None]), dim=1)[0, :, :h, :w].numpy()


def test_tiled_equals_whole_image_for_a_siamese_change_model(make_raster, tmp_path) -> None:
    from rasterlearn.evaluate import evaluate_map

    pa, pb = _dates(make_raster)
    model = SiameseChangeModel(TinyNet(2, 2), 2).eval()
    meta = _meta(["x@t0", "y@t0", "x@t1", "y@t1"])
    out, prob = tmp_path / "change.tif", tmp_path / "p.tif"
    res = predict_raster(
        model, meta, [pa, pb], out, probabilities=prob, prob_dtype="float32", overlap=0.5, blocksize=16
    )
    with StackReader([pa, pb]) as s:
        block = s.read()
    ref = _whole(model, meta.norm, block.data, block.valid, 32, 16)
    with rasterio.open(prob) as ds:
        got = ds.read()
        tags = ds.tags()
    assert got.shape == ref.shape == (2, 45, 61)
    v = block.valid
    assert not v[:3, :5].any() and np.isnan(got[:, ~v]).all()
    assert np.abs(got[:, v] - ref[:, v]).max() < 1e-4
    with rasterio.open(out) as ds:
        cmap = ds.read(1)
        assert ds.transform == T0 and ds.nodata == 255
        assert json.loads(tags["dates"]) == [str(pa), str(pb)]
    assert (cmap[v] == ref.argmax(0)[v]).mean() > 0.999 and (cmap[~v] == 255).all()
    assert res.windows_predicted == res.windows_total
    # evaluate works on the change map unchanged
    truth = make_raster((block.data[0] > 100).astype("uint8"), name="truth.tif", nodata=255)
    metrics = evaluate_map(out, truth)
    assert 0.0 <= metrics["mean_iou"] <= 1.0 and metrics["pixels"] == int(v.sum())
    # the wrong number of dates is refused, naming the rasters
    with pytest.raises(InputError, match=r"trained on 2 dates but 1 raster"):
        predict_raster(model, meta, pa, tmp_path / "x.tif")


_JOB = """
import sys, time
import torch
from torch import nn
from rasterlearn.labels import ClassSchema
from rasterlearn.models import ModelMetadata
from rasterlearn.models_temporal import SiameseChangeModel
from rasterlearn.normalize import Normalization
from rasterlearn.predict import predict_raster

DELAY = 0.0

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.encoder = Enc()
        self.decoder = nn.Identity()
        self.segmentation_head = Head()

class Enc(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 8, 3, padding=1)
    def forward(self, x):
        time.sleep(DELAY)
        return torch.tanh(self.a(x))

class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.b = nn.Conv2d(8, 2, 3, padding=1)
    def forward(self, f):
        return self.b(f)

class Fuse(SiameseChangeModel):
    def forward(self, x):
        b = x.shape[0]
        xs = x.reshape(b, 2, 2, *x.shape[2:]).transpose(0, 1).reshape(2 * b, 2, *x.shape[2:])
        f = self.net.encoder(xs).reshape(2, b, 8, *x.shape[2:])
        return self.net.segmentation_head((f[0] - f[1]).abs())


def run(a, b, out, prob):
    meta = ModelMetadata(arch="x", encoder="x", model_kwargs={"temporal": "siamese", "timesteps": 2},
                         in_channels=4, num_classes=2, bands=["x@t0", "y@t0", "x@t1", "y@t1"],
                         normalization=Normalization("zscore", (100.0,) * 4, (50.0,) * 4).to_dict(),
                         schema=ClassSchema.infer([0, 1]).to_dict(), chip_size=32)
    return predict_raster(Fuse(Net(), 2), meta, [a, b], out, probabilities=prob, overlap=0.5, batch_size=2,
                          blocksize=16, threads=1, io_threads=2)


if __name__ == "__main__":
    DELAY = float(sys.argv[5])
    run(*sys.argv[1:5])
"""


def test_change_prediction_resumes_after_sigkill_byte_identical(make_raster, tmp_path, caplog) -> None:
    rng = np.random.default_rng(7)
    a = make_raster(rng.integers(0, 200, (2, 128, 80)).astype("uint8"), nodata=255, name="a.tif")
    b = make_raster(rng.integers(0, 200, (2, 128, 80)).astype("uint8"), nodata=255, name="b.tif")
    job = tmp_path / "job.py"
    job.write_text(_JOB)
    spec = importlib.util.spec_from_file_location("rl_change_job", job)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    clean, cprob = tmp_path / "clean.tif", tmp_path / "cp.tif"
    mod.run(a, b, clean, cprob)
    out, prob = tmp_path / "out.tif", tmp_path / "op.tif"
    progress = tmp_path / ".out.tif.progress.json"
    cmd = [sys.executable, str(job), str(a), str(b), str(out), str(prob), "0.05"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (
            progress.exists()
            and len(json.loads(progress.read_text() or '{"done": []}').get("done", [])) >= 10
        ):
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not out.exists()
    done_before = len(json.loads(progress.read_text())["done"])
    assert 0 < done_before < 40  # 8 row blocks x 5 column blocks
    with caplog.at_level("INFO", logger="rasterlearn"):
        res = mod.run(a, b, out, prob)
    assert "Resuming" in caplog.text and res.blocks_resumed >= 10
    assert out.read_bytes() == clean.read_bytes()
    assert prob.read_bytes() == cprob.read_bytes()


def test_cli_predict_with_an_image_per_date(make_raster, tmp_path, capsys) -> None:
    from tests.test_cli import run_cli

    pa, pb = _dates(make_raster, 40, 40)
    torch.manual_seed(0)
    model = create_model("unet", "tu-mobilenetv3_small_050", 4, 2, temporal="siamese", timesteps=2)
    meta = _meta(["x@t0", "y@t0", "x@t1", "y@t1"], chip=32).model_copy(
        update={"encoder": "tu-mobilenetv3_small_050"}
    )
    pkg = save_package(model, meta, tmp_path / "pkg")
    out = tmp_path / "change.tif"
    code, _, err = run_cli(
        capsys, "predict", str(pkg), "--image", str(pa), "--image", str(pb), "-o", str(out)
    )
    assert code == 0, err
    with rasterio.open(out) as ds:
        assert ds.shape == (40, 40) and ds.transform == T0
        assert json.loads(ds.tags()["dates"]) == [str(pa), str(pb)]
    code, _, err = run_cli(
        capsys, "predict", str(pkg), str(pa), "--image", str(pb), "-o", str(tmp_path / "x.tif")
    )
    assert code == 2 and "not both" in err
    code, _, err = run_cli(capsys, "predict", str(pkg), str(pa), "-o", str(tmp_path / "y.tif"))
    assert code == 2 and "trained on 2 dates" in err


@pytest.mark.slow
def test_model_trained_on_the_synthetic_pair_finds_the_planted_changes(tmp_path) -> None:
    from rasterlearn.demo_change import run_change_demo

    res = run_change_demo(
        tmp_path / "demo", size=256, epochs=20, encoder="resnet18"
    )  # ~10 min on 2 CPU threads
    assert res.outputs["change map"].exists() and res.outputs["change polygons"].exists()
    assert res.scores["siamese model"]["iou"] > 0.6, res.scores


class _Misalignment(nn.Module):
    """Binary logit that is high wherever date 1's (row, col) bands differ from date 0's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = (x[:, 0:1] - x[:, 3:4]).abs() + (x[:, 1:2] - x[:, 4:5]).abs()
        return 20.0 * d - 5.0


def test_prediction_sees_every_date_aligned(make_raster, tmp_path) -> None:
    from tests.test_io_stack import date_image

    a = make_raster(date_image(37, 45, 0), name="a.tif", nodata=-1)
    # date 1 covers a larger, pixel-aligned extent: it is resampled onto date 0's grid
    b = make_raster(
        date_image(45, 50, 1, row0=-5, col0=-2),
        name="b.tif",
        nodata=-1,
        transform=T0 @ Affine.translation(-2, -5),
    )
    meta = ModelMetadata(
        arch="x",
        encoder="x",
        model_kwargs={"temporal": "early", "timesteps": 2},
        in_channels=6,
        num_classes=1,
        task="binary",
        bands=[f"{n}@t{t}" for t in range(2) for n in ("r", "c", "d")],
        normalization=Normalization.identity(6).to_dict(),
        schema=ClassSchema.binary().to_dict(),
        chip_size=16,
    )
    prob = tmp_path / "p.tif"
    predict_raster(
        _Misalignment(),
        meta,
        [a, b],
        tmp_path / "m.tif",
        probabilities=prob,
        prob_dtype="float32",
        tta="all",
        overlap=0.5,
    )
    with rasterio.open(prob) as ds:
        p = ds.read(1)
    assert p.shape == (37, 45) and np.nanmax(p) < 0.01  # no pixel sees a misaligned date
