"""Benchmark: end-to-end `embed` throughput vs a pure model forward pass over the same tiles, and peak memory.

End-to-end = statistics + windowed reading + normalization + forward + merge + block writing + COG.
Baseline   = the same number of tiles (same size, same batch size) through the same backbone, from tensors
already in memory. Ratio = baseline time / end-to-end time (goal >= 0.85).

    .venv/bin/python bench/embed.py                 # 1024 x 1024 px, 4 bands (a few minutes on 2 CPU cores)
    .venv/bin/python bench/embed.py --full          # the 8000 x 8000 px raster named in the issue
    .venv/bin/python bench/embed.py --device cuda --batch-size 64 --full
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import rasterio
import torch
from affine import Affine


def make_raster(path: Path, size: int, bands: int = 4) -> None:
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": bands,
        "dtype": "uint8",
        "nodata": 0,
        "crs": "EPSG:32633",
        "transform": Affine(1.0, 0, 500_000, 0, -1.0, 4_000_000),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "photometric": "minisblack",
    }
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as ds:
        for r in range(0, size, 512):
            h = min(512, size - r)
            yy, xx = np.mgrid[r : r + h, 0:size]
            base = (np.sin(xx / 37.0) + np.cos(yy / 53.0)) * 60 + 128
            block = np.stack([base + rng.normal(0, 10, base.shape) for _ in range(bands)])
            ds.write(np.clip(block, 1, 255).astype("uint8"), window=((r, r + h), (0, size)))


class PeakRSS:
    """Samples the process's resident memory every 20 ms."""

    def __init__(self) -> None:
        self.proc = psutil.Process(os.getpid())
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self) -> PeakRSS:
        self.peak = self.proc.memory_info().rss
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1024, help="raster side in pixels (default 1024)")
    ap.add_argument("--full", action="store_true", help="8000 x 8000 px, as in the issue")
    ap.add_argument("--model", default="vit_small_patch16_224")
    ap.add_argument("--tile", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: temporary)")
    ap.add_argument(
        "--min-seconds",
        type=float,
        default=30.0,
        help="repeat alternating end-to-end / pure-forward runs until end-to-end has run this long (default 30)",
    )
    args = ap.parse_args()
    size = 8000 if args.full else args.size

    from rasterlearn.embed import embed, load_backbone
    from rasterlearn.grid import Grid, plan_tiles

    torch.set_num_threads(max(1, torch.get_num_threads()))
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_embed_"))
    work.mkdir(parents=True, exist_ok=True)
    raster = work / f"bench_{size}.tif"
    if not raster.exists():
        t0 = time.perf_counter()
        make_raster(raster, size)
        print(f"generated {raster} ({size}x{size}x4 uint8) in {time.perf_counter() - t0:.1f} s")
    bb = load_backbone(args.model, in_chans=4, input_size=args.tile, pretrained=False)
    dev = torch.device(args.device)
    bb = bb.to(dev).eval()
    grid = Grid(size, size, Affine(1.0, 0, 500_000, 0, -1.0, 4_000_000), "EPSG:32633")
    n_tiles = len(plan_tiles(grid, args.tile))

    # warm-up (both paths share it)
    with torch.inference_mode():
        bb(torch.zeros(args.batch_size, 4, args.tile, args.tile, device=dev))

    def pure_forward() -> float:
        """The same number of tiles through the same backbone from in-memory tensors."""
        x = torch.randn(args.batch_size, 4, args.tile, args.tile)
        t0 = time.perf_counter()
        with torch.inference_mode():
            done = 0
            while done < n_tiles:
                b = min(args.batch_size, n_tiles - done)
                _ = bb(x[:b].to(dev, non_blocking=True)).float().cpu()
                done += b
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    # alternate pure forward and end-to-end runs until the end-to-end total reaches --min-seconds (one run at
    # 1024 px takes ~2 s: too short for a stable ratio on a shared machine); a last forward closes the series
    fwd_times = [pure_forward()]
    e2e_times: list[float] = []
    rss0 = psutil.Process().memory_info().rss
    with PeakRSS() as peak:
        while not e2e_times or sum(e2e_times) < args.min_seconds:
            t0 = time.perf_counter()
            res = embed(
                raster,
                args.model,
                backbone=bb,
                output=work / "features.tif",
                size=args.tile,
                device=args.device,
                batch_size=args.batch_size,
                workers=args.workers,
                resume=False,
                overwrite=True,
                cache_dir=work / "sessions",
            )
            e2e_times.append(time.perf_counter() - t0)
            fwd_times.append(pure_forward())
    runs = len(e2e_times)
    t_e2e = sum(e2e_times) / runs
    # each end-to-end run sits between two forward runs: weight the series ends by half
    t_fwd_before, t_fwd_after = fwd_times[0], fwd_times[-1]
    t_fwd = (sum(fwd_times) - (t_fwd_before + t_fwd_after) / 2) / runs

    g = res.grid
    feat_bytes = g.width * g.height * res.dim * 4
    print(
        f"raster {size}x{size} px, {n_tiles} tiles of {args.tile} px, model {args.model} ({res.dim} features), "
        f"device {args.device}, batch {args.batch_size}; {runs} alternating run(s), {sum(e2e_times):.1f} s "
        "end-to-end in total (mean per run below)"
    )
    print(
        f"end-to-end embed: {t_e2e:.2f} s ({n_tiles / t_e2e:.2f} tiles/s); model time inside: "
        f"{res.model_seconds:.2f} s"
    )
    print(
        f"pure forward:     {t_fwd:.2f} s ({n_tiles / t_fwd:.2f} tiles/s; before {t_fwd_before:.2f} s, "
        f"after {t_fwd_after:.2f} s)"
    )
    print(f"ratio (pure forward / end-to-end) = {t_fwd / t_e2e:.3f}   (goal >= 0.85)")
    print(
        f"peak RSS during embed: {peak.peak / 2**20:.0f} MiB (process before: {rss0 / 2**20:.0f} MiB, "
        f"+{(peak.peak - rss0) / 2**20:.0f} MiB); full feature raster would be {feat_bytes / 2**20:.0f} MiB"
    )


if __name__ == "__main__":
    main()
