"""Training logs: CSV metrics survive a resume, MLflow works with the locked mlflow, rank-0-only outputs."""

from __future__ import annotations

import csv
import json

import pytest

from rasterlearn.models import model_spec
from rasterlearn.train import TrainConfig, train
from rasterlearn.train_loggers import is_global_zero, mlflow_tracking_uri
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
        tmp_path_factory.mktemp("lg") / "chips", n_per_split=(4, 2, 2), bands=3, codes=(0, 1)
    )


def _epochs(path) -> list[int]:
    with path.open(newline="") as f:
        return sorted({int(float(r["epoch"])) for r in csv.DictReader(f) if r["epoch"]})


def test_resume_keeps_earlier_epochs_in_metrics_csv(chips, tmp_path):
    out = tmp_path / "m"
    train(chips, out, TrainConfig(**{**TINY, "epochs": 1}))
    assert _epochs(out / "logs" / "metrics.csv") == [0]
    train(chips, out, TrainConfig(**{**TINY, "epochs": 2}), resume=True)
    path = out / "logs" / "metrics.csv"
    assert _epochs(path) == [0, 1]
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    val_epochs = [int(float(r["epoch"])) for r in rows if r.get("val/loss")]
    assert val_epochs == [0, 1]  # one validation row per epoch, none lost or duplicated


def test_mlflow_logger_writes_metrics_to_local_sqlite_store(chips, tmp_path, monkeypatch, capfd):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "m"
    cfg = TrainConfig(
        **{**TINY, "epochs": 1, "logger": "mlflow", "mlflow_experiment": "exp-a", "run_name": "tiny-1"}
    )
    capfd.readouterr()
    train(chips, out, cfg)
    err = capfd.readouterr().err  # no raw MLflow/Lightning/torch lines on the terminal
    for leak in ("Creating initial MLflow database", "not found. Creating it", "LeafSpec", "INFO mlflow"):
        assert leak not in err, err
    assert (out / "mlruns.db").exists() and (out / "model.json").exists()
    client = mlflow.tracking.MlflowClient(tracking_uri=mlflow_tracking_uri(out))
    exp = client.get_experiment_by_name("exp-a")
    assert exp is not None and exp.artifact_location.endswith("mlartifacts")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "tiny-1" and run.info.status == "FINISHED"
    metrics = json.loads((out / "metrics.json").read_text())
    assert "val/miou" in run.data.metrics and "train/loss_epoch" in run.data.metrics
    assert 0.0 <= run.data.metrics["val/oa"] <= 1.0 and metrics["pixels"] > 0


def test_mlflow_tracking_uri_honours_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert mlflow_tracking_uri(tmp_path) == f"sqlite:///{(tmp_path / 'mlruns.db').resolve().as_posix()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert mlflow_tracking_uri(tmp_path) == "http://tracking.example:5000"


def test_only_rank_zero_writes_outputs(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    assert is_global_zero() is False
    monkeypatch.setenv("RANK", "0")
    assert is_global_zero() is True
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert is_global_zero() is True


def test_non_zero_rank_writes_no_package_report_or_metrics(chips, tmp_path, monkeypatch):
    import lightning.pytorch as pl

    monkeypatch.setattr(pl.Trainer, "is_global_zero", property(lambda self: False))
    monkeypatch.setenv("RANK", "1")
    out = tmp_path / "m"
    res = train(chips, out, TrainConfig(**{**TINY, "epochs": 1}))
    assert res.files == {} and res.metrics["pixels"] > 0  # rank 1 still evaluates, but writes nothing
    for name in (
        "model.json",
        "model.safetensors",
        "metrics.json",
        "report.html",
        "train_config.yaml",
        "baseline.json",
    ):
        assert not (out / name).exists(), name
