"""A built-in per-pixel baseline: a random forest on the chips' bands, scored exactly like the network.

:func:`fit_baseline` fits a scikit-learn ``RandomForestClassifier`` on a bounded random sample of the
labelled, valid pixels of the **same training chips** a network is trained on; :func:`evaluate_baseline`
scores it on a split with the same confusion-matrix code as the network (:mod:`rasterlearn.metrics`).
:func:`run_baseline` does both for the val and tst splits and returns a :class:`BaselineResult` (metrics per
split, fit time, model size). :func:`side_by_side` puts network and baseline metrics in one table and
:func:`baseline_warnings` says when the network does not win.

Per-pixel features (:func:`pixel_features`), computed per chip:

* ``bands``: every band, normalized with the dataset's statistics (a monotone per-band rescaling, so the
  forest sees the raw band order); an NDVI when bands named red and NIR exist; and a cheap texture pair on
  the mean of the normalized bands (local mean and local standard deviation in a 5 x 5 window);
* ``features``: the same plus deep features of a timm backbone (:func:`rasterlearn.embed.load_backbone`),
  upsampled bilinearly to the chip (``extra`` callback; see :mod:`rasterlearn.compare`).

The forest is not written to disk (no pickles); what it scored is.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rasterlearn.data import ChipDataset, DatasetInfo, load_dataset_info, read_manifest
from rasterlearn.errors import EmptyInputError
from rasterlearn.metrics import confusion_matrix, metrics_from_confusion
from rasterlearn.normalize import Normalization

__all__ = [
    "BaselineModel",
    "BaselineResult",
    "baseline_warnings",
    "evaluate_baseline",
    "fit_baseline",
    "pixel_features",
    "run_baseline",
    "side_by_side",
]

log = logging.getLogger(__name__)

RED_NAMES = {"red", "r", "b4", "b04", "sr_b4", "band_red"}
NIR_NAMES = {"nir", "nir08", "nir_08", "b8", "b08", "sr_b5", "band_nir"}
TEXTURE_WINDOW = 5
ExtraFeatures = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, list[str]]]


def _band_index(bands: Sequence[str], names: set[str]) -> int | None:
    for i, b in enumerate(bands):
        if str(b).strip().lower() in names:
            return i
    return None


def pixel_features(
    image: np.ndarray,
    valid: np.ndarray,
    bands: Sequence[str],
    raw: np.ndarray | None = None,
    extra: ExtraFeatures | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Per-pixel features ``(F, H, W)`` float32 and their names for one chip.

    Args:
        image: normalized bands ``(C, H, W)`` (nodata pixels already filled).
        valid: ``(H, W)`` validity mask.
        bands: band names (an NDVI is added when red and NIR are among them).
        raw: the chip's bands in their file values (for the NDVI; default ``image``).
        extra: optional ``extra(image, valid) -> (features (F2, H, W), names)`` appended at the end.
    """
    from scipy.ndimage import uniform_filter

    feats = [image.astype("float32")]
    names = [f"band:{b}" for b in bands]
    red, nir = _band_index(bands, RED_NAMES), _band_index(bands, NIR_NAMES)
    if red is not None and nir is not None:
        src = (raw if raw is not None else image).astype("float64")
        den = src[nir] + src[red]
        ndvi = np.divide(src[nir] - src[red], den, out=np.zeros_like(den), where=np.abs(den) > 1e-9)
        feats.append(ndvi[None].astype("float32"))
        names.append("ndvi")
    bright = image.mean(axis=0).astype("float64")
    fill = float(bright[valid].mean()) if valid.any() else 0.0
    bright = np.where(valid, bright, fill)
    m1 = uniform_filter(bright, TEXTURE_WINDOW, mode="reflect")
    m2 = uniform_filter(bright * bright, TEXTURE_WINDOW, mode="reflect")
    feats.append(np.stack([m1, np.sqrt(np.maximum(m2 - m1 * m1, 0.0))]).astype("float32"))
    names += [f"texture:mean{TEXTURE_WINDOW}", f"texture:std{TEXTURE_WINDOW}"]
    if extra is not None:
        ef, en = extra(image, valid)
        feats.append(ef.astype("float32"))
        names += en
    return np.concatenate(feats, axis=0), names


@dataclass
class BaselineModel:
    """A fitted per-pixel forest and what it needs to score chips."""

    estimator: Any
    feature_names: list[str]
    samples: int
    fit_seconds: float
    kind: str
    normalization: Normalization
    extra: ExtraFeatures | None = field(default=None, repr=False)

    @property
    def size_bytes(self) -> int:
        """Size of the fitted forest when serialized (pickle bytes in memory; nothing is written)."""
        return len(pickle.dumps(self.estimator, protocol=pickle.HIGHEST_PROTOCOL))


def _chip_arrays(
    ds: ChipDataset, i: int, extra: ExtraFeatures | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    data, valid, codes = ds.read(i)
    image = ds.normalization.apply(data, valid)
    target = np.where(valid, ds.schema.code_to_index(codes), ds.ignore_index)
    feats, names = pixel_features(image, valid, ds.info.bands, raw=data, extra=extra)
    return feats, target, names


def fit_baseline(
    dataset: str | Path,
    *,
    kind: str = "bands",
    max_samples: int = 100_000,
    n_estimators: int = 50,
    seed: int = 0,
    n_jobs: int | None = None,
    extra: ExtraFeatures | None = None,
    info: DatasetInfo | None = None,
    progress: Callable[[int], None] | None = None,
) -> BaselineModel:
    """Fit a random forest on a random sample of at most ``max_samples`` labelled trn pixels.

    Every labelled valid pixel of the trn split has the same chance ``min(1, max_samples / labelled)``
    (labelled pixels counted from the manifest), so class frequencies are those of the training chips.
    ``progress`` is called with 1 after each chip.
    """
    from sklearn.ensemble import RandomForestClassifier

    info = info or load_dataset_info(dataset)
    ds = ChipDataset(dataset, "trn", info=info, cache_mb=0)
    labelled = sum(
        float(r.get(f"px_{c}") or 0) for r in read_manifest(dataset, "trn") for c in info.schema.codes
    )
    p = 1.0 if labelled <= 0 else min(1.0, max_samples / labelled)
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    names: list[str] = []
    t0 = time.perf_counter()
    for i in range(len(ds)):
        feats, target, names = _chip_arrays(ds, i, extra)
        keep = (target != ds.ignore_index) & (rng.random(target.shape) < p)
        if keep.any():
            xs.append(feats[:, keep].T)
            ys.append(target[keep])
        if progress is not None:
            progress(1)
    if not xs:
        raise EmptyInputError(
            f"{dataset}: the trn chips hold no labelled valid pixel; the baseline cannot be fitted "
            f"(check the labels, or skip it with --no-baseline)"
        )
    x, y = np.concatenate(xs), np.concatenate(ys)
    if len(y) > max_samples:
        pick = rng.choice(len(y), max_samples, replace=False)
        x, y = x[pick], y[pick]
    rf = RandomForestClassifier(
        n_estimators=n_estimators, min_samples_leaf=2, n_jobs=n_jobs, random_state=seed
    )
    rf.fit(x, y)
    secs = time.perf_counter() - t0
    log.info(
        "Baseline random forest (%s: %d features) fitted on %d trn pixels in %.1f s",
        kind,
        len(names),
        len(y),
        secs,
    )
    return BaselineModel(rf, names, len(y), secs, kind, ds.normalization, extra)


def evaluate_baseline(
    model: BaselineModel,
    dataset: str | Path,
    split: str,
    *,
    info: DatasetInfo | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Metrics of the forest on every labelled valid pixel of ``split`` (same code as the network's).

    ``dataset`` may be another chip folder with the same bands (e.g. another scene): the features are
    normalized with the training chips' statistics, as a model package does.
    """
    info = info or load_dataset_info(dataset)
    ds = ChipDataset(dataset, split, info=info, cache_mb=0, normalization=model.normalization)
    k = info.schema.num_classes
    cm = np.zeros((k, k), dtype="int64")
    for i in range(len(ds)):
        feats, target, _ = _chip_arrays(ds, i, model.extra)
        keep = target != ds.ignore_index
        if keep.any():
            # predict returns class values (classes_), not indices: a class absent from trn is never predicted
            pred = np.asarray(model.estimator.predict(feats[:, keep].T))
            cm += confusion_matrix(target[keep], pred, k)
        if progress is not None:
            progress(1)
    m = metrics_from_confusion(cm, info.schema.names, info.schema.codes)
    m["split"] = split
    m["chips"] = len(ds)
    return m


@dataclass
class BaselineResult:
    """Metrics of the baseline per split plus its cost."""

    kind: str
    metrics: dict[str, dict[str, Any]]
    samples: int
    fit_seconds: float
    seconds: float
    size_bytes: int
    features: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "random_forest",
            "kind": self.kind,
            "features": self.features,
            "samples": self.samples,
            "fit_seconds": round(self.fit_seconds, 3),
            "seconds": round(self.seconds, 3),
            "size_bytes": self.size_bytes,
            "metrics": self.metrics,
        }


def run_baseline(
    dataset: str | Path,
    splits: Sequence[str] = ("val", "tst"),
    *,
    kind: str = "bands",
    max_samples: int = 100_000,
    n_estimators: int = 50,
    seed: int = 0,
    extra: ExtraFeatures | None = None,
    progress: Callable[[int], None] | None = None,
) -> BaselineResult:
    """Fit the forest on the trn chips and score it on each of ``splits`` that has chips."""
    info = load_dataset_info(dataset)
    t0 = time.perf_counter()
    model = fit_baseline(
        dataset,
        kind=kind,
        max_samples=max_samples,
        n_estimators=n_estimators,
        seed=seed,
        extra=extra,
        info=info,
        progress=progress,
    )
    metrics = {}
    for s in splits:
        if read_manifest(dataset, s):
            metrics[s] = evaluate_baseline(model, dataset, s, info=info, progress=progress)
    secs = time.perf_counter() - t0
    return BaselineResult(
        kind, metrics, model.samples, model.fit_seconds, secs, model.size_bytes, model.feature_names
    )


def side_by_side(
    network: Mapping[str, Mapping[str, Any]], baseline: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Rows ``split, model, mIoU, kappa, OA, IoU <class>...`` for every split either side has."""
    rows = []
    for split in dict.fromkeys([*network, *baseline]):
        for label, src in (("network", network), ("baseline (random forest)", baseline)):
            m = src.get(split)
            if not m:
                continue
            row: dict[str, Any] = {
                "split": split,
                "model": label,
                "mean IoU": m.get("mean_iou"),
                "kappa": m.get("kappa"),
                "overall accuracy": m.get("overall_accuracy"),
            }
            for name, pc in (m.get("per_class") or {}).items():
                row[f"IoU {name}"] = pc.get("iou")
            rows.append(row)
    return rows


def baseline_warnings(
    network: Mapping[str, Mapping[str, Any]], baseline: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """A message for each split where the network's mIoU does not beat the baseline's."""
    out = []
    for split, b in baseline.items():
        n = network.get(split)
        if not n or b.get("mean_iou") is None or n.get("mean_iou") is None:
            continue
        nm, bm = float(n["mean_iou"]), float(b["mean_iou"])
        if nm <= bm:
            out.append(
                f"The network does not beat the per-pixel random forest on the {split} split (mIoU "
                f"{nm:.3f} vs {bm:.3f}): deep learning has not helped yet. Try more epochs, pretrained "
                f"weights (--weights/--pretrained), --sampler balanced or more chips; or use the forest."
            )
    return out
