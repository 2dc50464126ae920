"""Network (new imbalance-aware defaults) vs the built-in per-pixel random forest, on the shared real data.

Scenarios (``../shared/data``):

* ``buildings``: buildings_ma. Chips of scene 22978945 (blocks split trn/val) train the network and fit the
  forest; both then map the *other* scene (23429155, chips tiled without overlap, every chip scored) and are
  evaluated against ``buildings.gpkg``: building IoU of each, and wall times.
* ``landcover``: landcover_nc, Landsat 5 bands + the dense 7-class land-class raster, spatial (blocks)
  trn/val/tst split; mIoU on tst.
* ``rare``: the same Landsat scene as a binary problem, water (about 2 % of the pixels) vs everything else;
  target-class IoU on tst (the network must not collapse: IoU > 0, and should beat the forest).

``--old-defaults`` also trains with the previous defaults (plain CE, no class weights) for reference.
Prints one line per model and the ratio/difference, plus peak memory; writes ``OUT/results.json``.

    OMP_NUM_THREADS=2 .venv/bin/python bench/baseline_vs_network.py --scenario all --epochs 8
    .venv/bin/python bench/baseline_vs_network.py --scenario rare --epochs 4 --chip 32 --old-defaults
    .venv/bin/python bench/baseline_vs_network.py --scenario rare --set scheduler=onecycle --set early_stopping_patience=3
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import peak_rss_mb

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _train_and_score(
    chips: Path, out: Path, args: argparse.Namespace, eval_ds: Path, eval_split: str, **overrides: Any
) -> dict[str, Any]:
    from rasterlearn.train import TrainConfig, evaluate_model, train

    cfg = TrainConfig(
        arch="unet",
        encoder=args.encoder,
        epochs=args.epochs,
        batch_size=args.batch_size,
        num_workers=0,
        sample_chips=0,
        baseline=False,
        seed=0,
        **{**args.options, **overrides},
    )
    t0 = time.perf_counter()
    train(chips, out, cfg, overwrite=True)
    secs = time.perf_counter() - t0
    m = evaluate_model(out, eval_ds, split=eval_split)  # type: ignore[arg-type]
    return {"metrics": m, "seconds": secs}


def _forest(chips: Path, eval_ds: Path, eval_split: str, samples: int) -> dict[str, Any]:
    from rasterlearn.baseline import evaluate_baseline, fit_baseline

    t0 = time.perf_counter()
    model = fit_baseline(chips, max_samples=samples, seed=0)
    m = evaluate_baseline(model, eval_ds, eval_split)
    return {"metrics": m, "seconds": time.perf_counter() - t0, "fit_seconds": model.fit_seconds}


def _row(label: str, r: dict[str, Any], target: str | None) -> dict[str, Any]:
    m = r["metrics"]
    row = {
        "model": label,
        "mean_iou": m["mean_iou"],
        "kappa": m["kappa"],
        "seconds": round(r["seconds"], 1),
        "iou": {k: v["iou"] for k, v in m["per_class"].items()},
    }
    if target:  # "fg": the one class that is not code 0 (background)
        name = next(k for k, v in m["per_class"].items() if v["code"] != 0)
        row["target_iou"] = m["per_class"][name]["iou"]
    return row


def _compare(
    name: str, chips: Path, eval_ds: Path, split: str, out: Path, args: argparse.Namespace, target: str | None
) -> dict[str, Any]:
    rows = [
        _row("network (new defaults)", _train_and_score(chips, out / "net", args, eval_ds, split), target)
    ]
    if args.old_defaults:
        old = _train_and_score(chips, out / "net_old", args, eval_ds, split, loss="ce", class_weights="none")
        rows.append(_row("network (old defaults: ce, no weights)", old, target))
    rows.append(_row("random forest baseline", _forest(chips, eval_ds, split, args.rf_samples), target))
    key = "target_iou" if target else "mean_iou"
    net, rf = rows[0][key] or 0.0, rows[-1][key] or 0.0
    print(f"\n== {name}: {key} on {split} ({eval_ds.name}) ==")
    for r in rows:
        print(
            f"  {r['model']:<42} {key} {r[key] if r[key] is not None else float('nan'):.4f}  "
            f"mIoU {r['mean_iou']:.4f}  kappa {r['kappa']:.4f}  {r['seconds']:.0f} s"
        )
    print(f"  network - forest: {100 * (net - rf):+.1f} IoU points (target >= +10)")
    return {"scenario": name, "metric": key, "split": split, "rows": rows, "difference": net - rf}


def buildings(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from rasterlearn.chips import Scene, make_chips

    d = DATA / "buildings_ma"
    a = make_chips(
        [Scene(d / "scene_22978945.tif", d / "buildings.gpkg")],
        work / "bld_a",
        size=args.chip,
        stride=args.stride or args.chip // 2,
        split_method="blocks",
        block_size=2 * args.chip,
        val=0.2,
        test=0.0,
        seed=0,
    )
    b = make_chips(
        [Scene(d / "scene_23429155_uint16.tif", d / "buildings.gpkg", split="trn")],
        work / "bld_b",
        size=args.chip,
        stride=args.chip,
        split_method="scene",
    )
    return _compare(
        "buildings_ma (train 22978945, map 23429155)", a.out, b.out, "trn", work / "bld", args, "fg"
    )


def _landsat_chips(work: Path, args: argparse.Namespace, labels: Path, name: str) -> Path:
    from rasterlearn.chips import Scene, make_chips

    res = make_chips(
        [Scene(DATA / "landcover_nc" / "landsat7_5band.tif", label_raster=labels)],
        work / name,
        size=args.chip,
        stride=args.stride or args.chip // 2,
        split_method="blocks",
        block_size=2 * args.chip,
        val=0.2,
        test=0.2,
        max_nodata=50,
        seed=0,
    )
    return res.out


def landcover(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    chips = _landsat_chips(work, args, DATA / "landcover_nc" / "landclass_7.tif", "lc")
    return _compare(
        "landcover_nc (7 classes, spatial split)", chips, chips, "tst", work / "lc_run", args, None
    )


def rare(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    import rasterio

    src = DATA / "landcover_nc" / "landclass_7.tif"
    with rasterio.open(src) as ds:
        cls = ds.read(1)
        prof = ds.profile
    water = np.where(cls == -99999, 255, (cls == 6).astype("uint8")).astype("uint8")
    prof.update(dtype="uint8", nodata=255)
    path = work / "water.tif"
    with rasterio.open(path, "w", **prof) as ds:
        ds.write(water, 1)
    share = float((water == 1).sum() / (water != 255).sum())
    print(f"rare scene: water = {100 * share:.2f} % of the labelled pixels")
    chips = _landsat_chips(work, args, path, "water")
    return _compare(
        "rare binary: water vs rest (landcover_nc)", chips, chips, "tst", work / "w_run", args, "fg"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenario", choices=["buildings", "landcover", "rare", "all"], default="all")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--chip", type=int, default=64)
    p.add_argument("--stride", type=int, default=None, help="training chip stride (default chip/2)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--rf-samples", type=int, default=100_000)
    p.add_argument("--old-defaults", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra training option")
    args = p.parse_args()
    import yaml

    args.options = {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in args.set)}
    if not DATA.is_dir():
        sys.exit(f"shared data not found at {DATA}")
    work = args.out or Path(tempfile.mkdtemp(prefix="rl-baseline-"))
    work.mkdir(parents=True, exist_ok=True)
    todo = ["buildings", "landcover", "rare"] if args.scenario == "all" else [args.scenario]
    results = []
    for name in todo:
        results.append({"buildings": buildings, "landcover": landcover, "rare": rare}[name](work, args))
    print(
        f"\nsettings: epochs {args.epochs}, chip {args.chip}, stride {args.stride or args.chip // 2}, batch {args.batch_size}, unet/{args.encoder}"
    )
    print(f"peak memory {peak_rss_mb():.0f} MB; results in {work / 'results.json'}")
    (work / "results.json").write_text(
        json.dumps({"settings": vars(args) | {"out": str(work)}, "results": results}, indent=1, default=str)
    )


if __name__ == "__main__":
    main()
