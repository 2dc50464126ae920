"""Benchmark: rasterlearn predict against the untiled single pass (the limit), geoai and geo-inference.

    uv run python bench/predict_vs_peers.py --size 2000            # 2000 x 2000 px, median of 3
    uv run python bench/predict_vs_peers.py --size 4000 --repeat 1
    uv run python bench/predict_vs_peers.py --size 2000 --tools untiled,rl-default --trained

Same network everywhere: an smp U-Net/ResNet-18 model package (4 bands, 2 classes, random weights, chip
``--chip``) on a generated tiled 4-band uint8 raster (nodata 0). Each run is a fresh process; runs
alternate between tools (``--repeat`` rounds) and the median is printed: wall time, CPU time (all threads)
and peak RSS of the process. Tools (``--tools``):

* ``untiled``: the limit -- read the raster, normalize, ONE forward pass of the whole raster (padded to the
  output stride, channels-last, fp32), softmax. Its probabilities are the reference for agreement.
* ``untiled-folded``: the same single pass of the network with its batch norms folded into the convolutions
  (:func:`rasterlearn.predict_runtime.fuse_conv_bn`, as predict runs on CPU): the limit of the network
  predict actually runs; rl-default is reported against both.
* ``rl-default``: ``predict_raster`` at its defaults (window and batch from the memory budget, overlap 0.25
  of the chip); ``rl-50``: the same with overlap 0.5;
  ``rl-onnx``: the defaults with ``runtime="onnx"`` (ONNX Runtime). The timed run writes the class map only,
  as ``rasterlearn predict MODEL RASTER -o MAP`` does; a second, untimed run of the same settings writes
  float32 probabilities, from which max/mean |dp| against the untiled pass are computed.
* ``geo-inference`` (NRCan, installed for the run only: ``uv run --with geo-inference``): TorchScript of the
  same weights with rasterlearn's normalization and softmax inside (see bench/predict_vs_geoinference.py),
  its defaults (patch = chip, 50 % overlap). Class agreement only (it writes classes).
* ``geoai`` (``uv run --with geoai-py``): ``geoai.predict_geotiff`` at its defaults (tile = chip, overlap
  64, batch 4, spline blend) with the same normalization as ``preprocess_fn`` and a softmax wrapper, so it
  blends probabilities; class and |dp| agreement.

A peer that cannot be installed is reported as such and left out. ``--trained`` also trains a small model
on the synthetic scene (a few epochs) and prints the share of valid pixels where the tiled map at the
defaults equals the untiled map (target >= 99.9 %).

Targets printed: rasterlearn at defaults <= 1.3x the untiled pass; <= 0.5x geo-inference and <= 0.8x geoai.
The machine this was measured on is shared (see the figures' notes): compare CPU times as well as wall.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULT_TAG = "BENCH-RESULT "
NODATA = 0
PEERS = {"geo-inference": "geo-inference", "geoai": "geoai-py"}


# -- children ---------------------------------------------------------------------------------------


def _stats(t0: float, c0: float) -> dict:
    from _common import peak_rss_mb

    return {
        "seconds": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "peak_rss_mb": peak_rss_mb(),
    }


def run_untiled(work: Path, raster: Path, out: Path, threads: int, fold: bool = False) -> dict:
    import torch

    from rasterlearn.io.raster import RasterReader
    from rasterlearn.models import load_package
    from rasterlearn.predict_runtime import fuse_conv_bn

    torch.set_num_threads(threads)
    pkg = load_package(work / "pkg")
    model = pkg.model.eval().to(memory_format=torch.channels_last)
    if fold:  # the same network with its batch norms folded, as predict runs it on CPU
        model, _note = fuse_conv_bn(model, pkg.meta.in_channels, channels_last=True)
    norm = pkg.meta.norm
    c0, t0 = time.process_time(), time.perf_counter()
    with RasterReader(raster, list(range(1, pkg.meta.in_channels + 1))) as r:  # as predict's band matching
        block = r.read(r.grid.window)
    h, w = block.data.shape[1:]
    ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
    x = np.full((1, block.data.shape[0], ph, pw), norm.fill, dtype="float32")
    x[0, :, :h, :w] = norm.apply(block.data, block.valid)
    with torch.inference_mode():
        xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
        p = torch.softmax(model(xt), dim=1)[0, :, :h, :w].contiguous().numpy()
    stats = _stats(t0, c0)
    np.save(out, p)
    np.save(out.with_name(out.stem + "_valid.npy"), block.valid)
    return {**stats, "probs": str(out)}


def run_rasterlearn(
    work: Path,
    raster: Path,
    out: Path,
    threads: int,
    overlap: float,
    trained: bool = False,
    runtime: str = "torch",
) -> dict:
    from rasterlearn.models import load_package
    from rasterlearn.predict import predict_raster

    pkg = load_package(work / ("trained" if trained else "pkg"))
    opts = {"overlap": overlap, "threads": threads, "device": "cpu", "runtime": runtime}
    c0, t0 = time.process_time(), time.perf_counter()
    res = predict_raster(pkg.model, pkg.meta, raster, out, overwrite=True, resume=False, **opts)
    stats = _stats(t0, c0)  # the timed run: the class map only, as the CLI's defaults
    prob_tif = out.with_name(out.stem + "_p.tif")
    predict_raster(  # untimed: the same run with float32 probabilities, for |dp|
        pkg.model,
        pkg.meta,
        raster,
        out.with_name(out.stem + "_pmap.tif"),
        probabilities=prob_tif,
        prob_dtype="float32",
        overwrite=True,
        resume=False,
        **opts,
    )
    return {
        **stats,
        "map": str(out),
        "prob_tif": str(prob_tif),
        "windows": res.windows_predicted,
        "window": res.parameters["window"],
    }


def run_geoinference(work: Path, raster: Path, out: Path, threads: int, chip: int) -> dict:
    import torch
    from geo_inference.geo_inference import GeoInference

    torch.set_num_threads(threads)
    gi = GeoInference(
        model=str(work / "model_gi.pt"),
        work_dir=str(out.parent / "gi"),
        mask_to_vec=False,
        device="cpu",
        num_classes=2,
    )
    c0, t0 = time.process_time(), time.perf_counter()
    name = gi(inference_input=str(raster), bands_requested=[1, 2, 3, 4], patch_size=chip, workers=0)
    return {**_stats(t0, c0), "map": str(out.parent / "gi" / name)}


def run_geoai(work: Path, raster: Path, out: Path, threads: int, chip: int) -> dict:
    import geoai
    import torch

    from rasterlearn.models import load_package

    torch.set_num_threads(threads)
    pkg = load_package(work / "pkg")
    norm = pkg.meta.norm

    class Softmax(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.net(x), dim=1)

    def preprocess(tile: np.ndarray) -> np.ndarray:
        return norm.apply(tile, np.all(tile != NODATA, axis=0))

    c0, t0 = time.process_time(), time.perf_counter()
    geoai.predict_geotiff(
        Softmax(pkg.model.eval()),
        str(raster),
        str(out),
        tile_size=chip,
        num_classes=2,
        preprocess_fn=preprocess,
        device="cpu",
        verbose=False,
    )
    return {**_stats(t0, c0), "prob_tif": str(out)}


# -- comparison -------------------------------------------------------------------------------------


def agreement(ref_probs: Path, result: dict) -> dict:
    """Class agreement (valid pixels) and max/mean |dp| against the untiled pass."""
    import rasterio

    ref = np.load(ref_probs)
    valid = np.load(ref_probs.with_name(ref_probs.stem + "_valid.npy"))
    ref_cls = ref.argmax(0)
    out: dict = {}
    if "prob_tif" in result:
        with rasterio.open(result["prob_tif"]) as ds:
            p = ds.read().astype("float32")
        p = p[: ref.shape[0]]
        dp = np.abs(p - ref)[:, valid]
        out.update(max_dp=float(dp.max()), mean_dp=float(dp.mean()), cls=p.argmax(0))
    if "map" in result:
        with rasterio.open(result["map"]) as ds:
            out["cls"] = ds.read(1)
    if "cls" in out:
        out["agree"] = float((out.pop("cls") == ref_cls)[valid].mean())
    return out


def _child_cmd(tool: str, args: argparse.Namespace, work: Path, run: int) -> list[str]:
    base = [
        __file__,
        "--child",
        tool,
        "--workdir",
        str(work),
        "--size",
        str(args.size),
        "--chip",
        str(args.chip),
    ]
    base += ["--threads", str(args.threads), "--run", str(run)]
    if tool in PEERS:
        return ["uv", "run", "--with", PEERS[tool], "python", *base]
    return [sys.executable, *base]


def child_main(args: argparse.Namespace) -> None:
    work = args.workdir
    raster = work / f"scene_{args.size}.tif"
    out = work / f"{args.child}_{args.run}.tif"
    if args.child == "untiled":
        res = run_untiled(work, raster, work / "untiled.npy", args.threads)
    elif args.child == "untiled-folded":
        res = run_untiled(work, raster, work / "untiled_folded.npy", args.threads, fold=True)
    elif args.child in ("rl-default", "rl-50", "rl-onnx"):
        overlap = 0.5 if args.child == "rl-50" else 0.25
        runtime = "onnx" if args.child == "rl-onnx" else "torch"
        res = run_rasterlearn(work, raster, out, args.threads, overlap, runtime=runtime)
    elif args.child == "geo-inference":
        res = run_geoinference(work, raster, out, args.threads, args.chip)
    else:
        res = run_geoai(work, raster, out, args.threads, args.chip)
    print(RESULT_TAG + json.dumps(res), flush=True)


def trained_agreement(work: Path, threads: int) -> str:
    """Train a small model on the synthetic scene; tiled (defaults) vs untiled map agreement."""
    import torch

    from rasterlearn.chips import Scene, make_chips
    from rasterlearn.models import model_spec
    from rasterlearn.synthetic import make_synthetic_scene
    from rasterlearn.train import TrainConfig, train

    torch.set_num_threads(threads)
    scene = make_synthetic_scene(work / "synthetic", size=(1536, 1536))
    if not (work / "trained" / "model.json").exists():
        chips = make_chips(
            [Scene(scene.image, scene.labels)],
            work / "chips",
            size=128,
            stride=128,
            attribute="class",
            val=0.2,
        )
        cfg = TrainConfig(
            arch="unet",
            encoder="resnet18",
            model_kwargs=model_spec("unet").tiny_kwargs,
            epochs=3,
            baseline=False,
            batch_size=8,
            num_workers=0,
            sample_chips=0,
            accelerator="cpu",
        )
        train(chips.out, work / "trained", cfg, overwrite=True)
    res = run_rasterlearn(work, scene.image, work / "trained_map.tif", threads, 0.25, trained=True)
    # the untiled pass of the trained model (run_untiled reads the package from work/pkg)
    tmp = work / "untiled_trained"
    tmp.mkdir(exist_ok=True)
    (tmp / "pkg").unlink(missing_ok=True)
    (tmp / "pkg").symlink_to(work / "trained", target_is_directory=True)
    run_untiled(tmp, scene.image, tmp / "untiled.npy", threads)
    a = agreement(tmp / "untiled.npy", res)
    return (
        f"trained model (synthetic scene 1536x1536, chip 128, 3 epochs, windows {res['window']}): tiled map equals the untiled "
        f"map on {100 * a['agree']:.3f} % of valid pixels (target >= 99.9 %); max |dp| {a['max_dp']:.4f}, "
        f"mean |dp| {a['mean_dp']:.2e}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=2000)
    ap.add_argument("--chip", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tools", default="untiled,rl-default,rl-50,geo-inference,geoai")
    ap.add_argument("--trained", action="store_true", help="also train a small model and check its agreement")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--run", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="rl_bench_peers_"))
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    if args.child:
        child_main(args)
        return
    from _predict_common import make_package, make_raster
    from predict_vs_geoinference import export_torchscript

    from rasterlearn.models import load_package

    make_raster(work / f"scene_{args.size}.tif", args.size)
    pkg = load_package(make_package(work / "pkg", chip=args.chip))
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    if "geo-inference" in tools:
        export_torchscript(pkg.model, pkg.meta, work / "model_gi.pt", args.chip, NODATA)
    print(
        f"raster {args.size}x{args.size} px, 4 bands uint8; U-Net/ResNet-18, 2 classes, chip {args.chip}; "
        f"torch threads {args.threads}; median of {args.repeat} alternating runs"
    )
    runs: dict[str, list[dict]] = {t: [] for t in tools}
    failed: dict[str, str] = {}
    for run in range(args.repeat):
        for tool in tools:
            if tool in failed:
                continue
            proc = subprocess.run(_child_cmd(tool, args, work, run), capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
            if proc.returncode != 0 or not lines:
                failed[tool] = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
                print(f"{tool}: failed ({failed[tool]})")
                continue
            runs[tool].append(json.loads(lines[-1][len(RESULT_TAG) :]))
    ref = work / "untiled.npy"
    med: dict[str, dict] = {}
    for tool, rs in runs.items():
        if not rs:
            continue
        m = {k: statistics.median(r[k] for r in rs) for k in ("seconds", "cpu_s", "peak_rss_mb")}
        extra = agreement(ref, rs[-1]) if ref.exists() and not tool.startswith("untiled") else {}
        med[tool] = {**m, **extra}
        agree = f", class agreement {100 * extra['agree']:.3f} %" if "agree" in extra else ""
        dp = (
            f", max |dp| {extra['max_dp']:.4f}, mean |dp| {extra['mean_dp']:.2e}" if "max_dp" in extra else ""
        )
        win = f", windows {rs[-1]['window']} x {rs[-1]['windows']}" if "window" in rs[-1] else ""
        print(
            f"{tool:>14}: {m['seconds']:7.1f} s wall, {m['cpu_s']:7.1f} s CPU, peak RSS {m['peak_rss_mb']:6.0f} MB"
            f"{agree}{dp}{win}"
        )
    for ref_tool in ("untiled", "untiled-folded"):
        if ref_tool in med and "rl-default" in med:
            u, d = med[ref_tool], med["rl-default"]
            print(
                f"rl-default / {ref_tool}: wall {d['seconds'] / u['seconds']:.2f}x, "
                f"CPU {d['cpu_s'] / u['cpu_s']:.2f}x (target <= 1.3x)"
            )
    for peer, goal in (("geo-inference", 0.5), ("geoai", 0.8)):
        if peer in med and "rl-default" in med:
            d, p = med["rl-default"], med[peer]
            print(
                f"rl-default / {peer}: wall {d['seconds'] / p['seconds']:.2f}x, CPU {d['cpu_s'] / p['cpu_s']:.2f}x "
                f"(target <= {goal}x)"
            )
    for tool, why in failed.items():
        print(f"not measured: {tool}: {why}")
    if args.trained:
        print(trained_agreement(work, args.threads))


if __name__ == "__main__":
    main()
