"""Distributed training: one package, report and metrics from rank 0; augmentation seeds differ by epoch/rank."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import torch
import yaml

from rasterlearn.data import EpochSampler
from rasterlearn.models import load_package, model_spec
from rasterlearn.train import load_train_config
from tests.chipdata import write_chip_dataset


def test_augmentation_seeds_differ_across_epochs_and_ranks():
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

    seen: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for epoch in (0, 1):
        for rank in (0, 1):
            # what Lightning wraps our sampler in under DDP; it forwards set_epoch to it
            wrapped = DistributedSamplerWrapper(
                EpochSampler(8, seed=3), num_replicas=2, rank=rank, shuffle=False
            )
            wrapped.set_epoch(epoch)
            seen[epoch, rank] = list(wrapped)
    for epoch in (0, 1):
        a, b = seen[epoch, 0], seen[epoch, 1]
        assert sorted(i for i, _ in a + b) == list(range(8))  # the ranks share out every chip once
        assert not {s for _, s in a} & {s for _, s in b}  # and draw different augmentations
    assert {s for _, s in seen[0, 0]}.isdisjoint({s for _, s in seen[1, 0]})  # a new epoch, new draws


def test_train_takes_strategy_and_num_nodes():
    cfg = load_train_config(None, strategy="ddp", num_nodes=2, devices=2)
    assert (cfg.strategy, cfg.num_nodes, cfg.devices) == ("ddp", 2, 2)


@pytest.mark.slow
def test_two_process_cpu_ddp_writes_one_package_that_loads(tmp_path):
    chips = write_chip_dataset(tmp_path / "chips", n_per_split=(4, 4, 0), bands=3, codes=(0, 1))
    cfg = tmp_path / "train.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "arch": "unet",
                "encoder": "tu-mobilenetv3_small_050",
                "model_kwargs": model_spec("unet").tiny_kwargs,
                "batch_size": 2,
                "sample_chips": 0,
                "baseline_samples": 2000,
            }
        )
    )
    out = tmp_path / "m"
    cmd = [sys.executable, "-m", "rasterlearn", "train", str(chips), "-o", str(out), "--config", str(cfg)]
    cmd += ["--devices", "2", "--accelerator", "cpu", "--strategy", "ddp", "--epochs", "1", "--workers", "0"]
    cmd += ["--progress", "none"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    # both processes trained (one per rank), only rank 0 fitted the baseline and wrote the outputs
    assert "Training unet" in log and log.count("Model package written") == 1, log[-3000:]
    assert log.count("vs baseline random forest") == 1, log[-3000:]
    assert log.count("Model package:") == 1  # the CLI summary is printed once
    pkg = load_package(out)
    with torch.no_grad():
        assert tuple(pkg.model(torch.zeros(1, 3, 32, 32)).shape) == (1, 2, 32, 32)
    for name in ("metrics.json", "report.html", "baseline.json", "train_config.yaml", "logs/metrics.csv"):
        assert (out / name).is_file(), name
    with (out / "logs" / "metrics.csv").open(newline="") as f:
        assert {int(float(r["epoch"])) for r in csv.DictReader(f) if r["epoch"]} == {0}
    assert not list(tmp_path.glob(".*.lock"))
