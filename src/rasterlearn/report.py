"""Figures and self-contained HTML pages (matplotlib, Agg backend; images embedded as base64).

Stages write their figures through these helpers so every report looks alike. Nothing here reads rasters.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rasterlearn._util import atomic_write_text

__all__ = [
    "html_page",
    "img_tag",
    "plot_confusion_matrix",
    "plot_sample_grid",
    "plot_training_curves",
    "rgb_composite",
    "save_figure",
    "table_html",
    "training_report_html",
]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Save and close a matplotlib figure (PNG)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    _plt().close(fig)
    return path


def plot_confusion_matrix(
    cm: np.ndarray, names: Sequence[str], path: str | Path, title: str = "Confusion matrix"
) -> Path:
    """Two panels: counts and row-normalized (recall) matrices; rows = truth, columns = prediction."""
    plt = _plt()
    cm = np.asarray(cm, dtype="float64")
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(names)
    size = max(4.0, 0.6 * n + 2.5)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size, size))
    for ax, mat, label, fmt in (
        (axes[0], cm, "pixels", "{:.0f}"),
        (axes[1], norm, "row-normalized", "{:.2f}"),
    ):
        im = ax.imshow(mat, cmap="Blues")
        ax.set_xticks(range(n), names, rotation=45, ha="right")
        ax.set_yticks(range(n), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("truth")
        ax.set_title(f"{title} ({label})")
        top = mat.max() if mat.size else 0
        if n <= 20:
            for i in range(n):
                for j in range(n):
                    ax.text(
                        j,
                        i,
                        fmt.format(mat[i, j]),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if top and mat[i, j] > 0.5 * top else "black",
                    )
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return save_figure(fig, path)


def img_tag(path: str | Path, alt: str = "", width: str | None = None) -> str:
    """An ``<img>`` with the PNG embedded, so the page is self-contained."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    style = f' style="max-width:{width}"' if width else ' style="max-width:100%"'
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"{style}>'


def table_html(rows: Sequence[dict[str, Any]], floatfmt: str = "{:.4f}") -> str:
    """A simple HTML table from a list of dicts (columns from the first row)."""
    if not rows:
        return "<p>(none)</p>"
    cols = list(rows[0])

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return floatfmt.format(v)
        return html.escape("" if v is None else str(v))

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{border-bottom:2px solid #2c7fb8}h2{color:#2c7fb8;margin-top:2rem}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}th,td{border:1px solid #ccc;padding:.25rem .6rem;
text-align:right}th{background:#eef5fb}td:first-child,th:first-child{text-align:left}
.note{color:#666;font-size:.9rem}
.warn{color:#b00020;font-weight:600}
"""


def html_page(title: str, sections: Sequence[tuple[str, str]], path: str | Path, note: str = "") -> Path:
    """Write a self-contained HTML page from ``(heading, html body)`` sections."""
    parts = [f"<h2>{html.escape(h)}</h2>\n{body}" for h, body in sections]
    text = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        + (f"<p class='note'>{html.escape(note)}</p>" if note else "")
        + "\n".join(parts)
        + "</body></html>"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, text)


# ---------------------------------------------------------------------------------------------------
# Training reports (curves, sample chips, HTML page)
# ---------------------------------------------------------------------------------------------------
_RGB_ALIASES = (("red", "r", "b04", "b4"), ("green", "g", "b03", "b3"), ("blue", "b", "b02", "b2"))


def rgb_composite(
    image: np.ndarray,
    valid: np.ndarray | None = None,
    band_names: Sequence[str] | None = None,
    rgb: Sequence[int] | None = None,
    percentiles: tuple[float, float] = (2.0, 98.0),
) -> np.ndarray:
    """A displayable ``(H, W, 3)`` float image in 0..1 from any band count and dtype.

    Bands: ``rgb`` (0-based) if given, else bands named red/green/blue (``R``, ``B04`` ...), else the first
    three; one or two bands give a grey image. Each band is stretched between its 2nd and 98th percentiles
    over valid pixels (no 8-bit assumption); invalid pixels are shown white.
    """
    img = np.asarray(image, dtype="float64")
    if img.ndim == 2:
        img = img[np.newaxis]
    n = img.shape[0]
    if rgb is None and band_names:
        low = [str(b).lower() for b in band_names]
        found = [next((i for i, b in enumerate(low) if b in al), None) for al in _RGB_ALIASES]
        if all(f is not None for f in found):
            rgb = [int(f) for f in found]  # type: ignore[arg-type]
    if rgb is None:
        rgb = [0, 1, 2] if n >= 3 else [0, 0, 0]
    ok = np.ones(img.shape[1:], bool) if valid is None else np.asarray(valid, bool)
    ok = ok & np.isfinite(img).all(axis=0)
    out = np.zeros((*img.shape[1:], 3), dtype="float64")
    for k, b in enumerate(rgb):
        band = img[b]
        vals = band[ok]
        if vals.size:
            lo, hi = np.percentile(vals, percentiles)
            out[..., k] = np.clip((band - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    out[~ok] = 1.0
    return np.nan_to_num(out, nan=1.0)


def plot_training_curves(history: Sequence[dict[str, float]], path: str | Path) -> Path:
    """Loss curves (train/val) and validation metric curves (mIoU, per-class IoU, OA) per epoch."""
    plt = _plt()
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for key in ("train/loss", "val/loss"):
        ys = [h.get(key, np.nan) for h in history]
        if np.isfinite(ys).any():
            axes[0].plot(epochs, ys, marker="o", label=key)
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("loss")
    axes[0].set_title("Loss")
    axes[0].legend()
    keys = ["val/miou", "val/oa", *sorted({k for h in history for k in h if k.startswith("val/iou_")})]
    for key in keys:
        ys = [h.get(key, np.nan) for h in history]
        if np.isfinite(ys).any():
            axes[1].plot(epochs, ys, marker="o", label=key, linewidth=2 if key == "val/miou" else 1)
    axes[1].set_xlabel("epoch")
    axes[1].set_ylim(0, 1)
    axes[1].set_title("Validation metrics")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _class_rgb(index: np.ndarray, colors: Sequence[str], ignore_index: int) -> np.ndarray:
    from matplotlib.colors import to_rgb

    table = np.array([to_rgb(c) for c in colors] + [(1.0, 1.0, 1.0)])
    idx = np.where((index >= 0) & (index < len(colors)), index, len(colors))
    idx = np.where(index == ignore_index, len(colors), idx)
    return table[idx]


def plot_sample_grid(
    samples: Sequence[dict[str, np.ndarray]],
    path: str | Path,
    *,
    band_names: Sequence[str] | None = None,
    class_names: Sequence[str] = (),
    colors: Sequence[str] = (),
    ignore_index: int = 255,
    max_heatmaps: int = 4,
) -> Path:
    """One row per chip: input composite, ground truth, prediction and per-class probability heatmaps.

    Each sample holds ``image`` (bands, H, W) raw values, ``valid``, ``truth`` and ``pred`` (class indices,
    ignore shown white) and ``probs`` (classes, H, W).
    """
    plt = _plt()
    n_heat = min(max_heatmaps, max((s["probs"].shape[0] for s in samples), default=0))
    cols = 3 + n_heat
    rows = max(1, len(samples))
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.4 * rows), squeeze=False)
    for r, s in enumerate(samples):
        axes[r, 0].imshow(rgb_composite(s["image"], s.get("valid"), band_names))
        axes[r, 1].imshow(_class_rgb(s["truth"], colors, ignore_index), interpolation="nearest")
        axes[r, 2].imshow(_class_rgb(s["pred"], colors, ignore_index), interpolation="nearest")
        for k in range(n_heat):
            axes[r, 3 + k].imshow(s["probs"][k], vmin=0, vmax=1, cmap="magma")
        if r == 0:
            titles = ["input", "truth", "prediction"] + [
                f"p({class_names[k] if k < len(class_names) else k})" for k in range(n_heat)
            ]
            for ax, t in zip(axes[0], titles, strict=False):
                ax.set_title(t, fontsize=9)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.tight_layout()
    return save_figure(fig, path)


def training_report_html(
    path: str | Path,
    *,
    metrics: dict[str, Any],
    history: Sequence[dict[str, float]],
    images: dict[str, Path],
    summary: dict[str, Any],
    warnings: Sequence[str] = (),
    comparison: Sequence[dict[str, Any]] = (),
) -> Path:
    """One self-contained HTML page: warnings (collapse, baseline) first, run summary, per-class metrics,
    network vs baseline, curves, confusion matrix, samples."""
    sections = []
    if warnings:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
        sections.append(("Warnings", f"<ul class='warn'>{items}</ul>"))
    sections.append(("Run", table_html([{"option": k, "value": str(v)} for k, v in summary.items()])))
    rows = [
        {
            "class": name,
            "code": m.get("code"),
            "IoU": m["iou"],
            "F1": m["f1"],
            "user's accuracy (precision)": m["users_accuracy"],
            "producer's accuracy (recall)": m["producers_accuracy"],
            "support (px)": m["support"],
        }
        for name, m in metrics["per_class"].items()
    ]
    overall = (
        f"<p>mean IoU {_num(metrics.get('mean_iou'))} · overall accuracy "
        f"{_num(metrics.get('overall_accuracy'))} · kappa {_num(metrics.get('kappa'))} · "
        f"{metrics.get('pixels', 0)} pixels</p>"
    )
    sections.append(("Validation metrics (best model, whole split)", overall + table_html(rows)))
    if comparison:
        sections.append(("Network vs per-pixel random forest baseline", table_html(list(comparison))))
    for key, title in (
        ("curves", "Training curves"),
        ("confusion", "Confusion matrix"),
        ("samples", "Sample chips"),
    ):
        if key in images:
            sections.append((title, img_tag(images[key], title)))
    if history:
        sections.append(("History", table_html([dict(h) for h in history])))
    return html_page("rasterlearn training report", sections, path)


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.4f}"
