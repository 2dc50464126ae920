"""Benchmark: rasterlearn predict vs NRCan's geo-inference on the same TorchScript model and raster.

geo-inference is not a rasterlearn dependency; run this script with it installed for the run only:

    uv run --with geo-inference python bench/predict_vs_geoinference.py            # 2048 x 2048 px
    uv run --with geo-inference python bench/predict_vs_geoinference.py --size 8192

The same smp U-Net/ResNet-18 (random weights) is exported to TorchScript for geo-inference and used as an
nn.Module by rasterlearn, on the same generated 4-band uint8 raster, the same patch size and overlap.
Each tool runs in its own process; the script prints wall time and peak RSS of both and the ratios
(goal: rasterlearn / geo-inference time <= 0.5). When geo-inference cannot be imported (e.g. offline,
no cached wheel) the script says so and exits with status 3 without measuring anything.
"""

from __future__ import annotations

import argparse
import inspect
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def run_rasterlearn(work: Path, raster: Path, chip: int, overlap: float, batch: int) -> dict:
    from _common import peak_rss_mb
    from _predict_common import make_package

    from rasterlearn.models import load_package
    from rasterlearn.predict import predict_raster

    pkg = load_package(make_package(work / "pkg", chip=chip))
    t0 = time.perf_counter()
    predict_raster(
        pkg.model,
        pkg.meta,
        raster,
        work / "rl_map.tif",
        overlap=overlap,
        batch_size=batch,
        overwrite=True,
        resume=False,
    )
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb()}


def run_geoinference(work: Path, raster: Path, chip: int, overlap: float, batch: int) -> dict:
    from _common import peak_rss_mb
    from geo_inference.geo_inference import GeoInference

    scripted = work / "model_scripted.pt"
    gi_args = {
        "model": str(scripted),
        "work_dir": str(work / "gi"),
        "batch_size": batch,
        "mask_to_vec": False,
        "device": "cpu",
    }
    accepted = inspect.signature(GeoInference.__init__).parameters
    gi = GeoInference(**{k: v for k, v in gi_args.items() if k in accepted})
    call = inspect.signature(gi.__call__).parameters
    stride = chip - round(overlap * chip)
    kwargs = {}
    for names, value in (
        (("inference_input", "inference_image", "image"), str(raster)),
        (("patch_size",), chip),
        (("stride_size",), stride),
        (("bands_requested",), [1, 2, 3, 4]),
        (("workers",), 0),
    ):
        for name in names:
            if name in call:
                kwargs[name] = value
                break
    t0 = time.perf_counter()
    gi(**kwargs)
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb(), "call": sorted(kwargs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--chip", type=int, default=256)
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--child", choices=["rasterlearn", "geo-inference"], default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="rl_bench_gi_"))
    work.mkdir(parents=True, exist_ok=True)
    raster = work / f"scene_{args.size}.tif"
    if args.child:
        fn = run_rasterlearn if args.child == "rasterlearn" else run_geoinference
        print(json.dumps(fn(work, raster, args.chip, args.overlap, args.batch_size)))
        return
    try:
        import geo_inference  # noqa: F401
    except Exception as exc:
        print(
            f"geo-inference is not importable here ({type(exc).__name__}: {exc}).\n"
            "Run this benchmark with it installed for the run only, e.g.\n"
            "    uv run --with geo-inference python bench/predict_vs_geoinference.py\n"
            "(needs network access or a cached wheel). Nothing was measured."
        )
        sys.exit(3)
    import torch
    from _predict_common import make_package, make_raster

    from rasterlearn.models import load_package

    make_raster(raster, args.size)
    pkg = load_package(make_package(work / "pkg", chip=args.chip))
    example = torch.zeros(1, 4, args.chip, args.chip)
    torch.jit.trace(pkg.model.eval(), example, strict=False).save(str(work / "model_scripted.pt"))
    results = {}
    for tool in ("rasterlearn", "geo-inference"):
        cmd = [
            sys.executable,
            __file__,
            "--child",
            tool,
            "--workdir",
            str(work),
            "--size",
            str(args.size),
            "--chip",
            str(args.chip),
            "--overlap",
            str(args.overlap),
            "--batch-size",
            str(args.batch_size),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{tool} failed:\n{proc.stderr[-3000:]}")
            sys.exit(4)
        results[tool] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(
            f"{tool:>14}: {results[tool]['seconds']:8.2f} s, peak RSS {results[tool]['peak_rss_mb']:7.0f} MB"
        )
    rl, gi = results["rasterlearn"], results["geo-inference"]
    print(f"time ratio rasterlearn / geo-inference = {rl['seconds'] / gi['seconds']:.3f} (goal <= 0.5)")
    print(f"peak-memory ratio rasterlearn / geo-inference = {rl['peak_rss_mb'] / gi['peak_rss_mb']:.3f}")


if __name__ == "__main__":
    main()
