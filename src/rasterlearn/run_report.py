"""One self-contained HTML page per run (``OUT/report.html``), every figure also saved under ``OUT/report/``.

Sections: data summary (scenes, classes, chip counts per split, class balance chart), training curves,
validation / test / map metrics with confusion matrices, sample chips (input / truth / prediction), a
quick-look of each predicted map with its legend, feature maps (PCA, clusters, similarity), run parameters
and library versions, and the list of outputs with how to open them in QGIS.

The page is built from the files the stages wrote (``dataset.json``, ``manifest.csv``, ``history.csv``,
``metrics.json``, the maps), so it can be regenerated at any time without re-running anything.
"""

from __future__ import annotations

import csv
import html
import json
import logging
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rasterlearn import report
from rasterlearn.diagnostics import collapse_warnings, headline

__all__ = ["ReportInputs", "plot_class_balance", "plot_class_map", "write_run_report"]

log = logging.getLogger(__name__)


@dataclass
class ReportInputs:
    """What the run produced (any part may be missing; its section is then left out)."""

    title: str = "rasterlearn run"
    dataset: Path | None = None
    train_dir: Path | None = None
    scenes: list[dict[str, Any]] = field(default_factory=list)
    maps: dict[str, Path] = field(default_factory=dict)
    images: dict[str, Path] = field(default_factory=dict)
    polygons: dict[str, Path] = field(default_factory=dict)
    test_chips: Path | None = None
    map_metrics: dict[str, tuple[Path, str]] = field(default_factory=dict)
    features: dict[str, dict[str, Path]] = field(default_factory=dict)
    features_note: str = ""
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    sample_chips: int = 6
    quicklook_size: int = 1024
    note: str = ""


# -------------------------------------------------------------------------------------------------
# Figures
# -------------------------------------------------------------------------------------------------
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


def _read_decimated(path: Path, max_size: int, resampling: str = "nearest") -> tuple[np.ndarray, np.ndarray]:
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


def _plot_continuous(data: np.ndarray, valid: np.ndarray, path: Path, title: str, cmap: str) -> Path:
    plt = report._plt()
    fig, ax = plt.subplots(figsize=(6, 6 * data.shape[0] / max(1, data.shape[1])))
    arr = np.where(valid, data, np.nan)
    im = ax.imshow(arr, cmap=cmap, interpolation="nearest")
    ax.set_title(title)
    ax.set_axis_off()
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return report.save_figure(fig, path)


def _plot_rgb(rgb: np.ndarray, path: Path, title: str) -> Path:
    plt = report._plt()
    fig, ax = plt.subplots(figsize=(6, 6 * rgb.shape[0] / max(1, rgb.shape[1])))
    ax.imshow(rgb, interpolation="nearest")
    ax.set_title(title)
    ax.set_axis_off()
    fig.tight_layout()
    return report.save_figure(fig, path)


def _plot_clusters(labels: np.ndarray, valid: np.ndarray, path: Path, title: str) -> Path:
    plt = report._plt()
    cmap = plt.get_cmap("tab20")
    k = int(labels[valid].max()) if valid.any() else 0
    rgb = np.ones((*labels.shape, 3))
    for c in range(1, k + 1):
        rgb[(labels == c) & valid] = cmap((c - 1) % 20)[:3]
    return _plot_rgb(rgb, path, title)


# -------------------------------------------------------------------------------------------------
# Sections
# -------------------------------------------------------------------------------------------------
def _load_json(path: Path | None) -> dict[str, Any] | None:
    if path is None or not Path(path).exists():
        return None
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _num(v: Any, fmt: str = "{:.4f}") -> str:
    try:
        return fmt.format(float(v))
    except (TypeError, ValueError):
        return "n/a"


def _schema(inputs: ReportInputs, dataset: dict[str, Any] | None) -> Any:
    from rasterlearn.labels import ClassSchema

    if inputs.train_dir is not None and (inputs.train_dir / "model.json").exists():
        meta = json.loads((inputs.train_dir / "model.json").read_text(encoding="utf-8"))
        if meta.get("schema"):
            return ClassSchema.from_dict(meta["schema"])
    if dataset and dataset.get("schema"):
        return ClassSchema.from_dict(dataset["schema"])
    return None


def _data_section(inputs: ReportInputs, figs: Path, dataset: dict[str, Any] | None, schema: Any) -> str:
    parts: list[str] = []
    if inputs.scenes:
        rows = []
        for s in inputs.scenes:
            row = dict(s)
            try:
                import rasterio

                with rasterio.open(s["image"]) as ds:
                    row["size (px)"] = f"{ds.width} x {ds.height} x {ds.count} bands"
                    row["dtype"] = ds.dtypes[0]
                    row["pixel size"] = f"{abs(ds.res[0]):g}"
                    row["CRS"] = ds.crs.to_string() if ds.crs else "none"
            except Exception:  # a scene that cannot be opened is reported, not fatal for the report
                row["size (px)"] = "unreadable"
            row["image"] = Path(s["image"]).name
            row["labels"] = Path(s["labels"]).name if s.get("labels") else ""
            rows.append(row)
        parts.append("<h3>Scenes</h3>" + report.table_html(rows))
    if schema is not None:
        rows = [
            {
                "code": c.code,
                "class": c.name,
                "colour": c.color,
            }
            for c in schema.classes
        ]
        swatches = "".join(
            f"<span style='display:inline-block;margin-right:1em'><span style='display:inline-block;"
            f"width:1em;height:1em;background:{html.escape(c.color)};border:1px solid #333;"
            f"vertical-align:middle'></span> {c.code} {html.escape(c.name)}</span>"
            for c in schema.classes
        )
        parts.append(
            f"<h3>Classes</h3><p>{swatches}</p><p class='note'>ignore code {schema.ignore_index}"
            f"{'' if schema.background is None else f', background code {schema.background}'}</p>"
            + report.table_html(rows)
        )
    if dataset is not None and inputs.dataset is not None:
        splits = dataset.get("splits", {})
        dropped = dataset.get("dropped", {})
        parts.append(
            "<h3>Chips</h3>"
            + report.table_html(
                [
                    {
                        "chip size": dataset.get("chip_size"),
                        "stride": dataset.get("stride"),
                        "bands": ", ".join(map(str, dataset.get("bands", []))),
                        "split method": dataset.get("split_method"),
                        **{f"{k} chips": v for k, v in splits.items()},
                        "dropped": ", ".join(f"{k} {v}" for k, v in dropped.items() if v) or "none",
                    }
                ]
            )
        )
        man = inputs.dataset / "manifest.csv"
        if schema is not None and man.exists():
            counts: dict[str, dict[str, int]] = {}
            for r in _read_csv(man):
                sp = counts.setdefault(r.get("split", "?"), {})
                for c in schema.classes:
                    v = r.get(f"px_{c.code}")
                    if v not in (None, ""):
                        sp[c.name] = sp.get(c.name, 0) + int(float(v))
            order = [s for s in ("trn", "val", "tst") if s in counts] + [
                s for s in counts if s not in ("trn", "val", "tst")
            ]
            png = plot_class_balance(
                {s: counts[s] for s in order}, schema.names, schema.colors, figs / "class_balance.png"
            )
            rows = [
                {
                    "split": s,
                    **{
                        n: f"{100 * counts[s].get(n, 0) / max(1, sum(counts[s].values())):.1f} %"
                        for n in schema.names
                    },
                }
                for s in order
            ]
            parts.append(report.img_tag(png, "class balance") + report.table_html(rows))
    return "\n".join(parts)


def _metrics_rows(label: str, m: dict[str, Any], region: str = "") -> dict[str, Any]:
    row: dict[str, Any] = {
        "evaluation": label,
        "region": region,
        "mean IoU": _num(m.get("mean_iou")),
        "mean F1": _num(m.get("mean_f1")),
        "overall accuracy": _num(m.get("overall_accuracy")),
        "kappa": _num(m.get("kappa")),
    }
    for name, pc in (m.get("per_class") or {}).items():
        row[f"IoU {name}"] = _num(pc.get("iou"))
    return row


def _metrics_section(inputs: ReportInputs, figs: Path) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    evals: list[tuple[str, str, dict[str, Any]]] = []
    val = _load_json(inputs.train_dir / "metrics.json" if inputs.train_dir else None)
    if val:
        evals.append(("validation chips (best model)", "val split", val))
    tst = _load_json(inputs.test_chips)
    if tst:
        evals.append(("test chips", "tst split", tst))
    for sid, (path, region) in inputs.map_metrics.items():
        m = _load_json(path)
        if m:
            evals.append((f"map of {sid}", region, m))
    if not evals:
        return "", []
    parts = [report.table_html([_metrics_rows(a, m, r) for a, r, m in evals])]
    parts.append(
        "<p class='note'>IoU = intersection over union per class; map metrics compare the predicted map "
        "with the rasterized labels pixel by pixel (ignore and nodata pixels excluded).</p>"
    )
    for label, _, m in evals:
        cm = m.get("confusion_matrix")
        names = m.get("classes") or list((m.get("per_class") or {}).keys())
        if cm is None or not names:
            continue
        slug = "".join(ch if ch.isalnum() else "_" for ch in label)
        png = report.plot_confusion_matrix(np.asarray(cm), names, figs / f"confusion_{slug}.png", title=label)
        parts.append(f"<h3>Confusion matrix: {html.escape(label)}</h3>" + report.img_tag(png, label))
    return "\n".join(parts), [(a, m) for a, _, m in evals]


def _training_section(inputs: ReportInputs, figs: Path) -> str:
    if inputs.train_dir is None:
        return ""
    parts = []
    hist = inputs.train_dir / "history.csv"
    if hist.exists():
        rows = _read_csv(hist)
        history = [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in rows]
        if history:
            png = report.plot_training_curves(history, figs / "training_curves.png")
            parts.append(report.img_tag(png, "training curves"))
    meta = _load_json(inputs.train_dir / "model.json")
    if meta:
        tr = meta.get("training") or {}
        info = {
            "architecture": meta.get("arch"),
            "encoder": meta.get("encoder"),
            "bands": ", ".join(map(str, meta.get("bands", []))),
            "chip size": meta.get("chip_size"),
            "epochs trained": tr.get("epochs_trained", tr.get("epochs")),
            "best epoch": tr.get("best_epoch"),
            "loss (chosen)": (tr.get("imbalance") or {}).get("loss"),
            "class weights": (tr.get("imbalance") or {}).get("class_weights"),
            "chip sampler": (tr.get("imbalance") or {}).get("sampler"),
            "model package": str(inputs.train_dir),
        }
        parts.append(
            report.table_html([{"option": k, "value": "" if v is None else str(v)} for k, v in info.items()])
        )
    return "\n".join(parts)


def _sample_section(inputs: ReportInputs, figs: Path, schema: Any, dataset: dict[str, Any] | None) -> str:
    """Input / truth / prediction for a few tst (else val) chips whose scene has a predicted map."""
    if inputs.dataset is None or schema is None or not inputs.sample_chips:
        return ""
    man = inputs.dataset / "manifest.csv"
    if not man.exists():
        return ""
    rows = _read_csv(man)
    samples: list[dict[str, np.ndarray]] = []
    for split in ("tst", "val"):
        cand = [r for r in rows if r.get("split") == split and r.get("scene") in inputs.maps]
        if cand:
            idx = np.linspace(0, len(cand) - 1, num=min(inputs.sample_chips, len(cand))).round().astype(int)
            samples = [_sample(inputs, cand[i], schema) for i in dict.fromkeys(idx.tolist())]
            chosen = split
            break
    if samples:
        png = report.plot_sample_grid(
            [s for s in samples if s],
            figs / "sample_chips.png",
            band_names=(dataset or {}).get("bands"),
            class_names=schema.names,
            colors=schema.colors,
            ignore_index=schema.ignore_index,
            max_heatmaps=0,
        )
        return (
            f"<p class='note'>{len(samples)} chips of the {chosen} split; the prediction column is cut from the "
            f"final (blended) map.</p>" + report.img_tag(png, "sample chips")
        )
    fallback = inputs.train_dir / "samples.png" if inputs.train_dir else None
    if fallback is not None and fallback.exists():
        png = figs / "sample_chips.png"
        png.write_bytes(fallback.read_bytes())
        return (
            "<p class='note'>Validation chips predicted by the trained model (no chipped scene was mapped); "
            "columns: input, truth, prediction and class probabilities.</p>"
            + report.img_tag(png, "sample chips")
        )
    return ""


def _sample(inputs: ReportInputs, row: dict[str, str], schema: Any) -> dict[str, np.ndarray]:
    import rasterio
    from rasterio.windows import from_bounds

    assert inputs.dataset is not None
    with rasterio.open(inputs.dataset / row["image"]) as ds:
        image = ds.read()
        valid = ds.read_masks(1) > 0
        bounds = ds.bounds
    with rasterio.open(inputs.dataset / row["mask"]) as ds:
        truth_codes = ds.read(1)
    with rasterio.open(inputs.maps[row["scene"]]) as ds:
        win = from_bounds(*bounds, transform=ds.transform).round_offsets().round_lengths()
        pred_codes = ds.read(
            1, window=win, boundless=True, fill_value=ds.nodata if ds.nodata is not None else 255
        )
    return {
        "image": image,
        "valid": valid,
        "truth": schema.code_to_index(truth_codes),
        "pred": schema.code_to_index(pred_codes),
        "probs": np.zeros((0, *truth_codes.shape), "float32"),
    }


def _maps_section(inputs: ReportInputs, figs: Path, schema: Any, dataset: dict[str, Any] | None) -> str:
    if not inputs.maps or schema is None:
        return ""
    parts = []
    for sid, path in inputs.maps.items():
        if not Path(path).exists():
            continue
        classes, valid = _read_decimated(Path(path), inputs.quicklook_size)
        img = img_valid = None
        names = None
        if sid in inputs.images and Path(inputs.images[sid]).exists():
            img, img_valid = _read_decimated(Path(inputs.images[sid]), inputs.quicklook_size, "average")
            import rasterio

            with rasterio.open(inputs.images[sid]) as ds:
                names = [d or f"band{i + 1}" for i, d in enumerate(ds.descriptions)]
            if img.shape[1:] != classes.shape[1:]:
                img = img_valid = None
        png = plot_class_map(
            classes[0],
            valid,
            schema.codes,
            schema.names,
            schema.colors,
            figs / f"map_{sid}.png",
            image=img,
            image_valid=img_valid,
            band_names=names,
            title=f"Predicted map: {sid}",
        )
        vals, counts = np.unique(classes[0][valid], return_counts=True)
        total = max(1, int(counts.sum()))
        share = {int(v): c / total for v, c in zip(vals, counts, strict=True)}
        rows = [
            {"code": c.code, "class": c.name, "share of the map": f"{100 * share.get(c.code, 0):.1f} %"}
            for c in schema.classes
        ]
        files = f"<p class='note'>{html.escape(str(path))}"
        if sid in inputs.polygons:
            files += f" · polygons: {html.escape(str(inputs.polygons[sid]))}"
        files += "</p>"
        parts.append(
            f"<h3>{html.escape(sid)}</h3>"
            + report.img_tag(png, f"map {sid}")
            + files
            + report.table_html(rows)
        )
    return "\n".join(parts)


def _features_section(inputs: ReportInputs, figs: Path) -> str:
    if not inputs.features:
        return ""
    parts = [f"<p class='note'>{html.escape(inputs.features_note)}</p>"] if inputs.features_note else []
    for sid, files in inputs.features.items():
        sub = []
        if "pca" in files and files["pca"].exists():
            data, valid = _read_decimated(files["pca"], inputs.quicklook_size, "average")
            valid = valid & np.isfinite(data).all(axis=0)
            rgb = report.rgb_composite(
                data[:3] if data.shape[0] >= 3 else data, valid, rgb=[0, 1, 2] if data.shape[0] >= 3 else None
            )
            sub.append(
                report.img_tag(
                    _plot_rgb(rgb, figs / f"pca_{sid}.png", "PCA of the features (RGB = PC1-3)"), "pca"
                )
            )
        if "clusters" in files and files["clusters"].exists():
            data, valid = _read_decimated(files["clusters"], inputs.quicklook_size)
            valid = valid & (data[0] > 0)
            sub.append(
                report.img_tag(
                    _plot_clusters(data[0], valid, figs / f"clusters_{sid}.png", "k-means clusters"),
                    "clusters",
                )
            )
        if "similarity" in files and files["similarity"].exists():
            data, valid = _read_decimated(files["similarity"], inputs.quicklook_size, "average")
            valid = valid & np.isfinite(data[0])
            sub.append(
                report.img_tag(
                    _plot_continuous(
                        data[0],
                        valid,
                        figs / f"similarity_{sid}.png",
                        "cosine similarity to the references",
                        "viridis",
                    ),
                    "similarity",
                )
            )
        if sub:
            parts.append(f"<h3>{html.escape(sid)}</h3>" + "".join(f"<div>{s}</div>" for s in sub))
    return "\n".join(parts)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in (
        "rasterlearn",
        "torch",
        "lightning",
        "segmentation-models-pytorch",
        "timm",
        "numpy",
        "rasterio",
        "geopandas",
        "scikit-learn",
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    try:
        import rasterio

        out["GDAL"] = rasterio.__gdal_version__
    except Exception:  # pragma: no cover - rasterio is a dependency
        pass
    return out


def _params_section(inputs: ReportInputs) -> str:
    import yaml

    parts = []
    if inputs.stages:
        parts.append(
            "<h3>Stages</h3>"
            + report.table_html(
                [
                    {
                        "stage": k,
                        "hash": v.get("hash"),
                        "seconds": _num(v.get("seconds"), "{:.1f}"),
                        "runs": v.get("runs"),
                    }
                    for k, v in inputs.stages.items()
                ]
            )
        )
    if inputs.config:
        text = yaml.safe_dump(inputs.config, sort_keys=False)
        parts.append(
            f"<h3>Configuration</h3><pre style='background:#f6f8fa;padding:1em;overflow:auto'>{html.escape(text)}</pre>"
        )
    parts.append(
        "<h3>Versions</h3>"
        + report.table_html([{"library": k, "version": v} for k, v in _versions().items()])
    )
    return "\n".join(parts)


def _outputs_section(out: Path, inputs: ReportInputs) -> str:
    rows = []

    def add(what: str, p: Path | None) -> None:
        if p is not None and Path(p).exists():
            try:
                rel = Path(p).resolve().relative_to(out.resolve())
            except ValueError:
                rel = Path(p)
            rows.append({"output": what, "path": str(rel)})

    for sid, p in inputs.maps.items():
        add(f"class map {sid} (COG, colour table, QGIS style)", p)
    for sid, p in inputs.polygons.items():
        add(f"polygons {sid} (GeoPackage)", p)
    if inputs.train_dir is not None:
        add("model package (model.json + model.safetensors)", inputs.train_dir / "model.json")
    add("chip dataset", inputs.dataset / "dataset.json" if inputs.dataset else None)
    for sid, files in inputs.features.items():
        for k, p in files.items():
            add(f"{k} {sid}", p)
    note = (
        "<p class='note'>Open the maps in QGIS by dragging the .tif in: class maps come coloured and labelled "
        "(their .qml style sits beside them); polygons open with their class attribute.</p>"
    )
    return report.table_html(rows) + note if rows else ""


# -------------------------------------------------------------------------------------------------
def write_run_report(out: str | Path, inputs: ReportInputs) -> Path:
    """Write ``out/report.html`` (figures embedded) and its figures as PNGs in ``out/report/``."""
    out = Path(out)
    figs = out / "report"
    figs.mkdir(parents=True, exist_ok=True)
    dataset = _load_json(inputs.dataset / "dataset.json" if inputs.dataset else None)
    schema = _schema(inputs, dataset)
    sections: list[tuple[str, str]] = []
    headline, evals = _metrics_section(inputs, figs)
    train_metrics = _load_json(inputs.train_dir / "metrics.json" if inputs.train_dir else None) or {}
    warnings = [str(w) for w in train_metrics.get("warnings") or []]
    for label, m in evals[1:] if train_metrics else evals:
        warnings += [f"{label}: {w}" for w in collapse_warnings(m, label)]
    if warnings:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
        sections.append(("Warnings", f"<ul class='warn'>{items}</ul>"))
    summary = _headline(evals)
    if summary:
        sections.append(("Summary", summary))
    comparison = (train_metrics.get("comparison") or {}).get("table")
    if comparison:
        sections.append(
            (
                "Network vs per-pixel random forest baseline (same chips, same split)",
                report.table_html(comparison),
            )
        )
    maps = _maps_section(inputs, figs, schema, dataset)
    if maps:
        sections.append(("Predicted maps", maps))
    data = _data_section(inputs, figs, dataset, schema)
    if data:
        sections.append(("Data", data))
    training = _training_section(inputs, figs)
    if training:
        sections.append(("Training", training))
    if headline:
        sections.append(("Metrics", headline))
    samples = _sample_section(inputs, figs, schema, dataset)
    if samples:
        sections.append(("Sample chips: input · truth · prediction", samples))
    feats = _features_section(inputs, figs)
    if feats:
        sections.append(("Features: embedding, PCA, clusters, similarity", feats))
    outs = _outputs_section(out, inputs)
    if outs:
        sections.append(("Outputs", outs))
    sections.append(("Run parameters and versions", _params_section(inputs)))
    path = report.html_page(inputs.title, sections, out / "report.html", note=inputs.note)
    log.info("Run report: %s (figures in %s)", path, figs)
    return path


def _headline(evals: list[tuple[str, dict[str, Any]]]) -> str:
    if not evals:
        return ""
    items = "".join(f"<li><b>{html.escape(label)}</b>: {html.escape(headline(m))}</li>" for label, m in evals)
    return f"<ul>{items}</ul>"
