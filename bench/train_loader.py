"""Training throughput with the real chip loader vs. the same model fed in-memory random tensors.

Prints steps/s for both, their ratio (goal >= 0.9: the loader must not starve the model), samples/s and
peak memory, and states the batch size, DataLoader workers, torch threads, chip cache and CPU count.
The two feeds alternate in rounds (loader, in-memory, loader, ...) so that load from other processes on a
shared machine hits both alike; each figure sums its rounds.

Default: a generated 4-band uint16 chip folder of 64 chips of 64 px, tiny U-Net, batch 8, the worker
count :func:`rasterlearn.data.default_workers` picks for the device and machine; a few minutes on 2
cores. ``--full`` uses 256 px chips, U-Net/resnet18, batch 16. ``--chips DIR`` benchmarks an existing chip folder instead. ``--cache-mb 0``
turns the in-memory chip cache off (every sample read from its GeoTIFFs), to see what the cache buys.

    .venv/bin/python bench/train_loader.py [--full] [--chips DIR] [--workers N] [--steps N] [--cache-mb MB]
    .venv/bin/python bench/train_loader.py --full --device cuda --workers 4
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _step(
    model: torch.nn.Module, b: dict[str, Any], loss_fn: Any, opt: torch.optim.Optimizer, dev: torch.device
) -> None:
    x = b["image"].to(dev, non_blocking=True)
    y = b["mask"].to(dev, non_blocking=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    opt.step()
    opt.zero_grad()
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _cycle(loader: Any) -> Iterator[dict[str, Any]]:
    while True:
        yield from loader


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="256 px chips, U-Net/resnet18, batch 16")
    ap.add_argument("--chips", type=Path, default=None, help="an existing chip folder (trn split)")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: default_workers)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per feed")
    ap.add_argument("--rounds", type=int, default=8, help="alternating rounds the steps are split into")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--cache-mb", type=float, default=None, help="chip cache budget (0 = off)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (batches moved there every step)")
    args = ap.parse_args()
    from rasterlearn.data import DEFAULT_CACHE_MB, ChipDataset, augment_preset, default_workers
    from rasterlearn.losses import build_loss
    from rasterlearn.models import create_model, model_spec, tiny_model
    from rasterlearn.train import _loader

    if args.threads:
        torch.set_num_threads(args.threads)
    size = 256 if args.full else 64
    batch = args.batch or (16 if args.full else 8)
    # default: the count rasterlearn.data.default_workers picks for this device and machine
    accel = "gpu" if torch.device(args.device).type == "cuda" else "cpu"
    workers = args.workers if args.workers is not None else default_workers(accel)
    steps = args.steps or (24 if args.full else 80)
    rounds = max(1, min(args.rounds, steps))
    cache_mb = DEFAULT_CACHE_MB if args.cache_mb is None else args.cache_mb
    tmp = None
    root = args.chips
    if root is None:
        from tests.chipdata import write_chip_dataset

        tmp = tempfile.TemporaryDirectory()
        root = write_chip_dataset(
            Path(tmp.name) / "chips", n_per_split=(64, 4, 0), size=size, bands=4, codes=(0, 1, 2)
        )
    ds = ChipDataset(root, "trn", augment=augment_preset("flips"), cache_mb=cache_mb)
    c, k = ds.in_channels, ds.schema.num_classes
    h = w = ds.info.chip_size
    torch.manual_seed(0)
    model = create_model("unet", "resnet18", c, k) if args.full else tiny_model("unet", c, k)
    dev = torch.device(args.device)
    model = model.to(dev).train()
    loss_fn = build_loss("ce", ignore_index=ds.ignore_index)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = _loader(ds, batch, workers, train=True, seed=0)
    real_it = _cycle(loader)
    fake_batch = {"image": torch.randn(batch, c, h, w), "mask": torch.randint(0, k, (batch, h, w))}
    if dev.type == "cuda":  # the loader pins its batches on CUDA machines; so does the baseline
        fake_batch = {key: v.pin_memory() for key, v in fake_batch.items()}

    t0 = time.perf_counter()
    for _ in range(2):  # warm-up: workers start, first allocations
        _step(model, next(real_it), loss_fn, opt, dev)
        _step(model, fake_batch, loss_fn, opt, dev)
    warm = time.perf_counter() - t0
    t_real = t_fake = 0.0
    n_real = n_fake = 0
    round_ratios = []
    per_round = [steps // rounds + (1 if r < steps % rounds else 0) for r in range(rounds)]
    for n in per_round:
        t = time.perf_counter()
        for _ in range(n):
            _step(model, next(real_it), loss_fn, opt, dev)
        dt_real = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(n):
            _step(model, fake_batch, loss_fn, opt, dev)
        dt_fake = time.perf_counter() - t
        t_real += dt_real
        t_fake += dt_fake
        round_ratios.append(dt_fake / dt_real)
        n_real += n
        n_fake += n
    real, mem = n_real / t_real, n_fake / t_fake
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    cache = (
        f"chip cache on ({cache_mb:.0f} MB budget per process, split ~{ds.estimated_bytes() / 2**20:.1f} MB)"
        if ds.cache_enabled
        else f"chip cache off (cache_mb={cache_mb:g})"
    )
    print(
        f"chips: {len(ds)} x {c} bands x {h} px ({'generated' if tmp else root}); model "
        f"{'unet/resnet18' if args.full else 'unet/' + model_spec('unet').tiny_encoder}; batch {batch}, "
        f"{workers} workers, torch threads {torch.get_num_threads()}, {psutil.cpu_count()} CPUs, "
        f"device {dev}; {cache}"
    )
    print(f"{steps} timed steps per feed in {rounds} alternating rounds; warm-up {warm:.1f} s")
    print(f"chip loader : {real:.2f} steps/s = {real * batch:.1f} samples/s")
    print(f"in-memory   : {mem:.2f} steps/s = {mem * batch:.1f} samples/s")
    print(f"ratio loader/in-memory: {real / mem:.3f} (goal >= 0.9)")
    print(
        f"per-round ratios: median {statistics.median(round_ratios):.3f}, min {min(round_ratios):.3f}, "
        f"max {max(round_ratios):.3f} (each round's two feeds run back to back, so load from other "
        f"processes hits both alike)"
    )
    print(f"peak RSS: main {rss:.0f} MiB, largest worker {child:.0f} MiB")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
