"""The run report's figures: class balance, class-map and continuous-raster quick-looks (decimated reads),
RGB composites and cluster maps, each saved as a PNG (:mod:`rasterlearn.report` draws and saves)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rasterlearn import report


def plot_class_balance(
    counts: dict[str, dict[str, int]], names: Sequence[str], colors: Sequence[str], path: str | Path
) -> Path:
    """Grouped bars: share of labelled pixels per class, one group per split (``{split: {class: px}}``)."""
    plt = report._plt()
    splits = [s for s in counts if sum(counts[s].values()) > 0]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(names) + 2), 3.8))
    width = 0.8 / max(1, len(splits))
    x = np.arange(len(names))
    hatches = ["", "//", "..", "xx"]
    for i, s in enumerate(splits):
        total = sum(counts[s].values())
        share = [counts[s].get(n, 0) / total for n in names]
        ax.bar(
            x + (i - (len(splits) - 1) / 2) * width,
            share,
            width,
            color=colors,
            edgecolor="black",
            hatch=hatches[i % len(hatches)],
        )
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("share of labelled pixels")
    ax.set_title("Class balance per split (bar colour = class, hatching = split)")
    if splits:
        from matplotlib.patches import Patch

        handles = [
            Patch(facecolor="white", edgecolor="black", hatch=hatches[i % len(hatches)], label=lbl)
            for i, lbl in enumerate(f"{s} ({sum(counts[s].values()):,} px)" for s in splits)
        ]
        ax.legend(handles=handles, fontsize=8)
    fig.tight_layout()
    return report.save_figure(fig, path)


def read_decimated(path: Path, max_size: int, resampling: str = "nearest") -> tuple[np.ndarray, np.ndarray]:
    """All bands of a raster read at most ``max_size`` pixels on the long side (overviews used) + validity."""
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(path) as ds:
        f = max(1.0, max(ds.height, ds.width) / max_size)
        shape = (ds.count, max(1, round(ds.height / f)), max(1, round(ds.width / f)))
        data = ds.read(out_shape=shape, resampling=Resampling[resampling])
        mask = ds.read_masks(1, out_shape=shape[1:], resampling=Resampling.nearest) > 0
        if ds.nodata is not None and np.isnan(ds.nodata):
            mask &= ~np.isnan(data).any(axis=0)
    return data, mask


def plot_class_map(
    classes: np.ndarray,
    valid: np.ndarray,
    codes: Sequence[int],
    names: Sequence[str],
    colors: Sequence[str],
    path: str | Path,
    *,
    image: np.ndarray | None = None,
    image_valid: np.ndarray | None = None,
    band_names: Sequence[str] | None = None,
    title: str = "Predicted map",
) -> Path:
    """The class map in the schema colours with a legend (beside an RGB composite of the image if given)."""
    plt = report._plt()
    from matplotlib.colors import to_rgb
    from matplotlib.patches import Patch

    lut = {int(c): to_rgb(col) for c, col in zip(codes, colors, strict=True)}
    rgb = np.ones((*classes.shape, 3))
    for c, col in lut.items():
        rgb[classes == c] = col
    rgb[~valid] = 1.0
    panels: list[tuple[str, np.ndarray | None]] = [("image", None)] if image is not None else []
    panels.append((title, rgb))
    h, w = classes.shape
    fig, axes = plt.subplots(
        1, len(panels), figsize=(5.5 * len(panels) * max(0.6, w / h), 5.8), squeeze=False
    )
    for ax, (name, arr) in zip(axes[0], panels, strict=True):
        if arr is None:
            assert image is not None
            arr = report.rgb_composite(image, image_valid, band_names)
        ax.imshow(arr, interpolation="nearest")
        ax.set_title(name)
        ax.set_axis_off()
    present = set(np.unique(classes[valid]).tolist())
    handles = [
        Patch(facecolor=lut[int(c)], edgecolor="black", label=f"{c} {n}")
        for c, n in zip(codes, names, strict=True)
        if int(c) in present
    ]
    fig.legend(
        handles=handles, loc="lower center", ncol=min(6, max(1, len(handles))), fontsize=9, frameon=False
    )
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return report.save_figure(fig, path)


def plot_continuous(data: np.ndarray, valid: np.ndarray, path: Path, title: str, cmap: str) -> Path:
    """A continuous raster (nodata transparent) with a colour bar, saved as ``path``."""
    plt = report._plt()
    fig, ax = plt.subplots(figsize=(6, 6 * data.shape[0] / max(1, data.shape[1])))
    arr = np.where(valid, data, np.nan)
    im = ax.imshow(arr, cmap=cmap, interpolation="nearest")
    ax.set_title(title)
    ax.set_axis_off()
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return report.save_figure(fig, path)


def plot_rgb(rgb: np.ndarray, path: Path, title: str) -> Path:
    """An RGB array (values in [0, 1]) saved as ``path``."""
    plt = report._plt()
    fig, ax = plt.subplots(figsize=(6, 6 * rgb.shape[0] / max(1, rgb.shape[1])))
    ax.imshow(rgb, interpolation="nearest")
    ax.set_title(title)
    ax.set_axis_off()
    fig.tight_layout()
    return report.save_figure(fig, path)


def plot_clusters(labels: np.ndarray, valid: np.ndarray, path: Path, title: str) -> Path:
    """A cluster-label raster in a qualitative palette (invalid pixels and label 0 white), saved as ``path``."""
    plt = report._plt()
    cmap = plt.get_cmap("tab20")
    k = int(labels[valid].max()) if valid.any() else 0
    rgb = np.ones((*labels.shape, 3))
    for c in range(1, k + 1):
        rgb[(labels == c) & valid] = cmap((c - 1) % 20)[:3]
    return plot_rgb(rgb, path, title)
