"""Training on tiny generated chip folders (CPU): outputs, exact resume, epochs 0, CLI contract."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rasterlearn.errors import ConfigError, OutputError
from rasterlearn.models import load_package, model_spec
from rasterlearn.train import TrainConfig, evaluate_model, load_train_config, train
from tests.chipdata import write_chip_dataset

TINY = {
    "arch": "unet",
    "encoder": "tu-mobilenetv3_small_050",
    "model_kwargs": model_spec("unet").tiny_kwargs,
    "batch_size": 2,
    "num_workers": 0,
    "lr": 5e-3,
    "sample_chips": 0,
}


@pytest.fixture(scope="module")
def chips(tmp_path_factory):
    return write_chip_dataset(
        tmp_path_factory.mktemp("tr") / "chips", n_per_split=(4, 2, 2), bands=4, codes=(0, 1, 2)
    )


class _CrashError(Exception):
    pass


def _crash_at(epoch: int):
    import lightning.pytorch as pl

    class Crash(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == epoch:
                raise _CrashError(f"simulated crash at epoch {epoch}")

    return Crash()


def test_train_writes_package_metrics_and_report(chips, tmp_path):
    cfg = TrainConfig(
        **{
            **TINY,
            "epochs": 2,
            "loss": "ce+dice",
            "class_weights": "median",
            "sample_chips": 2,
            "freeze_encoder_epochs": 1,
        }
    )
    res = train(chips, tmp_path / "m", cfg)
    out = tmp_path / "m"
    for name in (
        "model.json",
        "model.safetensors",
        "metrics.json",
        "metrics.csv",
        "metrics_confusion.png",
        "history.csv",
        "training_curves.png",
        "samples.png",
        "report.html",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "train_config.yaml",
    ):
        assert (out / name).exists(), name
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["per_class"]) == {"background", "class_1", "class_2"}
    for pc in m["per_class"].values():
        assert set(pc) >= {
            "iou",
            "f1",
            "precision",
            "recall",
            "producers_accuracy",
            "users_accuracy",
            "support",
        }
    assert m["pixels"] == int(np.asarray(m["confusion_matrix"]).sum()) > 0
    assert len(res.history) == 2 and "val/iou_class_1" in res.history[0]
    pkg = load_package(out)
    assert pkg.meta.bands == ["band_1", "band_2", "band_3", "band_4"] and pkg.meta.in_channels == 4
    assert pkg.meta.class_schema.codes == [0, 1, 2] and pkg.meta.gsd == 10.0 and pkg.meta.chip_size == 32
    assert pkg.meta.normalization["method"] == "zscore"
    assert pkg.meta.training["epochs_trained"] == 2 and pkg.meta.training["class_weights"] is not None
    assert "torch" in pkg.meta.versions
    ev = evaluate_model(out, chips, split="tst", out=tmp_path / "ev" / "tst.json")
    assert (tmp_path / "ev" / "tst.csv").exists() and (tmp_path / "ev" / "tst_confusion.png").exists()
    assert ev["chips"] == 2 and ev["kappa"] is not None
    with pytest.raises(OutputError, match="--resume"):
        train(chips, out, cfg)


def test_resume_after_crash_matches_uninterrupted_run(chips, tmp_path):
    cfg = TrainConfig(**{**TINY, "epochs": 2, "augment": "full"})
    full = train(chips, tmp_path / "a", cfg)
    with pytest.raises(_CrashError):
        train(chips, tmp_path / "b", cfg, callbacks=[_crash_at(1)])
    assert (tmp_path / "b" / "checkpoints" / "last.ckpt").exists()
    resumed = train(chips, tmp_path / "b", cfg, resume=True)
    assert [h["epoch"] for h in resumed.history] == [0.0, 1.0]
    for ha, hb in zip(full.history, resumed.history, strict=True):
        assert ha["val/loss"] == pytest.approx(hb["val/loss"], rel=1e-5, abs=1e-6)
        assert ha["train/loss"] == pytest.approx(hb["train/loss"], rel=1e-5, abs=1e-6)
    a = load_package(tmp_path / "a").model.state_dict()
    b = load_package(tmp_path / "b").model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="lr"):
        train(chips, tmp_path / "b", cfg.model_copy(update={"lr": 0.1}), resume=True)


def test_epochs_zero_evaluates_given_model(chips, tmp_path):
    cfg = TrainConfig(**{**TINY, "epochs": 1})
    train(chips, tmp_path / "m", cfg)
    ref = json.loads((tmp_path / "m" / "metrics.json").read_text())
    res = train(chips, tmp_path / "e", cfg.model_copy(update={"epochs": 0, "weights": str(tmp_path / "m")}))
    assert res.epochs_trained == 0 and res.history == []
    assert res.metrics["confusion_matrix"] == ref["confusion_matrix"]
    assert (tmp_path / "e" / "metrics.json").exists() and not (
        tmp_path / "e" / "checkpoints" / "last.ckpt"
    ).exists()


@pytest.mark.slow
def test_cli_contract(chips, tmp_path):
    from rasterlearn.cli import main

    out = tmp_path / "model"
    rc = main(
        [
            "-q",
            "train",
            str(chips),
            "--arch",
            "unet",
            "--encoder",
            "resnet18",
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--out",
            str(out),
            "--workers",
            "0",
        ]
    )
    assert rc == 0 and (out / "model.json").exists() and (out / "model.safetensors").exists()
    assert load_package(out).meta.encoder == "resnet18"
    rc = main(
        ["-q", "evaluate-model", str(out), str(chips), "--split", "tst", "-o", str(tmp_path / "m.json")]
    )
    assert rc == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["split"] == "tst" and "kappa" in m and (tmp_path / "m.csv").exists()


def test_config_file_forbids_unknown_keys(tmp_path):
    p = tmp_path / "train.yaml"
    p.write_text("arch: fpn\nepochs: 3\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_train_config(p)
    p.write_text("arch: fpn\nepochs: 3\nloss: ce+dice\naugment:\n  p_rotate: 0.5\n")
    cfg = load_train_config(p, epochs=5, batch_size=None)
    assert cfg.arch == "fpn" and cfg.epochs == 5 and cfg.augment_config().p_rotate == 0.5
    with pytest.raises(ConfigError, match="choose from"):
        load_train_config(None, loss="hinge")


def test_binary_task_needs_two_classes(chips, tmp_path):
    with pytest.raises(ConfigError, match="exactly 2 classes"):
        train(chips, tmp_path / "x", TrainConfig(**{**TINY, "epochs": 1, "task": "binary"}))
