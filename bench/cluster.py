"""Benchmark: peak memory of reduce (PCA) + cluster (k-means) on generated 768-band feature rasters.

Memory must stay bounded by the fitting sample and one read window, not grow with the raster: the script
runs the same pipeline on rasters of increasing size and prints the peak resident memory of each run
(in a fresh subprocess, so runs do not share a high-water mark) next to the raster's size.

    .venv/bin/python bench/cluster.py                       # 192 and 384 px squares, 768 bands
    .venv/bin/python bench/cluster.py --sizes 256,512,1024   # bigger
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_features(path: Path, size: int, bands: int) -> None:
    import rasterio
    from affine import Affine

    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": bands,
        "dtype": "float32",
        "nodata": float("nan"),
        "crs": "EPSG:32633",
        "transform": Affine(16.0, 0, 500_000, 0, -16.0, 4e6),
        "tiled": True,
        "blockxsize": 128,
        "blockysize": 128,
        "interleave": "band",
        "bigtiff": "IF_SAFER",
    }
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (6, bands)).astype("float32")
    with rasterio.open(path, "w", **profile) as ds:
        for r in range(0, size, 128):
            h = min(128, size - r)
            lab = (np.arange(size)[None, :] // max(1, size // 6) + np.arange(r, r + h)[:, None] // 64) % 6
            block = centres[lab].transpose(2, 0, 1) + rng.normal(0, 0.3, (bands, h, size)).astype("float32")
            ds.write(block.astype("float32"), window=((r, r + h), (0, size)))


def run_one(path: str, out: str, sample: int) -> None:
    import resource

    from rasterlearn.features.cluster import cluster_raster
    from rasterlearn.features.reduce import reduce_raster

    t0 = time.perf_counter()
    reduce_raster(path, Path(out) / "pca.tif", components=3, sample_size=sample, resume=False)
    t1 = time.perf_counter()
    res = cluster_raster(path, Path(out) / "km.tif", clusters=6, sample_size=sample, resume=False)
    t2 = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"peak": peak, "reduce_s": t1 - t0, "cluster_s": t2 - t1, "k": res.clusters.k}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="192,384", help="raster sides in pixels, comma separated")
    ap.add_argument("--bands", type=int, default=768)
    ap.add_argument("--sample-size", type=int, default=20_000)
    ap.add_argument("--_run", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._run:
        run_one(args._run[0], args._run[1], int(args._run[2]))
        return
    work = Path(tempfile.mkdtemp(prefix="bench_cluster_"))
    print(f"768-band feature rasters, fitting sample {args.sample_size} pixels; PCA(3) then k-means(6)")
    for size in [int(s) for s in args.sizes.split(",")]:
        path = work / f"feat_{size}.tif"
        t0 = time.perf_counter()
        make_features(path, size, args.bands)
        gen = time.perf_counter() - t0
        out = work / f"out_{size}"
        out.mkdir()
        proc = subprocess.run(
            [sys.executable, __file__, "--_run", str(path), str(out), str(args.sample_size)],
            capture_output=True,
            text=True,
            check=True,
        )
        rec = json.loads(proc.stdout.strip().splitlines()[-1])
        raster_mb = size * size * args.bands * 4 / 2**20
        print(
            f"{size}x{size}x{args.bands}: raster {raster_mb:.0f} MiB (generated in {gen:.1f} s); "
            f"peak RSS {rec['peak'] / 2**20:.0f} MiB; reduce {rec['reduce_s']:.1f} s, cluster {rec['cluster_s']:.1f} s"
        )
        path.unlink()


if __name__ == "__main__":
    main()
