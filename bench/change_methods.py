"""Change-class IoU on the synthetic two-date scene: siamese vs early fusion vs feature differencing vs CVA.

Trains on one synthetic two-date scene (seed 0) and scores every method on another (seed 1), against the
planted change raster, with ``rasterlearn.evaluate.evaluate_map`` (the same code as ``rasterlearn evaluate``).

    OMP_NUM_THREADS=2 uv run python bench/change_methods.py --out /tmp/change_bench

Short CPU training by default (a few minutes); the table is printed as Markdown.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from rasterlearn.change import change_map
from rasterlearn.chips import Scene, make_chips
from rasterlearn.embed import embed
from rasterlearn.evaluate import evaluate_map
from rasterlearn.predict import predict_package
from rasterlearn.synthetic_change import change_schema, make_change_scene
from rasterlearn.train import TrainConfig, train


def _score(map_path: Path, truth: Path) -> dict[str, Any]:
    m = evaluate_map(map_path, truth)
    c = m["per_class"]["change"]
    return {"iou": c["iou"], "f1": c["f1"], "oa": m["overall_accuracy"], "pixels": m["pixels"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", type=int, default=256, help="scene size (px)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--embed-model", default="resnet18", help="timm backbone of feature differencing")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out: Path = args.out
    trn = make_change_scene(out / "train_scene", size=args.size, seed=0)
    tst = make_change_scene(out / "test_scene", size=args.size, seed=1)
    chips = out / "chips"
    if not (chips / "dataset.json").exists():
        make_chips(
            [Scene(image=trn.image_a, labels=trn.labels, later_images=[trn.image_b])],
            chips,
            size=64,
            stride=32,
            attribute="change",
            schema=change_schema(),
        )
    rows: list[tuple[str, dict[str, Any], float, str]] = []
    for mode in ("siamese", "early"):
        t0 = time.perf_counter()
        cfg = TrainConfig(
            arch="unet",
            encoder=args.encoder,
            temporal=mode,
            epochs=args.epochs,
            batch_size=8,
            baseline=False,
            accelerator="cpu",
            seed=0,
            augment="flips",
        )
        train(chips, out / f"model_{mode}", cfg, overwrite=True)
        pred = out / f"pred_{mode}.tif"
        predict_package(out / f"model_{mode}", [tst.image_a, tst.image_b], pred, overwrite=True, resume=False)
        rows.append(
            (
                f"{mode} (unet/{args.encoder}, {args.epochs} epochs)",
                _score(pred, tst.change_raster),
                time.perf_counter() - t0,
                "image grid",
            )
        )
    t0 = time.perf_counter()
    feats = []
    for name, img in (("a", tst.image_a), ("b", tst.image_b)):
        res = embed(
            img,
            args.embed_model,
            pretrained=False,
            seed=0,
            size=64,
            layer=2,
            output=out / f"feat_{name}.tif",
            device="cpu",
            resume=False,
            overwrite=True,
        )
        feats.append(res.path)
    fc = out / "change_features.tif"
    change_map(feats[0], feats[1], fc, method="cosine", overwrite=True, resume=False)
    rows.append(
        (
            f"feature differencing (cosine, random-init {args.embed_model} seed 0, Otsu)",
            _score(fc, tst.change_raster),
            time.perf_counter() - t0,
            "feature grid (1/8)",
        )
    )
    t0 = time.perf_counter()
    cva = out / "change_cva.tif"
    change_map(tst.image_a, tst.image_b, cva, method="cva", overwrite=True, resume=False)
    rows.append(
        ("raw-band CVA (Otsu)", _score(cva, tst.change_raster), time.perf_counter() - t0, "image grid")
    )
    print("| method | change IoU | change F1 | overall accuracy | scored on | seconds |")
    print("|---|---|---|---|---|---|")
    for name, s, sec, grid in rows:
        print(
            f"| {name} | {s['iou']:.3f} | {s['f1']:.3f} | {s['oa']:.3f} | {grid} ({s['pixels']} px) | {sec:.0f} |"
        )


if __name__ == "__main__":
    main()
