"""Contracts that hold across stages: one binary decision, one validity policy, resume on more epochs,
progress events that count up to their announced total."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.enums import ColorInterp
from torch import nn

from rasterlearn.errors import InputError
from rasterlearn.labels import ClassSchema
from rasterlearn.metrics import binary_foreground
from rasterlearn.models import ModelMetadata
from rasterlearn.normalize import Normalization

# -- one binary decision rule --------------------------------------------------------------------------

# foreground probabilities of the four columns blocks of the test image; 0.5 is exactly representable and
# sigmoid(logit(0.5)) == sigmoid(0) == 0.5 exactly, so those pixels sit exactly at the 0.5 threshold
PROBS = (0.2, 0.45, 0.5, 0.7)


class Logit(nn.Module):
    """sigmoid(output) is the input's first band: the image holds the foreground probability itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logit(x[:, :1].clamp(1e-6, 1 - 1e-6))


def _prob_image() -> np.ndarray:
    img = np.zeros((1, 16, 16), dtype="float32")
    for k, p in enumerate(PROBS):
        img[0, :, 4 * k : 4 * k + 4] = p
    return img


def _binary_meta(threshold: float) -> ModelMetadata:
    return ModelMetadata(
        arch="unet",
        encoder="resnet18",
        in_channels=1,
        num_classes=1,
        task="binary",
        bands=["p"],
        normalization=Normalization.identity(1).to_dict(),
        schema=ClassSchema.binary().to_dict(),
        chip_size=16,
        threshold=threshold,
    )


class _OneChip:
    """The two methods of ``ChipDataset`` that the report samples use, over one in-memory chip."""

    def __init__(self, img: np.ndarray) -> None:
        self.img = img

    def __len__(self) -> int:
        return 1

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        valid = np.ones(self.img.shape[1:], bool)
        return self.img, valid, np.ones(self.img.shape[1:], "uint8")

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": torch.from_numpy(self.img), "mask": torch.ones(self.img.shape[1:], dtype=torch.long)}


@pytest.mark.parametrize("threshold", [0.5, 0.4])
def test_binary_decision_agrees_in_train_metrics_predict_and_report(make_raster, tmp_path, threshold):
    from rasterlearn.predict import predict_raster
    from rasterlearn.train import SegmentationModule, TrainConfig, evaluate_loader
    from rasterlearn.train.evaluation import _sample_predictions

    img = _prob_image()
    expect = img[0] >= threshold  # p == threshold is foreground
    assert expect.sum() == 16 * 4 * (2 if threshold == 0.5 else 3)
    assert np.array_equal(binary_foreground(img[0], threshold), expect)
    assert torch.equal(binary_foreground(torch.from_numpy(img[0]), threshold), torch.from_numpy(expect))

    # training: the LightningModule's decision (validation metrics) and evaluate_loader (test metrics)
    config = TrainConfig(task="binary", threshold=threshold, loss="bce")
    module = SegmentationModule(Logit(), config, ["bg", "fg"])
    logits = Logit()(torch.from_numpy(img)[None])
    assert np.array_equal(module.predict_classes(logits)[0].numpy() == 1, expect)
    truth = torch.ones((1, 16, 16), dtype=torch.long)  # all foreground: cm[1, 1] counts foreground calls
    m = evaluate_loader(
        Logit(),
        [{"image": torch.from_numpy(img)[None], "mask": truth}],
        ["bg", "fg"],
        binary=True,
        threshold=threshold,
    )
    assert m["confusion_matrix"] == [[0, 0], [int((~expect).sum()), int(expect.sum())]]

    # the training report's sample panels
    (sample,) = _sample_predictions(Logit(), _OneChip(img), 1, binary=True, threshold=threshold)  # type: ignore[arg-type]
    assert np.array_equal(sample["pred"] == 1, expect)

    # prediction
    src = make_raster(img, name="p.tif")
    out = tmp_path / "map.tif"
    predict_raster(Logit(), _binary_meta(threshold), src, out, blocksize=16, device="cpu")
    with rasterio.open(out) as ds:
        got = ds.read(1)
    assert np.array_equal(got == 1, expect) and set(np.unique(got)) <= {0, 1}


# -- one validity policy -------------------------------------------------------------------------------
H = W = 32
T = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_000_000.0)


def _invalid_pattern() -> np.ndarray:
    """Where the test rasters are invalid: a corner block, a stripe and scattered single pixels."""
    bad = np.zeros((H, W), bool)
    bad[:5, :7] = True
    bad[20, :] = True
    bad[np.arange(0, H, 3), np.arange(0, W, 3)[: len(np.arange(0, H, 3))]] = True
    return bad


def _write(path: Path, data: np.ndarray, *, mask: np.ndarray | None = None, **profile: Any) -> Path:
    prof = {
        "driver": "GTiff",
        "width": W,
        "height": H,
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": "EPSG:32633",
        "transform": T,
        **profile,
    }
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **prof) as ds:
        ds.write(data)
        if mask is not None:
            ds.write_mask(mask)
    return path


def _validity_case(case: str, tmp_path: Path) -> tuple[Path, float | None]:
    """A 2-band raster invalid at :func:`_invalid_pattern` through ``case``; and a user nodata value."""
    bad = _invalid_pattern()
    rng = np.random.default_rng(3)
    data = rng.integers(1, 200, (2, H, W)).astype("uint16")
    path = tmp_path / f"{case}.tif"
    if case == "alpha":
        alpha = np.where(bad, 0, 255).astype("uint8")
        rgb = data.astype("uint8")
        # two data bands + alpha: declare band 3 alpha through its colour interpretation
        _write(path, np.concatenate([rgb, alpha[None]]))
        with rasterio.open(path, "r+") as ds:
            ds.colorinterp = [ColorInterp.gray, ColorInterp.undefined, ColorInterp.alpha]
        return path, None
    if case == "internal-mask":
        data[:, bad] = 0  # the masked pixels hold an ordinary value: only the mask says they are invalid
        return _write(path, data, mask=np.where(bad, 0, 255).astype("uint8")), None
    if case == "nodata-and-mask":
        # a declared nodata that the masked pixels do not hold: only the internal mask says they are invalid
        return _write(path, data, nodata=0, mask=np.where(bad, 0, 255).astype("uint8")), None
    if case == "nan":
        f = data.astype("float32")
        f[0, bad] = np.nan  # one band is enough
        f[1, 0, W - 1] = np.inf
        return _write(path, f), None
    if case == "declared-nodata":
        data[1, bad] = 0  # nodata in one band only: the pixel is invalid
        return _write(path, data, nodata=0), None
    if case == "user-nodata":
        data[0, bad] = 999  # no nodata declared; the user says 999 is nodata
        return _write(path, data), 999.0
    raise AssertionError(case)


def _expected_invalid(case: str) -> np.ndarray:
    bad = _invalid_pattern()
    if case == "nan":
        bad = bad.copy()
        bad[0, W - 1] = True  # +inf is not a valid value either
    return bad


VALIDITY_CASES = ["alpha", "internal-mask", "nodata-and-mask", "nan", "declared-nodata", "user-nodata"]


@pytest.mark.parametrize("case", VALIDITY_CASES)
def test_validity_policy_is_the_same_in_chips_dataset_and_predict(case, tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    from rasterlearn.chips import Scene, make_chips
    from rasterlearn.data import ChipDataset
    from rasterlearn.io.raster import RasterReader
    from rasterlearn.predict import predict_raster

    src, user_nodata = _validity_case(case, tmp_path)
    expect = _expected_invalid(case)
    with RasterReader(src, nodata=user_nodata) as r:  # the one policy
        assert r.count == 2
        assert np.array_equal(~r.read().valid, expect)

    # chips: one 32 px chip over the whole raster, every pixel labelled 1 where the image is valid
    labels = tmp_path / "labels.gpkg"
    gpd.GeoDataFrame(
        geometry=[box(500_000.0, 4_000_000.0 - 10.0 * H, 500_000.0 + 10.0 * W, 4_000_000.0)], crs="EPSG:32633"
    ).to_file(labels)
    res = make_chips([Scene(src, labels, nodata=user_nodata)], tmp_path / "chips", size=32, val=0, test=0)
    (chip,) = sorted((res.out / "masks").glob("*.tif"))
    with rasterio.open(chip) as ds:
        mask, ignore = ds.read(1), ds.nodata
    assert np.array_equal(mask == ignore, expect)

    # the training dataset over those chips
    ds_ = ChipDataset(res.out, None, cache_mb=0)
    _, valid, _ = ds_.read(0)
    assert np.array_equal(~valid, expect)
    item = ds_[0]
    assert np.array_equal(item["mask"].numpy() == ds_.ignore_index, expect)

    # predict
    meta = ModelMetadata(
        arch="unet",
        encoder="resnet18",
        in_channels=2,
        num_classes=2,
        bands=["b1", "b2"],
        normalization=Normalization.identity(2).to_dict(),
        schema=ClassSchema.binary().to_dict(),
        chip_size=32,
    )
    out = tmp_path / "map.tif"
    predict_raster(_Const(), meta, src, out, nodata=user_nodata, blocksize=16, device="cpu")
    with rasterio.open(out) as ds:
        pred, nd = ds.read(1), ds.nodata
    assert np.array_equal(pred == nd, expect)
    assert (pred[~expect] == 1).all()


class _Const(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros((x.shape[0], 2, *x.shape[2:]))
        out[:, 1] = 5.0
        return out


# -- run YAML: more epochs resume the training ---------------------------------------------------------


def _tiny_scene(tmp_path: Path) -> Any:
    """What ``tests.test_pipeline.tiny_config`` needs of a scene: an image, labels, a schema file."""
    from types import SimpleNamespace

    import geopandas as gpd
    import yaml
    from shapely.geometry import box

    from tests.conftest import write_tif

    image = write_tif(
        tmp_path / "img.tif", np.random.default_rng(0).integers(0, 255, (3, 64, 64)).astype("uint8")
    )
    x0, y1 = 500_000.0, 4_000_000.0
    labels = tmp_path / "labels.gpkg"
    gpd.GeoDataFrame(
        {"class": [1, 2]},
        geometry=[box(x0, y1 - 160, x0 + 160, y1), box(x0 + 160, y1 - 320, x0 + 320, y1 - 160)],
        crs="EPSG:32633",
    ).to_file(labels)
    schema = tmp_path / "schema.yaml"
    schema.write_text(yaml.safe_dump(ClassSchema.infer([0, 1, 2]).to_dict()))
    return SimpleNamespace(image=image, labels=labels, schema_path=schema)


def test_epochs_in_a_run_config_resume_or_restart_the_train_stage(tmp_path, monkeypatch):
    """The pipeline's decision alone, with a stand-in for ``train`` (the real run: the slow test below)."""
    from types import SimpleNamespace

    import rasterlearn.train
    from rasterlearn.pipeline import load_config, run_pipeline
    from tests.test_pipeline import tiny_config

    calls: list[tuple[bool, bool, int]] = []

    def fake_train(dataset, folder, config, *, resume, overwrite, progress):
        calls.append((resume, overwrite, config.epochs))
        (folder / "checkpoints").mkdir(exist_ok=True)
        torch.save({"epochs": config.epochs}, folder / "checkpoints" / "last.ckpt")
        return SimpleNamespace(metrics={}, epochs_trained=config.epochs, files={})

    monkeypatch.setattr(rasterlearn.train, "train", fake_train)
    scene = _tiny_scene(tmp_path)
    out = tmp_path / "run"

    def run(epochs: int, **over: Any):
        cfg = tiny_config(scene, out, train={"epochs": epochs, **over}, report={"enabled": False})
        return run_pipeline(load_config(cfg, base_dir=tmp_path), stages=["train"])

    first = run(3)
    assert calls == [(False, True, 3)]
    (out / "train" / "keep.txt").write_text("kept")
    more = run(5)
    assert more.ran == ["train"] and calls[-1] == (True, False, 5)  # resumed, from the checkpoint
    assert more.stages["train"].hash == first.stages["train"].hash and more.stages["train"].runs == 2
    assert (out / "train" / "keep.txt").exists()
    assert run(5).skipped == ["chips", "train"] and len(calls) == 2
    fewer = run(2)
    assert (
        fewer.ran == ["train"] and calls[-1] == (False, True, 2) and not (out / "train" / "keep.txt").exists()
    )
    other = run(2, batch_size=2)  # any other training option still makes the stage stale
    assert other.ran == ["train"] and other.stages["train"].hash != fewer.stages["train"].hash


@pytest.mark.slow
def test_raising_epochs_in_a_run_config_resumes_training(tmp_path):
    import json

    from rasterlearn.pipeline import load_config, run_pipeline
    from rasterlearn.synthetic import make_synthetic_scene
    from tests.test_pipeline import tiny_config

    scene = make_synthetic_scene(tmp_path / "scene", size=64, seed=1)
    out = tmp_path / "run"

    def run(epochs: int):
        cfg = tiny_config(scene, out, train={"epochs": epochs})
        return run_pipeline(load_config(cfg, base_dir=tmp_path), stages=["train"])

    first = run(1)
    assert first.ran == ["chips", "train"]
    (out / "train" / "keep.txt").write_text("the folder is not cleared")
    more = run(2)
    assert more.skipped == ["chips"] and more.ran == ["train"]
    tr = more.stages["train"]
    assert tr.hash == first.stages["train"].hash and tr.runs == 2 and tr.params["epochs"] == 2
    assert (out / "train" / "keep.txt").exists()
    history = (out / "train" / "history.csv").read_text().strip().splitlines()
    assert len(history) == 1 + 2  # epoch 1 kept from the first run, epoch 2 trained on top of it
    assert json.loads((out / "train" / "stage.json").read_text())["status"] == "complete"
    assert run(2).skipped == ["chips", "train"]  # same epochs again: up to date
    fewer = run(1)  # fewer epochs than trained: the training starts again
    assert fewer.ran == ["train"] and fewer.stages["train"].runs == 1
    assert not (out / "train" / "keep.txt").exists()


# -- progress events count up to the announced total ---------------------------------------------------


def _json_events(events: list[Any]) -> list[dict[str, Any]]:
    """The events as ``--progress json`` writes them: one JSON object per line, parsed back."""
    import json

    lines = [json.dumps(e.to_dict()) for e in events]
    return [json.loads(line) for line in lines]


def _check_counts(events: list[dict[str, Any]], expected_total: int) -> None:
    prog = [e for e in events if e["event"] == "progress"]
    assert events[0]["event"] == "started" and all(e["v"] == 1 for e in events) and prog
    done = [e["done"] for e in prog]
    assert done == sorted(done) and all(e["total"] == expected_total for e in prog if e["done"])
    assert prog[-1]["done"] == prog[-1]["total"] == expected_total and prog[-1]["fraction"] == 1.0


@pytest.mark.parametrize("aoi", [None, "polygon"], ids=["whole", "aoi"])
def test_predict_events_count_up_to_the_announced_total(make_raster, tmp_path, aoi):
    import geopandas as gpd
    from shapely.geometry import Polygon

    from rasterlearn.batch import predict_scenes
    from rasterlearn.engine.events import Monitor
    from rasterlearn.predict import predict_raster
    from tests.test_predict import FCN, _meta, _package

    rng = np.random.default_rng(4)
    srcs = [
        make_raster(rng.integers(0, 255, (3, 40, 56)).astype("uint8"), name=f"s{i}.tif") for i in range(2)
    ]
    area, expected = None, 40 * 56
    if aoi:  # a triangle whose bounding window is rows 8..32, cols 4..44 of each scene
        x0, y0 = 500_000.0, 4_000_000.0
        tri = Polygon([(x0 + 40, y0 - 80), (x0 + 440, y0 - 80), (x0 + 40, y0 - 320)])
        area = tmp_path / "aoi.gpkg"
        gpd.GeoDataFrame(geometry=[tri], crs="EPSG:32633").to_file(area)
        expected = 24 * 40

    events: list[Any] = []
    mon = Monitor("predict", events.append, min_interval=0.0)
    meta = _meta(["a", "b", "c"], 2, chip=16)
    kw = dict(window=16, blocksize=16, threads=1, io_threads=1, aoi=area)
    predict_raster(FCN(3, 2), meta, srcs[0], tmp_path / "one.tif", progress=mon.phase("predict"), **kw)
    _check_counts(_json_events(events), expected)

    events.clear()
    mon = Monitor("predict", events.append, min_interval=0.0)
    pkg = _package(tmp_path)
    kw.pop("window")
    predict_scenes(pkg, [str(s) for s in srcs], tmp_path / "maps", progress=mon.phase("predict"), **kw)
    _check_counts(_json_events(events), 2 * expected)


def test_a_chips_nodata_value_is_part_of_the_dataset_identity(tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    from rasterlearn.chips import Scene, make_chips

    src, _ = _validity_case("user-nodata", tmp_path)
    labels = tmp_path / "labels.gpkg"
    gpd.GeoDataFrame(
        geometry=[box(500_000.0, 3_999_680.0, 500_320.0, 4_000_000.0)], crs="EPSG:32633"
    ).to_file(labels)
    a = make_chips([Scene(src, labels)], tmp_path / "chips", size=32, val=0, test=0)
    b = make_chips([Scene(src, labels, nodata=999)], tmp_path / "chips", size=32, val=0, test=0)
    assert a.out != b.out  # another nodata: another dataset, not a resume of the first
    with pytest.raises(InputError, match="single-date"):
        Scene(src, labels, nodata=0, later_images=[src])
