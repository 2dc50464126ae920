"""``rasterlearn demo``: from nothing to a finished map, a report and feature maps in a few minutes on a CPU.

With no inputs the package writes its *synthetic* scene (:mod:`rasterlearn.synthetic`: water, forest,
fields, roads and buildings in UTM 33N, with a nodata corner and vector labels), then runs the whole
pipeline through :func:`rasterlearn.pipeline.run_pipeline`::

    labels -> chips -> train (small U-Net, few epochs) -> predict (Hann blending) -> evaluate -> vectorize
           -> embed (small timm CNN) -> PCA -> k-means -> similarity to the reference points -> report.html

With ``raster``, ``labels`` and ``attribute`` the same pipeline runs on the user's data. Because the demo is
a run config like any other (written to ``OUT/config.yaml``), it is cached and resumable: running it
again skips finished stages, an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rasterlearn.errors import InputError
from rasterlearn.io.paths import check_outputs
from rasterlearn.pipeline import RunConfig, RunResult, run_pipeline

__all__ = [
    "DEMO_FEATURE_MODEL",
    "DemoResult",
    "demo_config",
    "pretrained_available",
    "resolve_unlabelled",
    "run_demo",
]

log = logging.getLogger(__name__)

DEMO_FEATURE_MODEL = "resnet18.a1_in1k"
DEMO_FEATURE_LAYER = 2  # stage 2 of ResNet-18: stride 8, 128 features


@dataclass
class DemoResult:
    """Where the demo's outputs are and its headline numbers."""

    out: Path
    report: Path | None
    synthetic: bool
    features_pretrained: bool | None
    metrics: dict[str, Any]
    per_class_iou: dict[str, float]
    outputs: dict[str, Path] = field(default_factory=dict)
    run: RunResult | None = None


def pretrained_available(model: str) -> bool:
    """Whether timm's pretrained weights of ``model`` are already in the local Hugging Face cache.

    The demo never downloads: with cached weights it uses them, otherwise the backbone is randomly
    initialised (random convolutional features still separate spectrally distinct surfaces).
    """
    try:
        import timm
        from huggingface_hub import try_to_load_from_cache

        cfg = timm.models.get_pretrained_cfg(model)
        repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if not repo:
            return False
        for fname in ("model.safetensors", "pytorch_model.bin"):
            hit = try_to_load_from_cache(repo, fname)
            if isinstance(hit, str) and Path(hit).exists():
                return True
    except Exception as exc:  # any failure here only means "not available offline"
        log.debug("No cached weights for %s: %s", model, exc)
    return False


def resolve_unlabelled(
    unlabelled: Literal["auto", "ignore", "background"], *, synthetic: bool, attribute: str | None
) -> Literal["ignore", "background"]:
    """``ignore`` (sparse polygons) or ``background`` for the demo's labels; logs the choice."""
    if unlabelled not in ("auto", "ignore", "background"):
        raise InputError(f"unlabelled must be auto, ignore or background; got {unlabelled!r}")
    if unlabelled != "auto":
        chosen: Literal["ignore", "background"] = unlabelled
    elif synthetic or attribute is None:
        chosen = "background"
    else:
        chosen = "ignore"
    if not synthetic:
        log.info(
            "Pixels outside every label polygon are %s (%s); %s",
            "ignored: labels only inside the polygons" if chosen == "ignore" else "background",
            "given" if unlabelled != "auto" else "auto",
            "give --unlabelled background if your polygons cover every class everywhere"
            if chosen == "ignore"
            else "give --unlabelled ignore if your polygons are sparse samples",
        )
    return chosen


def demo_config(
    out_dir: str | Path,
    *,
    raster: str | Path,
    labels: str | Path,
    attribute: str | None,
    schema: str | Path | None = None,
    references: str | Path | None = None,
    synthetic: bool = False,
    quick: bool = False,
    chip_size: int | None = None,
    epochs: int | None = None,
    features: bool = True,
    feature_pretrained: bool | None = None,
    unlabelled: Literal["auto", "ignore", "background"] = "auto",
) -> RunConfig:
    """The demo's run configuration (small U-Net, a few epochs, spatial val/test blocks, features).

    ``unlabelled``: what pixels outside every label polygon of the user's labels are. ``ignore``: sparse
    polygons, labelled only inside them (chips ``label_areas: features``, maps evaluated inside the
    polygons only); ``background``: the labels are complete, every other pixel is background; ``auto``:
    ``ignore`` when ``attribute`` names classes of the user's labels, ``background`` for the synthetic scene
    (complete labels) and for a single burnt class (``attribute`` None: outside is its only negative).
    """
    chip = chip_size or (64 if quick else 128)
    sparse = resolve_unlabelled(unlabelled, synthetic=synthetic, attribute=attribute) == "ignore"
    n_epochs = epochs if epochs is not None else 8
    pretrained = (
        pretrained_available(DEMO_FEATURE_MODEL) if feature_pretrained is None else feature_pretrained
    )
    cfg = RunConfig.model_validate(
        {
            "name": "demo",
            "out": str(Path(out_dir).resolve()),
            "scenes": [
                {"image": str(Path(raster).resolve()), "labels": str(Path(labels).resolve()), "id": "scene"}
            ],
            "classes": {"attribute": attribute, **({"file": str(Path(schema).resolve())} if schema else {})},
            "chips": {
                "size": chip,
                "stride": chip // 4 if quick else chip // 2,
                "split_method": "blocks",
                "block_size": 2 * chip,
                "val": 0.15,
                "test": 0.2,
                "max_nodata": 50,
                "seed": 0,
                **({"label_areas": "features"} if sparse else {}),
            },
            "train": {
                "arch": "unet",
                "encoder": "resnet18",
                "epochs": n_epochs,
                "batch_size": 8,
                "lr": 0.001,
                "loss": {"ce": 1.0, "dice": 0.5},
                "class_weights": "inverse_sqrt",
                "augment": "flips",
                "scheduler": "cosine",
                "sample_chips": 4,
                "num_workers": 0,
                "seed": 42,
            },
            "predict": {
                "scenes": "all",
                "overlap": 0.5,
                "blend": "hann",
                "batch_size": 16,
                "vectorize": True,
            },
            "evaluate": {
                "region": "auto",
                "test_chips": True,
                **({"unlabelled": "ignore"} if sparse else {}),
            },
            "features": {
                "enabled": features,
                "model": DEMO_FEATURE_MODEL,
                "pretrained": pretrained,
                "layer": DEMO_FEATURE_LAYER,
                "size": 2 * chip,
                "normalization": "image",
                "pca_components": 3,
                "clusters": 6,
                "references": str(Path(references).resolve()) if references else None,
                "similarity_mode": "max",
                "batch_size": 4,
            },
            "report": {
                "title": "rasterlearn demo" + (" (synthetic scene)" if synthetic else ""),
                "sample_chips": 4,
                "quicklook_size": 768,
            },
        }
    )
    return cfg


def run_demo(
    out_dir: str | Path = "rasterlearn-demo",
    raster: str | Path | None = None,
    labels: str | Path | None = None,
    attribute: str | None = None,
    size: int = 768,
    quick: bool = False,
    *,
    seed: int = 0,
    epochs: int | None = None,
    features: bool = True,
    progress: Callable[[str, int], None] | None = None,
    unlabelled: Literal["auto", "ignore", "background"] = "auto",
) -> DemoResult:
    """Run the whole pipeline on the synthetic scene (no inputs) or on ``raster`` + ``labels``.

    Args:
        out_dir: output folder (``report.html``, ``predict/scene.tif``, ``config.yaml`` ...).
        raster, labels, attribute: the user's image, vector labels and class attribute (all or none of
            raster and labels; ``attribute`` None burns every feature as class 1 against background 0).
        size: synthetic scene size in pixels per side (default 768: under 5 minutes on a 2-core CPU).
        quick: smaller chips and fewer epochs (a smoke run; with the synthetic scene use size 256).
        seed: synthetic scene seed.
        epochs: training epochs (default 8).
        features: also run embed -> PCA -> k-means -> similarity.
        progress: ``progress(stage, n)`` callback (see :func:`rasterlearn.pipeline.run_pipeline`).
        unlabelled: pixels outside the user's label polygons: ``ignore`` (sparse polygons, the default with
            ``attribute``), ``background``, or ``auto`` (see :func:`demo_config`).

    Returns:
        :class:`DemoResult` with the report path and headline metrics.
    """
    out = Path(out_dir)
    check_outputs([raster, labels], [out])
    if (raster is None) != (labels is None):
        raise InputError(
            "Give both --raster and --labels (and usually --attribute), or neither for the synthetic demo"
        )
    synthetic = raster is None
    references: Path | None = None
    schema: Path | None = None
    if synthetic:
        from rasterlearn.synthetic import make_synthetic_scene

        scene = make_synthetic_scene(out / "data", size=size, seed=seed)
        raster, labels, attribute = scene.image, scene.labels, scene.attribute
        references, schema = scene.reference_points, scene.schema_path
        log.info(
            "Synthetic scene written to %s (%d x %d px)", scene.image, scene.grid.width, scene.grid.height
        )
    assert raster is not None and labels is not None
    cfg = demo_config(
        out,
        raster=raster,
        labels=labels,
        attribute=attribute,
        schema=schema,
        references=references,
        synthetic=synthetic,
        quick=quick,
        epochs=epochs,
        features=features,
        unlabelled=unlabelled,
    )
    res = run_pipeline(cfg, out=out, progress=progress)
    metrics = res.metrics()
    per_class: dict[str, float] = {}
    ev = res.stages.get("evaluate")
    if ev is not None and "scene" in ev.outputs.get("maps", {}):
        m = json.loads(Path(ev.outputs["maps"]["scene"]["metrics"]).read_text(encoding="utf-8"))
        per_class = {
            k: float(v["iou"]) for k, v in m.get("per_class", {}).items() if v.get("iou") is not None
        }
    outputs: dict[str, Path] = {}
    pr = res.stages.get("predict")
    if pr is not None:
        outputs["map"] = Path(pr.outputs["maps"]["scene"])
        if "scene" in pr.outputs.get("polygons", {}):
            outputs["polygons"] = Path(pr.outputs["polygons"]["scene"])
    tr = res.stages.get("train")
    if tr is not None:
        outputs["model"] = Path(tr.outputs["package"])
    fe = res.stages.get("features")
    if fe is not None:
        outputs.update({f"features_{k}": Path(v) for k, v in fe.outputs.get("scene", {}).items()})
    return DemoResult(
        out=out,
        report=res.report,
        synthetic=synthetic,
        features_pretrained=bool(fe.summary.get("pretrained")) if fe is not None else None,
        metrics=metrics,
        per_class_iou=per_class,
        outputs=outputs,
        run=res,
    )
