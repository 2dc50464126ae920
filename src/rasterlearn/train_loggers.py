"""Experiment loggers for :func:`rasterlearn.train.train`: CSV (default), TensorBoard and MLflow.

* **CSV** writes ``OUT/logs/metrics.csv``. Lightning's CSV logger deletes an existing ``metrics.csv`` when
  it starts, so a resumed run would lose the epochs before the checkpoint; :func:`build_logger` keeps the
  rows logged before the checkpoint's step and appends the resumed epochs to them.
* **MLflow** honours ``MLFLOW_TRACKING_URI``; without it the run goes to a local SQLite store in the
  output folder (``sqlite:///OUT/mlruns.db``, artifacts under ``OUT/mlartifacts``), because MLflow's plain
  file store is in maintenance mode and refuses new runs in current releases. The experiment name and run
  name come from the training options (``mlflow_experiment``, ``run_name``).
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

import torch

from rasterlearn.errors import ConfigError

__all__ = ["build_logger", "is_global_zero", "mlflow_tracking_uri"]

log = logging.getLogger(__name__)


def is_global_zero() -> bool:
    """Whether this process is rank 0 of a (possibly distributed) run; ``True`` outside DDP."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return int(torch.distributed.get_rank()) == 0
    if os.environ.get("RANK"):  # torchrun, SLURM wrappers
        return int(os.environ["RANK"]) == 0
    # Lightning's own launcher sets LOCAL_RANK and NODE_RANK in the processes it starts
    return all(int(os.environ.get(k, "0") or 0) == 0 for k in ("LOCAL_RANK", "NODE_RANK"))


def mlflow_tracking_uri(out_dir: str | Path) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else a SQLite store ``OUT/mlruns.db`` in the output folder."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(Path(out_dir) / 'mlruns.db').resolve().as_posix()}"


def build_logger(
    kind: str,
    out_dir: Path,
    *,
    resume_ckpt: Path | None = None,
    experiment: str = "rasterlearn",
    run_name: str | None = None,
) -> Any:
    """The Lightning logger ``kind`` (csv, tensorboard, mlflow) writing under ``out_dir``."""
    if kind == "csv":
        return _csv_logger(out_dir, resume_ckpt)
    if kind == "tensorboard":
        try:
            from lightning.pytorch.loggers import TensorBoardLogger

            return TensorBoardLogger(str(out_dir), name="logs", version="")
        except ModuleNotFoundError as exc:
            raise ConfigError(
                "logger 'tensorboard' needs the tensorboard package (pip install 'rasterlearn[tensorboard]')"
            ) from exc
    if kind == "mlflow":
        return _mlflow_logger(out_dir, experiment, run_name)
    raise ConfigError(f"unknown logger {kind!r}; choose from csv, tensorboard, mlflow")


def _mlflow_logger(out_dir: Path, experiment: str, run_name: str | None) -> Any:
    try:
        import mlflow  # noqa: F401
        from lightning.pytorch.loggers import MLFlowLogger
    except ModuleNotFoundError as exc:
        raise ConfigError(
            "logger 'mlflow' needs the mlflow package (pip install 'rasterlearn[mlflow]')"
        ) from exc
    uri = mlflow_tracking_uri(out_dir)
    artifacts = None
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        artifacts = (Path(out_dir) / "mlartifacts").resolve().as_uri()
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    if not logging.getLogger("rasterlearn").isEnabledFor(logging.DEBUG):
        logging.getLogger("mlflow").setLevel(
            logging.WARNING
        )  # its own handler prints store set-up INFO lines
    if is_global_zero():
        _ensure_experiment(uri, experiment, artifacts)
    log.info("MLflow: experiment %r, run %r, tracking store %s", experiment, run_name or "(auto)", uri)
    return MLFlowLogger(
        experiment_name=experiment, run_name=run_name, tracking_uri=uri, artifact_location=artifacts
    )


def _ensure_experiment(uri: str, experiment: str, artifacts: str | None) -> None:
    """Create the MLflow experiment ourselves, with one log line (Lightning warns when it has to)."""
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=uri)
        if client.get_experiment_by_name(experiment) is None:
            client.create_experiment(experiment, artifact_location=artifacts)
            log.info("MLflow: created experiment %r in %s", experiment, uri)
    except Exception as exc:  # a remote store that is down: say so in one line
        raise ConfigError(
            f"MLflow tracking store {uri} is not usable ({exc}); check MLFLOW_TRACKING_URI or unset it "
            f"to log into OUT/mlruns.db"
        ) from exc


def _csv_logger(out_dir: Path, resume_ckpt: Path | None) -> Any:
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(str(out_dir), name="logs", version="")
    path = Path(out_dir) / "logs" / "metrics.csv"
    if resume_ckpt is None or not path.exists() or not is_global_zero():
        return logger
    step = int(torch.load(str(resume_ckpt), map_location="cpu", weights_only=True).get("global_step", 0))
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = sorted(reader.fieldnames or [])  # the writer keeps its columns sorted
        rows = [r for r in reader if _step(r) < step]
    writer = logger.experiment  # creating the writer deletes metrics.csv: write the kept rows back
    if rows:
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=header)
            w.writeheader()
            w.writerows(rows)
        writer.metrics_keys = header
    log.info("Resuming logs/metrics.csv: kept %d rows logged before step %d", len(rows), step)
    return logger


def _step(row: dict[str, str]) -> float:
    try:
        return float(row.get("step") or 0)
    except ValueError:
        return 0.0
