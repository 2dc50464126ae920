"""Training throughput with the real chip loader vs. the same model fed in-memory random tensors.

Prints steps/s for both, their ratio (goal >= 0.9: the loader must not starve the model), samples/s and
peak memory. Default: a generated 4-band uint16 chip folder of 64 chips of 64 px, tiny U-Net, batch 8,
2 workers, a few minutes on 2 cores. ``--full`` uses 256 px chips, U-Net/resnet18, batch 16, 4 workers.
``--chips DIR`` benchmarks an existing chip folder instead.

    .venv/bin/python bench/train_loader.py [--full] [--chips DIR] [--workers N] [--steps N]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _steps_per_s(model, batches, steps: int, loss_fn, opt) -> float:
    it = iter(batches)
    model.train()
    for _ in range(2):  # warm-up (workers start, allocations)
        b = next(it)
        loss_fn(model(b["image"]), b["mask"]).backward()
        opt.step()
        opt.zero_grad()
    t = time.perf_counter()
    for _ in range(steps):
        b = next(it)
        loss = loss_fn(model(b["image"]), b["mask"])
        loss.backward()
        opt.step()
        opt.zero_grad()
    return steps / (time.perf_counter() - t)


def _cycle(loader):
    while True:
        yield from loader


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--chips", type=Path, default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    args = ap.parse_args()
    from rasterlearn.data import ChipDataset, augment_preset
    from rasterlearn.losses import build_loss
    from rasterlearn.models import create_model, model_spec, tiny_model
    from rasterlearn.train import _loader

    size = 256 if args.full else 64
    batch = args.batch or (16 if args.full else 8)
    workers = args.workers if args.workers is not None else (4 if args.full else 2)
    steps = args.steps or (30 if args.full else 40)
    tmp = None
    root = args.chips
    if root is None:
        from tests.chipdata import write_chip_dataset

        tmp = tempfile.TemporaryDirectory()
        root = write_chip_dataset(
            Path(tmp.name) / "chips", n_per_split=(64, 4, 0), size=size, bands=4, codes=(0, 1, 2)
        )
    ds = ChipDataset(root, "trn", augment=augment_preset("flips"))
    c, k = ds.in_channels, ds.schema.num_classes
    torch.manual_seed(0)
    model = create_model("unet", "resnet18", c, k) if args.full else tiny_model("unet", c, k)
    loss_fn = build_loss("ce", ignore_index=ds.ignore_index)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = _loader(ds, batch, workers, train=True, seed=0)
    real = _steps_per_s(model, _cycle(loader), steps, loss_fn, opt)
    h = w = ds[0]["image"].shape[-1]
    fake_batch = {"image": torch.randn(batch, c, h, w), "mask": torch.randint(0, k, (batch, h, w))}

    def fake():
        while True:
            yield fake_batch

    mem = _steps_per_s(model, fake(), steps, loss_fn, opt)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"chips: {len(ds)} x {c} bands x {h} px ({'generated' if tmp else root}); model "
        f"{'unet/resnet18' if args.full else 'unet/' + model_spec('unet').tiny_encoder}; batch {batch}, "
        f"{workers} workers, {steps} steps, torch threads {torch.get_num_threads()}, "
        f"{psutil.cpu_count()} CPUs"
    )
    print(f"chip loader : {real:.2f} steps/s = {real * batch:.1f} samples/s")
    print(f"in-memory   : {mem:.2f} steps/s = {mem * batch:.1f} samples/s")
    print(f"ratio loader/in-memory: {real / mem:.3f} (goal >= 0.9)")
    print(f"peak RSS: main {rss:.0f} MiB, largest worker {child:.0f} MiB")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
