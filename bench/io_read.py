"""Windowed read throughput: rasterlearn's RasterReader vs. a raw rasterio loop on the same windows.

Generates a tiled 4-band uint8 GeoTIFF (default 8000 x 8000, nodata 0, DEFLATE like most real rasters;
``--compress none`` for an uncompressed one) and reads it in 512 x 512 windows (the last row/column of windows
extends past the raster, which our reader fills boundlessly and the raw loop crops). Two baselines: the raw
data-only loop, and the raw loop that also asks rasterio for the validity mask (``read_masks``), which is the
same work our reader does. Prints MB/s, the ratios ours/raw (goal >= 0.9) and peak RSS.

    uv run python bench/io_read.py [--size 8000] [--window 512] [--repeat 3] [--compress deflate|none]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window as RioWindow

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mb

from rasterlearn.grid import plan_tiles
from rasterlearn.io.raster import RasterReader


def make_raster(path: Path, size: int, compress: str) -> None:
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 4,
        "dtype": "uint8",
        "nodata": 0,
        "crs": "EPSG:32633",
        "transform": Affine(1, 0, 500000, 0, -1, 4000000),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "interleave": "pixel",
    }
    if compress != "none":
        profile["compress"] = compress
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as ds:
        for row in range(0, size, 512):
            h = min(512, size - row)
            # smooth-ish content (compressible like imagery), never 0 (= nodata)
            base = rng.integers(1, 255, size=(4, h, size // 8 + 1), dtype="uint8")
            ds.write(np.repeat(base, 8, axis=2)[:, :, :size], window=RioWindow(0, row, size, h))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=8000)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--compress", default="deflate", choices=["deflate", "zstd", "lzw", "none"])
    ap.add_argument(
        "--cache-mb",
        type=int,
        default=64,
        help="GDAL block cache (MB); smaller than the raster, as for real scenes, so each pass reads "
        "and decodes the file instead of copying from cache",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.tif"
        t0 = time.perf_counter()
        make_raster(path, args.size, args.compress)
        print(
            f"generated {args.size}x{args.size}x4 uint8 ({args.compress}) in {time.perf_counter() - t0:.1f} s"
        )
        with rasterio.Env(GDAL_CACHEMAX=args.cache_mb), RasterReader(path) as reader:
            windows = list(plan_tiles(reader.grid, args.window))
            nbytes = args.size * args.size * 4

            def ours() -> None:
                for w in windows:
                    block = reader.read(w)
                    assert block.valid.shape == w.shape

            def raw() -> None:
                ds = reader.dataset
                for w in windows:
                    c = w.clip(ds.height, ds.width)
                    ds.read(window=RioWindow(c.col_off, c.row_off, c.width, c.height))

            import warnings

            warnings.filterwarnings("ignore", category=rasterio.errors.NodataShadowWarning)

            def raw_masks() -> None:
                ds = reader.dataset
                for w in windows:
                    c = w.clip(ds.height, ds.width)
                    rw = RioWindow(c.col_off, c.row_off, c.width, c.height)
                    ds.read(window=rw)
                    ds.read_masks(window=rw)

            best = {"raw": float("inf"), "raw+masks": float("inf"), "ours": float("inf")}
            for _ in range(args.repeat):  # interleaved, so all see the same cache state
                for name, fn in (("raw", raw), ("raw+masks", raw_masks), ("ours", ours)):
                    t = time.perf_counter()
                    fn()
                    best[name] = min(best[name], time.perf_counter() - t)
            best_raw, best_ours = best["raw"], best["ours"]
    mbs_raw, mbs_ours = nbytes / best_raw / 1e6, nbytes / best_ours / 1e6
    print(f"windows: {len(windows)} of {args.window}x{args.window}")
    print(f"raw rasterio loop : {mbs_raw:8.1f} MB/s ({best_raw:.2f} s)")
    print(
        f"RasterReader.read : {mbs_ours:8.1f} MB/s ({best_ours:.2f} s, data + validity mask, boundless edges)"
    )
    print(f"raw + read_masks  : {nbytes / best['raw+masks'] / 1e6:8.1f} MB/s ({best['raw+masks']:.2f} s)")
    print(f"ratio ours/raw (data only)      : {best_raw / best_ours:.3f} (goal >= 0.9)")
    print(f"ratio ours/raw (data + masks)   : {best['raw+masks'] / best_ours:.3f}")
    print(f"peak RSS          : {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
