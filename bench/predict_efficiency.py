"""Benchmark: end-to-end `predict_raster` time vs the pure model forward time on the same windows.

Both use the same model (smp U-Net/ResNet-18, random weights), the same number of windows of the same
size, the same batch size and the same torch thread count. The pure side only calls the model on
pre-made tensors (no reading, normalization, blending, writing); the end-to-end side does everything and
writes a COG class map. Goal on CPU: model / end-to-end >= 0.9.

    .venv/bin/python bench/predict_efficiency.py              # 2560 x 2560 px, chip 256 (about a minute on 2 cores)
    .venv/bin/python bench/predict_efficiency.py --size 4096  # larger
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=2560)
    ap.add_argument("--chip", type=int, default=256)
    ap.add_argument("--overlap", type=float, default=0.25)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()

    import torch
    from _common import peak_rss_mb
    from _predict_common import make_package, make_raster

    from rasterlearn.models import load_package
    from rasterlearn.predict import predict_raster

    if args.threads:
        torch.set_num_threads(args.threads)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="rl_bench_eff_"))
    work.mkdir(parents=True, exist_ok=True)
    raster = make_raster(work / f"scene_{args.size}.tif", args.size)
    pkg = load_package(make_package(work / "pkg", chip=args.chip))
    model, meta = pkg.model, pkg.meta

    # warm-up (first calls allocate and pick kernels)
    with torch.inference_mode():
        model(torch.zeros(args.batch_size, 4, args.chip, args.chip))

    t0 = time.perf_counter()
    res = predict_raster(
        model,
        meta,
        raster,
        work / "map.tif",
        overlap=args.overlap,
        batch_size=args.batch_size,
        overwrite=True,
        resume=False,
        threads=args.threads,
    )
    end_to_end = time.perf_counter() - t0

    n = res.windows_predicted
    x = torch.randn(args.batch_size, 4, args.chip, args.chip)
    t0 = time.perf_counter()
    with torch.inference_mode():
        done = 0
        while done < n:
            b = min(args.batch_size, n - done)
            torch.softmax(model(x[:b]), dim=1)
            done += b
    pure = time.perf_counter() - t0

    print(
        f"raster {args.size}x{args.size} px, 4 bands, chip {args.chip}, overlap {args.overlap}, "
        f"{n} windows, batch {args.batch_size}, torch threads {torch.get_num_threads()}"
    )
    print(f"end-to-end predict : {end_to_end:8.2f} s  ({res.pixels / end_to_end:,.0f} px/s)")
    print(f"pure model forward : {pure:8.2f} s  ({res.pixels / pure:,.0f} px/s)")
    print(f"ratio model / end-to-end = {pure / end_to_end:.3f}  (goal >= 0.9)")
    print(f"peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
