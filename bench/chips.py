"""Benchmark: chips/s of `rasterlearn chips` vs a raw rasterio loop doing the same reads and writes.

The raw loop reads the same windows, rasterizes the polygons of each window (spatial-index selection)
and writes the same image + mask GeoTIFFs (same profile, DEFLATE), with no filters, splits, statistics,
manifest or resume bookkeeping. Each side runs in its own process, which reports its peak RSS.

    .venv/bin/python bench/chips.py            # 3000 x 3000 px, ~3000 polygons (a few minutes on 2 cores)
    .venv/bin/python bench/chips.py --full     # 8000 x 8000 px, ~20000 polygons (the issue's size)

Prints: chips/s of both, the ratio (goal >= 0.8) and the peak RSS of `rasterlearn chips` at half and at
full scene size (it must not grow with the scene).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_scene(folder: Path, size: int, n_polys: int, seed: int = 0) -> tuple[Path, Path]:
    import geopandas as gpd
    import rasterio
    from affine import Affine
    from rasterio.windows import Window
    from shapely.geometry import Point

    rng = np.random.default_rng(seed)
    raster = folder / f"scene_{size}.tif"
    t = Affine(0.5, 0, 300_000.0, 0, -0.5, 5_000_000.0)
    prof = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:32618",
        "transform": t,
        "nodata": 0,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
    }
    with rasterio.open(raster, "w", **prof) as ds:
        for r in range(0, size, 512):
            h = min(512, size - r)
            block = rng.integers(1, 255, (3, h, size), dtype="uint8")
            ds.write(block, window=Window(0, r, size, h))
    xs = rng.uniform(300_000, 300_000 + 0.5 * size, n_polys)
    ys = rng.uniform(5_000_000 - 0.5 * size, 5_000_000, n_polys)
    radius = rng.uniform(2, 12, n_polys)
    geoms = [Point(x, y).buffer(r, 4) for x, y, r in zip(xs, ys, radius, strict=True)]
    vec = folder / f"labels_{size}.gpkg"
    gpd.GeoDataFrame({"cls": rng.integers(1, 4, n_polys)}, geometry=geoms, crs="EPSG:32618").to_file(vec)
    return raster, vec


def run_ours(raster: Path, vec: Path, out: Path, chip: int, stride: int) -> dict:
    from rasterlearn.cli import main

    t0 = time.perf_counter()
    rc = main(
        [
            "-q",
            "chips",
            "--raster",
            str(raster),
            "--labels",
            str(vec),
            "--attribute",
            "cls",
            "--size",
            str(chip),
            "--stride",
            str(stride),
            "--out",
            str(out),
        ]
    )
    dt = time.perf_counter() - t0
    assert rc == 0
    n = sum(1 for _ in (out / "images").glob("*.tif"))
    return {"chips": n, "seconds": dt}


def run_raw(raster: Path, vec: Path, out: Path, chip: int, stride: int) -> dict:
    import geopandas as gpd
    import rasterio
    from rasterio import features
    from rasterio.windows import Window
    from shapely.geometry import box

    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir()
    t0 = time.perf_counter()
    gdf = gpd.read_file(vec)
    tree, geoms, vals = gdf.sindex, gdf.geometry.values, gdf["cls"].to_numpy()
    n = 0
    with rasterio.open(raster) as src:
        for r in range(0, src.height - chip + stride if src.height > chip else 1, stride):
            for c in range(0, src.width - chip + stride if src.width > chip else 1, stride):
                win = Window(c, r, chip, chip)
                data = src.read(window=win, boundless=True, fill_value=src.nodata)
                valid = src.read_masks(1, window=win, boundless=True) > 0
                tr = src.window_transform(win)
                hits = tree.query(box(*rasterio.windows.bounds(win, src.transform)), predicate="intersects")
                mask = (
                    features.rasterize(
                        zip(geoms[hits], vals[hits], strict=True),
                        out_shape=(chip, chip),
                        transform=tr,
                        fill=0,
                        dtype="uint8",
                    )
                    if len(hits)
                    else np.zeros((chip, chip), "uint8")
                )
                mask[~valid] = 255
                name = f"r{r:06d}_c{c:06d}.tif"
                prof = {
                    "driver": "GTiff",
                    "height": chip,
                    "width": chip,
                    "crs": src.crs,
                    "transform": tr,
                    "compress": "deflate",
                }
                with rasterio.open(
                    out / "images" / name, "w", count=3, dtype="uint8", nodata=src.nodata, **prof
                ) as dst:
                    dst.write(data)
                with rasterio.open(
                    out / "masks" / name, "w", count=1, dtype="uint8", nodata=255, **prof
                ) as dst:
                    dst.write(mask[None])
                n += 1
    return {"chips": n, "seconds": time.perf_counter() - t0}


def worker(kind: str, raster: str, vec: str, out: str, chip: int, stride: int) -> None:
    fn = run_ours if kind == "ours" else run_raw
    res = fn(Path(raster), Path(vec), Path(out), chip, stride)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(res))


def spawn(kind: str, raster: Path, vec: Path, out: Path, chip: int, stride: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        str(raster),
        str(vec),
        str(out),
        str(chip),
        str(stride),
    ]
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="8000 x 8000 px with ~20000 polygons")
    ap.add_argument("--size", type=int, default=None, help="scene size in pixels (default 3000, --full 8000)")
    ap.add_argument("--chip", type=int, default=256)
    ap.add_argument("--stride", type=int, default=256)
    ap.add_argument(
        "--min-seconds",
        type=float,
        default=30.0,
        help="repeat alternating runs until each side has run this long (a stable ratio; default 30)",
    )
    ap.add_argument(
        "--worker",
        nargs=6,
        metavar=("KIND", "RASTER", "VEC", "OUT", "CHIP", "STRIDE"),
        help=argparse.SUPPRESS,
    )
    args = ap.parse_args()
    if args.worker:
        k, r, v, o, c, s = args.worker
        worker(k, r, v, o, int(c), int(s))
        return
    size = args.size or (8000 if args.full else 3000)
    n_polys = int(20_000 * (size / 8000) ** 2)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        half_r, half_v = make_scene(folder, size // 2, max(1, n_polys // 4), seed=1)
        raster, vec = make_scene(folder, size, n_polys)
        ours_half = spawn("ours", half_r, half_v, folder / "ours_half", args.chip, args.stride)
        runs: dict[str, list[dict]] = {"raw": [], "ours": []}
        k = 0
        # alternate the two sides until both have run --min-seconds in total (one run is ~2 s at 3000 px)
        while k == 0 or min(sum(r["seconds"] for r in rs) for rs in runs.values()) < args.min_seconds:
            for kind in ("raw", "ours"):
                runs[kind].append(spawn(kind, raster, vec, folder / f"{kind}_{k}", args.chip, args.stride))
            k += 1
    raw, ours = (
        {
            "chips": sum(r["chips"] for r in rs),
            "seconds": sum(r["seconds"] for r in rs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
        }
        for rs in (runs["raw"], runs["ours"])
    )
    r_ours, r_raw = ours["chips"] / ours["seconds"], raw["chips"] / raw["seconds"]
    print(
        f"scene {size}x{size} px, {n_polys} polygons, chip {args.chip}, stride {args.stride}; {k} alternating "
        f"run(s) per side (>= {args.min_seconds:g} s each)"
    )
    print(
        f"rasterlearn chips: {ours['chips']} chips in {ours['seconds']:.2f} s = {r_ours:.1f} chips/s, "
        f"peak RSS {ours['peak_rss_mb']:.0f} MB"
    )
    print(
        f"raw rasterio loop: {raw['chips']} chips in {raw['seconds']:.2f} s = {r_raw:.1f} chips/s, "
        f"peak RSS {raw['peak_rss_mb']:.0f} MB"
    )
    print(f"ratio (ours / raw): {r_ours / r_raw:.2f}  (goal >= 0.8)")
    print(
        f"peak RSS of rasterlearn chips: {ours_half['peak_rss_mb']:.0f} MB at {size // 2} px, "
        f"{ours['peak_rss_mb']:.0f} MB at {size} px"
    )


if __name__ == "__main__":
    main()
