"""``rasterlearn compare``: several approaches trained on the same chips and split, scored the same way.

Candidates are strings:

* ``ARCH:ENCODER`` (``unet:resnet18``, ``unet:resnet34``, ``deeplabv3plus:tu-convnext_tiny`` ...): a network
  trained by :func:`rasterlearn.train.train` on the trn chips (its own baseline skipped) and scored on val and
  tst;
* ``rf:bands``: the per-pixel random forest of :mod:`rasterlearn.baseline` on the bands (+ NDVI, texture);
* ``rf:features``: the same forest on the bands plus deep features of a timm backbone
  (:func:`rasterlearn.embed.load_backbone`, the demo's ResNet-18 stage 2 by default: pretrained weights when
  they are in the local cache, otherwise a random initialisation, which is recorded).

Every candidate sees the same chip folder, hence the same (spatial) split made by ``rasterlearn chips``.
:func:`compare` writes ``compare.csv`` and ``compare.json`` (one row per candidate and split: mIoU, kappa,
OA, IoU per class, wall time, model size) and ``compare.png`` (mIoU per candidate and split).
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rasterlearn._util import atomic_write, atomic_write_json
from rasterlearn.data import load_dataset_info, read_manifest
from rasterlearn.errors import ConfigError, OutputError

__all__ = ["Candidate", "CompareResult", "compare", "feature_extractor", "parse_candidates", "plot_compare"]

log = logging.getLogger(__name__)

RF_KINDS = ("bands", "features")


@dataclass(frozen=True)
class Candidate:
    """One approach: ``kind`` is ``network`` (``arch``/``encoder``) or ``rf`` (``features`` = bands/features)."""

    name: str
    kind: str
    arch: str = ""
    encoder: str = ""
    features: str = ""


def parse_candidates(text: str | Sequence[str]) -> list[Candidate]:
    """Parse ``"unet:resnet18,rf:bands"`` (or a list of such items) into :class:`Candidate` values."""
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    if not items:
        raise ConfigError("--candidates is empty; give e.g. 'unet:resnet18,rf:bands'")
    out: list[Candidate] = []
    for item in items:
        left, sep, right = item.partition(":")
        if not sep or not left or not right:
            raise ConfigError(
                f"Bad candidate {item!r}: write ARCH:ENCODER (e.g. unet:resnet18) or rf:bands / rf:features"
            )
        if left.lower() == "rf":
            if right.lower() not in RF_KINDS:
                raise ConfigError(f"Bad candidate {item!r}: the random forest takes rf:bands or rf:features")
            out.append(Candidate(item, "rf", features=right.lower()))
        else:
            from rasterlearn.models import model_spec

            model_spec(left)  # raises naming the registered architectures
            out.append(Candidate(item, "network", arch=left, encoder=right))
    names = [c.name for c in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"Candidates given twice: {', '.join(dup)}")
    return out


def feature_extractor(
    model: str, in_chans: int, *, layer: int | None = 2, pretrained: bool | None = None
) -> tuple[Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, list[str]]], dict[str, Any]]:
    """A per-chip deep-feature function for :func:`rasterlearn.baseline.pixel_features` and its record.

    The backbone (``embed``'s loader) sees the dataset-normalized chip, padded to a multiple of its stride;
    its feature map is upsampled bilinearly to the chip. ``pretrained=None`` uses pretrained weights only
    when they are already cached (never downloads).
    """
    import torch

    from rasterlearn.demo import pretrained_available
    from rasterlearn.embed import load_backbone

    use = pretrained_available(model) if pretrained is None else pretrained
    bb = load_backbone(model, in_chans=in_chans, layer=layer, pretrained=use)
    if not use:
        log.warning(
            "rf:features: no cached pretrained weights for %s; its features come from a random initialisation",
            model,
        )

    @torch.no_grad()
    def extra(image: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, list[str]]:
        h, w = image.shape[-2:]
        s = bb.stride
        ph, pw = -h % s, -w % s
        x = torch.from_numpy(np.ascontiguousarray(image, dtype="float32"))[None]
        if ph or pw:
            x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > s else "replicate")
        f = bb(x)
        f = torch.nn.functional.interpolate(f, size=(h + ph, w + pw), mode="bilinear", align_corners=False)[
            0, :, :h, :w
        ]
        return f.numpy(), [f"deep:{i}" for i in range(f.shape[0])]

    return extra, {"model": model, "layer": bb.layer, "stride": bb.stride, "dim": bb.dim, "pretrained": use}


@dataclass
class CompareResult:
    """The comparison table and the files written."""

    rows: list[dict[str, Any]]
    files: dict[str, Path] = field(default_factory=dict)


def _rows(
    name: str, kind: str, metrics: Mapping[str, Mapping[str, Any]], secs: float, size: int
) -> list[dict]:
    rows = []
    for split, m in metrics.items():
        row: dict[str, Any] = {
            "candidate": name,
            "kind": kind,
            "split": split,
            "mean_iou": m.get("mean_iou"),
            "kappa": m.get("kappa"),
            "overall_accuracy": m.get("overall_accuracy"),
        }
        for cls, pc in (m.get("per_class") or {}).items():
            row[f"iou_{cls}"] = pc.get("iou")
        row["seconds"] = round(secs, 2)
        row["model_bytes"] = int(size)
        rows.append(row)
    return rows


def _run_network(
    c: Candidate, dataset: Path, out: Path, splits: Sequence[str], options: Mapping[str, Any]
) -> tuple[dict[str, dict[str, Any]], float, int]:
    from rasterlearn.train import evaluate_model, load_train_config, train

    cfg = load_train_config(None, **{**options, "arch": c.arch, "encoder": c.encoder, "baseline": False})
    folder = out / c.name.replace(":", "_").replace("/", "_")
    t0 = time.perf_counter()
    train(dataset, folder, cfg, overwrite=True)
    metrics = {s: evaluate_model(folder, dataset, split=s) for s in splits}  # type: ignore[arg-type]
    secs = time.perf_counter() - t0
    size = (folder / "model.safetensors").stat().st_size
    return metrics, secs, size


def compare(
    dataset: str | Path,
    candidates: str | Sequence[str],
    out: str | Path,
    *,
    train_options: Mapping[str, Any] | None = None,
    rf_samples: int = 100_000,
    rf_trees: int = 50,
    feature_model: str = "resnet18.a1_in1k",
    feature_layer: int | None = 2,
    feature_pretrained: bool | None = None,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> CompareResult:
    """Train/fit every candidate on the trn chips of ``dataset``, score each on val and tst, write the table.

    Args:
        dataset: chip folder (its split is the one every candidate uses).
        candidates: ``"unet:resnet18,rf:bands"`` or a list of such names (see the module docstring).
        out: output folder: ``compare.csv``, ``compare.json``, ``compare.png`` and one subfolder per network.
        train_options: :class:`rasterlearn.train.TrainConfig` fields for the networks (e.g. ``epochs``).
        rf_samples, rf_trees: pixels and trees of the random forests.
        feature_model, feature_layer, feature_pretrained: backbone of ``rf:features``.
        progress: called with 1 after each finished candidate.
    """
    dataset, out = Path(dataset), Path(out)
    if out.resolve() == dataset.resolve() or dataset.resolve() in out.resolve().parents:
        raise OutputError(f"--out {out} is (inside) the chip folder {dataset}; choose another output folder")
    cands = parse_candidates(candidates)
    info = load_dataset_info(dataset)
    splits = [s for s in ("val", "tst") if read_manifest(dataset, s)]
    if not splits:
        raise ConfigError(
            f"{dataset} has no val or tst chips to compare on; re-create chips with a val share"
        )
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    records: dict[str, Any] = {}
    for c in cands:
        log.info("compare: %s", c.name)
        if c.kind == "network":
            metrics, secs, size = _run_network(c, dataset, out, splits, dict(train_options or {}))
        else:
            from rasterlearn.baseline import run_baseline

            extra = None
            if c.features == "features":
                extra, records[c.name] = feature_extractor(
                    feature_model, len(info.bands), layer=feature_layer, pretrained=feature_pretrained
                )
            t0 = time.perf_counter()
            res = run_baseline(
                dataset,
                splits,
                kind=c.features,
                max_samples=rf_samples,
                n_estimators=rf_trees,
                seed=seed,
                extra=extra,
            )
            metrics, secs, size = res.metrics, time.perf_counter() - t0, res.size_bytes
        rows += _rows(c.name, c.kind, metrics, secs, size)
        if progress is not None:
            progress(1)
    files = _write(out, rows, records, dataset)
    return CompareResult(rows, files)


def _write(out: Path, rows: list[dict[str, Any]], records: dict[str, Any], dataset: Path) -> dict[str, Path]:
    cols = list(dict.fromkeys(k for r in rows for k in r))

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)

    files = {
        "csv": atomic_write(out / "compare.csv", write_csv),
        "json": atomic_write_json(
            out / "compare.json", {"dataset": str(dataset.resolve()), "rows": rows, "features": records}
        ),
        "plot": plot_compare(rows, out / "compare.png"),
    }
    log.info("Comparison written to %s (table %s, plot %s)", out, files["csv"].name, files["plot"].name)
    return files


def plot_compare(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Grouped bars: mean IoU of each candidate per split (the report helpers save the PNG)."""
    from rasterlearn.report import _plt, save_figure

    plt = _plt()
    names = list(dict.fromkeys(r["candidate"] for r in rows))
    splits = list(dict.fromkeys(r["split"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(names) + 2), 4))
    width = 0.8 / max(1, len(splits))
    for j, s in enumerate(splits):
        vals = [
            next((float(r["mean_iou"] or 0) for r in rows if r["candidate"] == n and r["split"] == s), 0.0)
            for n in names
        ]
        xs = np.arange(len(names)) + (j - (len(splits) - 1) / 2) * width
        bars = ax.bar(xs, vals, width, label=s)
        for b, v in zip(bars, vals, strict=True):
            ax.text(b.get_x() + b.get_width() / 2, v + 0.01, f"{v:.2f}", ha="center", fontsize=8)
    ax.set_xticks(np.arange(len(names)), names, rotation=20)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("mean IoU")
    ax.set_title("Candidates on the same chips and split")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)
