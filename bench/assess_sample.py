"""Benchmark: time and peak RSS of `draw_sample` (stratified, 1,000 points) and `assess_sample` on a large vs a
small generated class map. Each size runs in its own process (peak RSS is per process). Memory must not
grow with the map (goal: large / small peak RSS <= 1.2).

    .venv/bin/python bench/assess_sample.py            # 8000 x 8000 vs 1000 x 1000 px
    .venv/bin/python bench/assess_sample.py --large 16000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def make_map(path: Path, size: int) -> Path:
    """A tiled, DEFLATE uint8 map of 5 classes in horizontal bands of varying width, nodata 0 corner."""
    import numpy as np
    import rasterio
    from affine import Affine

    prof = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 1,
        "dtype": "uint8",
        "nodata": 0,
        "crs": "EPSG:32633",
        "transform": Affine(10, 0, 500_000, 0, -10, 5_000_000),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
    }
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **prof) as ds:
        for r0 in range(0, size, 512):
            h = min(512, size - r0)
            rows = np.arange(r0, r0 + h)[:, None]
            block = (1 + (rows * 7 // size + np.arange(size)[None, :] * 3 // size) % 5).astype("uint8")
            noise = rng.random(block.shape) < 0.1
            block[noise] = rng.integers(1, 6, int(noise.sum()))
            if r0 == 0:
                block[: min(h, size // 8), : size // 8] = 0
            ds.write(block, 1, window=rasterio.windows.Window(0, r0, size, h))
    return path


def child(size: int, work: Path) -> None:
    import geopandas as gpd
    import pyogrio
    from _common import peak_rss_mb

    from rasterlearn.assess import assess_sample, draw_sample

    path = work / f"map_{size}.tif"  # written by another process, so it does not count here
    base = peak_rss_mb()
    t0 = time.perf_counter()
    res = draw_sample(path, work / f"s_{size}.gpkg", n=1000, min_per_class=50, seed=0)
    t_sample = time.perf_counter() - t0
    peak_sample = peak_rss_mb()
    g = gpd.read_file(res.path, layer="samples")
    g["reference"] = g["map_class"]  # perfect reference: the timing does not depend on the labels
    pyogrio.write_dataframe(g, res.path, layer="samples", layer_options={"OVERWRITE": "YES"})
    t0 = time.perf_counter()
    out = assess_sample(path, res.path, output=work / f"a_{size}.json")
    t_assess = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "size": size,
                "pixels": size * size,
                "points": res.n,
                "sample_s": round(t_sample, 2),
                "assess_s": round(t_assess, 2),
                "mpx_per_s_sample": round(2 * size * size / t_sample / 1e6, 1),
                "rss_before_mb": round(base),
                "peak_rss_sample_mb": round(peak_sample),
                "peak_rss_mb": round(peak_rss_mb()),
                "oa": out["overall_accuracy"]["estimate"],
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--large", type=int, default=8000)
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--child", type=int)
    ap.add_argument("--make", type=int)
    ap.add_argument("--work")
    args = ap.parse_args()
    if args.make:
        make_map(Path(args.work) / f"map_{args.make}.tif", args.make)
        return
    if args.child:
        child(args.child, Path(args.work))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (args.small, args.large):
            subprocess.run([sys.executable, __file__, "--make", str(size), "--work", tmp], check=True)
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(size), "--work", tmp],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(rows[-1])
    print(f"peak RSS large/small: {rows[1]['peak_rss_mb'] / rows[0]['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
