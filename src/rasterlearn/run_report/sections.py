"""The run report's sections, each an HTML fragment built from the files the stages wrote (empty when its
inputs are missing): data, metrics, training, sample chips, predicted maps, features, parameters and
versions, outputs."""

from __future__ import annotations

import csv
import html
import platform
from pathlib import Path
from typing import Any

import numpy as np

from rasterlearn import report
from rasterlearn.run_report.figures import (
    plot_class_balance,
    plot_class_map,
    plot_clusters,
    plot_continuous,
    plot_rgb,
    read_decimated,
)
from rasterlearn.run_report.inputs import ReportInputs, load_json


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _num(v: Any, fmt: str = "{:.4f}") -> str:
    try:
        return fmt.format(float(v))
    except (TypeError, ValueError):
        return "n/a"


def data_section(inputs: ReportInputs, figs: Path, dataset: dict[str, Any] | None, schema: Any) -> str:
    """Scenes, classes and chip counts per split with the class balance chart."""
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


def metrics_section(inputs: ReportInputs, figs: Path) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    """The metrics table and confusion matrices; also returns the evaluations (label, metrics) it read."""
    evals: list[tuple[str, str, dict[str, Any]]] = []
    val = load_json(inputs.train_dir / "metrics.json" if inputs.train_dir else None)
    if val:
        evals.append(("validation chips (best model)", "val split", val))
    tst = load_json(inputs.test_chips)
    if tst:
        evals.append(("test chips", "tst split", tst))
    for sid, (path, region) in inputs.map_metrics.items():
        m = load_json(path)
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


def training_section(inputs: ReportInputs, figs: Path) -> str:
    """Training curves (``history.csv``) and the training options."""
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
    meta = load_json(inputs.train_dir / "model.json")
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


def sample_section(inputs: ReportInputs, figs: Path, schema: Any, dataset: dict[str, Any] | None) -> str:
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


def maps_section(inputs: ReportInputs, figs: Path, schema: Any, dataset: dict[str, Any] | None) -> str:
    """A quick-look of each predicted map (over its image when given) with the share of each class."""
    if not inputs.maps or schema is None:
        return ""
    parts = []
    for sid, path in inputs.maps.items():
        if not Path(path).exists():
            continue
        classes, valid = read_decimated(Path(path), inputs.quicklook_size)
        img = img_valid = None
        names = None
        if sid in inputs.images and Path(inputs.images[sid]).exists():
            img, img_valid = read_decimated(Path(inputs.images[sid]), inputs.quicklook_size, "average")
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


def features_section(inputs: ReportInputs, figs: Path) -> str:
    """Feature maps of each scene: RGB of the first components, clusters, similarity."""
    if not inputs.features:
        return ""
    parts = [f"<p class='note'>{html.escape(inputs.features_note)}</p>"] if inputs.features_note else []
    for sid, files in inputs.features.items():
        sub = []
        if "pca" in files and files["pca"].exists():
            data, valid = read_decimated(files["pca"], inputs.quicklook_size, "average")
            valid = valid & np.isfinite(data).all(axis=0)
            rgb = report.rgb_composite(
                data[:3] if data.shape[0] >= 3 else data, valid, rgb=[0, 1, 2] if data.shape[0] >= 3 else None
            )
            sub.append(
                report.img_tag(
                    plot_rgb(rgb, figs / f"pca_{sid}.png", "PCA of the features (RGB = PC1-3)"), "pca"
                )
            )
        if "clusters" in files and files["clusters"].exists():
            data, valid = read_decimated(files["clusters"], inputs.quicklook_size)
            valid = valid & (data[0] > 0)
            sub.append(
                report.img_tag(
                    plot_clusters(data[0], valid, figs / f"clusters_{sid}.png", "k-means clusters"),
                    "clusters",
                )
            )
        if "similarity" in files and files["similarity"].exists():
            data, valid = read_decimated(files["similarity"], inputs.quicklook_size, "average")
            valid = valid & np.isfinite(data[0])
            sub.append(
                report.img_tag(
                    plot_continuous(
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


def params_section(inputs: ReportInputs) -> str:
    """Stage hashes and times, the configuration and library versions."""
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


def outputs_section(out: Path, inputs: ReportInputs) -> str:
    """The outputs, relative to ``out``, with how to open them in QGIS."""
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
