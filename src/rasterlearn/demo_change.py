"""``rasterlearn demo --change``: change detection end to end on synthetic two-date scenes.

Two synthetic two-date scenes (:mod:`rasterlearn.synthetic_change`): one to train on, another (the next seed)
to map. Stages: multi-date chips -> siamese change model -> streamed change map of the other pair (+
polygons) -> scene-level accuracy against its planted changes -> unsupervised CVA change map for comparison.
Every stage is a library call; finished outputs are reused when the demo runs again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["ChangeDemoResult", "run_change_demo"]

log = logging.getLogger(__name__)


@dataclass
class ChangeDemoResult:
    """Outputs and change-class scores of :func:`run_change_demo`."""

    out: Path
    outputs: dict[str, Path] = field(default_factory=dict)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)


def _change_scores(metrics: dict[str, Any]) -> dict[str, float]:
    c = metrics["per_class"]["change"]
    return {
        "iou": float(c["iou"]),
        "f1": float(c["f1"]),
        "overall_accuracy": float(metrics["overall_accuracy"]),
    }


def run_change_demo(
    out: str | Path,
    *,
    size: int = 256,
    seed: int = 0,
    epochs: int = 20,
    encoder: str = "resnet18",
    temporal: Literal["early", "siamese"] = "siamese",
    progress: Callable[[int], None] | None = None,
) -> ChangeDemoResult:
    """Run the change demo into ``out`` (see the module docstring); ``progress`` is called once per stage."""
    from rasterlearn.change import change_map
    from rasterlearn.chips import Scene, make_chips
    from rasterlearn.evaluate import evaluate_map
    from rasterlearn.predict import predict_package
    from rasterlearn.synthetic_change import change_schema, make_change_scene
    from rasterlearn.train import TrainConfig, train
    from rasterlearn.vectorize import vectorize_raster

    out = Path(out)
    res = ChangeDemoResult(out)

    def step() -> None:
        if progress is not None:
            progress(1)

    trn = make_change_scene(out / "train_pair", size=size, seed=seed)
    tst = make_change_scene(out / "test_pair", size=size, seed=seed + 1)
    step()
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
    step()
    model = out / "model"
    if not (model / "model.json").exists():
        cfg = TrainConfig(
            arch="unet",
            encoder=encoder,
            temporal=temporal,
            epochs=epochs,
            batch_size=8,
            baseline=False,
            seed=seed,
        )
        train(chips, model, cfg, overwrite=True)
    step()
    cmap, polys = out / "change_map.tif", out / "change_map.gpkg"
    if not cmap.exists():
        predict_package(model, [tst.image_a, tst.image_b], cmap, probabilities=out / "change_probability.tif")
    if not polys.exists():
        vectorize_raster(cmap, polys, exclude=[0])
    res.scores[f"{temporal} model"] = _change_scores(
        evaluate_map(cmap, tst.change_raster, output=out / "change_map_metrics.json")
    )
    step()
    cva = out / "change_cva.tif"
    if not cva.exists():
        change_map(tst.image_a, tst.image_b, cva, method="cva", distance=out / "change_cva_distance.tif")
    res.scores["raw-band CVA"] = _change_scores(evaluate_map(cva, tst.change_raster))
    step()
    res.outputs = {
        "date A": tst.image_a,
        "date B": tst.image_b,
        "planted changes": tst.change_raster,
        "change map": cmap,
        "change polygons": polys,
        "change probability": out / "change_probability.tif",
        "CVA change map": cva,
        "model": model,
    }
    return res
