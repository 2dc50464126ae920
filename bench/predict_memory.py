"""Benchmark: peak RSS of `predict_raster` on a large vs a small generated 4-band raster.

Each size runs in its own process (peak RSS is per process), with the same model and options, writing a
class map and uint8 probabilities. Peak memory must not depend on the raster size (goal: large / small
<= 1.2, absolute < 2 GB).

    .venv/bin/python bench/predict_memory.py          # 4000 x 4000 vs 1000 x 1000, tiny FCN (minutes)
    .venv/bin/python bench/predict_memory.py --full   # 16000 x 16000 vs 2000 x 2000 (the issue's sizes)
    .venv/bin/python bench/predict_memory.py --model unet   # smp U-Net/ResNet-18 instead of the tiny FCN
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


def child(size: int, work: Path, model_kind: str, chip: int) -> None:
    import torch
    from _common import peak_rss_mb
    from _predict_common import make_package, make_raster
    from torch import nn

    from rasterlearn.models import load_package
    from rasterlearn.predict import predict_raster

    raster = make_raster(work / f"scene_{size}.tif", size)
    base = peak_rss_mb()
    if model_kind == "unet":
        pkg = load_package(make_package(work / "pkg", chip=chip))
        model, meta = pkg.model, pkg.meta
    else:
        pkg_meta = load_package(make_package(work / "pkg", chip=chip)).meta
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(4, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 2, 3, padding=1))
        meta = pkg_meta
    t0 = time.perf_counter()
    res = predict_raster(
        model,
        meta,
        raster,
        work / f"map_{size}.tif",
        probabilities=work / f"prob_{size}.tif",
        overlap=0.25,
        batch_size=8,
        overwrite=True,
        resume=False,
    )
    secs = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "size": size,
                "peak_rss_mb": peak_rss_mb(),
                "rss_before_predict_mb": base,
                "seconds": secs,
                "px_per_s": res.pixels / secs,
                "windows": res.windows_predicted,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="16000 x 16000 vs 2000 x 2000")
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--large", type=int, default=4000)
    ap.add_argument("--model", choices=["fcn", "unet"], default="fcn")
    ap.add_argument("--chip", type=int, default=256)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="rl_bench_mem_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.child:
        child(args.child, work, args.model, args.chip)
        return
    small, large = (2000, 16000) if args.full else (args.small, args.large)
    results = {}
    for size in (small, large):
        cmd = [
            sys.executable,
            __file__,
            "--child",
            str(size),
            "--workdir",
            str(work),
            "--model",
            args.model,
            "--chip",
            str(args.chip),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        results[size] = json.loads(out)
        r = results[size]
        print(
            f"{size:>6} x {size:<6} px: peak RSS {r['peak_rss_mb']:7.0f} MB, {r['seconds']:7.1f} s, "
            f"{r['px_per_s']:,.0f} px/s, {r['windows']} windows"
        )
    ratio = results[large]["peak_rss_mb"] / results[small]["peak_rss_mb"]
    print(
        f"peak RSS ratio {large}/{small} = {ratio:.3f}  (goal <= 1.2); absolute {results[large]['peak_rss_mb']:.0f} MB "
        f"(goal < 2048 MB); model {args.model}"
    )


if __name__ == "__main__":
    main()
