"""train and classify hold their output's lock for the whole run (taken before anything is written)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

from rasterlearn.errors import OutputError
from rasterlearn.features.classify import FittedClassifier, classify_raster
from rasterlearn.io.paths import lock_path
from rasterlearn.models import model_spec
from rasterlearn.train import TrainConfig, train
from tests.chipdata import write_chip_dataset
from tests.conftest import write_tif

TINY = {
    "arch": "unet",
    "encoder": "tu-mobilenetv3_small_050",
    "model_kwargs": model_spec("unet").tiny_kwargs,
    "batch_size": 2,
    "num_workers": 0,
    "sample_chips": 0,
    "baseline": False,
    "epochs": 1,
}


def _foreign_lock(output: Path) -> dict[str, object]:
    """A lock held by a live process that is not this one (our parent)."""
    holder = {
        "pid": os.getppid(),
        "host": socket.gethostname(),
        "command": "rasterlearn other",
        "started": "t",
    }
    lock_path(output).write_text(json.dumps(holder))
    return holder


@pytest.fixture(scope="module")
def chips(tmp_path_factory):
    return write_chip_dataset(
        tmp_path_factory.mktemp("lk") / "chips", n_per_split=(2, 2, 0), bands=3, codes=(0, 1)
    )


def test_train_holds_the_lock_of_its_folder_while_it_runs(chips, tmp_path):
    out = tmp_path / "m"
    seen: list[dict[str, object]] = []

    def at_epoch_end(_n: int) -> None:
        seen.append(json.loads(lock_path(out).read_text()))

    train(chips, out, TrainConfig(**TINY), progress=at_epoch_end)
    assert seen and seen[0]["pid"] == os.getpid() and seen[0]["output"] == str(out)
    assert not lock_path(out).exists()  # released at the end
    assert (out / "model.json").exists()


def test_a_second_train_into_a_locked_folder_refuses_and_writes_nothing(chips, tmp_path, monkeypatch):
    import rasterlearn.train.run as mod  # train() checks its outputs there

    out = tmp_path / "m"
    out.mkdir()
    check = mod.check_outputs

    def race(inputs, outputs):  # another run takes the lock just after this one's early check
        check(inputs, outputs)
        _foreign_lock(out)

    monkeypatch.setattr(mod, "check_outputs", race)
    with pytest.raises(OutputError, match=rf"pid {os.getppid()} .*rasterlearn other"):
        train(chips, out, TrainConfig(**TINY))
    assert list(out.iterdir()) == []  # no config, checkpoint or log of a second run
    assert json.loads(lock_path(out).read_text())["pid"] == os.getppid()  # the holder's lock is kept


def test_train_releases_its_lock_when_it_fails(chips, tmp_path):
    out = tmp_path / "m"

    def boom(_n: int) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        train(chips, out, TrainConfig(**TINY), progress=boom)
    assert not lock_path(out).exists()


@pytest.fixture
def scene(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    img = write_tif(tmp_path / "img.tif", (rng.random((3, 32, 32)) * 1000).astype("uint16"))
    gdf = gpd.GeoDataFrame(
        {"cls": ["a", "b"]},
        geometry=[box(500_000, 3_999_700, 500_150, 3_999_850), box(500_160, 3_999_700, 500_300, 3_999_850)],
        crs="EPSG:32633",
    )
    gdf.to_file(tmp_path / "labels.gpkg")
    return {"img": img, "labels": tmp_path / "labels.gpkg"}


def test_classify_saves_its_model_folder_only_under_the_output_lock(scene, tmp_path, monkeypatch):
    out = tmp_path / "c.tif"
    held_at_save: list[bool] = []
    save = FittedClassifier.save

    def spy(self, folder):
        lock = lock_path(out)
        held_at_save.append(lock.exists() and json.loads(lock.read_text())["pid"] == os.getpid())
        return save(self, folder)

    monkeypatch.setattr(FittedClassifier, "save", spy)
    classify_raster(scene["img"], scene["labels"], out, attribute="cls", cv="none")
    assert held_at_save == [True]
    assert out.exists() and not lock_path(out).exists()


def test_a_second_classify_into_a_locked_output_leaves_no_model_folder(scene, tmp_path, monkeypatch):
    import rasterlearn.features.classify as mod

    out = tmp_path / "c.tif"
    check = mod.check_outputs

    def race(inputs, outputs):  # another run takes the lock just after this one's early check
        check(inputs, outputs)
        _foreign_lock(out)

    monkeypatch.setattr(mod, "check_outputs", race)
    with pytest.raises(OutputError, match="rasterlearn other"):
        classify_raster(scene["img"], scene["labels"], out, attribute="cls", cv="none")
    assert not out.exists() and not (tmp_path / "c.model").exists()
    assert not (tmp_path / "c.metrics.json").exists()
