"""Benchmark: rasterlearn predict vs NRCan's geo-inference on the same model weights and raster.

geo-inference is not a rasterlearn dependency; run this script with it installed for the run only:

    uv run --with geo-inference python bench/predict_vs_geoinference.py              # 2048 x 2048 px
    uv run --with geo-inference python bench/predict_vs_geoinference.py --size 4096

What is compared (checked against geo-inference 3.2's source):

* **Model.** One smp U-Net/ResNet-18 (random weights, 4 bands, 2 classes). rasterlearn runs it as an
  ``nn.Module`` from a model package. geo-inference runs a TorchScript file and hands it each patch *as read*
  (the raster's dtype, here uint8, raw values, shape (1, bands, patch, patch)), blends whatever the model
  returns and takes the argmax over its ``num_classes`` channels (one channel: ``> prediction_threshold``).
  So the exported TorchScript wraps the same weights with exactly rasterlearn's input and output handling:
  cast to float32, the package's z-score normalization, nodata pixels (any band equal to the raster's
  nodata) set to the normalization's fill value, and a softmax at the end -- both tools blend class
  probabilities, not logits. The script checks that the wrapper reproduces rasterlearn's probabilities on
  one chip before timing anything.
* **Windows.** geo-inference always uses a stride of half the patch (``patch_size // 2``, 50 % overlap; it
  has no stride argument), one patch per model call, a Hann window. rasterlearn runs with
  ``overlap=0.5`` (same lattice), its default Hann blend and ``--batch-size`` windows per call.
* **Raster.** A generated tiled, DEFLATE-compressed 4-band uint8 GeoTIFF (EPSG:32618, nodata 0).
* **Outputs.** rasterlearn writes a COG class map (with overviews); geo-inference a tiled LZW GeoTIFF
  (255 where any band is nodata). Both are checked to have the raster's shape, and the share of pixels
  where the two maps agree is printed (overall and away from the border, where the two tools' edge
  weighting differs) as a sanity check.
* **Processes and threads.** Each tool runs in its own fresh process; the timed span is the prediction
  call only (model loading and imports excluded), wall and CPU time (all threads of the child) are printed,
  peak RSS is the child's ``ru_maxrss``. Both children use
  the same torch thread count (``--threads``, default: the CPU cores available). geo-inference's dask
  worker count is ``--gi-workers`` (default 0 = its own choice, cores - 1).

It prints wall time and peak RSS of both and the ratios (goal: rasterlearn / geo-inference time <= 0.5).
When geo-inference cannot be imported (e.g. offline, no cached wheel) the script says so and exits with
status 3 without measuring anything; a failing child exits with status 4.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULT_TAG = "BENCH-RESULT "
NODATA = 0  # the generated raster's nodata (see _predict_common.make_raster)


def _threads(n: int | None) -> int:
    if n:
        return n
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        return os.cpu_count() or 1


def export_torchscript(model, meta, path: Path, chip: int, nodata: float, dtype: str = "uint8") -> float:
    """Save ``model`` wrapped with rasterlearn's input/output handling as TorchScript for geo-inference.

    Returns the largest absolute probability difference between the TorchScript file and rasterlearn's own
    path (normalize with nodata fill, model, softmax) on one generated chip that contains nodata pixels.
    """
    import numpy as np
    import torch

    from rasterlearn.normalize import Normalization

    norm = Normalization.from_dict(meta.normalization)
    if norm.method not in ("zscore", "minmax", "percentile"):
        raise SystemExit(f"the benchmark export handles offset/scale normalizations, not {norm.method!r}")

    class RasterInput(torch.nn.Module):
        """Raw raster patch (1, bands, h, w) in the file's dtype -> class probabilities (1, classes, h, w)."""

        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net
            bands = len(norm.offset)
            self.register_buffer(
                "offset", torch.tensor(norm.offset, dtype=torch.float32).view(1, bands, 1, 1)
            )
            self.register_buffer(
                "inv_scale",
                (1.0 / torch.tensor(norm.scale, dtype=torch.float64)).float().view(1, bands, 1, 1),
            )
            self.nodata = float(nodata)
            self.fill = float(norm.fill)
            self.binary = meta.task == "binary"

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raw = x.float()
            valid = (raw != self.nodata).all(dim=1, keepdim=True)
            z = torch.where(valid, (raw - self.offset) * self.inv_scale, torch.full_like(raw, self.fill))
            logits = self.net(z)
            return torch.sigmoid(logits) if self.binary else torch.softmax(logits, dim=1)

    wrapped = RasterInput(model.eval()).eval()
    rng = np.random.default_rng(1)
    raw = rng.integers(1, 256, (1, meta.in_channels, chip, chip)).astype(dtype)
    raw[:, :, : chip // 8, : chip // 5] = nodata  # a nodata corner, as at a raster's edge
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; geo-inference needs it
        torch.jit.trace(wrapped, torch.from_numpy(raw), strict=False).save(str(path))
        scripted = torch.jit.load(str(path))
        got = scripted(torch.from_numpy(raw)).numpy()
        valid = np.all(raw[0] != nodata, axis=0)
        ref = model(torch.from_numpy(norm.apply(raw[0], valid)[None]))
        ref = (torch.sigmoid(ref) if meta.task == "binary" else torch.softmax(ref, dim=1)).numpy()
    return float(np.abs(got - ref).max())


def run_rasterlearn(work: Path, raster: Path, args: argparse.Namespace) -> dict:
    import torch
    from _common import peak_rss_mb
    from _predict_common import make_package

    from rasterlearn.models import load_package
    from rasterlearn.predict import predict_raster

    threads = _threads(args.threads)
    torch.set_num_threads(threads)
    pkg = load_package(make_package(work / "pkg", chip=args.chip))
    out = work / "rl_map.tif"
    c0, t0 = time.process_time(), time.perf_counter()
    res = predict_raster(
        pkg.model,
        pkg.meta,
        raster,
        out,
        overlap=0.5,
        batch_size=args.batch_size,
        device="cpu",
        threads=threads,
        overwrite=True,
        resume=False,
    )
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "peak_rss_mb": peak_rss_mb(),
        "map": str(out),
        "windows": res.windows_predicted,
        "threads": torch.get_num_threads(),
    }


def run_geoinference(work: Path, raster: Path, args: argparse.Namespace) -> dict:
    import importlib.metadata

    import torch
    from _common import peak_rss_mb
    from geo_inference.geo_inference import GeoInference

    torch.set_num_threads(_threads(args.threads))
    gi = GeoInference(
        model=str(work / "model_gi.pt"),
        work_dir=str(work / "gi"),
        mask_to_vec=False,
        device="cpu",
        num_classes=2,  # channels the model returns (argmax over them)
    )
    c0, t0 = time.process_time(), time.perf_counter()
    name = gi(
        inference_input=str(raster),
        bands_requested=[1, 2, 3, 4],
        patch_size=args.chip,
        workers=args.gi_workers,
    )
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "peak_rss_mb": peak_rss_mb(),
        "map": str(work / "gi" / name),
        "threads": torch.get_num_threads(),
        "version": importlib.metadata.version("geo-inference"),
    }


def compare_maps(rl_path: str, gi_path: str, shape: tuple[int, int], margin: int) -> dict:
    """Shapes of both maps and the share of pixels (valid in both) where the class agrees."""
    import numpy as np
    import rasterio

    with rasterio.open(rl_path) as a, rasterio.open(gi_path) as b:
        rl, gi = a.read(1), b.read(1)
        rl_nodata = a.nodata
    both = (rl != rl_nodata) & (gi != 255)
    inner = np.zeros_like(both)
    inner[margin:-margin, margin:-margin] = True
    agree = rl == gi
    return {
        "rl_shape": rl.shape,
        "gi_shape": gi.shape,
        "shapes_ok": rl.shape == shape and gi.shape == shape,
        "agree": float(agree[both].mean()),
        "agree_inner": float(agree[both & inner].mean()),
        "rl_class1": float((rl[both] == 1).mean()),
        "gi_class1": float((gi[both] == 1).mean()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=2048, help="raster width and height in pixels")
    ap.add_argument(
        "--chip", type=int, default=256, help="patch size (overlap is fixed at 50 %% by geo-inference)"
    )
    ap.add_argument("--batch-size", type=int, default=4, help="rasterlearn windows per model call")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads in both tools (default: cores)"
    )
    ap.add_argument("--gi-workers", type=int, default=0, help="geo-inference dask workers (0: its default)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--child", choices=["rasterlearn", "geo-inference"], default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.chip % 2:
        ap.error("--chip must be even (geo-inference strides by half a patch)")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="rl_bench_gi_"))
    work.mkdir(parents=True, exist_ok=True)
    raster = work / f"scene_{args.size}.tif"
    if args.child:
        fn = run_rasterlearn if args.child == "rasterlearn" else run_geoinference
        print(RESULT_TAG + json.dumps(fn(work, raster, args)), flush=True)
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
    from _predict_common import make_package, make_raster

    from rasterlearn.models import load_package

    make_raster(raster, args.size)
    pkg = load_package(make_package(work / "pkg", chip=args.chip))
    diff = export_torchscript(pkg.model, pkg.meta, work / "model_gi.pt", args.chip, NODATA)
    if diff > 1e-4:
        print(f"the TorchScript export differs from rasterlearn's model path by {diff:.2e}; nothing measured")
        sys.exit(4)
    threads = _threads(args.threads)
    print(
        f"raster {args.size}x{args.size} px, 4 bands uint8; U-Net/ResNet-18, 2 classes; patch {args.chip}, "
        f"stride {args.chip // 2} (overlap 0.5); torch threads {threads}; rasterlearn batch {args.batch_size}; "
        f"TorchScript export matches rasterlearn's probabilities (max diff {diff:.1e})"
    )
    results = {}
    child_args = ["--workdir", str(work), "--size", str(args.size), "--chip", str(args.chip)]
    child_args += [
        "--batch-size",
        str(args.batch_size),
        "--threads",
        str(threads),
        "--gi-workers",
        str(args.gi_workers),
    ]
    for tool in ("rasterlearn", "geo-inference"):
        proc = subprocess.run(
            [sys.executable, __file__, "--child", tool, *child_args], capture_output=True, text=True
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
        if proc.returncode != 0 or not lines:
            print(f"{tool} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
            sys.exit(4)
        results[tool] = json.loads(lines[-1][len(RESULT_TAG) :])
        r = results[tool]
        extra = f"{r['windows']} windows" if tool == "rasterlearn" else f"geo-inference {r['version']}"
        print(
            f"{tool:>14}: {r['seconds']:8.2f} s wall, {r['cpu_s']:8.2f} s CPU, "
            f"peak RSS {r['peak_rss_mb']:7.0f} MB  ({extra})"
        )
    rl, gi = results["rasterlearn"], results["geo-inference"]
    print(f"time ratio rasterlearn / geo-inference = {rl['seconds'] / gi['seconds']:.3f} (goal <= 0.5)")
    print(
        f"CPU-time ratio rasterlearn / geo-inference = {rl['cpu_s'] / gi['cpu_s']:.3f} "
        "(less sensitive than wall time to other processes on a shared machine)"
    )
    print(f"peak-memory ratio rasterlearn / geo-inference = {rl['peak_rss_mb'] / gi['peak_rss_mb']:.3f}")
    cmp = compare_maps(rl["map"], gi["map"], (args.size, args.size), margin=args.chip // 2)
    print(
        f"map shapes: rasterlearn {cmp['rl_shape']}, geo-inference {cmp['gi_shape']} "
        f"({'both match the raster' if cmp['shapes_ok'] else 'MISMATCH'}); "
        f"class agreement {100 * cmp['agree']:.2f} % "
        f"({100 * cmp['agree_inner']:.2f} % more than {args.chip // 2} px from the border); "
        f"class 1 share {100 * cmp['rl_class1']:.1f} % vs {100 * cmp['gi_class1']:.1f} %"
    )
    if not cmp["shapes_ok"]:
        sys.exit(5)


if __name__ == "__main__":
    main()
