"""DataLoaders over chip datasets (training and evaluation)."""

from __future__ import annotations

from typing import Any

import torch

from rasterlearn.data import (
    ChipDataset,
    EpochSampler,
    default_workers,
)


def _auto_workers(requested: int | None, accelerator: str = "auto") -> int:
    """DataLoader workers: as requested, else :func:`rasterlearn.data.default_workers` for the device."""
    if requested is not None:
        return requested
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return default_workers("gpu" if gpu else "cpu")


def _loader(
    ds: ChipDataset, batch_size: int, workers: int, *, train: bool, seed: int, sampler: Any = None
) -> torch.utils.data.DataLoader:
    from torch.utils.data import DataLoader

    if sampler is None and train:
        sampler = EpochSampler(len(ds), shuffle=True, seed=seed)
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=workers,
        drop_last=train and len(ds) > batch_size,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
    )
