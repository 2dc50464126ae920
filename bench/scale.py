"""Benchmark: throughput of the local executor vs dask LocalClusters of 1 and 2 workers, on the same data.

Three jobs, each run three ways (local, ``--workers 1``, ``--workers 2``):

* ``raster``: ``predict`` of ONE generated RGB raster with a U-Net/ResNet-18 package, block-level: the
  workers read, normalize and run the model on batches of windows, the client blends and writes. Each
  executor runs in a fresh subprocess, so the client's peak RSS is its own; workers are started and warmed
  (imports) before the clock starts, and the timed part includes sending the model to the workers.
* ``cluster``: the apply step of k-means on a generated feature raster (the fit is done once beforehand, so
  only block computation is compared); the unit of work is the feature stage's block.
* ``scenes``: ``predict_scenes`` of a U-Net/ResNet-18 package over several generated scenes; the unit of
  work is the scene (each worker loads the model once).

The last two run in this process. Prints wall seconds, the ratio to the local run (below 1 = faster), peak
RSS of the client and of each worker, and checks the outputs equal the local ones. Cluster start-up (including the workers' imports of torch and
rasterlearn) is reported separately: it is paid once per job. On a 2-core machine two workers can at best halve the time.

    OMP_NUM_THREADS=1 .venv/bin/python bench/scale.py
    OMP_NUM_THREADS=1 .venv/bin/python bench/scale.py --size 2048 --scenes 6 --scene-size 768
    OMP_NUM_THREADS=1 .venv/bin/python bench/scale.py --jobs raster --raster-size 1024 --window 256
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import peak_rss_mb


def _worker_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _warm() -> None:
    """Import what the kernels need, so the timed runs do not include a worker's first imports."""
    import rasterlearn.features.cluster
    import rasterlearn.models
    import rasterlearn.predict  # noqa: F401


def _features(path: Path, size: int, bands: int) -> None:
    import rasterio
    from affine import Affine

    rng = np.random.default_rng(0)
    prof = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": bands,
        "dtype": "float32",
        "crs": "EPSG:32633",
        "transform": Affine(10.0, 0, 500_000, 0, -10.0, 4e6),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    with rasterio.open(path, "w", **prof) as dst:
        for r in range(0, size, 256):
            h = min(256, size - r)
            block = rng.normal(0, 1, (bands, h, size)).astype("float32")
            dst.write(block, window=rasterio.windows.Window(0, r, size, h))


def _scene(path: Path, size: int, seed: int) -> None:
    import rasterio
    from affine import Affine

    rng = np.random.default_rng(seed)
    data = rng.integers(1, 250, (3, size, size)).astype("uint8")
    prof = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 3,
        "dtype": "uint8",
        "nodata": 0,
        "crs": "EPSG:32633",
        "transform": Affine(1.0, 0, 500_000 + seed * size, 0, -1.0, 4e6),
        "tiled": True,
    }
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data)


def _package(folder: Path) -> Path:
    import torch

    from rasterlearn.labels import ClassInfo, ClassSchema
    from rasterlearn.models import ModelMetadata, create_model, save_package
    from rasterlearn.normalize import Normalization

    torch.manual_seed(0)
    model = create_model("unet", "resnet18", in_channels=3, classes=3)
    schema = ClassSchema(tuple(ClassInfo(c, f"c{c}", "#102030") for c in range(3)))
    meta = ModelMetadata(
        arch="unet",
        encoder="resnet18",
        in_channels=3,
        num_classes=3,
        task="multiclass",
        bands=["r", "g", "b"],
        normalization=Normalization("zscore", (120.0,) * 3, (50.0,) * 3).to_dict(),
        schema=schema.to_dict(),
        chip_size=256,
    )
    return save_package(model, meta, folder)


def _warm_predict() -> None:
    """A worker's imports for block-level predict (torch, smp for the pickled U-Net, the kernel)."""
    import segmentation_models_pytorch  # noqa: F401

    import rasterlearn.models
    import rasterlearn.predict_chunks
    import rasterlearn.predict_runtime  # noqa: F401


def _raster_run(label: str, workers: int | None, pkg: Path, raster: Path, out: Path, window: int) -> None:
    """One executor's single-raster predict, twice (run in a fresh subprocess); prints a JSON line.

    The first run includes what a job pays once per worker: receiving the model and building the reader and
    model runner (and oneDNN's first-call set-up); the second run reuses them (same job fingerprint).
    """
    from rasterlearn.engine.executor import DaskExecutor, open_executor
    from rasterlearn.predict import predict_package

    t0 = time.perf_counter()
    seconds = []
    with open_executor(workers=workers) as ex:
        if isinstance(ex, DaskExecutor):
            ex.client.run(_warm_predict)
        startup = time.perf_counter() - t0
        for k in (1, 2):
            t1 = time.perf_counter()
            res = predict_package(
                pkg,
                raster,
                out.with_suffix(f".{k}.tif"),
                window=window,
                batch_size=1,
                device="cpu",
                executor=ex,
            )
            seconds.append(time.perf_counter() - t1)
        workers_mb = sorted(ex.client.run(_worker_peak_mb).values()) if isinstance(ex, DaskExecutor) else []
    row = {
        "label": label,
        "startup": startup,
        "seconds": seconds,
        "windows": res.windows_predicted,
        "client_mb": peak_rss_mb(),
        "workers_mb": workers_mb,
    }
    print(json.dumps(row))


def _raster_job(tmp: Path, size: int, window: int) -> None:
    """Single-raster predict, local vs --workers 1 vs --workers 2, each in its own process."""
    import rasterio

    raster = tmp / "raster.tif"
    _scene(raster, size, 0)
    pkg = tmp / "pkg" if (tmp / "pkg").exists() else _package(tmp / "pkg")
    print(f"raster: {size}² RGB uint8, U-Net/ResNet-18, window {window}, batch 1")
    rows = []
    for label, workers in (("local", 0), ("workers=1", 1), ("workers=2", 2)):
        out = tmp / f"raster_{label}.tif"
        cmd = [sys.executable, __file__, "--raster-run", label, str(workers), str(pkg), str(raster), str(out)]
        cmd += ["--window", str(window)]
        line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        rows.append((json.loads(line), out))
    b1, b2 = rows[0][0]["seconds"]
    with rasterio.open(rows[0][1].with_suffix(".1.tif")) as ref:
        ref_px = ref.read()
    print(
        f"{'executor':<10} {'start s':>8} {'1st run s':>10} {'ratio':>6} {'2nd run s':>10} {'ratio':>6} "
        f"{'windows':>8} {'client MB':>10}  worker peak MB  equal"
    )
    for row, out in rows:
        eq = True
        for k in (1, 2):
            with rasterio.open(out.with_suffix(f".{k}.tif")) as ds:
                eq = eq and bool(np.array_equal(ds.read(), ref_px))
        wmb = ", ".join(f"{m:.0f}" for m in row["workers_mb"]) or "-"
        s1, s2 = row["seconds"]
        print(
            f"{row['label']:<10} {row['startup']:8.1f} {s1:10.1f} {s1 / b1:6.2f} {s2:10.1f} {s2 / b2:6.2f} "
            f"{row['windows']:8d} {row['client_mb']:10.0f}  {wmb:<14} {eq}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", default="raster,cluster,scenes", help="comma list of raster, cluster, scenes")
    p.add_argument("--raster-size", type=int, default=1024, help="single-raster predict: raster side (px)")
    p.add_argument("--window", type=int, default=256, help="single-raster predict: inference window (px)")
    p.add_argument("--size", type=int, default=1536, help="feature raster side (px)")
    p.add_argument("--bands", type=int, default=64)
    p.add_argument("--scenes", type=int, default=4)
    p.add_argument("--scene-size", type=int, default=512)
    p.add_argument("--raster-run", nargs=5, help=argparse.SUPPRESS)  # internal: one executor's run
    args = p.parse_args()
    if args.raster_run:
        label, workers, pkg, raster, out = args.raster_run
        _raster_run(label, int(workers) or None, Path(pkg), Path(raster), Path(out), args.window)
        return
    jobs = {j.strip() for j in args.jobs.split(",") if j.strip()}
    tmp = Path(tempfile.mkdtemp(prefix="rl_scale_"))
    if "raster" in jobs:
        _raster_job(tmp, args.raster_size, args.window)
    if not jobs & {"cluster", "scenes"}:
        return

    from rasterlearn.batch import predict_scenes
    from rasterlearn.engine.executor import DaskExecutor, open_executor
    from rasterlearn.features.cluster import cluster_raster

    feat = tmp / "features.tif"
    _features(feat, args.size, args.bands)
    cluster_raster(feat, tmp / "fit.tif", clusters=8, model_out=tmp / "km", sample_size=50_000)
    scenes = []
    for i in range(args.scenes):
        scenes.append(tmp / f"scene_{i}.tif")
        _scene(scenes[-1], args.scene_size, i)
    pkg = tmp / "pkg" if (tmp / "pkg").exists() else _package(tmp / "pkg")
    print(
        f"data: {args.size}² x {args.bands} float32 features; {args.scenes} scenes of {args.scene_size}² RGB"
    )

    rows = []
    for label, workers in (("local", None), ("workers=1", 1), ("workers=2", 2)):
        t0 = time.perf_counter()
        with open_executor(workers=workers) as ex:
            if isinstance(ex, DaskExecutor):
                ex.client.run(_warm)
            startup = time.perf_counter() - t0
            t1 = time.perf_counter()
            out = cluster_raster(feat, tmp / f"k_{label}.tif", model=tmp / "km", executor=ex)
            t_cluster = time.perf_counter() - t1
            t2 = time.perf_counter()
            res = predict_scenes(pkg, scenes, tmp / f"maps_{label}", executor=ex, device="cpu")
            t_scenes = time.perf_counter() - t2
            workers_mb = (
                sorted(ex.client.run(_worker_peak_mb).values()) if isinstance(ex, DaskExecutor) else []
            )
        assert all(s.status == "done" for s in res.scenes), res.failed
        rows.append((label, startup, t_cluster, t_scenes, workers_mb, out.path, res))

    base = rows[0]
    import rasterio

    def same(a: Path, b: Path) -> bool:
        with rasterio.open(a) as x, rasterio.open(b) as y:
            return bool(np.array_equal(x.read(), y.read()))

    print(
        f"{'executor':<10} {'start s':>8} {'cluster s':>10} {'ratio':>6} {'scenes s':>9} {'ratio':>6}  worker peak MB  equal"
    )
    for label, startup, tc, ts, wmb, path, res in rows:
        eq = same(path, base[5]) and all(
            same(Path(a.output), Path(b.output)) for a, b in zip(res.scenes, base[6].scenes, strict=True)
        )
        print(
            f"{label:<10} {startup:8.1f} {tc:10.1f} {tc / base[2]:6.2f} {ts:9.1f} {ts / base[3]:6.2f}  "
            f"{', '.join(f'{m:.0f}' for m in wmb) or '-':<14} {eq}"
        )
    print(f"client peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
