"""The outputs of an assessment: a JSON-ready dict, and JSON + CSV + PNG + HTML files (atomic writes)."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rasterlearn._util import atomic_write_json, atomic_write_text, json_default
from rasterlearn.assess.estimate import AccuracyEstimates
from rasterlearn.labels import ClassSchema

__all__ = ["assessment_dict", "assessment_rows", "plot_assessment", "write_assessment"]


def _nan_none(a: np.ndarray) -> list[Any]:
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(a, dtype="float64").ravel()]


def assessment_dict(
    est: AccuracyEstimates,
    schema: ClassSchema,
    map_counts: Mapping[int, int],
    units: Mapping[str, Any],
    design: Mapping[str, Any],
    strata_codes: Sequence[int],
    strata_names: Sequence[str],
    map_path: str | Path,
    samples: str | Path,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """The assessment as a JSON-ready dict (see ``docs/assess.md`` for the fields)."""
    pa, ha = float(units["pixel_area"]), units["hectares_per_unit2"]
    total_px = float(sum(map_counts.values()))
    total_area = total_px * pa
    per_class: dict[str, Any] = {}
    for k, (code, name) in enumerate(zip(schema.codes, schema.names, strict=True)):
        px = int(map_counts.get(code, 0))
        per_class[name] = {
            "code": code,
            "users_accuracy": est.summary(float(est.users[k]), float(est.users_se[k])),
            "producers_accuracy": est.summary(float(est.producers[k]), float(est.producers_se[k])),
            "area_proportion": est.summary(float(est.area[k]), float(est.area_se[k])),
            "area": est.summary(float(est.area[k]), float(est.area_se[k]), total_area),
            "area_ha": None
            if ha is None
            else est.summary(float(est.area[k]), float(est.area_se[k]), total_area * ha),
            "area_pixels": est.summary(float(est.area[k]), float(est.area_se[k]), total_px),
            "mapped_pixels": px,
            "mapped_proportion": px / total_px,
            "mapped_area": px * pa,
            "mapped_area_ha": None if ha is None else px * pa * ha,
            "samples_mapped": int(est.counts[k].sum()),
            "samples_reference": int(est.counts[:, k].sum()),
        }
    return {
        "map": str(map_path),
        "samples": str(samples),
        "n": int(est.counts.sum()),
        "design": dict(design),
        "strata": [
            {
                "code": int(c),
                "name": str(nm),
                "pixels": float(N),
                "weight": float(N / est.stratum_sizes.sum()),
                "samples": int(n),
            }
            for c, nm, N, n in zip(
                strata_codes, strata_names, est.stratum_sizes, est.stratum_samples, strict=True
            )
        ],
        "confidence": est.confidence,
        "z": est.z,
        "finite_population_correction": est.fpc,
        "area_unit": units["unit"],
        "pixel_area": pa,
        "total_pixels": int(total_px),
        "total_area": total_area,
        "total_area_ha": None if ha is None else total_area * ha,
        "classes": list(schema.names),
        "codes": list(schema.codes),
        "error_matrix": {
            "rows": "map class",
            "columns": "reference class",
            "proportions": [_nan_none(r) for r in est.error_matrix],
            "counts": est.counts.tolist(),
        },
        "overall_accuracy": est.summary(est.overall, est.overall_se),
        "per_class": per_class,
        "notes": list(notes),
    }


def _v(d: Mapping[str, Any] | None, key: str = "estimate") -> Any:
    return None if d is None else d.get(key)


def assessment_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per class: mapped and estimated area (with SE and CI), user's and producer's accuracy."""
    rows = []
    unit = "ha" if result.get("total_area_ha") is not None else result["area_unit"]
    key = "area_ha" if unit == "ha" else "area"
    for name, c in result["per_class"].items():
        a = c[key]
        rows.append(
            {
                "class": name,
                "code": c["code"],
                f"mapped_area_{unit}": c["mapped_area_ha"] if unit == "ha" else c["mapped_area"],
                f"estimated_area_{unit}": _v(a),
                f"area_se_{unit}": _v(a, "se"),
                f"area_ci_low_{unit}": _v(a, "ci_low"),
                f"area_ci_high_{unit}": _v(a, "ci_high"),
                "users_accuracy": _v(c["users_accuracy"]),
                "users_accuracy_se": _v(c["users_accuracy"], "se"),
                "producers_accuracy": _v(c["producers_accuracy"]),
                "producers_accuracy_se": _v(c["producers_accuracy"], "se"),
                "samples_mapped": c["samples_mapped"],
                "samples_reference": c["samples_reference"],
            }
        )
    return rows


def plot_assessment(result: Mapping[str, Any], path: str | Path) -> Path:
    """Two panels: the error matrix in proportions of area, and mapped vs estimated area with CIs."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from rasterlearn.report import save_figure

    names = result["classes"]
    k = len(names)
    mat = np.array([[np.nan if v is None else v for v in r] for r in result["error_matrix"]["proportions"]])
    size = max(4.0, 0.6 * k + 2.5)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    im = ax0.imshow(mat, cmap="Blues")
    ax0.set_xticks(range(k), names, rotation=45, ha="right")
    ax0.set_yticks(range(k), names)
    ax0.set_xlabel("reference")
    ax0.set_ylabel("map")
    oa = result["overall_accuracy"]
    ax0.set_title(f"Error matrix (proportion of area); OA {oa['estimate']:.3f} ± {oa['half_width']:.3f}")
    if k <= 15:
        for i in range(k):
            for j in range(k):
                dark = np.isfinite(mat[i, j]) and mat[i, j] > 0.5 * np.nanmax(mat)
                ax0.text(
                    j,
                    i,
                    f"{mat[i, j]:.3f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if dark else "black",
                )
    fig.colorbar(im, ax=ax0, fraction=0.046, pad=0.04)
    ha = result.get("total_area_ha") is not None
    key, scale = ("area_ha", 1.0) if ha else ("area", 1.0)
    mapped = [c["mapped_area_ha" if ha else "mapped_area"] * scale for c in result["per_class"].values()]
    est = [_v(c[key]) or 0.0 for c in result["per_class"].values()]
    err = [_v(c[key], "half_width") or 0.0 for c in result["per_class"].values()]
    x = np.arange(k)
    ax1.bar(x - 0.2, mapped, 0.4, label="mapped (pixel count)", color="#bbbbbb")
    ax1.bar(
        x + 0.2,
        est,
        0.4,
        yerr=err,
        capsize=3,
        label=f"estimated ({result['confidence']:.0%} CI)",
        color="#2c7fb8",
    )
    ax1.set_xticks(x, names, rotation=45, ha="right")
    ax1.set_ylabel("hectares" if ha else result["area_unit"])
    ax1.set_title("Class areas")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def write_assessment(
    result: Mapping[str, Any], est: AccuracyEstimates, schema: ClassSchema, output: str | Path
) -> list[Path]:
    """Write ``output`` (JSON) and, beside it, ``.csv`` (per-class table), ``.png`` and ``.html``."""
    from rasterlearn.report import html_page, img_tag, table_html

    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result, default=json_default)
    rows = assessment_rows(result)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    csv_path = atomic_write_text(out.with_suffix(".csv"), buf.getvalue())
    png = out.with_suffix(".png")
    tmp_png = png.with_name(f".{png.stem}.tmp.png")
    plot_assessment(result, tmp_png)
    tmp_png.replace(png)
    oa = result["overall_accuracy"]
    summary = (
        f"<p>{result['design']['statement']}</p><p>{result['n']} samples · overall accuracy "
        f"{oa['estimate']:.4f} ± {oa['half_width']:.4f} ({result['confidence']:.0%} CI) · map {result['map']}</p>"
    )
    matrix = [
        {"map \\ reference": n, **{m: v for m, v in zip(result["classes"], r, strict=True)}}
        for n, r in zip(result["classes"], result["error_matrix"]["proportions"], strict=True)
    ]
    sections = [
        ("Summary", summary),
        ("Areas and accuracies", table_html(rows, "{:,.4f}")),
        ("Error matrix (proportion of area)", table_html(matrix)),
        ("Figure", img_tag(png, "error matrix and areas")),
    ]
    if result["notes"]:
        sections.append(("Notes", "<ul>" + "".join(f"<li>{n}</li>" for n in result["notes"]) + "</ul>"))
    html = html_page("rasterlearn accuracy assessment", sections, out.with_suffix(".html"))
    return [out, csv_path, png, html]
