"""The ``analyze`` stage: what is in a chip dataset, and which filter thresholds balance its classes.

Reads ``manifest.csv``, ``candidates.csv`` and ``dataset.json`` of a folder written by
:func:`rasterlearn.chips.make_chips` (no raster is opened) and reports:

* class pixel proportions per split and per scene (of labelled pixels; the ignore code is not a class);
* chips kept and dropped by each filter, both by the *first* failing filter (what the job recorded) and
  by each filter on its own (how strict each one is);
* a search over ``min_annotated`` and per-class ``class_proportion`` thresholds, as in geo-deep-learning's
  data analysis, for the setting whose kept chips have the most balanced classes (highest normalized
  entropy of class proportions) while keeping at least ``min_keep`` of the chips.

Results are saved as CSV files and a bar chart PNG (matplotlib, Agg backend) in ``<dataset>/analysis``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rasterlearn.chips import SPLITS, filter_failures
from rasterlearn.errors import InputError, InputNotFoundError
from rasterlearn.io.paths import check_outputs
from rasterlearn.labels import ClassSchema

__all__ = ["Analysis", "analyze_dataset", "balance_score", "class_proportions", "threshold_search"]

log = logging.getLogger(__name__)

DEFAULT_ANNOTATED = (0.0, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0)
DEFAULT_PROPORTION = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 50.0)


@dataclass
class Analysis:
    """Tables produced by :func:`analyze_dataset` and the files they were saved to."""

    proportions: pd.DataFrame
    filters: pd.DataFrame
    thresholds: pd.DataFrame
    best: dict[str, Any] | None
    files: dict[str, Path]


def balance_score(pixels: np.ndarray) -> float:
    """Normalized entropy of class pixel counts: 1 = perfectly balanced, 0 = a single class (or nothing)."""
    p = np.asarray(pixels, dtype="float64")
    total = p.sum()
    if total <= 0 or len(p) < 2:
        return 0.0
    q = p[p > 0] / total
    return float(-(q * np.log(q)).sum() / np.log(len(p)))


def class_proportions(table: pd.DataFrame, schema: ClassSchema, by: str | None = None) -> pd.DataFrame:
    """Pixels and proportion (of labelled pixels) per class, overall or per value of column ``by``."""
    cols = [f"px_{c}" for c in schema.codes]
    groups = [("all", table)] if by is None else [(str(k), g) for k, g in table.groupby(by, sort=True)]
    rows = []
    for key, g in groups:
        px = g[cols].sum().to_numpy(dtype="float64") if len(g) else np.zeros(len(cols))
        total = px.sum()
        for cls, n in zip(schema.classes, px, strict=True):
            rows.append(
                {
                    "group_by": by or "all",
                    "group": key,
                    "chips": len(g),
                    "code": cls.code,
                    "name": cls.name,
                    "pixels": int(n),
                    "proportion": float(n / total) if total else 0.0,
                }
            )
    return pd.DataFrame(rows)


def threshold_search(
    candidates: pd.DataFrame,
    schema: ClassSchema,
    *,
    annotated: Sequence[float] = DEFAULT_ANNOTATED,
    proportion: Sequence[float] = DEFAULT_PROPORTION,
    max_nodata: float = 100.0,
    min_keep: float = 0.1,
) -> pd.DataFrame:
    """Evaluate filter settings on the candidate chips (GDL-style search for balanced classes).

    Every combination of a ``min_annotated`` percent and a ``class_proportion`` percent for one
    non-background class is applied to the candidates that pass the fixed filters (valid pixels, labels,
    ``max_nodata``). Each row gives the chips kept, the resulting class proportions and the balance score;
    rows keeping fewer than ``min_keep`` of those chips are marked ``eligible=False``. Sorted best first.
    """
    base_fail = filter_failures(candidates, schema, max_nodata=max_nodata)
    pool = candidates[~(base_fail["empty"] | base_fail["nodata"] | base_fail["unlabelled"])]
    cols = [f"px_{c}" for c in schema.codes]
    px = pool[cols].to_numpy(dtype="float64")
    labelled = (pool["labelled_fraction"] * pool["height"] * pool["width"]).to_numpy(dtype="float64")
    annot = pool["annotated_fraction"].to_numpy(dtype="float64") * 100.0
    fg = [c for c in schema.codes if c != schema.background] or list(schema.codes)
    rows = []
    n_pool = len(pool)
    for a in annotated:
        keep_a = annot >= a - 1e-9
        for c in fg:
            j = schema.codes.index(c)
            share = np.divide(px[:, j], labelled, out=np.zeros(n_pool), where=labelled > 0) * 100.0
            for p in proportion:
                if p == 0 and c != fg[0]:
                    continue  # "no class proportion filter" is the same row for every class
                keep = keep_a & (share >= p - 1e-9)
                counts = px[keep].sum(axis=0)
                total = counts.sum()
                row: dict[str, Any] = {
                    "min_annotated": a,
                    "class": str(c) if p > 0 else "",
                    "class_proportion": p,
                    "chips": int(keep.sum()),
                    "kept_fraction": float(keep.sum() / n_pool) if n_pool else 0.0,
                    "balance": balance_score(counts),
                }
                for code, v in zip(schema.codes, counts, strict=True):
                    row[f"prop_{code}"] = float(v / total) if total else 0.0
                rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["eligible"] = (table["kept_fraction"] >= min_keep) & (table["chips"] > 0)
    return table.sort_values(["eligible", "balance", "chips"], ascending=[False, False, False]).reset_index(
        drop=True
    )


def _filter_table(candidates: pd.DataFrame, schema: ClassSchema, filters: dict[str, Any]) -> pd.DataFrame:
    cp = {int(k): float(v) for k, v in (filters.get("class_proportion") or {}).items()}
    fails = filter_failures(
        candidates,
        schema,
        min_annotated=float(filters.get("min_annotated", 0.0)),
        max_nodata=float(filters.get("max_nodata", 100.0)),
        class_proportion=cp,
    )
    reasons = candidates["reason"].fillna("")
    rows = []
    for name in [*fails, "straddle"]:
        alone = int(fails[name].sum()) if name in fails else int((reasons == "straddle").sum())
        rows.append({"filter": name, "dropped_first": int((reasons == name).sum()), "failing_alone": alone})
    rows.append({"filter": "kept", "dropped_first": int((reasons == "").sum()), "failing_alone": pd.NA})
    rows.append({"filter": "candidates", "dropped_first": len(candidates), "failing_alone": pd.NA})
    table = pd.DataFrame(rows)
    table["failing_alone"] = table["failing_alone"].astype("Int64")
    return table


def _plot(props: pd.DataFrame, schema: ClassSchema, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from rasterlearn.report import save_figure

    panels = [("split", "per split"), ("scene", "per scene")]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = dict(zip(schema.codes, schema.colors, strict=True))
    for ax, (by, title) in zip(axes, panels, strict=True):
        sub = props[props["group_by"].isin([by, "all"])]
        groups = list(dict.fromkeys(sub["group"]))
        width = 0.8 / max(1, schema.num_classes)
        x = np.arange(len(groups))
        for k, cls in enumerate(schema.classes):
            vals = [
                float(sub[(sub["group"] == g) & (sub["code"] == cls.code)]["proportion"].sum())
                for g in groups
            ]
            ax.bar(
                x + k * width - 0.4 + width / 2,
                vals,
                width,
                label=f"{cls.code} {cls.name}",
                color=colors[cls.code],
                edgecolor="#444444",
                linewidth=0.5,
            )
        ax.set_xticks(x, groups, rotation=20, ha="right")
        ax.set_ylabel("share of labelled pixels")
        ax.set_title(f"Class proportions {title}")
        ax.set_ylim(0, 1)
    axes[-1].legend(fontsize=8, loc="upper right")
    return save_figure(fig, path)


def analyze_dataset(
    folder: str | Path,
    out: str | Path | None = None,
    *,
    annotated: Sequence[float] = DEFAULT_ANNOTATED,
    proportion: Sequence[float] = DEFAULT_PROPORTION,
    min_keep: float = 0.1,
    plot: bool = True,
) -> Analysis:
    """Analyze a chip dataset folder; writes CSVs (and a PNG) to ``out`` (default ``<folder>/analysis``).

    Raises:
        InputNotFoundError: the folder is not a finished chip dataset.
    """
    folder = Path(folder)
    check_outputs([folder], [out])
    meta_path = folder / "dataset.json"
    if not meta_path.exists():
        raise InputNotFoundError(
            f"{folder} is not a finished chip dataset (no dataset.json); run "
            f"`rasterlearn chips ... --out {folder}` first"
        )
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if not str(meta.get("format", "")).startswith("rasterlearn-chips/"):
        raise InputError(f"{meta_path} is not a rasterlearn chip dataset (format {meta.get('format')!r})")
    schema = ClassSchema.from_dict(meta["schema"])
    manifest = pd.read_csv(folder / "manifest.csv", dtype={"scene": str, "split": str})
    cand_path = folder / "candidates.csv"
    candidates = (
        pd.read_csv(cand_path, dtype={"scene": str, "reason": str, "split": str})
        if cand_path.exists()
        else manifest.assign(reason="")
    )
    candidates["reason"] = candidates["reason"].fillna("")
    props = pd.concat(
        [
            class_proportions(manifest, schema),
            class_proportions(manifest, schema, "split"),
            class_proportions(manifest, schema, "scene"),
        ],
        ignore_index=True,
    )
    order = {s: i for i, s in enumerate(SPLITS)}
    props["_o"] = props["group"].map(lambda g: order.get(g, -1))
    props["_g"] = props["group_by"].map({"all": 0, "split": 1, "scene": 2})
    props = props.sort_values(["_g", "_o", "group", "code"], kind="stable").drop(columns=["_o", "_g"])
    props = props.reset_index(drop=True)
    filters_meta = meta.get("filters") or {}
    filt = _filter_table(candidates, schema, filters_meta)
    thresholds = threshold_search(
        candidates,
        schema,
        annotated=annotated,
        proportion=proportion,
        max_nodata=float(filters_meta.get("max_nodata", 100.0)),
        min_keep=min_keep,
    )
    best = None
    if not thresholds.empty and bool(thresholds.iloc[0]["eligible"]):
        best = {k: (v.item() if hasattr(v, "item") else v) for k, v in thresholds.iloc[0].to_dict().items()}
    out_dir = Path(out) if out is not None else folder / "analysis"
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "proportions": out_dir / "class_proportions.csv",
        "filters": out_dir / "filters.csv",
        "thresholds": out_dir / "threshold_search.csv",
    }
    props.to_csv(files["proportions"], index=False)
    filt.to_csv(files["filters"], index=False)
    thresholds.to_csv(files["thresholds"], index=False)
    if plot:
        files["plot"] = _plot(props, schema, out_dir / "class_proportions.png")
    log.info("Analysis of %s written to %s", folder, out_dir)
    return Analysis(props, filt, thresholds, best, files)
