"""Benchmark: `embed` on a huge, mostly empty raster: peak memory growth, time and skipped tiles.

A sparse tiled GeoTIFF (N x N px, 3 bands uint8, nodata 0) holds one 300 x 300 px valid patch; a pooling
"backbone" (stride 16) keeps the model cost out of the figure. An ambient GDAL cache of 8 GB is set, as on
a large machine (GDAL's default is 5 % of RAM): embed must bound the cache itself.

    .venv/bin/python bench/embed_sparse.py            # N = 20000 (about 2 s)
    .venv/bin/python bench/embed_sparse.py --size 60000
    .venv/bin/python bench/embed_sparse.py --size 60000 --dim 384   # ViT-S-sized features: column stripes
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import rasterio
import torch
from affine import Affine
from rasterio.windows import Window
from torch import nn

from rasterlearn.embed import Backbone, embed


class _Pool(nn.Module):
    def __init__(self, dim: int = 3) -> None:
        super().__init__()
        self.dim = dim

    def forward_intermediates(self, x: torch.Tensor, indices=None, intermediates_only=True, **kw):
        f = nn.functional.avg_pool2d(x, 16)
        return [f.repeat(1, -(-self.dim // f.shape[1]), 1, 1)[:, : self.dim]]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=3, help="features per pixel (384 = a ViT-S)")
    ap.add_argument("--memory-mb", type=float, default=256.0, help="embed's memory budget")
    args = ap.parse_args()
    n = args.size
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "sparse.tif"
        prof = {
            "driver": "GTiff",
            "width": n,
            "height": n,
            "count": 3,
            "dtype": "uint8",
            "nodata": 0,
            "tiled": True,
            "blockxsize": 512,
            "blockysize": 512,
            "compress": "deflate",
            "sparse_ok": True,
            "crs": "EPSG:32633",
            "transform": Affine(1.0, 0, 500_000.0, 0, -1.0, 4_000_000.0),
        }
        with rasterio.open(src, "w", **prof) as ds:
            ds.write(np.full((3, 300, 300), 100, "uint8"), window=Window(1000, 1000, 300, 300))
        proc = psutil.Process()
        start = proc.memory_info().rss
        peak = [start]
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], proc.memory_info().rss)
                time.sleep(0.02)

        threading.Thread(target=watch, daemon=True).start()
        t0 = time.perf_counter()
        with rasterio.Env(GDAL_CACHEMAX=8 * 2**30):
            res = embed(
                src,
                "pool",
                backbone=Backbone(_Pool(args.dim), "pool", "cnn", 0, 16, args.dim, None),
                size=224,
                normalization="none",
                output=Path(tmp) / "f.tif",
                device="cpu",
                cache_dir=Path(tmp) / "sessions",
                memory_mb=args.memory_mb,
            )
        seconds = time.perf_counter() - t0
        done.set()
    print(
        f"{n} x {n} px, {args.dim} features: {res.tiles} tiles, {res.tiles_skipped} empty skipped, "
        f"{getattr(res, 'stripes', 1)} column stripes, buffers {getattr(res, 'peak_buffer_mb', 0):.0f} MiB "
        f"(memory_mb {args.memory_mb:g}), {seconds:.1f} s, "
        f"peak RSS growth {(peak[0] - start) / 2**20:.0f} MiB"
    )


if __name__ == "__main__":
    main()
